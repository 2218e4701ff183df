"""Webhook acknowledgement latency under a burst, against the real `broaden serve` on loopback.

Label Studio waits 1 s for a webhook; broaden's handler validates, records the task ids as
hints and enqueues at most one sync per project. This sends a burst of ANNOTATION_CREATED
webhooks over several projects (sequential, then from several threads at once) and compares
with GET /health, the floor of the same server, measured interleaved in the same run.

    python benchmarks/webhook_ack.py --events 2000 --projects 20 --threads 4
    ./dev run python benchmarks/webhook_ack.py --quick   # bursts of 20: seconds once the server is up
"""

from __future__ import annotations

import argparse
import os
import platform
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
from common import free_port, own_redis

from backend.lab.stack import wait_healthy
from backend.queue.producer import queue

ROOT = Path(__file__).resolve().parents[1]


def timed(client: httpx.Client, method: str, url: str, **kw) -> float:
    t = time.perf_counter()
    client.request(method, url, **kw).raise_for_status()
    return (time.perf_counter() - t) * 1000


# Webhooks count only for projects Label Studio has set up with the backend: /setup each one first.
LABEL_CONFIG = (
    '<View><Text name="t" value="$t"/>'
    '<Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/></Choices></View>'
)


def set_up(url: str, projects: int) -> None:
    with httpx.Client(timeout=30) as client:
        for project in range(1, projects + 1):
            client.post(url + "/setup", json={"project": project, "schema": LABEL_CONFIG}).raise_for_status()


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
    try:
        with ThreadPoolExecutor(threads) as pool:
            pairs = list(pool.map(lambda i: one(i, clients[i % threads]), range(events)))
    finally:
        for client in clients:
            client.close()
    return [p[0] for p in pairs], [p[1] for p in pairs]


def pct(xs: list[float]) -> str:
    return f"{np.percentile(xs, 50):.2f} / {np.percentile(xs, 99):.2f} / {max(xs):.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, help="webhooks per burst (default 2000; --quick: 20)")
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="bursts of 20 webhooks, a short warm-up")
    args = ap.parse_args(argv)
    args.events = args.events or (20 if args.quick else 2000)
    warm_up = 20 if args.quick else 200
    http_port = free_port()
    with tempfile.TemporaryDirectory(prefix="broaden-webhook-") as tmp, own_redis(Path(tmp)) as redis_url:
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "BROADEN_LOG_LEVEL": "WARNING"}
        log = Path(tmp) / "serve.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "broaden.cli", "serve", "--host", "127.0.0.1", "--port", str(http_port)],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{http_port}"
        try:
            wait_healthy(url, server, log)
            set_up(url, args.projects)
            burst(url, warm_up, args.projects, 1)
            r = redis.Redis.from_url(redis_url)
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
                r.flushdb()
                set_up(url, args.projects)
                hooks, health = burst(url, args.events, args.projects, threads)
                queued = queue(r).count
                print(
                    f"| {threads} | {args.events} over {args.projects} projects | {pct(hooks)} | {pct(health)} "
                    f"| {queued} |"
                )
            r.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
