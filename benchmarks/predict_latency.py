"""Latency of `POST /predict` on the real backend, over loopback HTTP.

Starts its own redis-server (unless --redis-url is given) and `python -m broaden.cli serve`
in a subprocess, builds (or reuses) a demo set, then times batches of 1 and 100 tasks:

  uncached  every cached encoder output (keys.feature_patterns()) is deleted before each
            repetition, so every media item is fetched, decoded and encoded again (project
            state is kept);
  cached    the same request again, all features already in Redis.

Cached requests are also timed against a trained model (fitted in this process on demo labels,
stored in Redis, loaded by the server on its first request) unless --train-items 0.

    PYTHONPATH=. python benchmarks/predict_latency.py
    ./dev run python benchmarks/predict_latency.py --quick   # batches of 4, a rep each: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from common import (
    MALLOC_ENV,
    ROOT,
    clear_feature_cache,
    code_version,
    command_line,
    cpu_model,
    demo_set,
    ensure_malloc_env,
    free_port,
    out,
    own_redis,
    quick_demo,
)

from backend.store import keys

PROJECT = "1.1700000000"  # Label Studio's "<id>.<created>" form
TRAINED_PROJECT = 2
GOAL_MS = 100.0
DEMO_DIR = Path(tempfile.gettempdir()) / "broaden-bench-demo"
# Options left unset take these values (the quick demo set has 16 items).
FULL = dict(items=120, batch=100, reps_cached=20, reps_uncached_1=5, reps_uncached_batch=3, train_items=48)
QUICK = dict(items=8, batch=4, reps_cached=2, reps_uncached_1=1, reps_uncached_batch=1, train_items=8)
# The handler logs one line per request; its time excludes HTTP, parsing and serialisation.
HANDLER_RE = re.compile(r"predict project=\S+ tasks=(\d+) empty=(\d+) deferred=\d+ in ([0-9.]+)s")


@dataclass
class Scenario:
    name: str
    n_tasks: int
    seconds: list[float]
    handler_s: list[float]


# ---------------------------------------------------------------- environment


def machine_lines(load_start: float) -> list[str]:
    import torch

    cpu = cpu_model()
    malloc = " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in MALLOC_ENV)
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- Python {platform.python_version()}, torch {torch.__version__}, {platform.system()} {platform.release()}",
        f"- code: git {code_version()}",
        # Other work on the machine shows here; its noise is why comparisons are made within one run.
        f"- load average (1 min) at start / end of the run: {load_start:.2f} / {os.getloadavg()[0]:.2f}",
        f"- malloc env (this process and the backend server): {malloc}",
    ]


def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused, etc.
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout_s:g}s")


@contextmanager
def backend_server(port: int, redis_url: str, media_root: Path, log_path: Path) -> Iterator[str]:
    """`python -m broaden.cli serve` in a subprocess; yields its base URL once /health answers."""
    env = {
        **os.environ,
        **MALLOC_ENV,
        "REDIS_URL": redis_url,
        "BROADEN_MEDIA_ROOTS": str(media_root),
        "BROADEN_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
    }
    for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        env.pop(key, None)  # a plain local backend: no auth, no Label Studio round trips
    cmd = [sys.executable, "-m", "broaden.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"the backend exited with {proc.returncode}; see {log_path}")
            return httpx.get(base + "/health", timeout=2).status_code == 200

        wait_until(up, 300, "the backend")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------- demo data


def demo_tasks(demo_dir: Path) -> list[dict[str, Any]]:
    """Label Studio-style tasks with absolute media paths, plus each item's labels."""
    tasks = []
    for i, line in enumerate((demo_dir / "manifest.jsonl").read_text().splitlines(), start=1):
        rec = json.loads(line)
        data = {
            "image": str(demo_dir / rec["image"]),
            "caption": rec["text"],
            "audio": str(demo_dir / rec["audio"]),
        }
        tasks.append({"id": i, "data": data, "label": rec["label"]})
    return tasks


def wire(task: dict[str, Any]) -> dict[str, Any]:
    return {"id": task["id"], "data": task["data"]}


# ---------------------------------------------------------------- trained model


def annotated(task: dict[str, Any]) -> dict[str, Any]:
    label = task["label"]
    result = [
        {
            "from_name": "category",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label["category"]]},
        },
        {
            "from_name": "policy",
            "to_name": "voiceover",
            "type": "choices",
            "value": {"choices": [label["policy"]]},
        },
    ]
    return {**wire(task), "annotations": [{"id": task["id"], "result": result}]}


def fit_model(redis_url: str, demo_dir: Path, tasks: list[dict[str, Any]], config_xml: str) -> str | None:
    """Train the project's model here, as a worker would, so the server only has to load it; its
    model version (None if nothing could be trained)."""
    from backend.config import Settings
    from backend.model.encoders import load_encoders
    from backend.model.predictor import Predictor

    settings = Settings(redis_url=redis_url, media_roots=str(demo_dir))
    r = redis.Redis.from_url(redis_url)
    fitted = Predictor(settings, load_encoders(settings), r).fit(
        TRAINED_PROJECT, [annotated(t) for t in tasks], config_xml
    )
    r.close()
    return fitted.version


# ---------------------------------------------------------------- measuring


class Timer:
    """POSTs /predict and pairs each request's wall time with the handler time the server logged."""

    def __init__(self, client: httpx.Client, log_path: Path, config_xml: str):
        self.client, self.log_path, self.config_xml = client, log_path, config_xml
        self._log_pos = 0

    def post(self, tasks: list[dict[str, Any]], project: Any) -> tuple[float, float | None]:
        body = {"tasks": [wire(t) for t in tasks], "project": project, "label_config": self.config_xml}
        started = time.perf_counter()
        resp = self.client.post("/predict", json=body)
        elapsed = time.perf_counter() - started
        resp.raise_for_status()
        results = resp.json()["results"]
        if len(results) != len(tasks) or not all(res["result"] for res in results):
            raise RuntimeError(f"bad /predict answer: {len(results)} results for {len(tasks)} tasks, some empty")
        return elapsed, self._handler_time(len(tasks))

    def _handler_time(self, n_tasks: int) -> float | None:
        # The log line is written before the response is sent, so it is there by now.
        with self.log_path.open() as fh:
            fh.seek(self._log_pos)
            text = fh.read()
            self._log_pos = fh.tell()
        found = [float(m.group(3)) for m in HANDLER_RE.finditer(text) if int(m.group(1)) == n_tasks]
        return found[-1] if found else None


def run_uncached(timer: Timer, r: redis.Redis, tasks: list[dict[str, Any]], n: int, reps: int) -> Scenario:
    sc = Scenario(f"uncached, {n} task{'s' if n > 1 else ''}", n, [], [])
    for rep in range(reps):
        clear_feature_cache(r)
        start = (rep * n) % max(1, len(tasks) - n + 1)  # different items each time where there are enough
        took, handler = timer.post(tasks[start : start + n], PROJECT)
        sc.seconds.append(took)
        sc.handler_s += [handler] if handler is not None else []
    return sc


def run_cached(timer: Timer, cases: list[tuple[str, list[dict[str, Any]], Any]], reps: int) -> list[Scenario]:
    """cases: (label, tasks, project). Round-robin over the cases, so a slow phase hits them all."""
    for _, tasks, project in cases:
        timer.post(tasks, project)  # fills the cache (and loads a trained model) outside the timing
    scenarios = [
        Scenario(f"cached, {len(t)} task{'s' if len(t) > 1 else ''}{label}", len(t), [], []) for label, t, _ in cases
    ]
    for _ in range(reps):
        for sc, (_, tasks, project) in zip(scenarios, cases, strict=True):
            took, handler = timer.post(tasks, project)
            sc.seconds.append(took)
            sc.handler_s += [handler] if handler is not None else []
    return scenarios


# ---------------------------------------------------------------- report


def table(scenarios: list[Scenario]) -> list[str]:
    rows = [
        "| scenario | reps | p50 ms | p90 ms | max ms | per task ms (p50) | handler p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenarios:
        ms = np.array(sc.seconds) * 1000
        p50, p90 = np.percentile(ms, 50), np.percentile(ms, 90)
        handler = f"{statistics.median(sc.handler_s) * 1000:.1f}" if sc.handler_s else "n/a"
        rows.append(
            f"| {sc.name} | {len(ms)} | {p50:.1f} | {p90:.1f} | {ms.max():.1f} | {p50 / sc.n_tasks:.2f} | {handler} |"
        )
    return rows


def verdict(scenarios: list[Scenario]) -> str:
    cached = [sc for sc in scenarios if sc.name.startswith("cached") and sc.n_tasks >= 100]
    parts = [f"{sc.name}: p50 {np.percentile(sc.seconds, 50) * 1000:.1f} ms" for sc in cached]
    ok = all(np.percentile(sc.seconds, 50) * 1000 < GOAL_MS for sc in cached)
    status = "met" if ok else "NOT met"
    return f"Goal (100 cached tasks under {GOAL_MS:.0f} ms, p50): {status} ({'; '.join(parts)})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--demo-dir",
        type=Path,
        help=f"demo set to use, built there if missing or too small (default {DEMO_DIR}; --quick: a small one)",
    )
    p.add_argument("--items", type=int, help="demo items, at least the big batch (default 120)")
    p.add_argument("--batch", type=int, help="the big batch size (default 100)")
    p.add_argument("--reps-cached", type=int, help="default 20")
    p.add_argument("--reps-uncached-1", type=int, help="default 5")
    p.add_argument("--reps-uncached-batch", type=int, help="default 3")
    p.add_argument("--train-items", type=int, help="items to fit a model on, 0: skip trained runs (default 48)")
    p.add_argument("--redis-url", help="use this Redis instead of a private one (its broaden feature keys are deleted)")
    p.add_argument("--port", type=int, default=0, help="backend port (default: a free one)")
    p.add_argument("--server-log", type=Path, help="where the backend logs (default: in a temp dir)")
    p.add_argument("--quick", action="store_true", help="a small demo set, batches of 4, one or two reps each")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.quick:
        args.demo_dir = args.demo_dir or DEMO_DIR
    return args


def measure(args: argparse.Namespace, redis_url: str, log_path: Path) -> list[Scenario]:
    demo_dir = demo_set(args.demo_dir.resolve(), max(args.items, args.batch)) if args.demo_dir else quick_demo()
    tasks = demo_tasks(demo_dir)
    config_xml = (demo_dir / "label_config.xml").read_text()
    r = redis.Redis.from_url(redis_url)
    version = fit_model(redis_url, demo_dir, tasks[: args.train_items], config_xml) if args.train_items else None
    port = args.port or free_port()
    with (
        backend_server(port, redis_url, demo_dir, log_path) as base,
        httpx.Client(base_url=base, timeout=600) as client,
    ):
        timer = Timer(client, log_path, config_xml)
        timer.post(tasks[:2], PROJECT)  # first request: label vectors, lazy imports, torch warm-up
        big = tasks[: args.batch]
        scenarios = [
            run_uncached(timer, r, tasks, 1, args.reps_uncached_1),
            run_uncached(timer, r, tasks, args.batch, args.reps_uncached_batch),
        ]
        cases = [(" (zero-shot)", tasks[:1], PROJECT), (" (zero-shot)", big, PROJECT)]
        if version:
            cases += [(" (trained)", tasks[:1], TRAINED_PROJECT), (" (trained)", big, TRAINED_PROJECT)]
        scenarios += run_cached(timer, cases, args.reps_cached)
    r.close()
    return scenarios


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with tempfile.TemporaryDirectory(prefix="broaden-bench-") as tmp:
        log_path = args.server_log or Path(tmp) / "server.log"
        if args.redis_url:
            scenarios = measure(args, args.redis_url, log_path)
        else:
            with own_redis(Path(tmp)) as url:
                scenarios = measure(args, url, log_path)
    out("\n## /predict latency\n")
    out("\n".join(machine_lines(load_start)))
    out(f"- command: `{command_line(__file__, argv)}`")
    cached = " and ".join(keys.feature_patterns())
    out(f"- uncached: {cached} deleted before each repetition; cached: the same request repeated")
    out(
        "- wall time of the HTTP request (httpx, keep-alive, loopback); handler = time the server logged "
        "for Predictor.predict (excludes request parsing and response serialisation)\n"
    )
    out("\n".join(table(scenarios)))
    out("\n" + verdict(scenarios))


if __name__ == "__main__":
    ensure_malloc_env()  # the client's allocator matters less, but keep both processes alike
    main()
