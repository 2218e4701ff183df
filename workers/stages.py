"""The stages of keeping one project's queue in order. Each reads Label Studio's truth or
the project's mirror in Redis and is safe to repeat; `workers.jobs` strings them into jobs.

    refresh  re-read hinted (or all) tasks from Label Studio -> mirror: data, labels, seeds
    train    retrain fusion + heads when the labels changed
    rescore  probabilities and embeddings of every task (cached encoder features)
    rank     seeds + strategy (lsb-pool by default) -> priorities
    write    changed priorities and stale predictions back to Label Studio, the ranked tab
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.labelstudio.annotations import labels_from_annotations, shown_before_labelling
from backend.labelstudio.labelconfig import LabelConfig, parse_label_config
from backend.model.predictor import Scored
from backend.ranking.pool import build_pool, make_strategy
from backend.ranking.priorities import LABELLED, changed_groups, priorities
from backend.ranking.seeds import confidently_wrong, target_labels
from backend.runtime import Runtime
from backend.store.keys import Hash, Value
from backend.store.state import ProjectMirror, ProjectState

log = logging.getLogger(__name__)
WRITE_THREADS = 4


@dataclass
class Report:
    project: int
    started_at: float = field(default_factory=time.time)
    reordered_at: float | None = None  # wall clock when the new priorities were in Label Studio
    refreshed: int = 0
    trained: str | None = None  # the new model version, "zero-shot", or None (not retrained)
    ranked: int = 0
    priorities_written: int = 0
    predictions_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, started: float) -> None:
        self.seconds[stage] = round(time.perf_counter() - started, 3)


def load_config(rt: Runtime, project: int, mirror: ProjectMirror) -> tuple[LabelConfig, bool]:
    """The project's label config from Label Studio; a changed config resets what depends on it."""
    xml = rt.labelstudio.label_config(project)
    config = parse_label_config(xml)
    changed = mirror.get(Value.FINGERPRINT) != config.fingerprint
    if changed:
        mirror.reset()
        ProjectState(rt.redis, project).drop_model()
        mirror.put(Value.FINGERPRINT, config.fingerprint)
    ProjectState(rt.redis, project).set_label_config(xml)
    return config, changed


def refresh(rt: Runtime, project: int, config: LabelConfig, mirror: ProjectMirror, ids: list[int] | None) -> int:
    """Re-read tasks (all when ids is None) and update the mirror; returns how many were read."""
    fetched = rt.labelstudio.tasks(project, ids)
    seen = {int(t["id"]) for t in fetched}
    gone = (set(mirror.load(Hash.TASKS)) if ids is None else set(ids)) - seen
    mirror.forget_tasks(sorted(gone))
    labels = {int(t["id"]): labels_from_annotations(t.get("annotations") or [], config) for t in fetched}
    labelled = {t: lab for t, lab in labels.items() if any(x is not None for x in lab)}
    confidence = rt.settings.misprediction_confidence
    mispredicted = set()
    for task in fetched:
        shown = shown_before_labelling(task) if int(task["id"]) in labelled else None
        if shown is not None and confidently_wrong(shown, labelled[int(task["id"])], config, confidence):
            mispredicted.add(int(task["id"]))
    mirror.save(Hash.TASKS, {int(t["id"]): t["data"] for t in fetched}, replace=ids is None)
    mirror.save(Hash.LABELS, labelled, replace=ids is None)
    mirror.drop(Hash.LABELS, sorted(seen - set(labelled)))
    mirror.save(Hash.SEEDS, dict.fromkeys(mispredicted, "misprediction"), replace=ids is None)
    mirror.drop(Hash.SEEDS, sorted(seen - mispredicted))
    # The priorities Label Studio really holds, not the ones broaden meant to write: after a crash
    # mid-write the two differ, and the next write-back compares against what is there.
    values = {int(t["id"]): _number(t["data"].get(rt.settings.priority_field)) for t in fetched}
    shown = {t: v for t, v in values.items() if v is not None}
    mirror.save(Hash.PRIORITY, shown, replace=ids is None)
    mirror.drop(Hash.PRIORITY, sorted(seen - set(shown)))
    return len(fetched)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def train(rt: Runtime, project: int, config: LabelConfig, mirror: ProjectMirror, force: bool) -> str | None:
    """Retrain when the labels changed since the last training (or when asked): the new version,
    "zero-shot" when the labels are gone, None when nothing was (re)trained."""
    labels, data = mirror.load(Hash.LABELS), mirror.load(Hash.TASKS)
    digest = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()
    if digest == mirror.get(Value.TRAINED_DIGEST) and not force:
        return None
    if not labels:
        ProjectState(rt.redis, project).drop_model()
        mirror.put(Value.TRAINED_DIGEST, digest)
        return "zero-shot"
    ids = [t for t in sorted(labels) if t in data]
    result = rt.predictor.fit_labels(
        project, [{"id": t, "data": data[t]} for t in ids], [labels[t] for t in ids], config
    )
    if result.version is None:
        log.warning("project %s: not trained: %s (%d unreadable)", project, result.reason, result.skipped)
    mirror.put(Value.TRAINED_DIGEST, digest)
    return result.version


def rescore(
    rt: Runtime, project: int, config: LabelConfig, mirror: ProjectMirror, until: float | None = None
) -> tuple[list[int], Scored]:
    """Scores of every task of the mirror (only of those encoded by `until`, when given)."""
    data = mirror.load(Hash.TASKS)
    ids = sorted(data)
    scored = rt.predictor.score([{"id": t, "data": data[t]} for t in ids], config, project, until)
    return ids, scored


def rank(rt: Runtime, config: LabelConfig, mirror: ProjectMirror, ids: list[int], scored: Scored) -> list[int]:
    """Unlabelled task ids, most valuable first, by the configured strategy over the encoded tasks."""
    s = rt.settings
    rows = [ids[i] for i in scored.rows]
    labels, stored_seeds = mirror.load(Hash.LABELS), mirror.load(Hash.SEEDS)
    pool = build_pool(
        config,
        scored.probs,
        scored.embeddings,
        labels=[labels.get(t) for t in rows],
        mispredicted={i for i, t in enumerate(rows) if t in stored_seeds},
        targets=target_labels(config, labels, s.targets),
        frozen=scored.frozen,
    )
    if not len(pool.unlabelled):
        return []
    order = make_strategy(s.strategy, s).rank(pool, np.random.default_rng(s.seed))
    return [rows[i] for i in order]


def write_priorities(
    rt: Runtime, project: int, mirror: ProjectMirror, order: list[int], report: Report, exact: bool
) -> None:
    """Changed priorities into Label Studio: the head of the queue first (then the queue is
    reordered for annotators), then the tail levels (all exactly when `exact`: a full resync)."""
    s = rt.settings
    old = {t: float(v) for t, v in mirror.load(Hash.PRIORITY).items()}
    new = priorities(order) | dict.fromkeys(mirror.load(Hash.LABELS), LABELLED)
    head, tail = changed_groups(new, old, exact)
    if LABELLED in tail:  # a task labelled from the top of the queue leaves it with the new head
        head[LABELLED] = tail.pop(LABELLED)
    for groups in (head, tail):
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            list(
                pool.map(lambda g: rt.labelstudio.set_data_field(project, g[1], s.priority_field, g[0]), groups.items())
            )
        mirror.save(Hash.PRIORITY, {t: v for v, ts in groups.items() for t in ts})
        report.priorities_written += sum(len(ts) for ts in groups.values())
        if groups is head:
            report.reordered_at = time.time()
    mirror.drop(Hash.PRIORITY, sorted(set(old) - set(new)))  # deleted since
    rt.labelstudio.ensure_view(project, s.ranked_tab, s.priority_field)


def fill_outbox(mirror: ProjectMirror, ids: list[int], scored: Scored) -> int:
    """Put the predictions Label Studio does not have yet (new model version, new tasks) in the
    project's outbox, replacing what an earlier sync left there; returns how many are waiting."""
    shown = mirror.load(Hash.PREDVER)
    outbox = {
        t: {
            "task": t,
            "result": [r.model_dump() for r in pred.result],
            "score": pred.score,
            "model_version": pred.model_version,
        }
        for t, pred in zip(ids, scored.predictions, strict=True)
        if pred.result and shown.get(t) != pred.model_version
    }
    mirror.save(Hash.OUTBOX, outbox, replace=True)
    mirror.put(Value.OUTBOX_VERSION, scored.version)
    return len(outbox)


def send_outbox(rt: Runtime, project: int, mirror: ProjectMirror, limit: int) -> int:
    """Import up to `limit` predictions from the outbox in bulk, the head of the queue first; once
    the outbox is empty, switch the project to that model version so its pre-annotations show.
    Returns how many are still waiting."""
    outbox, priority = mirror.load(Hash.OUTBOX), mirror.load(Hash.PRIORITY)
    batch = sorted(outbox, key=lambda t: -float(priority.get(t, -1)))[:limit]
    rt.labelstudio.import_predictions(project, [outbox[t] for t in batch])
    mirror.save(Hash.PREDVER, {t: outbox[t]["model_version"] for t in batch})
    mirror.drop(Hash.OUTBOX, batch)
    left = len(outbox) - len(batch)
    version = mirror.get(Value.OUTBOX_VERSION)
    # Switch only to a version Label Studio holds predictions of (it refuses any other): a model
    # whose every task failed to encode has none.
    has_predictions = version in set(mirror.load(Hash.PREDVER).values())
    if not left and version and has_predictions and mirror.get(Value.SHOWN_VERSION) != version:
        rt.labelstudio.set_model_version(project, version)
        mirror.put(Value.SHOWN_VERSION, version)
    return left
