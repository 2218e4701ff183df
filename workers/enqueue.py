"""How webhook events become RQ jobs: which job, its id, coalescing, retries.

The web process imports this module, not the jobs: jobs are enqueued by dotted
path, so the webhook path never loads torch.
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

log = logging.getLogger(__name__)

QUEUE = "broaden"
TRAIN_TIMEOUT_S = 1800
PENDING_TTL_S = 900  # a crash between flag and enqueue blocks a project at most this long
RETRY = Retry(max=3, interval=[5, 30, 120])

# Events after which the project's model should be retrained from Label Studio's truth.
TRAIN_EVENTS = {
    "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
    "ANNOTATION_DELETED", "START_TRAINING",
}


def queue(r: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=r, serializer=JSONSerializer)


def pending_key(project: int) -> str:
    return f"broaden:p:{project}:train-pending"


def event(r: redis.Redis, body: WebhookRequest) -> str | None:
    """Enqueue the work an event calls for; return the job id, or None when there is nothing to do."""
    if body.project is None or body.action not in TRAIN_EVENTS:
        log.info("webhook %s project=%s: nothing to do", body.action, body.project)
        return None
    return train(r, body.project)


def train(r: redis.Redis, project: int) -> str | None:
    """Coalesced: at most one train job waits per project; the job clears the flag when it starts,
    so events during a run enqueue exactly one follow-up."""
    if not r.set(pending_key(project), "1", nx=True, ex=PENDING_TTL_S):
        waiting = r.get(pending_key(project) + ":job")
        return waiting.decode() if waiting else None
    job_id = f"train-p{project}-{uuid.uuid4().hex[:12]}"
    queue(r).enqueue_call(
        "workers.jobs.train_project", kwargs={"project_id": project}, job_id=job_id,
        timeout=TRAIN_TIMEOUT_S, result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600, retry=RETRY,
    )
    r.set(pending_key(project) + ":job", job_id, ex=PENDING_TTL_S)
    log.info("queued %s", job_id)
    return job_id


def status(r: redis.Redis, job_id: str) -> dict[str, Any]:
    try:
        job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    except NoSuchJobError:
        return {"job": job_id, "status": "unknown"}
    return {"job": job_id, "status": job.get_status(), "meta": job.get_meta(refresh=False)}
