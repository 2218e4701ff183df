"""`broaden demo`: one command brings up Label Studio, Redis, the backend and a worker on the demo
set, the imported tasks get pre-labelled and ranked, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

from conftest import ROOT
from test_queue import FIELD, TAB

from backend.lab.labelstudio_server import DEFAULT_TOKEN, LabelStudioApi
from backend.lab.stack import READY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_one_command_demo_and_ctrl_c_stops_it_all(labelstudio, tmp_path):  # labelstudio: installed once
    ls_port, port = free_port(), free_port()
    cmd = [sys.executable, "-m", "broaden.cli", "demo", "--items", "8", "--dir", str(tmp_path),
           "--label-studio-port", str(ls_port), "--port", str(port)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BROADEN_TORCH_THREADS": "1"}
    demo = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in demo.stdout:  # until it says it is ready (or exits)
            lines.append(line)
            if READY in line:
                break
        assert READY in "".join(lines), "".join(lines)
        project = int(re.search(r"/projects/(\d+)/data", lines[-1]).group(1))
        api = LabelStudioApi(f"http://127.0.0.1:{ls_port}", DEFAULT_TOKEN)
        deadline = time.monotonic() + 300
        while True:  # the import's webhook reached the worker: every task pre-labelled and ranked
            tasks = api.list_tasks(project)
            if tasks and all(t["predictions"] and FIELD in t["data"] for t in tasks):
                break
            assert time.monotonic() < deadline, "the demo's tasks were not pre-labelled and ranked"
            time.sleep(2)
        assert len(tasks) == 8
        titles = [v["data"]["title"] for v in api.http.get("/api/dm/views", params={"project": project}).json()]
        assert titles == ["Default", TAB]
        api.close()
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        demo.wait(120)
    assert "broaden demo stopped" in demo.stdout.read()
    redis_port = int(re.search(r"Redis at redis://127\.0\.0\.1:(\d+)", "".join(lines)).group(1))
    assert not listening(ls_port) and not listening(port) and not listening(redis_port)
