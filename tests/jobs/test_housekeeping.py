"""A worker's housekeeping with a real Redis and real RQ workers: retries re-queued by the scheduler
thread, abandoned jobs found, connected projects reconciled, nothing left behind by a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq.job import JobStatus
from rq.scheduler import RQScheduler

from backend.queue import producer, spec
from backend.store.state import ProjectMirror, ProjectState
from workers import housekeeping
from workers.housekeeping import Housekeeper, Worker

ROOT = Path(__file__).resolve().parents[2]


def wait_for(check, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_the_scheduler_thread_requeues_due_retries(r):
    q = producer.queue(r)
    job = q.enqueue_in(timedelta(seconds=1), "time.sleep", 0)
    keeper = Housekeeper(r, q, reconcile_s=0, name="test")
    keeper.tick()  # takes the scheduler lock; the job is not due yet
    assert r.get(RQScheduler.get_locking_key(q.name)) and job.get_status() == JobStatus.SCHEDULED
    wait_for(lambda: (keeper.tick(), job.get_status() == JobStatus.QUEUED)[1], "the job to be due")
    keeper.scheduler.release_locks()
    assert not r.exists(RQScheduler.get_locking_key(q.name))


def test_a_running_job_keeps_a_short_heartbeat(r, monkeypatch):
    monkeypatch.setattr(housekeeping, "HEARTBEAT_S", 0.2)
    q = producer.queue(r)
    job = q.enqueue("time.sleep", 1.5, retry=spec.RETRY)
    worker = Worker([q], connection=r, serializer=q.serializer)
    registry, seen, done = q.started_job_registry, set(), threading.Event()

    def watch() -> None:  # the registry's expiry times for the job while it runs
        while not done.is_set():
            seen.update(score for _, score in r.zrange(registry.key, 0, -1, withscores=True))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.time()
    worker.work(burst=True)  # RQ's worker wants the main thread (signal handlers)
    done.set()
    watcher.join()
    assert job.get_status() == JobStatus.FINISHED
    assert len(seen) >= 2, seen  # renewed while it ran
    assert max(seen) - started < 90  # the job timeout is an hour: SimpleWorker's own would be 3660 s


def test_reconcile_syncs_every_connected_project_once_per_period(r):
    for project in (3, 4):
        ProjectState(r, project).mark_connected()
    assert housekeeping.reconcile(r, every_s=600) == [3, 4]
    assert sorted(j.kwargs["project_id"] for j in producer.queue(r).get_jobs()) == [3, 4]
    assert ProjectMirror(r, 3).hints() == ([], True, False)
    assert housekeeping.reconcile(r, every_s=600) == []  # another worker already did, this period


def test_a_killed_workers_job_is_found_and_retried_and_nothing_is_left_behind(r, redis_url):
    """The scheduler runs in a thread of the worker: SIGKILL to the worker ends all of it. Its job's
    heartbeat lapses within HEARTBEAT_S + 60 s, and the housekeeping sweep hands it to its retries."""
    q = producer.queue(r)
    job = q.enqueue("time.sleep", 600, retry=spec.RETRY)
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "BROADEN_TORCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "broaden.cli", "worker", "--name", "doomed"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    registry, lock = q.started_job_registry, RQScheduler.get_locking_key(spec.QUEUE)
    try:
        running = lambda: r.get(lock) == b"doomed-scheduler" and job.get_status() == JobStatus.STARTED  # noqa: E731
        wait_for(lambda: running() or proc.poll() is not None, "the worker to run the job")
        assert proc.poll() is None, "the worker exited"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # no process is left in its group
        assert r.ttl(lock) <= 61  # and the scheduler lock it held lapses within a minute
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (member, expires), *_ = r.zrange(registry.key, 0, -1, withscores=True)
    assert expires - time.time() <= housekeeping.HEARTBEAT_S + 60
    r.zadd(registry.key, {member: time.time() - 1})  # as it will be, a minute and a bit later
    Housekeeper(r, q, reconcile_s=0, name="test").tick()
    assert job.id not in registry.get_job_ids(cleanup=False)
    job.refresh()
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == spec.RETRY.max - 1


def test_metrics_report_requests_queue_jobs_and_projects(r, redis_url, encoders):
    import json

    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from backend.config import Settings
    from backend.runtime import Runtime
    from backend.store import keys
    from backend.store.keys import Value
    from backend.web.app import create_app

    q = producer.queue(r)
    q.enqueue("time.sleep", 0)
    q.enqueue("builtins.int", "not a number")  # fails: no retry given
    Worker([q], connection=r, serializer=q.serializer).work(burst=True)
    q.enqueue("time.sleep", 0)  # waits in the queue
    r.set(keys.project(3, Value.LAST_SYNC), json.dumps({"ranked": 42, "model_version": "v1", "finished_at": 1.0}))
    settings = Settings(redis_url=redis_url)
    with TestClient(create_app(settings, Runtime.build(settings, r, encoders))) as client:
        for _ in range(3):
            client.get("/health")
        text = client.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    health = (("endpoint", "/health"), ("method", "GET"), ("status", "200"))
    assert samples[("broaden_http_request_duration_seconds_count", health)] == 3
    assert samples[("broaden_queue_jobs", (("state", "queued"),))] == 1
    assert samples[("broaden_queue_jobs", (("state", "failed"),))] == 1
    assert samples[("broaden_job_duration_seconds_count", (("kind", "sleep"),))] == 1
    assert samples[("broaden_job_failures_total", (("kind", "int"),))] == 1
    assert samples[("broaden_job_failures_total", (("kind", "sleep"),))] == 0
    assert samples[("broaden_tasks_ranked", (("project", "3"),))] == 42
