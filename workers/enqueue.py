"""How webhook events become RQ jobs: which job, its id, coalescing, retries.

The web process imports this module, not the jobs: jobs are enqueued by dotted
path, so the webhook path never loads torch. A payload is only a hint: it adds
task ids to the project's "re-read these" set, and the job reads the truth from
Label Studio.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from backend.schemas import WebhookRequest
from backend.state import ProjectMirror

log = logging.getLogger(__name__)

QUEUE = "broaden"
JOB_TIMEOUT_S = 3600
PENDING_TTL_S = 900  # a crash between flag and enqueue blocks a project at most this long
# No built-in backoff in RQ: the list is the backoff (needs a worker with the scheduler).
RETRY = Retry(max=4, interval=[5, 20, 60, 180])

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATION_DELETED"}
TASK_EVENTS = {"TASKS_CREATED", "TASKS_DELETED"}
FULL_EVENTS = {"ANNOTATIONS_DELETED"}  # the payload names no task: re-read every task
# Every sync re-reads the label config, and a changed one resets what depends on it; our own
# write of the project's model version also comes back as PROJECT_UPDATED, so it re-reads nothing else.
CONFIG_EVENTS = {"PROJECT_UPDATED"}


def queue(r: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=r, serializer=JSONSerializer)


def pending_key(project: int) -> str:
    return f"broaden:p:{project}:sync-pending"


def task_ids(body: WebhookRequest) -> list[int]:
    """Every task id a payload mentions (a hint: the job checks each against Label Studio)."""
    found: list[Any] = []
    for ann in ([body.annotation] if body.annotation else []) + (body.annotations or []):
        task = ann.get("task")
        found.append(task.get("id") if isinstance(task, dict) else task)
    for task in ([body.task] if body.task else []) + (body.tasks or []):
        found.append(task.get("id"))
    return sorted({int(t) for t in found if isinstance(t, int) and not isinstance(t, bool) and t > 0})


def event(r: redis.Redis, body: WebhookRequest) -> str | None:
    """Record the event's hints and enqueue the project's sync; None when the event changes nothing."""
    action, project = body.action, body.project
    if project is None:
        return None
    ids = task_ids(body)
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
    flag = pending_key(project)
    job_id = f"sync-p{project}-{uuid.uuid4().hex[:12]}"
    if not r.set(flag, job_id, nx=True, ex=PENDING_TTL_S):
        waiting = r.get(flag)
        return waiting.decode() if waiting else job_id
    # At the front: a fresh label's sync overtakes queued bulk work (prediction pushes, backfill).
    return enqueue(r, "workers.jobs.sync_project", job_id, at_front=True, project_id=project)


def enqueue(r: redis.Redis, func: str, job_id: str, at_front: bool = False, **kwargs: Any) -> str:
    queue(r).enqueue_call(
        func,
        kwargs=kwargs,
        job_id=job_id,
        timeout=JOB_TIMEOUT_S,
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        retry=RETRY,
        at_front=at_front,
    )
    log.info("queued %s", job_id)
    return job_id


def status(r: redis.Redis, job_id: str) -> dict[str, Any]:
    try:
        job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    except NoSuchJobError:
        return {"job": job_id, "status": "unknown"}
    return {"job": job_id, "status": job.get_status(), "meta": job.get_meta(refresh=False)}
