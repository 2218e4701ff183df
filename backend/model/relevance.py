"""Which objects each head reads, decided from the project's own labels.

A rare label learnt from a few dozen positives drowns among objects that do not carry it: on the
suite's reviews set the model found none of `remove` while a linear probe of the review text
alone found a quarter (BENCHMARKS.md, "Objects each head reads"). So, before training, each
object is probed per head: a balanced logistic regression on the object's mean token, scored by
cross-validated ROC AUC for every label of the head with enough tasks. An object tells the head
something when, for some label, its AUC minus one standard error is at least RELEVANT_AUC; the
others are left out of that head's view. AUC, unlike average precision, is 0.5 for a useless object
whatever the label's rarity, and its standard error (Hanley and McNeil) keeps a label with four
positives from letting in an object by luck.

Cross-validation here shares wordings between folds, so it cannot tell a feature that learns a
sentence by heart from one that understands it: it is only trusted to say "no signal at all".
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from backend.labelstudio.labelconfig import LabelConfig, Labels
from backend.model.features import object_means

log = logging.getLogger(__name__)

# On the choice sets (podcast, clips, market; 100 and 300 random labels) an object that carries a
# label scored 0.75-1.00 for it, one that does not 0.43-0.60 (BENCHMARKS.md, "Objects each head reads").
RELEVANT_AUC = 0.65
MIN_TASKS = 5  # per label, positives and negatives alike, before it is judged
MAX_ROWS = 1000  # labelled tasks probed (a fixed random sample past this): the cost stays flat
FOLDS = 3


def head_objects(
    features: list[dict[str, np.ndarray]],
    labels: list[Labels],
    config: LabelConfig,
    objects: list[tuple[str, int]],
    seed: int = 0,
) -> list[list[str] | None]:
    """Per head: the names of the objects it reads, or None for all of them (too few labels to
    judge, or every object tells something)."""
    rows = np.arange(len(features))
    if len(rows) > MAX_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_ROWS, replace=False))
    means = object_means([features[i] for i in rows], objects)
    out: list[list[str] | None] = []
    for h, control in enumerate(config.controls):
        tasks = _targets([labels[i][h] for i in rows], control.labels, control.multiple)
        scores = {name: _best_bound(x, tasks, seed) for name, x in means.items()}
        keep = [name for name, s in scores.items() if s is not None and s >= RELEVANT_AUC]
        out.append(keep if 0 < len(keep) < len(objects) else None)
        if tasks:
            auc = {k: round(v, 2) for k, v in scores.items() if v is not None}
            log.info("head %s: object AUC lower bounds %s, reads %s", control.name, auc, out[-1] or "every object")
    return out


Target = tuple[np.ndarray, np.ndarray]  # (rows probed, their class per row)


def _targets(chosen: list[list[str] | None], names: tuple[str, ...], multiple: bool) -> list[Target]:
    """What to probe for one head. Single choice: one multi-class problem over its labelled tasks,
    labels with under MIN_TASKS tasks pooled into one more class (dropped if that one is still
    smaller). Multiple choice: one yes/no problem per label with MIN_TASKS tasks on each side."""
    rows = np.flatnonzero([bool(c) for c in chosen])
    if multiple:
        out = []
        for name in names:
            y = np.array([name in chosen[r] for r in rows], np.int64)
            if min(y.sum(), len(y) - y.sum()) >= MIN_TASKS:
                out.append((rows, y))
        return out
    y = np.array([names.index(chosen[r][0]) for r in rows])
    counts = np.bincount(y, minlength=len(names))
    y = np.where(counts[y] >= MIN_TASKS, y, len(names))
    if (y == len(names)).sum() < MIN_TASKS:
        rows, y = rows[y < len(names)], y[y < len(names)]
    return [(rows, y)] if len(np.unique(y)) >= 2 else []


def _best_bound(x: np.ndarray, targets: list[Target], seed: int) -> float | None:
    """The best lower bound (cross-validated ROC AUC minus one standard error) over the labels."""
    best = None
    for rows, y in targets:
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
        probe = LogisticRegression(class_weight="balanced", max_iter=1000)
        s = cross_val_predict(probe, x[rows], y, cv=folds, method="decision_function")
        classes = np.unique(y)
        s = s[:, None] if s.ndim == 1 else s  # two classes: one score, for the second
        for c, score in zip(classes[-s.shape[1] :], s.T, strict=True):
            hit = y == c
            auc = float(roc_auc_score(hit, score))
            low = auc - auc_standard_error(auc, int(hit.sum()), int((~hit).sum()))
            best = low if best is None else max(best, low)
    return best


def auc_standard_error(auc: float, pos: int, neg: int) -> float:
    """Hanley and McNeil's (1982) standard error of an ROC AUC from `pos` positives and `neg` negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = auc * (1 - auc) + (pos - 1) * (q1 - auc**2) + (neg - 1) * (q2 - auc**2)
    return float(np.sqrt(max(var, 0.0) / (pos * neg)))
