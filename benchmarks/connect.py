"""Connecting broaden to a project that already holds N tasks (no label): when does the head of
its queue show, when is the whole project ranked, and what does `broaden status` say meanwhile?

Starts Redis, Label Studio 1.23.2, `broaden serve` and W `broaden worker`s; builds a demo set of N
listings (every task its own photo and voice-over, so every one is encoded), imports it into a
project with no ML backend, then connects broaden and times, from the connection, the first
priorities and the last written (broaden's record of what it wrote to Label Studio), checked at
the end against the tasks Label Studio holds.

    python benchmarks/connect.py --tasks 1000 --workers 2
    ./dev run python benchmarks/connect.py --quick   # 24 tasks, a head of 8: a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import redis
from common import ROOT, cpu_model, free_port
from label_to_queue import CONFIG, _healthy, start, start_services, stop, wait_until

from backend.config import Settings
from backend.lab.demo import build_demo
from backend.store.keys import Hash, Value
from backend.store.state import ProjectMirror

NEEDS_LABEL_STUDIO = True  # its quick run is in tests/e2e/test_e2e_benchmarks.py


def import_unconnected(api, demo: Path) -> tuple[int, int]:
    """A project with the demo listings and no ML backend: nothing is encoded or ranked yet."""
    project = api.create_project("connect", CONFIG)
    items = [json.loads(line) for line in (demo / "manifest.jsonl").read_text().splitlines()]
    urls = api.upload_files(project, [demo / it[k] for it in items for k in ("image", "audio")])
    tasks = [{"data": {"image": urls[demo / it["image"]], "audio": urls[demo / it["audio"]], "caption": it["text"]}}
             for it in items]  # fmt: skip
    return project, len(api.import_tasks(project, tasks))


def watch(r: redis.Redis, project: int, n: int, status_cmd: list[str], env: dict, timeout: float) -> dict:
    """Seconds from now to the first written priority and to all n, the tasks the first sync ranked,
    and `broaden status` when the first priorities are written."""
    t0, mirror, out = time.monotonic(), ProjectMirror(r, project), {"status": ""}
    while (ranked := len(mirror.load(Hash.PRIORITY))) < n:
        elapsed = time.monotonic() - t0
        if ranked and "head_s" not in out:  # the head shows: what does an operator see now?
            out["head_s"] = elapsed
            out["status"] = subprocess.run(status_cmd, env=env, capture_output=True, text=True, timeout=60).stdout
        if "head_tasks" not in out and (last := mirror.get(Value.LAST_SYNC)):
            out["head_tasks"] = json.loads(last)["ranked"]
        if elapsed > timeout:
            raise TimeoutError(f"{ranked} of {n} tasks ranked after {timeout:g} s")
        time.sleep(0.5)
    out.setdefault("head_s", time.monotonic() - t0)
    out.setdefault("head_tasks", n)
    return out | {"all_s": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000, help="tasks in the project before connecting (default 1000)")
    ap.add_argument("--workers", type=int, default=2, help="broaden workers (default 2)")
    ap.add_argument("--quick", action="store_true", help="24 tasks, one worker, a head of 8")
    args = ap.parse_args(argv)
    if args.quick:
        args.tasks, args.workers = 24, 1
    head = 8 if args.quick else Settings().connect_head_tasks

    work = Path(tempfile.mkdtemp(prefix="broaden-connect-"))  # kept: the logs are the run's record
    demo = work / "demo"
    build_demo(demo, n_items=args.tasks, seed=0)
    with ExitStack() as stack:
        redis_url, r, ls = start_services(stack, work)
        port = free_port()
        env = {**os.environ, "REDIS_URL": redis_url, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token}
        env |= {"PYTHONPATH": str(ROOT), "BROADEN_LOG_LEVEL": "INFO", "BROADEN_CONNECT_HEAD_TASKS": str(head)}
        broaden = [sys.executable, "-m", "broaden.cli"]
        stack.callback(stop, start([*broaden, "serve", "--host", "127.0.0.1", "--port", str(port)], env,
                                   work / "backend.log"))  # fmt: skip
        for i in range(args.workers):
            stack.callback(stop, start([*broaden, "worker"], env, work / f"worker{i}.log"))
        backend_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(backend_url), 300, "backend")
        project, n = import_unconnected(ls.api, demo)
        load = os.getloadavg()[0]
        ls.api.connect_ml_backend(project, backend_url, "broaden")
        seen = watch(r, project, n, [*broaden, "status"], env, timeout=3600)
        in_ls = sum(Settings().priority_field in t["data"] for t in ls.api.list_tasks(project))
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load {load:.1f} when connecting")
        print("| tasks | workers | head shown at (s) | ranked by the first sync | all ranked at (s) | ranked in LS |")
        print("|---|---|---|---|---|---|")
        print(f"| {n} | {args.workers} | {seen['head_s']:.0f} | {seen['head_tasks']} | {seen['all_s']:.0f} | {in_ls} |")
        print(f"\n`broaden status` when the head showed:\n\n```\n{seen['status'].rstrip()}\n```")
        assert in_ls == n, f"{in_ls} of {n} tasks carry a priority in Label Studio"


if __name__ == "__main__":
    main()
