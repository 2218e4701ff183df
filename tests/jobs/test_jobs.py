"""Enqueueing, coalescing and retries with a real Redis and real RQ workers."""

from __future__ import annotations

import socket

import pytest
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from backend.schemas import WebhookRequest
from backend.state import ProjectMirror
from workers import enqueue


def event(action: str, project: int, **payload) -> WebhookRequest:
    return WebhookRequest.model_validate({"action": action, "project": {"id": project}, **payload})


def test_a_burst_of_200_annotations_queues_one_sync_per_project(r):
    for i in range(200):
        for project in (1, 2, 3):
            enqueue.event(r, event("ANNOTATION_CREATED", project, annotation={"id": i, "task": 1000 + i}))
    jobs = enqueue.queue(r).get_jobs()
    assert sorted(j.kwargs["project_id"] for j in jobs) == [1, 2, 3]
    dirty, full, retrain = ProjectMirror(r, 2).hints()
    assert dirty == list(range(1000, 1200)) and not full and not retrain


def test_hints_by_event(r):
    enqueue.event(r, event("TASKS_CREATED", 5, tasks=[{"id": 7}, {"id": 8}]))
    enqueue.event(r, event("ANNOTATIONS_DELETED", 5, annotations=[{"id": 3}]))
    enqueue.event(r, event("START_TRAINING", 5))
    assert ProjectMirror(r, 5).hints() == ([7, 8], True, True)
    assert enqueue.event(r, event("PROJECT_CREATED", 6)) is None
    assert enqueue.event(r, event("ANNOTATION_CREATED", 6, annotation={"task": "1; drop"})) is not None
    assert ProjectMirror(r, 6).hints() == ([], True, False)  # no usable id: re-read everything


def test_hints_handled_by_a_run_are_cleared_and_later_ones_kept(r):
    mirror = ProjectMirror(r, 9)
    mirror.add_hints([1, 2], full=True)
    seen = mirror.hints()
    mirror.add_hints([3])
    mirror.clear_hints(*seen)
    assert mirror.hints() == ([3], False, False)


@pytest.fixture
def dead_label_studio(monkeypatch):
    """Label Studio is down: a port on loopback where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-real-token")
    from backend.config import get_settings
    from workers import runtime

    get_settings.cache_clear()
    runtime.predictor.cache_clear()
    yield
    get_settings.cache_clear()
    runtime.predictor.cache_clear()


def test_transient_failure_retries_with_backoff_then_lands_in_failed_registry(
    r, redis_url, monkeypatch, dead_label_studio, encoders
):
    from workers import runtime

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setattr(runtime, "load_encoders", lambda settings: encoders, raising=False)
    job_id = enqueue.sync(r, 4)
    q = enqueue.queue(r)
    SimpleWorker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED  # waits 5 s, then 20, 60, 180
    assert job.retries_left == enqueue.RETRY.max - 1
    # Exhaust the retries: the last failure stays in the failed registry with its reason.
    job.retries_left = 0
    job.save()
    q.enqueue_job(job)
    SimpleWorker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    assert job_id in q.failed_job_registry.get_job_ids(cleanup=False)
    assert "LabelStudioUnavailable" in Job.fetch(job_id, connection=r, serializer=JSONSerializer).exc_info


def test_one_projects_lock_does_not_hold_up_another(r, redis_url, monkeypatch, dead_label_studio, encoders):
    import time

    from workers import runtime

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setattr(runtime, "load_encoders", lambda settings: encoders, raising=False)
    held = r.lock("broaden:p:1:lock", timeout=120)
    assert held.acquire(blocking=False)  # project 1 is busy (say, a long sync on another host)
    enqueue.sync(r, 1)
    job_2 = enqueue.sync(r, 2)
    q = enqueue.queue(r)
    started = time.monotonic()
    SimpleWorker([q], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=1)  # project 2 first
    assert time.monotonic() - started < 30
    job = Job.fetch(job_2, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED  # it ran at once, met the dead Label Studio, will retry
    assert [j.kwargs["project_id"] for j in q.get_jobs()] == [1]  # project 1's sync still waits its turn
    held.release()
