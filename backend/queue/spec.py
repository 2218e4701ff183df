"""The queue's contract: its name, every job's dotted path, timeouts, retries and job ids.

Jobs are enqueued by dotted path (RQ resolves it on the worker), so the web process
never imports the job code or torch. Job ids may hold only [A-Za-z0-9_-] (RQ's rule).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from enum import StrEnum

from rq import Retry

QUEUE = "broaden"
JOB_TIMEOUT_S = 3600
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600
# No built-in backoff in RQ: the list is the backoff (needs a worker with the scheduler).
RETRY = Retry(max=4, interval=[5, 20, 60, 180])
# Backfill's chunks are keyed by their task ids: a re-run finds them (queued or done) for this long.
ENCODE_RESULT_TTL_S = 7 * 24 * 3600


class Job(StrEnum):
    """Dotted paths of the worker-side entry points (`workers.jobs`)."""

    SYNC = "workers.jobs.sync_project"
    RESYNC = "workers.jobs.resync_project"
    TRAIN = "workers.jobs.train_project"
    PUSH = "workers.jobs.push_prediction_chunk"
    ENCODE = "workers.jobs.encode_tasks"
    CONNECTED = "workers.jobs.project_connected"


ENCODE_CHUNK = 200  # tasks per encoding job when a project's existing tasks are spread over the workers


def sync_id(project: int) -> str:
    return f"sync-p{project}-{uuid.uuid4().hex[:12]}"


def connected_id(project: int) -> str:
    return f"connected-p{project}-{time.time_ns()}"


def resync_id(project: int) -> str:
    return f"resync-p{project}-{time.time_ns()}"


def push_id(project: int) -> str:
    return f"push-p{project}-{time.time_ns()}"


def encode_id(project: int, task_ids: list[int]) -> str:
    """The same chunk of tasks always gets the same id, so a re-run does not queue it twice."""
    return f"encode-p{project}-{hashlib.sha256(str(task_ids).encode()).hexdigest()[:16]}"
