"""`fusion="auto"`: each project picks attention or mean pooling from its own labels.

No single fusion wins with few labels on every data set (BENCHMARKS.md, "Which fusion, per
project"): attention wins where the audio decides a label, mean pooling where speech shares
words with the rare class but the whole item says otherwise. So a project's labels decide, by
stratified k-fold cross-validation: each candidate is trained on k-1 folds and predicts the
held-out fold; the candidate whose out-of-fold predictions score the higher macro-F1 (mean over
heads) wins. This is our design, not the paper's. The choice is kept until the project has
`RECHOOSE_GROWTH` times as many labels, so it costs k trainings per candidate once in a while.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.labelstudio.labelconfig import LabelConfig, Labels

log = logging.getLogger(__name__)

CANDIDATES = ("attention", "mean")  # ties go to the first
FOLDS = 3
MIN_LABELS = 40  # fewer: each fold would hold a handful of items; attention until then
RECHOOSE_GROWTH = 1.5
# Tasks with an object this similar (cosine of mean-pooled encoder features) to an earlier task's
# share its fold: the same wording said twice must not be both trained on and held out, or
# cross-validation rewards learning wordings by heart, which new tasks do not repeat.
DUPLICATE_SIM = 0.95


@dataclass(frozen=True)
class FusionChoice:
    fusion: str
    n_labels: int  # how many labelled tasks it was chosen on
    scores: dict[str, float]  # out-of-fold macro-F1 per candidate (empty: too few labels to compare)

    def holds_for(self, n_labels: int) -> bool:
        """Still valid for a project that now has `n_labels` labelled tasks?"""
        if not self.scores:
            return n_labels < MIN_LABELS
        return n_labels < self.n_labels * RECHOOSE_GROWTH

    def describe(self) -> str:
        if not self.scores:
            return f"{self.fusion} (fewer than {MIN_LABELS} labels to compare)"
        cv = ", ".join(f"{k} {v:.3f}" for k, v in self.scores.items())
        return f"{self.fusion} (out-of-fold macro-F1 on {self.n_labels} labels: {cv})"


# (train features, train labels, fusion) -> a predict function giving probabilities per head
Trainer = Callable[[list[dict[str, np.ndarray]], list[Labels], str], Callable[[list], list[np.ndarray]]]


def choose_fusion(
    features: list[dict[str, np.ndarray]], labels: list[Labels], config: LabelConfig, fit: Trainer, seed: int
) -> FusionChoice:
    n = len(features)
    if n < MIN_LABELS:
        return FusionChoice(CANDIDATES[0], n, {})
    folds = stratified_folds(labels, FOLDS, seed, near_duplicates(features))
    scores = {}
    for fusion in CANDIDATES:
        oof: list[list[np.ndarray] | None] = [None] * n
        for k in range(FOLDS):
            train = [i for i in range(n) if folds[i] != k]
            held = [i for i in range(n) if folds[i] == k]
            predict = fit([features[i] for i in train], [labels[i] for i in train], fusion)
            probs = predict([features[i] for i in held])
            for row, i in enumerate(held):
                oof[i] = [p[row] for p in probs]
        scores[fusion] = oof_macro_f1(oof, labels, config)
    best = max(CANDIDATES, key=lambda f: scores[f])  # max keeps the first of equals
    choice = FusionChoice(best, n, scores)
    log.info("fusion chosen: %s", choice.describe())
    return choice


def stratified_folds(labels: list[Labels], k: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold index per task: every group (default: each task alone) whole in one fold, groups of
    each label (the first member's answers) spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(labels)) if groups is None else groups
    leaders = {}
    for i, g in enumerate(groups):
        leaders.setdefault(int(g), i)
    order = list(leaders)
    rng.shuffle(order)
    order.sort(key=lambda g: _stratum(labels[leaders[g]]))  # stable: shuffled within a label
    size = np.bincount(groups, minlength=max(order) + 1)
    fold_of_group, load = {}, np.zeros(k)
    for pos, g in enumerate(order):
        fold = int(np.argmin(load + 1e-9 * ((np.arange(k) - pos) % k)))  # lightest fold; ties rotate
        fold_of_group[g] = fold
        load[fold] += size[g]
    return np.array([fold_of_group[int(g)] for g in groups], dtype=np.int64)


def near_duplicates(features: list[dict[str, np.ndarray]], sim: float = DUPLICATE_SIM) -> np.ndarray:
    """Group id per task: a task joins the group of the first earlier task with which it shares an
    object at least `sim` similar (no chaining: a group is one task and its near-copies)."""
    names = sorted({name for f in features for name in f})
    pooled = [_pooled(features, name) for name in names]  # per object (N, D), unit rows or zeros
    groups = np.arange(len(features))
    for i in range(1, len(features)):
        close = np.zeros(i, dtype=bool)
        for x in pooled:
            close |= x[:i] @ x[i] >= sim
        leaders = np.flatnonzero(close & (groups[:i] == np.arange(i)))
        if len(leaders):
            groups[i] = leaders[0]
    return groups


def _pooled(features: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    dim = next(f[name].shape[1] for f in features if name in f)
    x = np.stack([f[name].mean(0) if name in f and len(f[name]) else np.zeros(dim) for f in features])
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def _stratum(lab: Labels) -> str:
    return "|".join(",".join(sorted(chosen)) if chosen else "-" for chosen in lab)


def oof_macro_f1(probs: list[list[np.ndarray] | None], labels: list[Labels], config: LabelConfig) -> float:
    """Mean over heads of macro-F1 (over the labels present) of the held-out predictions."""
    per_head = []
    for h, control in enumerate(config.controls):
        rows = [i for i, lab in enumerate(labels) if lab[h] and probs[i] is not None]
        if not rows:
            continue
        truth = np.zeros((len(rows), len(control.labels)), dtype=bool)
        for r, i in enumerate(rows):
            truth[r, [control.labels.index(x) for x in labels[i][h]]] = True
        p = np.stack([probs[i][h] for i in rows])
        if control.multiple:
            pred = p >= 0.5
        else:
            pred = np.zeros_like(truth)
            pred[np.arange(len(rows)), p.argmax(1)] = True
        present = truth.any(0)
        tp = (pred & truth).sum(0)
        f1 = 2 * tp / np.maximum(pred.sum(0) + truth.sum(0), 1)
        per_head.append(float(f1[present].mean()))
    return float(np.mean(per_head)) if per_head else 0.0
