"""`broaden` command line: serve, worker, status, backfill, demo-data, simulate.

The one entry point above both sides of the queue: `serve` starts the web side (`backend.web`),
`worker` the job side (`workers`); `simulate` and `demo-data` need the `lab` extra."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from backend.config import Settings, describe
from backend.errors import BroadenError

LAB_PACKAGES = ("sklearn", "matplotlib")  # what the `lab` extra adds (see pyproject.toml)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every URL at INFO, query strings (presigned signatures) included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default encoders ship in packages; never reach a hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from backend.web.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def worker(args: argparse.Namespace, settings: Settings) -> None:
    from rq.serializers import JSONSerializer

    from backend.queue.producer import queue
    from backend.runtime import Runtime
    from workers import runtime
    from workers.housekeeping import Housekeeper, Worker

    # Load the encoders once, before any job: jobs then cost only their own work. Jobs run in
    # this process (a SimpleWorker), because forking after torch has started its thread pools
    # can hang the child.
    with runtime.installed(Runtime.build(settings)) as rt:
        q = queue(rt.redis)
        w = Worker([q], connection=rt.redis, serializer=JSONSerializer, name=args.name)
        level = settings.log_level.upper()
        if args.burst:  # runs what is queued (and due), then exits: no housekeeping
            w.work(with_scheduler=True, burst=True, logging_level=level)
            return
        keeper = Housekeeper(rt.redis, q, settings.reconcile_s, w.name)
        keeper.start()
        try:
            w.work(with_scheduler=False, logging_level=level)
        finally:
            keeper.stop()


def _say(line: str) -> None:
    """A line of a command's report, on stdout (logs go to stderr)."""
    sys.stdout.write(line + "\n")


def status(args: argparse.Namespace, settings: Settings) -> None:
    """Queue depths, the last failed jobs, and per project its model and last sync."""
    import json
    import re
    import textwrap
    import time

    import redis
    from rq import Worker

    from backend.queue.producer import queue
    from backend.store import keys
    from backend.store.keys import Value
    from backend.store.state import ProjectMirror, ProjectState

    r = redis.Redis.from_url(settings.redis_url)
    q = queue(r)
    failed = q.failed_job_registry
    _say(
        f"queue {q.name}: {q.count} queued, "
        f"{q.started_job_registry.get_job_count(cleanup=False)} running, "
        f"{q.scheduled_job_registry.get_job_count(cleanup=False)} waiting to retry, "
        f"{failed.get_job_count(cleanup=False)} failed; {len(Worker.all(connection=r))} workers"
    )
    for job in q.job_class.fetch_many(failed.get_job_ids(cleanup=False)[-5:], connection=r, serializer=q.serializer):
        if job is not None:
            reason = (job.exc_info or "").strip().splitlines()[-1:] or ["?"]
            _say(f"  failed {job.id}:")
            for line in textwrap.wrap(reason[0], width=100):  # the whole reason, Label Studio's words included
                _say(f"    {line}")
    rows = [("project", "model version", "trained on", "fusion", "tasks ranked", "last sync", "in the queue")]
    work = _queued_work(q)
    # Every project broaden has seen: synced, connected, with work queued, or with nothing but failed
    # jobs (job ids name their project).
    seen = {
        keys.project_of(k) for v in (Value.LAST_SYNC, Value.CONNECTED) for k in r.scan_iter(keys.project_pattern(v))
    }
    seen |= {int(m.group(1)) for i in failed.get_job_ids(cleanup=False) if (m := re.search(r"-p(\d+)-", i))}
    seen |= set(work)
    for project in sorted(seen):
        last = json.loads(ProjectMirror(r, project).get(Value.LAST_SYNC) or "{}")
        info = ProjectState(r, project).model_info()
        ago = f"{time.time() - last['finished_at']:.0f} s ago" if "finished_at" in last else "never"
        rows.append((str(project), last.get("model_version", "-"), str(info.get("trained_on", 0)), _fusion(info),
                     str(last.get("ranked", 0)), ago, work.get(project, "")))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fusion(info: dict[str, Any]) -> str:
    """The model's fusion, or each head's where they differ (BROADEN_FUSION=auto)."""
    heads = info.get("head_fusions") or {}
    if len(set(heads.values())) > 1:
        return ", ".join(f"{head} {fusion}" for head, fusion in heads.items())
    return info.get("fusion", "-")


def _queued_work(q: Any) -> dict[int, str]:
    """Per project, its jobs by kind and state: "encode 1 running, encode 4 queued, sync 1 waiting"
    (waiting: for other jobs to end). A big project's encoding shows its progress here."""
    import re
    from collections import Counter

    registries = (("running", q.started_job_registry), ("queued", q), ("waiting", q.deferred_job_registry))
    counts: Counter[tuple[int, str, str]] = Counter()
    for state, registry in registries:
        ids = registry.get_job_ids() if registry is q else registry.get_job_ids(cleanup=False)
        counts.update((int(m.group(2)), m.group(1), state) for i in ids if (m := re.match(r"([a-z]+)-p(\d+)-", i)))
    out: dict[int, list[str]] = {}
    for (project, kind, state), n in counts.items():
        out.setdefault(project, []).append(f"{kind} {n} {state}")
    return {project: ", ".join(parts) for project, parts in out.items()}


def backfill(args: argparse.Namespace, settings: Settings) -> None:
    """Encode and pre-label a project's existing tasks, spread over the workers, then rank them.
    Re-running it resumes: encoded media are cached, queued chunks are not queued twice."""
    import time

    import redis
    from rq.job import Job
    from tqdm import tqdm

    from backend.labelstudio.client import LabelStudioClient
    from backend.queue import producer
    from backend.store.state import ProjectState

    r = redis.Redis.from_url(settings.redis_url)
    ids = sorted(int(t["id"]) for t in LabelStudioClient(settings).tasks(args.project))
    ProjectState(r, args.project).trust_by_operator()  # the operator says broaden serves it: its webhooks count
    chunks = [ids[start : start + args.chunk] for start in range(0, len(ids), args.chunk)]
    jobs = {producer.encode(r, args.project, chunk): len(chunk) for chunk in chunks}
    serializer = producer.queue(r).serializer
    with tqdm(total=len(ids), desc=f"encoding project {args.project}", unit="task") as bar:
        pending = set(jobs)
        while pending:
            for job_id in list(pending):
                job = Job.fetch(job_id, connection=r, serializer=serializer)
                if job.is_finished or job.is_failed:
                    pending.discard(job_id)
                    bar.update(jobs[job_id])
                    if job.is_failed:
                        bar.write(f"chunk {job_id} failed: see `broaden status`")
            time.sleep(0.5)
    sync_id = producer.resync(r, args.project)
    logging.getLogger(__name__).info("encoded %d tasks; ranking and pre-labelling in job %s", len(ids), sync_id)


def _require_lab() -> None:
    """A one-line error naming the extra when the offline tools' dependencies are not installed
    (checked before any work, not when the plot is drawn at the end)."""
    import importlib.util

    if missing := sorted(p for p in LAB_PACKAGES if importlib.util.find_spec(p) is None):
        raise BroadenError(f"needs the lab extra ({', '.join(missing)} missing): pip install 'broaden[lab]'")


def demo_data(args: argparse.Namespace, settings: Settings) -> None:
    from backend.lab import demo

    demo.run(args)


def simulate(args: argparse.Namespace, settings: Settings) -> None:
    _require_lab()
    from backend.lab import simulate as sim

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

    from backend.lab import demo, stack

    p = sub.add_parser("demo", help="run Label Studio, Redis, the backend and a worker on the demo set (Ctrl-C stops)")
    stack.add_arguments(p)
    p.set_defaults(func=stack.run)

    p = sub.add_parser("demo-data", help="build the multimodal demo data set")
    demo.add_arguments(p)
    p.set_defaults(func=demo_data)

    # Declared here rather than in backend.lab.simulate, whose imports (torch, faiss) would slow every subcommand.
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
        settings = Settings()  # read once; every subcommand gets it passed
    except ValidationError as e:
        raise SystemExit(f"broaden {args.command}: bad setting: {describe(e)}") from None
    _logging(settings.log_level)
    try:
        args.func(args, settings)
    except BroadenError as e:  # bad input or an unreachable service: say what, without a traceback
        raise SystemExit(f"broaden {args.command}: {e}") from None
    except RedisConnectionError as e:
        raise SystemExit(f"broaden {args.command}: cannot reach Redis at {_without_password(settings.redis_url)} "
                         f"({e}); start it, or set REDIS_URL") from None  # fmt: skip


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


if __name__ == "__main__":
    main()
