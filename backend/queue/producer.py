"""The producer side of the queue: how webhook events and commands become RQ jobs.

The web process imports this module, not the jobs. A payload is only a hint: it adds
task ids to the project's "re-read these" set, and the job reads the truth from
Label Studio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Dependency, Job
from rq.serializers import JSONSerializer

from backend.queue import spec
from backend.store import keys
from backend.store.keys import Value
from backend.store.state import ProjectMirror

log = logging.getLogger(__name__)

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATION_DELETED"}
TASK_EVENTS = {"TASKS_CREATED", "TASKS_DELETED"}
FULL_EVENTS = {"ANNOTATIONS_DELETED"}  # the payload names no task: re-read every task
# Every sync re-reads the label config, and a changed one resets what depends on it; our own
# write of the project's model version also comes back as PROJECT_UPDATED, so it re-reads nothing else.
CONFIG_EVENTS = {"PROJECT_UPDATED"}


def queue(r: redis.Redis) -> Queue:
    return Queue(spec.QUEUE, connection=r, serializer=JSONSerializer)


def event(r: redis.Redis, action: str, project: int | None, ids: list[int]) -> str | None:
    """Record a webhook event's hints (the task ids its payload names) and enqueue the project's
    sync; None when the event changes nothing."""
    if project is None:
        return None
    mirror = ProjectMirror(r, project)
    if action in ANNOTATION_EVENTS or action in TASK_EVENTS:
        mirror.add_hints(ids, full=not ids)
    elif action in FULL_EVENTS:
        mirror.add_hints([], full=True)
    elif action in CONFIG_EVENTS:
        pass
    elif action == "START_TRAINING":
        mirror.add_hints([], retrain=True)
    else:
        log.info("webhook %s project=%s: nothing to do", action, project)
        return None
    return sync(r, project)


def sync(r: redis.Redis, project: int) -> str:
    """Coalesced: at most one sync waits per project. The job clears the flag when it starts, so
    events during a run enqueue exactly one follow-up; a burst of 200 events costs two runs."""
    job_id = spec.sync_id(project)
    if not r.set(keys.project(project, Value.SYNC_PENDING), job_id, nx=True, ex=keys.PENDING_TTL_S):
        waiting = r.get(keys.project(project, Value.SYNC_PENDING))
        return waiting.decode() if waiting else job_id
    # At the front: a fresh label's sync overtakes queued bulk work (prediction pushes, backfill).
    return enqueue(r, spec.Job.SYNC, job_id, at_front=True, project_id=project)


def connected(r: redis.Redis, project: int) -> str | None:
    """A project's first setup: rank and pre-label the tasks it already has, without waiting for a
    label. At most MAX_CONNECTING such jobs wait at once; None when over it (or already queued)."""
    if r.scard(keys.CONNECTING) >= keys.MAX_CONNECTING or not r.sadd(keys.CONNECTING, project):
        return None
    r.expire(keys.CONNECTING, keys.PENDING_TTL_S)
    return enqueue(r, spec.Job.CONNECTED, spec.connected_id(project), project_id=project)


def sync_after(r: redis.Redis, project: int, jobs: list[str]) -> str:
    """A full sync once these jobs have ended, however they ended (encoding chunks, say)."""
    ProjectMirror(r, project).add_hints([], full=True)
    if not jobs:
        return sync(r, project)
    after = Dependency(jobs=jobs, allow_failure=True)
    return enqueue(r, spec.Job.SYNC, spec.sync_id(project), depends_on=after, project_id=project)


def rank_head_after(r: redis.Redis, project: int, job: str) -> str:
    """A sync of the tasks encoded so far, as soon as this job has ended (at the front of the queue,
    ahead of the rest of the encoding): the head of a big project's queue shows early."""
    after = Dependency(jobs=[job], allow_failure=True, enqueue_at_front=True)
    return enqueue(r, spec.Job.SYNC, spec.sync_id(project), depends_on=after, project_id=project, encoded_only=True)


def resync(r: redis.Redis, project: int) -> str:
    """Re-read every task and label of the project and rewrite whatever differs."""
    return enqueue(r, spec.Job.RESYNC, spec.resync_id(project), project_id=project)


def push(r: redis.Redis, project: int) -> str | None:
    """Queue one chunk of the project's waiting predictions, unless one is queued already."""
    if not r.set(keys.project(project, Value.PUSH_PENDING), 1, nx=True, ex=keys.PENDING_TTL_S):
        return None
    return enqueue(r, spec.Job.PUSH, spec.push_id(project), project_id=project)


def encode(r: redis.Redis, project: int, task_ids: list[int]) -> str:
    """Queue the encoding of these tasks once: a chunk queued or done by an earlier run is left
    alone, one that failed for good is queued again."""
    job_id = spec.encode_id(project, task_ids)
    try:
        enqueue(r, spec.Job.ENCODE, job_id, unique=True, result_ttl=spec.ENCODE_RESULT_TTL_S,
                project_id=project, task_ids=task_ids)  # fmt: skip
    except DuplicateJobError:
        if Job.fetch(job_id, connection=r, serializer=JSONSerializer).is_failed:
            queue(r).failed_job_registry.requeue(job_id)
            log.info("%s: failed before, queued again", job_id)
    return job_id


def enqueue(
    r: redis.Redis,
    job: spec.Job,
    job_id: str,
    at_front: bool = False,
    unique: bool = False,
    result_ttl: int = spec.RESULT_TTL_S,
    depends_on: Dependency | None = None,
    **kwargs: Any,
) -> str:
    """Every job goes through here: the same timeout, retries and TTLs for all of them."""
    queue(r).enqueue_call(
        job.value,
        kwargs=kwargs,
        job_id=job_id,
        timeout=spec.JOB_TIMEOUT_S,
        result_ttl=result_ttl,
        failure_ttl=spec.FAILURE_TTL_S,
        retry=spec.RETRY,
        at_front=at_front,
        unique=unique,
        depends_on=depends_on,
    )
    log.info("queued %s", job_id)
    return job_id


@dataclass(frozen=True)
class JobState:
    job: str
    status: str  # RQ's job status, or "unknown"
    meta: dict[str, Any] = field(default_factory=dict)  # the job's stage and progress


def status(r: redis.Redis, job_id: str) -> JobState:
    try:
        job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    except NoSuchJobError:
        return JobState(job_id, "unknown")
    state = job.get_status()
    return JobState(job_id, state.value if state else "unknown", job.get_meta(refresh=False))
