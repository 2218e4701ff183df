"""Webhook acknowledgement latency under a burst, against the real `broaden serve` on loopback.

Label Studio waits 1 s for a webhook; broaden's handler validates, records the task ids as
hints and enqueues at most one sync per project. This sends a burst of ANNOTATION_CREATED
webhooks over several projects (sequential, then from several threads at once) and compares
with GET /health, the floor of the same server, measured interleaved in the same run.

    python benchmarks/webhook_ack.py --events 2000 --projects 20 --threads 4
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import redis
from common import free_port

ROOT = Path(__file__).resolve().parents[1]


def timed(client: httpx.Client, method: str, url: str, **kw) -> float:
    t = time.perf_counter()
    client.request(method, url, **kw).raise_for_status()
    return (time.perf_counter() - t) * 1000


def burst(url: str, events: int, projects: int, threads: int) -> tuple[list[float], list[float]]:
    def one(i: int, client: httpx.Client) -> tuple[float, float]:
        body = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": 1 + i % projects},
            "annotation": {"id": i, "task": 10_000 + i},
            "task": {"id": 10_000 + i},
        }
        return timed(client, "POST", url + "/webhook", json=body), timed(client, "GET", url + "/health")

    clients = [httpx.Client(timeout=10) for _ in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        pairs = list(pool.map(lambda i: one(i, clients[i % threads]), range(events)))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def pct(xs: list[float]) -> str:
    return f"{np.percentile(xs, 50):.2f} / {np.percentile(xs, 99):.2f} / {max(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    port, http_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="broaden-webhook-"))
    redis_proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "PYTHONPATH": str(ROOT),
        "BROADEN_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "broaden.cli", "serve", "--host", "127.0.0.1", "--port", str(http_port)],
        env=env,
        stdout=open(work / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        burst(url, 200, args.projects, 1)  # warm-up
        redis.Redis(port=port).flushdb()
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}"
        )
        print(
            "| client threads | webhooks | webhook p50 / p99 / max (ms) | GET /health p50 / p99 / max (ms) "
            "| sync jobs queued |"
        )
        print("|---|---|---|---|---|")
        for threads in (1, args.threads):
            r = redis.Redis(port=port)
            r.flushdb()
            hooks, health = burst(url, args.events, args.projects, threads)
            queued = r.llen("rq:queue:broaden")
            print(
                f"| {threads} | {args.events} over {args.projects} projects | {pct(hooks)} | {pct(health)} | {queued} |"
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        redis_proc.terminate()


if __name__ == "__main__":
    main()
