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

import numpy as np

from backend import labelstudio as ls
from backend.labelconfig import LabelConfig, parse_label_config
from backend.predictor import Predictor, Scored
from backend.ranking import changed_groups, is_misprediction, priorities, seed_tasks, target_columns, target_labels
from backend.state import ProjectMirror, ProjectState
from backend.strategies import STRATEGIES, Pool
from backend.training import labels_from_annotations

log = logging.getLogger(__name__)
WRITE_THREADS = 4


@dataclass
class Report:
    project: int
    started_at: float = field(default_factory=time.time)
    reordered_at: float | None = None  # wall clock when the new priorities were in Label Studio
    refreshed: int = 0
    trained: str | None = None
    ranked: int = 0
    priorities_written: int = 0
    predictions_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, started: float) -> None:
        self.seconds[stage] = round(time.perf_counter() - started, 3)


def load_config(p: Predictor, project: int, mirror: ProjectMirror) -> tuple[str, LabelConfig, bool]:
    """The project's label config from Label Studio; a changed config resets what depends on it."""
    xml = ls.label_config(p.settings, project)
    config = parse_label_config(xml)
    changed = mirror.get("fingerprint") != config.fingerprint
    if changed:
        mirror.reset()
        ProjectState(p.r, project).drop_model()
        mirror.put("fingerprint", config.fingerprint)
    ProjectState(p.r, project).set_label_config(xml)
    return xml, config, changed


def refresh(p: Predictor, project: int, config: LabelConfig, mirror: ProjectMirror, ids: list[int] | None) -> int:
    """Re-read tasks (all when ids is None) and update the mirror; returns how many were read."""
    fetched = ls.tasks(p.settings, project, ids)
    seen = {int(t["id"]) for t in fetched}
    gone = (set(mirror.load("tasks")) if ids is None else set(ids)) - seen
    mirror.forget_tasks(sorted(gone))
    labels = {int(t["id"]): labels_from_annotations(t.get("annotations") or [], config) for t in fetched}
    labelled = {t: lab for t, lab in labels.items() if any(x is not None for x in lab)}
    confidence = p.settings.misprediction_confidence
    mispredicted = {
        int(t["id"])
        for t in fetched
        if int(t["id"]) in labelled and is_misprediction(t, config, labelled[int(t["id"])], confidence)
    }
    mirror.save("tasks", {int(t["id"]): t["data"] for t in fetched}, replace=ids is None)
    mirror.save("labels", labelled, replace=ids is None)
    mirror.drop("labels", sorted(seen - set(labelled)))
    mirror.save("seeds", dict.fromkeys(mispredicted, "misprediction"), replace=ids is None)
    mirror.drop("seeds", sorted(seen - mispredicted))
    return len(fetched)


def train(p: Predictor, project: int, xml: str, mirror: ProjectMirror, force: bool) -> str | None:
    """Retrain when the labels changed since the last training (or when asked); None if not."""
    labels, data = mirror.load("labels"), mirror.load("tasks")
    digest = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()
    if digest == mirror.get("trained_digest") and not force:
        return None
    if not labels:
        ProjectState(p.r, project).drop_model()
        mirror.put("trained_digest", digest)
        return "zero-shot"
    tasks = [{"id": t, "data": data[t], "labels": lab} for t, lab in sorted(labels.items()) if t in data]
    result = p.fit_labels(project, tasks, xml)
    mirror.put("trained_digest", digest)
    return str(result.get("model_version"))


def rescore(p: Predictor, project: int, config: LabelConfig, mirror: ProjectMirror) -> tuple[list[int], Scored]:
    data = mirror.load("tasks")
    ids = sorted(data)
    scored = p.score([{"id": t, "data": data[t]} for t in ids], config, project)
    return ids, scored


def rank(p: Predictor, config: LabelConfig, mirror: ProjectMirror, ids: list[int], scored: Scored) -> list[int]:
    """Unlabelled task ids, most valuable first, by the configured strategy over the encoded tasks."""
    s = p.settings
    rows = [ids[i] for i in scored.rows]
    labels, stored_seeds = mirror.load("labels"), mirror.load("seeds")
    targets = target_labels(config, labels, s.targets)
    seeds = seed_tasks(config, labels, set(stored_seeds), targets)
    probs = [np.nan_to_num(pr, nan=1.0 / max(pr.shape[1], 1)) for pr in scored.probs]
    pool = Pool(
        probs=probs,
        multiple=[c.multiple for c in config.controls],
        embeddings=scored.embeddings,
        labelled=np.array([t in labels for t in rows], dtype=bool),
        seeds=np.array([i for i, t in enumerate(rows) if t in seeds], dtype=np.int64),
        targets=target_columns(config, targets),
    )
    if not len(pool.unlabelled):
        return []
    options = {"k": s.lsb_k, "share": s.lsb_share}
    if s.lsb_threshold is not None:  # unset: each strategy keeps its own (lsb-lt: 0.8)
        options["threshold"] = s.lsb_threshold
    strategy = STRATEGIES[s.strategy](**options)
    order = strategy.rank(pool, np.random.default_rng(s.seed))
    return [rows[i] for i in order]


def write_priorities(
    p: Predictor, project: int, mirror: ProjectMirror, order: list[int], report: Report, exact: bool
) -> None:
    """Changed priorities into Label Studio: the head of the queue first (then the queue is
    reordered for annotators), then the tail levels (all exactly when `exact`: a full resync)."""
    old = {t: float(v) for t, v in mirror.load("priority").items()}
    head, tail = changed_groups(priorities(order), old, exact)
    for groups in (head, tail):
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            list(
                pool.map(
                    lambda g: ls.set_data_field(p.settings, project, g[1], p.settings.priority_field, g[0]),
                    groups.items(),
                )
            )
        mirror.save("priority", {t: v for v, ts in groups.items() for t in ts})
        report.priorities_written += sum(len(ts) for ts in groups.values())
        if groups is head:
            report.reordered_at = time.time()
    mirror.drop("priority", sorted(set(old) - set(order)))  # labelled or deleted since
    ls.ensure_view(p.settings, project, p.settings.ranked_tab, p.settings.priority_field)


def queue_predictions(mirror: ProjectMirror, ids: list[int], scored: Scored) -> int:
    """Put the predictions Label Studio does not have yet (new model version, new tasks) in the
    project's outbox, replacing what an earlier sync left there; returns how many are waiting."""
    shown = mirror.load("predver")
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
    mirror.save("outbox", outbox, replace=True)
    mirror.put("outbox_version", scored.version)
    return len(outbox)


def push_predictions(p: Predictor, project: int, mirror: ProjectMirror, limit: int) -> int:
    """Import up to `limit` predictions from the outbox in bulk, the head of the queue first; once
    the outbox is empty, switch the project to that model version so its pre-annotations show.
    Returns how many are still waiting."""
    outbox, priority = mirror.load("outbox"), mirror.load("priority")
    batch = sorted(outbox, key=lambda t: -float(priority.get(t, -1)))[:limit]
    ls.import_predictions(p.settings, project, [outbox[t] for t in batch])
    mirror.save("predver", {t: outbox[t]["model_version"] for t in batch})
    mirror.drop("outbox", batch)
    left = len(outbox) - len(batch)
    version = mirror.get("outbox_version")
    if not left and version and mirror.get("shown_version") != version:
        ls.set_model_version(p.settings, project, version)
        mirror.put("shown_version", version)
    return left
