"""Label-to-reordered-queue latency against a real Label Studio, for projects of 1k and 10k tasks.

Starts Redis, Label Studio 1.23.2 (backend.lab.labelstudio_server), `broaden serve` and one
`broaden worker`; imports N tasks (demo media reused, every caption distinct), waits for the
pre-labelling sync, then annotates tasks one at a time and measures, from the annotation POST,
when the new priorities are in Label Studio (the queue is reordered) and when the job ends.

    python benchmarks/label_to_queue.py --sizes 1000 10000 --repeats 5
    ./dev run python benchmarks/label_to_queue.py --quick   # 16 tasks, one label: a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import redis
from common import ROOT, free_port, own_redis

from backend.lab.demo import build_demo
from backend.lab.labelstudio_server import LabelStudioServer, ensure_labelstudio_venv
from backend.store.keys import Value
from backend.store.state import ProjectMirror

CONFIG = (ROOT / "label_config.xml").read_text()
NEEDS_LABEL_STUDIO = True  # its quick run is in tests/e2e/test_e2e_benchmarks.py


def wait_until(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def last_sync(r: redis.Redis, project: int) -> dict:
    raw = ProjectMirror(r, project).get(Value.LAST_SYNC)
    return json.loads(raw) if raw else {}


def start_services(stack: ExitStack, work: Path) -> tuple[str, redis.Redis, LabelStudioServer]:
    """A private Redis and a real Label Studio under work, stopped when the stack closes."""
    stack.callback(print, f"logs in {work}")
    redis_url = stack.enter_context(own_redis(work))
    r = redis.Redis.from_url(redis_url)
    stack.callback(r.close)
    ls = LabelStudioServer(work / "ls", executable=ensure_labelstudio_venv()).start()
    stack.callback(ls.stop)
    return redis_url, r, ls


def make_project(api, n: int, demo: Path, backend_url: str) -> tuple[int, list[int]]:
    project = api.create_project(f"latency {n}", CONFIG)
    api.connect_ml_backend(project, backend_url, "broaden")
    items = [json.loads(line) for line in (demo / "manifest.jsonl").read_text().splitlines()]
    urls = api.upload_files(project, [demo / it[k] for it in items for k in ("image", "audio")])
    tasks = []
    for i in range(n):
        it = items[i % len(items)]
        tasks.append(
            {
                "data": {
                    "image": urls[demo / it["image"]],
                    "audio": urls[demo / it["audio"]],
                    "caption": f"{it['text']} (listing {i})",
                }
            }
        )
    ids: list[int] = []
    for start_ in range(0, n, 2000):
        ids += api.import_tasks(project, tasks[start_ : start_ + 2000])
    return project, ids


def measure(api, r: redis.Redis, project: int, ids: list[int], items: list[dict], repeats: int) -> list[dict]:
    rows = []
    for i in range(repeats):
        task = ids[(i * 97) % len(ids)]
        item = items[((i * 97) % len(ids)) % len(items)]
        before = last_sync(r, project).get("started_at", 0)
        t0 = time.time()
        api.annotate(
            task,
            [
                {"from_name": n, "to_name": t, "type": "choices", "value": {"choices": [item["label"][n]]}}
                for n, t in (("category", "image"), ("policy", "voiceover"))
            ],
        )
        after = max(before, t0 - 0.5)
        done = wait_until(
            lambda after=after: (s := last_sync(r, project)).get("started_at", 0) > after and s.get("refreshed") and s,
            600,
            "sync after annotation",
            0.05,
        )
        rows.append(
            {
                "reordered_s": done["reordered_at"] - t0,
                "done_s": done["finished_at"] - t0,
                "stages": done["seconds"],
                "trained": bool(done["trained"]),
            }
        )
        time.sleep(1.0)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", help="project sizes in tasks (default 1000 10000; --quick: 16)")
    ap.add_argument("--repeats", type=int, help="labels timed per project (default 5; --quick: 1)")
    ap.add_argument("--demo-items", type=int, help="demo listings whose media the tasks reuse (default 100)")
    ap.add_argument("--quick", action="store_true", help="one project of 16 tasks, one label")
    args = ap.parse_args(argv)
    args.sizes = args.sizes or ([16] if args.quick else [1000, 10000])
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.demo_items = args.demo_items or (16 if args.quick else 100)

    work = Path(tempfile.mkdtemp(prefix="broaden-latency-"))  # kept: the logs are the run's record
    demo = work / "demo"
    build_demo(demo, n_items=args.demo_items, seed=0)
    items = [json.loads(line) for line in (demo / "manifest.jsonl").read_text().splitlines()]
    with ExitStack() as stack:
        redis_url, r, ls = start_services(stack, work)
        backend_port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "PYTHONPATH": str(ROOT),
            "BROADEN_LOG_LEVEL": "INFO",
        }
        serve = ["serve", "--host", "127.0.0.1", "--port", str(backend_port)]
        for command, log in ((serve, "backend.log"), (["worker"], "worker.log")):
            stack.callback(stop, start([sys.executable, "-m", "broaden.cli", *command], env, work / log))
        backend_url = f"http://127.0.0.1:{backend_port}"
        wait_until(lambda: _healthy(backend_url), 120, "backend")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}, MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_')}"
        )
        print(
            "| tasks | initial pre-label sync (s) | label → queue reordered, median (max) s "
            "| label → job done, median s | stages of one sync (median s) |"
        )
        print("|---|---|---|---|---|")
        for n in args.sizes:
            t0 = time.time()
            project, ids = make_project(ls.api, n, demo, backend_url)
            first = wait_until(
                lambda project=project, n=n: (s := last_sync(r, project)).get("ranked", 0) >= n - 1 and s,
                3600,
                "initial sync",
                1.0,
            )
            initial = first["finished_at"] - t0
            rows = measure(ls.api, r, project, ids, items, args.repeats)
            reorder = [x["reordered_s"] for x in rows]
            stages = {k: round(statistics.median(x["stages"][k] for x in rows), 2) for k in rows[0]["stages"]}
            print(
                f"| {n} | {initial:.0f} | {statistics.median(reorder):.2f} ({max(reorder):.2f}) | "
                f"{statistics.median(x['done_s'] for x in rows):.2f} | {stages} |",
                flush=True,
            )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
