"""Enqueueing, coalescing and retries with a real Redis and real RQ workers."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.queue import producer, spec
from backend.runtime import Runtime
from backend.store import keys
from backend.store.keys import Value
from backend.store.state import ProjectMirror
from backend.web.schemas import WebhookRequest
from workers import runtime
from workers.housekeeping import Worker  # the worker `broaden worker` runs


def event(r, action: str, project: int, **payload) -> str | None:
    """A webhook payload through the web side's parsing, into the producer."""
    body = WebhookRequest.model_validate({"action": action, "project": {"id": project}, **payload})
    return producer.event(r, body.action, body.project, body.task_ids())


def test_a_burst_of_200_annotations_queues_one_sync_per_project(r):
    for i in range(200):
        for project in (1, 2, 3):
            event(r, "ANNOTATION_CREATED", project, annotation={"id": i, "task": 1000 + i})
    jobs = producer.queue(r).get_jobs()
    assert sorted(j.kwargs["project_id"] for j in jobs) == [1, 2, 3]
    dirty, full, retrain = ProjectMirror(r, 2).hints()
    assert dirty == list(range(1000, 1200)) and not full and not retrain


def test_hints_by_event(r):
    event(r, "TASKS_CREATED", 5, tasks=[{"id": 7}, {"id": 8}])
    event(r, "ANNOTATIONS_DELETED", 5, annotations=[{"id": 3}])
    event(r, "START_TRAINING", 5)
    assert ProjectMirror(r, 5).hints() == ([7, 8], True, True)
    assert event(r, "PROJECT_CREATED", 6) is None
    assert event(r, "ANNOTATION_CREATED", 6, annotation={"task": "1; drop"}) is not None
    assert ProjectMirror(r, 6).hints() == ([], True, False)  # no usable id: re-read everything


def test_hints_handled_by_a_run_are_cleared_and_later_ones_kept(r):
    mirror = ProjectMirror(r, 9)
    mirror.add_hints([1, 2], full=True)
    seen = mirror.hints()
    mirror.add_hints([3])
    mirror.clear_hints(*seen)
    assert mirror.hints() == ([3], False, False)


def test_hints_are_capped_and_expire(r):
    from backend.store import keys

    mirror = ProjectMirror(r, 9)
    mirror.add_hints(list(range(keys.MAX_HINTED_TASKS - 10)))
    mirror.add_hints(list(range(10**6, 10**6 + 100)))  # past the cap: the whole project is re-read instead
    assert mirror.hints() == ([], True, False)
    mirror.add_hints([1], retrain=True)
    assert 0 < r.ttl(keys.project(9, keys.Value.DIRTY)) <= keys.HINT_TTL_S
    assert 0 < r.ttl(keys.project(9, keys.Value.FULL)) <= keys.HINT_TTL_S
    assert 0 < r.ttl(keys.project(9, keys.Value.RETRAIN)) <= keys.HINT_TTL_S


@pytest.fixture
def dead_label_studio(r, encoders):
    """Jobs in this process run with a Label Studio that is down: a port on loopback where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(label_studio_url=f"http://127.0.0.1:{port}", label_studio_api_key="not-a-real-token")
    with runtime.installed(Runtime.build(settings, r, encoders)) as rt:
        yield rt


def test_transient_failure_retries_with_backoff_then_lands_in_failed_registry(r, dead_label_studio):
    job_id = producer.sync(r, 4)
    q = producer.queue(r)
    Worker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED  # waits 5 s, then 20, 60, 180
    assert job.retries_left == spec.RETRY.max - 1
    # Exhaust the retries: the last failure stays in the failed registry with its reason.
    job.retries_left = 0
    job.save()
    q.enqueue_job(job)
    Worker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    assert job_id in q.failed_job_registry.get_job_ids(cleanup=False)
    assert "LabelStudioUnavailable" in Job.fetch(job_id, connection=r, serializer=JSONSerializer).exc_info


def test_a_refusal_from_label_studio_is_not_retried(r, encoders):
    """A 4xx (here: every path is a 404, as for a deleted project) fails the job at once."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"detail": "Not found."}')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(label_studio_url=f"http://127.0.0.1:{server.server_address[1]}", label_studio_api_key="k")
    try:
        with runtime.installed(Runtime.build(settings, r, encoders)):
            job_id = producer.sync(r, 4)
            q = producer.queue(r)
            Worker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    finally:
        server.shutdown()
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED and job_id in q.failed_job_registry.get_job_ids(cleanup=False)
    assert "LabelStudioRefused" in job.exc_info and "HTTP 404" in job.exc_info


def test_one_projects_lock_does_not_hold_up_another(r, dead_label_studio):
    # No clock here (a busy machine breaks any bound): had the worker taken project 1's sync first,
    # it would wait out this lock (120 s) and leave project 2's sync queued, failing the checks below.
    held = r.lock(keys.project(1, Value.LOCK), timeout=120)
    assert held.acquire(blocking=False)  # project 1 is busy (say, a long sync on another host)
    producer.sync(r, 1)
    job_2 = producer.sync(r, 2)
    q = producer.queue(r)
    Worker([q], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=1)  # project 2 first
    job = Job.fetch(job_2, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED  # it ran at once, met the dead Label Studio, will retry
    assert [j.kwargs["project_id"] for j in q.get_jobs()] == [1]  # project 1's sync still waits its turn
    held.release()


def test_backfill_chunks_are_queued_once_retried_and_requeued_after_failing(r, dead_label_studio):
    first = producer.encode(r, 3, [1, 2, 3])
    assert producer.encode(r, 3, [1, 2, 3]) == first  # a re-run finds it queued
    q = producer.queue(r)
    assert [j.id for j in q.get_jobs()] == [first]
    Worker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    job = Job.fetch(first, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == spec.RETRY.max - 1  # Label Studio is down
    job.retries_left = 0
    job.save()
    q.enqueue_job(job)
    Worker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    assert first in q.failed_job_registry.get_job_ids(cleanup=False)
    producer.encode(r, 3, [1, 2, 3])  # the next backfill run tries the failed chunk again
    assert [j.id for j in q.get_jobs()] == [first]


def test_status_shows_whole_failure_reasons_and_projects_with_only_failures(r, redis_url, monkeypatch, capsys):
    from broaden import cli

    q = producer.queue(r)
    reason = "Label Studio said: " + " ".join(f"word{i}" for i in range(60)) + " the end"
    q.enqueue("builtins.exec", f"raise RuntimeError({reason!r})", job_id="sync-p7-deadbeef")
    Worker([q], connection=r, serializer=JSONSerializer).work(burst=True)
    monkeypatch.setenv("REDIS_URL", redis_url)
    cli.main(["status"])
    out = capsys.readouterr().out
    assert "1 failed" in out and "the end" in out and "word59" in out  # wrapped, not cut
    assert any(line.split()[:1] == ["7"] and line.rstrip().endswith("never") for line in out.splitlines())


def test_first_setups_queue_a_capped_number_of_connection_jobs_and_a_sync_waits_for_encoding(r):
    for project in range(1, keys.MAX_CONNECTING + 6):
        producer.connected(r, project)
    assert producer.connected(r, 1) is None  # one per project
    q = producer.queue(r)
    assert len(q.get_job_ids()) == keys.MAX_CONNECTING  # the rest: reconciliation ranks them later
    # A big project's sync waits for its encoding chunks, whether they succeed or fail.
    chunks = [q.enqueue("time.sleep", 0).id, q.enqueue("builtins.int", "x").id]
    sync_id = producer.sync_after(r, 99, chunks)
    assert Job.fetch(sync_id, connection=r, serializer=JSONSerializer).get_status() == JobStatus.DEFERRED
    assert ProjectMirror(r, 99).hints()[1]  # a full re-read


def test_the_head_is_ranked_as_soon_as_its_chunk_is_encoded_ahead_of_the_other_chunks(r):
    from rq import SimpleWorker

    q = producer.queue(r)
    head, *rest = [q.enqueue("time.sleep", 0).id for _ in range(3)]  # stand-ins for encoding chunks
    sync_id = producer.rank_head_after(r, 7, head)
    job = Job.fetch(sync_id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.DEFERRED and job.kwargs == {"project_id": 7, "encoded_only": True}
    SimpleWorker([q], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=1)  # the head chunk
    assert q.get_job_ids() == [sync_id, *rest]  # next in line, before the other chunks


def test_status_shows_each_projects_work_in_the_queue(r, redis_url, monkeypatch, capsys):
    from broaden import cli

    chunks = [producer.encode(r, 4, [i, i + 1]) for i in range(0, 6, 2)]
    producer.sync_after(r, 4, chunks)
    monkeypatch.setenv("REDIS_URL", redis_url)
    cli.main(["status"])
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["4"]]
    assert row.endswith("encode 3 queued, sync 1 waiting")  # a project with only queued work is listed


def test_status_names_the_fusion_each_head_reads_where_they_differ(r, redis_url, monkeypatch, capsys):
    from backend.store.state import ProjectState
    from broaden import cli

    heads = {"category": "mixed", "policy": "attention", "usage": "mean"}
    ProjectState(r, 5).set_model("v5", b"-", {"trained_on": 120, "fusion": "mixed", "head_fusions": heads})
    ProjectState(r, 6).set_model("v6", b"-", {"trained_on": 80, "fusion": "mean", "head_fusions": {"a": "mean"}})
    for project in (5, 6):
        producer.encode(r, project, [1])  # queued work: listed
    monkeypatch.setenv("REDIS_URL", redis_url)
    cli.main(["status"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line[0]: re.split(r"\s{2,}", line) for line in lines if line[:1] in ("5", "6")}  # cells
    assert rows["5"][2:4] == ["120", "category mixed, policy attention, usage mean"]
    assert rows["6"][2:4] == ["80", "mean"]
