"""`broaden` command line: serve, worker, status, demo-data."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from backend.config import get_settings


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every URL at INFO, query strings (presigned signatures) included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default encoders ship in packages; never reach a hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from backend.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def worker(args: argparse.Namespace) -> None:
    import redis
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from workers import runtime
    from workers.enqueue import queue

    settings = get_settings()
    # Load the encoders once, before any job: jobs then cost only their own work. A
    # SimpleWorker runs jobs in this process, because forking after torch has started
    # its thread pools can hang the child.
    runtime.predictor()
    r = redis.Redis.from_url(settings.redis_url)
    w = SimpleWorker([queue(r)], connection=r, serializer=JSONSerializer, name=args.name)
    w.work(with_scheduler=True, burst=args.burst, logging_level=settings.log_level.upper())


def status(args: argparse.Namespace) -> None:
    import redis
    from rq import Worker

    from backend.state import ProjectState
    from workers.enqueue import queue

    r = redis.Redis.from_url(get_settings().redis_url)
    q = queue(r)
    lines = [
        f"queue {q.name}: {q.count} queued, {q.started_job_registry.get_job_count(cleanup=False)} running, "
        f"{q.failed_job_registry.get_job_count(cleanup=False)} failed, "
        f"{q.scheduled_job_registry.get_job_count(cleanup=False)} scheduled",
        f"workers: {len(Worker.all(connection=r))}",
    ]
    for key in sorted(r.scan_iter("broaden:p:*:model_version")):
        project = int(key.decode().split(":")[2])
        state = ProjectState(r, project)
        info = state.model_info()
        lines.append(f"project {project}: model {state.model_version()} trained on {info.get('trained_on', 0)} tasks")
    sys.stdout.write("\n".join(lines) + "\n")


def demo_data(args: argparse.Namespace) -> None:
    from backend import demo

    demo.run(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="broaden", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the ML backend HTTP server (port 9090 by default)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=serve)

    p = sub.add_parser("worker", help="run an RQ worker on broaden's queue")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--name", help="a unique worker name (default: random)")
    p.set_defaults(func=worker)

    p = sub.add_parser("status", help="queue depths, failed jobs, per-project models")
    p.set_defaults(func=status)

    from backend import demo

    p = sub.add_parser("demo-data", help="build the multimodal demo data set")
    demo.add_arguments(p)
    p.set_defaults(func=demo_data)

    args = parser.parse_args(argv)
    _logging(get_settings().log_level)
    args.func(args)


if __name__ == "__main__":
    main()
