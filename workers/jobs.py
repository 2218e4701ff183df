"""RQ jobs: plain functions, arguments are ids only, safe to run twice.

Every job reads the truth from Label Studio (a webhook payload is only a hint)
and holds the project's lock while it changes that project's state.
"""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job

from backend import labelstudio
from workers import runtime
from workers.enqueue import TRAIN_TIMEOUT_S, pending_key

log = logging.getLogger(__name__)


def _progress(stage: str, **meta: Any) -> None:
    job = get_current_job()
    if job is not None:
        job.meta.update({"stage": stage, **meta})
        job.save_meta()


def train_project(project_id: int) -> dict[str, Any]:
    """Retrain the project's fusion layer and heads on every annotated task in Label Studio."""
    p = runtime.predictor()
    r = p.r
    _progress("waiting for project lock")
    with r.lock(f"broaden:p:{project_id}:lock", timeout=TRAIN_TIMEOUT_S + 60, blocking_timeout=TRAIN_TIMEOUT_S):
        r.delete(pending_key(project_id))  # events from here on enqueue one follow-up run
        _progress("reading Label Studio")
        xml = labelstudio.label_config(p.settings, project_id)
        p.setup(project_id, xml)
        tasks = labelstudio.annotated_tasks(p.settings, project_id)
        _progress("training", annotated_tasks=len(tasks))
        result = p.fit(project_id, tasks, xml)
    log.info("project %s: %s", project_id, result)
    _progress("done", **{k: v for k, v in result.items() if isinstance(v, int | str)})
    return result
