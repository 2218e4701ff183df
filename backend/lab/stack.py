"""`broaden demo`: the whole stack on this machine in one command, stopped by Ctrl-C.

It starts a private Redis, a real Label Studio 1.23.2 (in its own virtual environment, installed on
first use), `broaden serve` and one `broaden worker`; creates a project from label_config.xml,
connects the backend (which makes Label Studio call /setup and create the webhook), and imports the
demo set with its media uploaded to Label Studio. The import's webhook makes the worker pre-label
and rank every task. Ctrl-C (or SIGTERM) stops everything it started, Redis included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis

from backend.config import Settings
from backend.errors import BroadenError
from backend.lab.labelstudio_server import LabelStudioServer, can_tie_to_parent, die_with_parent, free_port, log_tail

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
READY = "broaden demo is ready"  # the line that says so (tests wait for it)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=48, help="demo listings to build and import (default 48)")
    p.add_argument("--label-studio-port", type=int, default=8080, help="Label Studio's port (default 8080)")
    p.add_argument("--port", type=int, default=9090, help="the backend's port (default 9090)")
    p.add_argument("--dir", type=Path, help="where the demo keeps its data (default: BROADEN_CACHE_DIR/demo)")


def run(args: argparse.Namespace, settings: Settings) -> None:
    # SIGTERM stops it like Ctrl-C, so everything it started is stopped; SIGINT is set too, since a
    # process started in the background inherits it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        _run(args, settings)
    except KeyboardInterrupt:
        pass
    _say("broaden demo stopped: Label Studio, the backend, the worker and Redis")


def _run(args: argparse.Namespace, settings: Settings) -> None:
    workdir = (args.dir or settings.cache_path / "demo").resolve()
    data = demo_data(workdir / f"data-{args.items}", args.items)
    shutil.rmtree(workdir / "labelstudio", ignore_errors=True)  # a fresh Label Studio every run
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis(workdir))
        _say(f"starting Label Studio on port {args.label_studio_port} (the first run installs it: a few minutes)")
        ls = stack.enter_context(LabelStudioServer(workdir / "labelstudio", port=args.label_studio_port))
        backend_url = f"http://127.0.0.1:{args.port}"
        env = {**os.environ, "REDIS_URL": redis_url, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token,
               "BROADEN_HOST": "127.0.0.1", "BROADEN_PORT": str(args.port)}  # fmt: skip
        _say("starting the backend and a worker (loading the encoders)")
        broaden = [sys.executable, "-m", "broaden.cli"]
        serve = stack.enter_context(process([*broaden, "serve"], env, workdir / "serve.log"))
        worker = stack.enter_context(process([*broaden, "worker"], env, workdir / "worker.log"))
        wait_healthy(backend_url, serve, workdir / "serve.log")
        project = set_up_project(ls, backend_url, data)
        _say(f"Redis at {redis_url} (its own, stopped with the demo), the backend at {backend_url}")
        _say(f"\n{READY}: open {ls.url}/projects/{project}/data and log in as {ls.username} / {ls.password}")
        _say("  the worker pre-labels and ranks the imported tasks now; open the tab 'broaden: most valuable first'")
        _say(f"  logs: {workdir}/serve.log, worker.log, labelstudio/labelstudio.log; Ctrl-C stops everything\n")
        wait_until_stopped([serve, worker], ls)


def demo_data(out: Path, items: int) -> Path:
    if not (out / "tasks.json").exists():
        from backend.lab.demo import build_demo

        _say(f"building {items} demo listings in {out} (speech synthesis: about a minute)")
        build_demo(out, n_items=items, seed=0)
    return out


def set_up_project(ls: LabelStudioServer, backend_url: str, data: Path) -> int:
    """Project, connection (and with it the webhook), then the import, whose webhook starts the work."""
    config = (ROOT / "label_config.xml").read_text()
    project = ls.api.create_project("broaden demo", config)
    ls.api.connect_ml_backend(project, backend_url, "broaden")
    tasks = json.loads((data / "tasks.json").read_text())
    media = [data / t["data"][key] for t in tasks for key in ("image", "audio")]
    uploaded = ls.api.upload_files(project, media)
    for t in tasks:
        for key in ("image", "audio"):
            t["data"][key] = uploaded[data / t["data"][key]]
    ls.api.import_tasks(project, tasks)
    return project


@contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A redis-server of our own on a free loopback port, without persistence; stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BroadenError("redis-server is not installed (./dev setup installs it)")
    port = free_port()
    flags = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    url = f"redis://127.0.0.1:{port}/0"
    with process([binary, *flags], None, workdir / "redis.log"):
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise BroadenError(f"redis-server did not answer on port {port}; see {workdir}/redis.log") from None
                time.sleep(0.1)
        client.close()
        yield url


@contextmanager
def process(cmd: list[str], env: dict[str, str] | None, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, logging to a file; the whole group is stopped on exit."""
    with log_path.open("ab") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent if can_tie_to_parent() else None)  # fmt: skip
    try:
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 600) -> None:
    """Until GET /health answers 200; an error with the end of the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BroadenError(f"the backend exited ({proc.returncode}); {log_path} ends:\n{log_tail(log_path, 20)}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise BroadenError(
        f"the backend did not answer /health in {timeout:g} s; {log_path} ends:\n{log_tail(log_path, 20)}"
    )


def wait_until_stopped(children: list[subprocess.Popen[bytes]], ls: LabelStudioServer) -> None:
    """Until Ctrl-C or SIGTERM (KeyboardInterrupt), or until a child dies: then say so and return,
    which stops the rest."""
    while all(c.poll() is None for c in children) and ls.running:
        time.sleep(1)
    _say("broaden demo: a process of the stack exited; stopping the rest (see the logs)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
