"""Bounded load and the worst requests, against the real `broaden serve` on loopback (RELIABILITY.md).

1. Worst requests: one /predict of eight 8000x8000 RGBA PNGs (the server's peak RSS before and
   after), and one of 64 tasks whose media answer after 14 s (its time against
   BROADEN_PREDICT_BUDGET_S, 60 s; Label Studio gives up at 100 s).
2. Webhooks at a steady rate (200/s for 60 s) over 20 connected projects: p50/p99, errors.
3. /predict batches of 100 demo tasks (media cached) from 4 clients at once: p50/p99, errors.

    python benchmarks/load.py
    python benchmarks/load.py --quick   # small and short: seconds once the server is up
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from common import MALLOC_ENV, ROOT, command_line, cpu_model, demo_set, free_port, out, own_redis, quick_demo
from PIL import Image
from webhook_ack import set_up

from backend.lab.stack import wait_healthy

CONFIG = (ROOT / "label_config.xml").read_text()
PROJECT = 100  # /predict's project (the webhook projects are 1-20, with a text-only config)
STATUS = collections.Counter()  # every response of the run, by status code ("error": no response)


def call(client: httpx.Client, method: str, url: str, **kw) -> tuple[float, int | str]:
    took, status, _ = answer(client, method, url, **kw)
    return took, status


def answer(client: httpx.Client, method: str, url: str, **kw) -> tuple[float, int | str, httpx.Response | None]:
    """(milliseconds, status or the error's name, the response)."""
    started = time.perf_counter()
    response = None
    try:
        response = client.request(method, url, **kw)
        status: int | str = response.status_code
    except httpx.HTTPError as e:
        status = type(e).__name__
    STATUS[status] += 1
    return (time.perf_counter() - started) * 1000, status, response


def predicted(response: httpx.Response | None) -> int:
    """How many tasks of a /predict answer got a prediction (the others: failed or left to a worker)."""
    return sum(bool(r["result"]) for r in response.json()["results"]) if response is not None else 0


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class _Slow(BaseHTTPRequestHandler):
    delay_s = 20.0
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        time.sleep(self.delay_s)
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        except OSError:
            pass  # broaden gave up first, as intended

    def log_message(self, *args: object) -> None:
        pass


def worst_requests(url: str, pid: int, tmp: Path, quick: bool, budget_s: float) -> None:
    side, count = (2000, 2) if quick else (8000, 8)
    for i in range(count):  # distinct files: the same one would be fetched and decoded once
        Image.new("RGBA", (side, side), (10 * i, 200, 10, 128)).save(tmp / f"huge-{i}.png")
    tasks = [{"id": i, "data": {"image": str(tmp / f"huge-{i}.png"), "caption": f"copy {i}"}} for i in range(count)]
    with httpx.Client(timeout=600) as client:
        before = peak_rss_mb(pid)
        took, status, response = answer(client, "POST", url + "/predict", json={"tasks": tasks, "project": PROJECT})
        after = peak_rss_mb(pid)
    out(f"| {count} RGBA PNGs of {side}x{side} in one /predict | {status}, {predicted(response)} predicted "
        f"| {took / 1000:.1f} s | peak RSS {before:.0f} -> {after:.0f} MiB (+{after - before:.0f}) |")  # fmt: skip

    # Just inside the media timeout (15 s): 8 at a time, 64 of them took 112 s before the budget held.
    _Slow.delay_s, n = (2.0, 24) if quick else (14.0, 64)
    buf = tmp / "small.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf)
    _Slow.body = buf.read_bytes()
    slow = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{slow.server_address[1]}"
    tasks = [{"id": 1000 + i, "data": {"image": f"{base}/{i}.png", "caption": "slow"}} for i in range(n)]
    with httpx.Client(timeout=600) as client:
        took, status, response = answer(client, "POST", url + "/predict", json={"tasks": tasks, "project": PROJECT})
    slow.shutdown()
    out(f"| {n} tasks whose media answer after {_Slow.delay_s:g} s | {status}, {predicted(response)} predicted "
        f"| {took / 1000:.1f} s | the rest left to a worker (budget {budget_s:g} s) |")  # fmt: skip


def webhooks(url: str, rate: float, seconds: float, projects: int) -> None:
    total = int(rate * seconds)
    client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32))
    results: list[tuple[float, int | str]] = []

    def one(i: int) -> None:
        body = {"action": "ANNOTATION_CREATED", "project": {"id": 1 + i % projects},
                "annotation": {"id": i, "task": 10_000 + i}}  # fmt: skip
        results.append(call(client, "POST", url + "/webhook", json=body))

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        for i in range(total):  # open loop: each is sent on schedule, whatever the others do
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
            pool.submit(one, i)
    elapsed = time.perf_counter() - started
    client.close()
    ms = [t for t, _ in results]
    bad = sum(1 for _, s in results if not (isinstance(s, int) and s < 400))
    out(f"| webhooks, {rate:g}/s for {seconds:g} s over {projects} projects | {len(results)} sent in {elapsed:.1f} s "
        f"| {np.percentile(ms, 50):.1f} / {np.percentile(ms, 99):.1f} ms | {bad} errors |")  # fmt: skip


def predict_batches(url: str, demo_dir: Path, batch: int, clients: int, rounds: int) -> None:
    import json

    records = [json.loads(line) for line in (demo_dir / "manifest.jsonl").read_text().splitlines()][:batch]
    tasks = [{"id": 5000 + i, "data": {"image": str(demo_dir / r["image"]), "audio": str(demo_dir / r["audio"]),
              "caption": r["text"]}} for i, r in enumerate(records)]  # fmt: skip
    with httpx.Client(timeout=600) as warm:  # encode once: what follows measures cached requests
        call(warm, "POST", url + "/predict", json={"tasks": tasks, "project": PROJECT})

    def client_run(_: int) -> list[tuple[float, int | str]]:
        with httpx.Client(timeout=600) as client:
            return [
                call(client, "POST", url + "/predict", json={"tasks": tasks, "project": PROJECT}) for _ in range(rounds)
            ]

    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client_run, range(clients)) for r in rs]
    ms = [t for t, _ in results]
    bad = sum(1 for _, s in results if s != 200)
    out(f"| /predict, {batch}-task batches, {clients} clients x {rounds} | {len(results)} requests "
        f"| {np.percentile(ms, 50):.0f} / {np.percentile(ms, 99):.0f} ms | {bad} errors |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small inputs, seconds of load")
    args = ap.parse_args(argv)
    demo_dir = quick_demo() if args.quick else demo_set(Path(tempfile.gettempdir()) / "broaden-bench-demo", 100)
    port = free_port()
    budget_s = 4 if args.quick else 60
    with tempfile.TemporaryDirectory(prefix="broaden-load-") as tmp, own_redis(Path(tmp)) as redis_url:
        env = {**os.environ, **MALLOC_ENV, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
               "BROADEN_LOG_LEVEL": "WARNING", "BROADEN_MEDIA_ROOTS": f"{demo_dir}:{tmp}",
               "BROADEN_MEDIA_HOSTS": "127.0.0.1", "BROADEN_PREDICT_BUDGET_S": str(budget_s)}  # fmt: skip
        log = Path(tmp) / "serve.log"
        with log.open("wb") as sink:
            cmd = [sys.executable, "-m", "broaden.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
            server = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, server, log)
            with httpx.Client(timeout=60) as client:
                client.post(url + "/setup", json={"project": PROJECT, "schema": CONFIG}).raise_for_status()
            set_up(url, 20)
            out(f"machine: {cpu_model()}, {os.cpu_count()} cores; {command_line('load.py', argv)}")
            out("| request | answered | time | result |")
            out("|---|---|---|---|")
            worst_requests(url, server.pid, Path(tmp), args.quick, budget_s)
            out()
            out("| load | requests | p50 / p99 | errors (non-2xx or no answer) |")
            out("|---|---|---|---|")
            webhooks(url, rate=50 if args.quick else 200, seconds=2 if args.quick else 60, projects=20)
            batch, clients, rounds = (16, 2, 1) if args.quick else (100, 4, 5)
            predict_batches(url, demo_dir, batch, clients, rounds)
            out()
            five = sum(n for s, n in STATUS.items() if isinstance(s, int) and s >= 500)
            out(f"responses by status: {dict(STATUS)}; 5xx: {five}; server still up: {server.poll() is None}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
