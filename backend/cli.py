"""`broaden` command line: serve, worker, status, backfill, demo-data, simulate."""

from __future__ import annotations

import argparse
import logging
import os
from typing import get_args

from pydantic import ValidationError

from backend.config import Settings, describe, get_settings
from backend.errors import BroadenError


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
    import json
    import time

    import redis
    from rich.console import Console
    from rich.table import Table
    from rq import Worker

    from backend.state import ProjectMirror
    from workers.enqueue import queue

    r = redis.Redis.from_url(get_settings().redis_url)
    q = queue(r)
    console = Console()
    failed = q.failed_job_registry
    console.print(
        f"queue [bold]{q.name}[/]: {q.count} queued, "
        f"{q.started_job_registry.get_job_count(cleanup=False)} running, "
        f"{q.scheduled_job_registry.get_job_count(cleanup=False)} waiting to retry, "
        f"{failed.get_job_count(cleanup=False)} failed; {len(Worker.all(connection=r))} workers"
    )
    for job in q.job_class.fetch_many(failed.get_job_ids(cleanup=False)[-5:], connection=r, serializer=q.serializer):
        if job is not None:
            reason = (job.exc_info or "").strip().splitlines()[-1:] or ["?"]
            console.print(f"  failed {job.id}: {reason[0][:160]}")
    table = Table("project", "model version", "trained on", "tasks ranked", "last sync")
    for key in sorted(r.scan_iter("broaden:p:*:last_sync")):
        project = int(key.decode().split(":")[2])
        last = json.loads(ProjectMirror(r, project).get("last_sync") or "{}")
        info = json.loads(r.get(f"broaden:p:{project}:model_info") or "{}")
        ago = f"{time.time() - last.get('finished_at', time.time()):.0f} s ago"
        table.add_row(
            str(project),
            last.get("model_version", "-"),
            str(info.get("trained_on", 0)),
            str(last.get("ranked", 0)),
            ago,
        )
    console.print(table)


def backfill(args: argparse.Namespace) -> None:
    """Encode and pre-label a project's existing tasks, spread over the workers, then rank them.
    Re-running it resumes: encoded media are cached, queued chunks are not queued twice."""
    import hashlib
    import time

    import redis
    from rq.exceptions import DuplicateJobError
    from rq.job import Job
    from tqdm import tqdm

    from backend import labelstudio as ls
    from workers.enqueue import enqueue, queue

    settings = get_settings()
    r = redis.Redis.from_url(settings.redis_url)
    ids = sorted(int(t["id"]) for t in ls.tasks(settings, args.project))
    jobs = []
    for start in range(0, len(ids), args.chunk):
        chunk = ids[start : start + args.chunk]
        job_id = f"encode-p{args.project}-{hashlib.sha256(str(chunk).encode()).hexdigest()[:16]}"
        try:
            queue(r).enqueue_call(
                "workers.jobs.encode_tasks",
                kwargs={"project_id": args.project, "task_ids": chunk},
                job_id=job_id,
                timeout=3600,
                result_ttl=7 * 86400,
                unique=True,
            )
        except DuplicateJobError:
            pass  # queued or done by an earlier run
        jobs.append(job_id)
    with tqdm(total=len(ids), desc=f"encoding project {args.project}", unit="task") as bar:
        pending = set(jobs)
        while pending:
            for job_id in list(pending):
                job = Job.fetch(job_id, connection=r, serializer=queue(r).serializer)
                if job.is_finished or job.is_failed:
                    pending.discard(job_id)
                    bar.update(len(job.kwargs["task_ids"]))
                    if job.is_failed:
                        bar.write(f"chunk {job_id} failed: see `broaden status`")
            time.sleep(0.5)
    sync_id = enqueue(
        r, "workers.jobs.resync_project", f"resync-p{args.project}-{int(time.time())}", project_id=args.project
    )
    logging.getLogger(__name__).info("encoded %d tasks; ranking and pre-labelling in job %s", len(ids), sync_id)


def demo_data(args: argparse.Namespace) -> None:
    from backend import demo

    demo.run(args)


def simulate(args: argparse.Namespace) -> None:
    from backend import simulate as sim

    sim.run(args)


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

    p = sub.add_parser("backfill", help="encode, pre-label and rank a project's existing tasks")
    p.add_argument("--project", type=int, required=True)
    p.add_argument("--chunk", type=int, default=200, help="tasks per encoding job (default 200)")
    p.set_defaults(func=backfill)

    from backend import demo

    p = sub.add_parser("demo-data", help="build the multimodal demo data set")
    demo.add_arguments(p)
    p.set_defaults(func=demo_data)

    # Declared here rather than in backend.simulate, whose imports (torch, faiss) would slow every subcommand.
    p = sub.add_parser("simulate", help="replay active learning on a labelled manifest, without Label Studio")
    p.add_argument("manifest", help="JSONL: image/text/audio, label, optional tags and split")
    p.add_argument("--label-config", help="default: label_config.xml beside the manifest")
    names = list(get_args(Settings.model_fields["strategy"].annotation))
    p.add_argument("--strategies", nargs="+", choices=names, default=names)
    p.add_argument("--seed-size", type=int, default=20, help="random items labelled before the first round")
    p.add_argument("--batch-size", type=int, default=10, help="items labelled per round (default 10)")
    p.add_argument("--rounds", type=int, default=10, help="train-pick-label rounds (default 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="random seeds, one run each")
    p.add_argument("--targets", default="", help='"control:Label,..." (default: the rare labels of the pool)')
    fusions = list(get_args(Settings.model_fields["fusion"].annotation))
    p.add_argument("--fusion", nargs="+", choices=fusions, help="one or more (an ablation); default: BROADEN_FUSION")
    p.add_argument("--k", type=int, help="LSB neighbours per seed (default: BROADEN_LSB_K)")
    p.add_argument("--threshold", type=float, help="LSB-LT similarity threshold (default: BROADEN_LSB_THRESHOLD)")
    p.add_argument(
        "--share", type=float, help="share of leading slots for broadened tasks (default: BROADEN_LSB_SHARE)"
    )
    p.add_argument("--epochs", type=int, help="training epochs per round (default: BROADEN_TRAIN_EPOCHS)")
    p.add_argument("--out", required=True, help="directory for simulate.json and simulate.png")
    p.set_defaults(func=simulate)

    args = parser.parse_args(argv)
    try:
        _logging(get_settings().log_level)
    except ValidationError as e:
        raise SystemExit(f"broaden {args.command}: bad setting: {describe(e)}") from None
    try:
        args.func(args)
    except BroadenError as e:  # bad input or an unreachable service: say what, without a traceback
        raise SystemExit(f"broaden {args.command}: {e}") from None


if __name__ == "__main__":
    main()
