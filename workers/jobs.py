"""RQ jobs: plain functions, ids as arguments, safe to run twice.

Every job reads the truth from Label Studio and holds the project's lock while it
changes that project's state, so several workers on several hosts can share the
queue. Rescoring, broadening and writing back run inside `sync_project` rather
than as separate jobs: they need the same in-memory scores of every task, which
would otherwise travel through Redis between jobs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from redis.exceptions import LockError
from rq import get_current_job

from backend.state import ProjectMirror
from workers import runtime, sync
from workers.enqueue import JOB_TIMEOUT_S, PENDING_TTL_S, pending_key

log = logging.getLogger(__name__)
INLINE_PREDICTIONS = 500  # a sync pushes at most this many predictions itself (~2.5 s in Label Studio)
PUSH_CHUNK = 500  # predictions per push job (~2.5 s of Label Studio's time, with the project locked)


def _progress(stage: str, **meta: Any) -> None:
    """The job's stage in RQ's job meta (`broaden status`, /job_status). Replaced, not merged, so
    a retried job never shows what its dead predecessor had reached."""
    job = get_current_job()
    if job is not None:
        job.meta = {"stage": stage, **meta}
        job.save_meta()


@contextmanager
def _project_lock(project_id: int) -> Iterator[None]:
    """One job at a time per project, across workers and hosts. The lock lives `lock_ttl_s` and a
    thread renews it while the job runs, so a killed worker frees the project within that time."""
    p = runtime.predictor()
    ttl = p.settings.lock_ttl_s
    _progress("waiting for the project lock")
    lock = p.r.lock(f"broaden:p:{project_id}:lock", timeout=ttl, thread_local=False)
    if not lock.acquire(blocking_timeout=JOB_TIMEOUT_S):
        raise TimeoutError(f"project {project_id} stayed locked for {JOB_TIMEOUT_S} s")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                lock.reacquire()
            except LockError:
                log.error("project %s: lost its lock while working", project_id)
                return

    keeper = threading.Thread(target=renew, daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        try:
            lock.release()
        except LockError:
            log.warning("project %s: lock had expired before release", project_id)


def sync_project(project_id: int, full: bool = False) -> dict[str, Any]:
    """Bring the project's model, ranking and Label Studio queue up to date with its labels."""
    p = runtime.predictor()
    with _project_lock(project_id):
        p.r.delete(pending_key(project_id))  # events from here on enqueue one follow-up run
        mirror = ProjectMirror(p.r, project_id)
        dirty, full_hint, retrain = mirror.hints()
        report = sync.Report(project_id)

        started = time.perf_counter()
        _progress("reading Label Studio")
        xml, config, config_changed = sync.load_config(p, project_id, mirror)
        everything = full or full_hint or config_changed or mirror.count() == 0
        if everything or dirty:
            report.refreshed = sync.refresh(p, project_id, config, mirror, None if everything else dirty)
        report.timed("refresh", started)

        started = time.perf_counter()
        _progress("training")
        report.trained = sync.train(p, project_id, xml, mirror, force=retrain)
        report.timed("train", started)

        started = time.perf_counter()
        _progress("scoring", tasks=mirror.count())
        ids, scored = sync.rescore(p, project_id, config, mirror)
        order = sync.rank(p, config, mirror, ids, scored)
        report.ranked = len(order)
        report.timed("rescore+rank", started)

        started = time.perf_counter()
        _progress("writing back")
        sync.write_priorities(p, project_id, mirror, order, report, exact=full)
        report.timed("write priorities", started)
        started = time.perf_counter()
        # A small outbox goes out now; a large one (a retrain of a big project) is pushed by
        # chunked jobs, so this job, and the next label's sync, do not wait for it.
        waiting = sync.queue_predictions(mirror, ids, scored)
        if waiting <= INLINE_PREDICTIONS:
            sync.push_predictions(p, project_id, mirror, INLINE_PREDICTIONS)
            report.predictions_written = waiting
        else:
            _enqueue_push(p, project_id)
        report.timed("write predictions", started)

        mirror.clear_hints(dirty, full_hint, retrain)
        result = asdict(report)
        mirror.put("last_sync", json.dumps({**result, "finished_at": time.time(), "model_version": scored.version}))
    log.info("sync %s", result)
    _progress("done", **{k: v for k, v in result.items() if isinstance(v, int | str)})
    return result


def push_predictions(project_id: int) -> dict[str, Any]:
    """Push one chunk of the project's waiting predictions, then queue the next chunk behind
    whatever else is queued (a sync for a fresh label never waits for a whole push)."""
    p = runtime.predictor()
    p.r.delete(f"broaden:p:{project_id}:push-pending")
    with _project_lock(project_id):
        left = sync.push_predictions(p, project_id, ProjectMirror(p.r, project_id), PUSH_CHUNK)
    if left:
        _enqueue_push(p, project_id)
    return {"project": project_id, "waiting": left}


def _enqueue_push(p: Any, project_id: int) -> None:
    from workers.enqueue import enqueue

    flag = f"broaden:p:{project_id}:push-pending"
    if p.r.set(flag, 1, nx=True, ex=PENDING_TTL_S):  # one push job waiting per project
        enqueue(p.r, "workers.jobs.push_predictions", f"push-p{project_id}-{time.time_ns()}", project_id=project_id)


def resync_project(project_id: int) -> dict[str, Any]:
    """Re-read every task and label from Label Studio and rewrite whatever differs."""
    return sync_project(project_id, full=True)


def train_project(project_id: int) -> dict[str, Any]:
    """Retrain now, even if the labels did not change (the Model page's Start Training)."""
    ProjectMirror(runtime.predictor().r, project_id).add_hints([], retrain=True)
    return sync_project(project_id)


def encode_tasks(project_id: int, task_ids: list[int]) -> dict[str, Any]:
    """Warm the encoder cache for these tasks (backfill spreads this over workers)."""
    from backend import labelstudio as ls
    from backend.labelconfig import parse_label_config

    p = runtime.predictor()
    config = parse_label_config(ls.label_config(p.settings, project_id))
    tasks = ls.tasks(p.settings, project_id, task_ids)
    _progress("encoding", tasks=len(tasks))
    feats = p.featurize(tasks, config)
    return {"project": project_id, "tasks": len(tasks), "encoded": feats.encoded, "failed": len(feats.errors)}
