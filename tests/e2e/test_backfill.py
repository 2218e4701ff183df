"""`broaden backfill` pre-labels and ranks tasks that were imported before broaden was connected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import ROOT
from test_predictions import CONFIG, import_demo
from test_queue import FIELD, sync_reports


def test_backfill_existing_tasks(labelstudio, backend, demo_dir):
    api = labelstudio.api
    project = api.create_project("broaden backfill", CONFIG)
    task_ids, _ = import_demo(api, project, demo_dir)  # no backend connected: no webhook, no predictions
    assert not any(t["predictions"] for t in api.list_tasks(project))

    worker = backend.start_worker()
    try:
        cmd = [sys.executable, "-m", "broaden.cli", "backfill", "--project", str(project), "--chunk", "5"]
        done = subprocess.run(cmd, env=backend.env, capture_output=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        assert "encoding project" in done.stderr.decode()  # the progress bar
        deadline = time.monotonic() + 180
        while True:
            tasks = api.list_tasks(project)
            if all(t["predictions"] and FIELD in t["data"] for t in tasks):
                break
            assert time.monotonic() < deadline, "backfill did not pre-label every task"
            time.sleep(1)
        # Resumable: a second run finds everything encoded and changes nothing it need not.
        again = subprocess.run(cmd, env=backend.env, capture_output=True, timeout=300, cwd=ROOT)
        assert again.returncode == 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    assert len(tasks) == len(task_ids)


def test_connecting_ranks_the_tasks_already_there(labelstudio, backend, demo_dir):
    """Tasks imported before the backend was connected are pre-labelled and ranked as soon as it
    is connected, without waiting for a label (or for `broaden backfill`)."""
    api = labelstudio.api
    project = api.create_project("broaden connect ranks", CONFIG)
    task_ids, _ = import_demo(api, project, demo_dir)
    api.connect_ml_backend(project, backend.url, "broaden")  # Label Studio calls /setup: the first one
    log = backend.run_worker(BROADEN_CONNECT_HEAD_TASKS="4")
    assert "project_connected" in log
    tasks = api.list_tasks(project)
    assert len(tasks) == len(task_ids) and all(t["predictions"] and FIELD in t["data"] for t in tasks)
    # The head first: 4 tasks encoded, then a sync ranked what was encoded (and one batch more)
    # while 12 waited; the sync after the encoding (and any follow-up) ranked all 16.
    ranked = [r["ranked"] for r in sync_reports(log)]
    assert 4 <= ranked[0] < len(task_ids) == ranked[-1], log[-3000:]
