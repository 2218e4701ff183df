"""RQ jobs: plain functions, ids as arguments, safe to run twice.

Every job reads the truth from Label Studio and holds the project's lock while it
changes that project's state, so several workers on several hosts can share the
queue. Rescoring, broadening and writing back run inside `sync_project` rather
than as separate jobs: they need the same in-memory scores of every task, which
would otherwise travel through Redis between jobs. Each entry point takes the
process's runtime once and passes it down.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import LockError
from rq import get_current_job

from backend.errors import LabelStudioRefused, LabelStudioUnavailable
from backend.labelstudio.labelconfig import parse_label_config
from backend.queue import producer, spec
from backend.runtime import Runtime
from backend.store import keys
from backend.store.keys import Value
from backend.store.state import ProjectMirror, ProjectState
from workers import runtime, stages

log = logging.getLogger(__name__)
P, R = ParamSpec("P"), TypeVar("R")
INLINE_PREDICTIONS = 500  # a sync pushes at most this many predictions itself (~2.5 s in Label Studio)
PUSH_CHUNK = 500  # predictions per push job (~2.5 s of Label Studio's time, with the project locked)


def _final_when_refused(job_function: Callable[P, R]) -> Callable[P, R]:
    """Label Studio refusing a request (a 4xx) says the request is wrong, not that Label Studio is
    away: the job fails at once, with the reason, instead of being refused four more times."""

    @functools.wraps(job_function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return job_function(*args, **kwargs)
        except LabelStudioRefused:
            job = get_current_job()
            if job is not None:
                job.retries_left = 0
            raise

    return run


def _progress(stage: str, **meta: Any) -> None:
    """The job's stage in RQ's job meta (`broaden status`, /job_status). Replaced, not merged, so
    a retried job never shows what its dead predecessor had reached."""
    job = get_current_job()
    if job is not None:
        job.meta = {"stage": stage, **meta}
        job.save_meta()


@contextmanager
def _project_lock(rt: Runtime, project_id: int) -> Iterator[None]:
    """One job at a time per project, across workers and hosts. The lock lives `lock_ttl_s` and a
    thread renews it while the job runs, so a killed worker frees the project within that time."""
    ttl = rt.settings.lock_ttl_s
    _progress("waiting for the project lock")
    lock = rt.redis.lock(keys.project(project_id, Value.LOCK), timeout=ttl, thread_local=False)
    if not lock.acquire(blocking_timeout=spec.JOB_TIMEOUT_S):
        raise TimeoutError(f"project {project_id} stayed locked for {spec.JOB_TIMEOUT_S} s")
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


VERIFIED_TTL_S = 600  # how long a seen connection is trusted before Label Studio is asked again


def _serves(rt: Runtime, project_id: int, final: bool = True) -> bool:
    """Do the project's ML settings in Label Studio point at this backend? Listing them makes Label
    Studio call /setup on each of the project's backends: if ours is among them, its setup count
    moves while we ask. A /setup anyone could forge does not pass this; only Label Studio's does.
    The answer is kept for VERIFIED_TTL_S (a "no" only when `final`)."""
    state = ProjectState(rt.redis, project_id)
    if state.verified() or state.refused():
        return state.verified()
    _progress("checking the project's ML settings in Label Studio")
    before = state.setups()
    rt.labelstudio.list_ml_backends(project_id)
    served = state.setups() > before
    if served or final:
        state.set_verdict(served, VERIFIED_TTL_S)
    return served


@_final_when_refused
def sync_project(project_id: int, full: bool = False, encoded_only: bool = False) -> dict[str, Any]:
    """Bring the project's model, ranking and Label Studio queue up to date with its labels.
    encoded_only: rank only the tasks encoded so far (the head of a project still encoding)."""
    rt = runtime.current()
    if not _serves(rt, project_id):
        rt.redis.delete(keys.project(project_id, Value.SYNC_PENDING))
        reason = "its ML settings in Label Studio do not point at this backend"
        log.warning("project %s: %s; nothing done", project_id, reason)
        _progress("refused: " + reason)
        return {"project": project_id, "refused": reason}
    with _project_lock(rt, project_id):
        rt.redis.delete(keys.project(project_id, Value.SYNC_PENDING))  # events from here on enqueue one follow-up
        report = _sync(rt, project_id, full, encoded_only)
    result = asdict(report)
    log.info("sync %s", result)
    _progress("done", **{k: v for k, v in result.items() if isinstance(v, int | str)})
    return result


def _sync(rt: Runtime, project_id: int, full: bool, encoded_only: bool = False) -> stages.Report:
    mirror = ProjectMirror(rt.redis, project_id)
    dirty, full_hint, retrain = mirror.hints()
    report = stages.Report(project_id)

    started = time.perf_counter()
    _progress("reading Label Studio")
    config, config_changed = stages.load_config(rt, project_id, mirror)
    everything = full or full_hint or config_changed or mirror.count() == 0
    if everything or dirty:
        report.refreshed = stages.refresh(rt, project_id, config, mirror, None if everything else dirty)
    report.timed("refresh", started)

    started = time.perf_counter()
    _progress("training")
    report.trained = stages.train(rt, project_id, config, mirror, force=retrain)
    report.timed("train", started)

    started = time.perf_counter()
    _progress("scoring", tasks=mirror.count())
    # encoded_only: a budget already spent, so beyond one batch only cached features are read
    ids, scored = stages.rescore(rt, project_id, config, mirror, until=time.monotonic() if encoded_only else None)
    order = stages.rank(rt, config, mirror, ids, scored)
    report.ranked = len(order)
    report.timed("rescore+rank", started)

    started = time.perf_counter()
    _progress("writing back")
    stages.write_priorities(rt, project_id, mirror, order, report, exact=full)
    report.timed("write priorities", started)
    started = time.perf_counter()
    # A small outbox goes out now; a large one (a retrain of a big project) is pushed by
    # chunked jobs, so this job, and the next label's sync, do not wait for it.
    waiting = stages.fill_outbox(mirror, ids, scored)
    if waiting <= INLINE_PREDICTIONS:
        stages.send_outbox(rt, project_id, mirror, INLINE_PREDICTIONS)
        report.predictions_written = waiting
    else:
        producer.push(rt.redis, project_id)
    report.timed("write predictions", started)

    if not encoded_only:  # the sync after the encoding still has them to do
        mirror.clear_hints(dirty, full_hint, retrain)
    last = {**asdict(report), "finished_at": time.time(), "model_version": scored.version}
    mirror.put(Value.LAST_SYNC, json.dumps(last))
    return report


@_final_when_refused
def push_prediction_chunk(project_id: int) -> dict[str, Any]:
    """Push one chunk of the project's waiting predictions, then queue the next chunk behind
    whatever else is queued (a sync for a fresh label never waits for a whole push)."""
    rt = runtime.current()
    rt.redis.delete(keys.project(project_id, Value.PUSH_PENDING))
    with _project_lock(rt, project_id):
        left = stages.send_outbox(rt, project_id, ProjectMirror(rt.redis, project_id), PUSH_CHUNK)
    if left:
        producer.push(rt.redis, project_id)
    return {"project": project_id, "waiting": left}


def resync_project(project_id: int) -> dict[str, Any]:
    """Re-read every task and label from Label Studio and rewrite whatever differs."""
    return sync_project(project_id, full=True)


def train_project(project_id: int) -> dict[str, Any]:
    """Retrain now, even if the labels did not change (the Model page's Start Training)."""
    ProjectMirror(runtime.current().redis, project_id).add_hints([], retrain=True)
    return sync_project(project_id)


@_final_when_refused
def project_connected(project_id: int) -> dict[str, Any]:
    """Label Studio set a project up with broaden for the first time: rank and pre-label the tasks
    it already has, without waiting for a label. A big project's encoding is spread over the
    workers (as `broaden backfill` does): a small first chunk is ranked as soon as it is encoded,
    so the head of the queue shows early, and one full sync ranks everything at the end."""
    rt = runtime.current()
    try:
        # Label Studio calls /setup while it creates the connection, before it lists it: not listed
        # yet is a reason to try again in a few seconds (the job's retries), not to refuse it.
        if not _serves(rt, project_id, final=False):
            raise LabelStudioUnavailable(f"project {project_id} does not list this backend in Label Studio (yet)")
        ids = sorted(int(t["id"]) for t in rt.labelstudio.tasks(project_id))
        encoding, n_head = [], rt.settings.connect_head_tasks
        if len(ids) > n_head:
            head, rest = ids[:n_head], ids[n_head:]
            chunks = [head] + [rest[i : i + spec.ENCODE_CHUNK] for i in range(0, len(rest), spec.ENCODE_CHUNK)]
            encoding = [producer.encode(rt.redis, project_id, chunk) for chunk in chunks]
            producer.rank_head_after(rt.redis, project_id, encoding[0])
        sync = producer.sync_after(rt.redis, project_id, encoding)
    finally:
        rt.redis.srem(keys.CONNECTING, project_id)
    return {"project": project_id, "tasks": len(ids), "encoding_jobs": len(encoding), "sync": sync}


@_final_when_refused
def encode_tasks(project_id: int, task_ids: list[int]) -> dict[str, Any]:
    """Warm the encoder cache for these tasks (backfill spreads this over workers)."""
    rt = runtime.current()
    config = parse_label_config(rt.labelstudio.label_config(project_id))
    tasks = rt.labelstudio.tasks(project_id, task_ids)
    _progress("encoding", tasks=len(tasks))
    feats = rt.predictor.featurize(tasks, config)
    return {"project": project_id, "tasks": len(tasks), "encoded": feats.encoded, "failed": len(feats.errors)}
