"""From labels and scores to seeds and to the priorities written into Label Studio.

Pure functions over plain dicts keyed by task id, so the workers and the backtest
share them and they are testable without Redis or Label Studio.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from backend.labelconfig import LabelConfig

Labels = list[list[str] | None]  # per Choices control, the task's labels (None = not labelled)

# Each bulk write in Label Studio sets one value on many tasks, so a write-back costs one call per
# distinct value that changed. The head of the queue (what annotators get next) gets a value per
# task; the rest share a few levels, and a task one level off is left alone rather than rewritten.
TOP_EXACT = 10
TAIL_LEVELS = 20
HEAD_FLOOR = 100.0  # head priorities are 101..110; the tail's levels lie in 0..100


def priorities(order: list[int]) -> dict[int, float]:
    """Task id -> priority (higher = label sooner): HEAD_FLOOR + 1.. for the first TOP_EXACT tasks,
    then TAIL_LEVELS + 1 levels in 0..100 by rank percentile."""
    n_tail = max(1, len(order) - TOP_EXACT)
    step = HEAD_FLOOR / TAIL_LEVELS
    out = {}
    for rank, task in enumerate(order):
        if rank < TOP_EXACT:
            out[task] = HEAD_FLOOR + TOP_EXACT - rank
        else:
            out[task] = step * round(TAIL_LEVELS * (1 - (rank - TOP_EXACT) / n_tail))
    return out


def changed_groups(
    new: dict[int, float], old: dict[int, float], exact: bool = False
) -> tuple[dict[float, list[int]], dict[float, list[int]]]:
    """(head, tail): value -> tasks to (re)write to it. Head values are always exact; unless
    `exact`, a tail task within one level of its new value keeps the old one (no boundary churn)."""
    head: dict[float, list[int]] = defaultdict(list)
    tail: dict[float, list[int]] = defaultdict(list)
    step = 0.0 if exact else HEAD_FLOOR / TAIL_LEVELS
    for task, value in new.items():
        before = old.get(task)
        if before == value:
            continue
        if value > HEAD_FLOOR:
            head[value].append(task)
        elif before is None or before > HEAD_FLOOR or abs(before - value) > step:
            tail[value].append(task)
    return dict(head), dict(tail)


def target_labels(config: LabelConfig, labels: dict[int, Labels], explicit: str) -> set[tuple[str, str]]:
    """(control, label) pairs to hunt: the configured ones, else the rare ones among the labels so
    far (seen, but in under half the share a uniform spread would give)."""
    if explicit.strip():
        pairs = {tuple(p.strip().split(":", 1)) for p in explicit.split(",") if ":" in p}
        return {(c, lab) for c, lab in pairs}  # type: ignore[misc]
    rare = set()
    for h, control in enumerate(config.controls):
        counts = Counter(lab for task in labels.values() if task[h] for lab in task[h] or [])
        total = sum(counts.values())
        for label, count in counts.items():
            if total and count / total < 0.5 / len(control.labels):
                rare.add((control.name, label))
    return rare


def is_target_positive(config: LabelConfig, labels: Labels, targets: set[tuple[str, str]]) -> bool:
    """The task carries a label being hunted: its neighbours are likely positives too."""
    return any(
        (control.name, lab) in targets
        for control, chosen in zip(config.controls, labels, strict=True)
        for lab in chosen or []
    )


def target_columns(config: LabelConfig, targets: set[tuple[str, str]]) -> list[tuple[int, int]]:
    """The hunted labels as (head, column) of the model's outputs, in config order; unknown ones left out."""
    return [(h, j) for h, c in enumerate(config.controls) for j, lab in enumerate(c.labels) if (c.name, lab) in targets]


OUR_VERSIONS = ("zeroshot-", "vlmae-")


def is_misprediction(task: dict[str, Any], config: LabelConfig, labels: Labels, confidence: float) -> bool:
    """broaden's last prediction stored on the task before its first annotation chose another label
    with at least `confidence`. Read from Label Studio's own records, so it survives any loss of
    broaden's state and a resync finds the same seeds."""
    annotated = [str(a.get("created_at") or "") for a in task.get("annotations") or []]
    if not annotated:
        return False
    first = min(annotated)
    earlier = [
        p
        for p in task.get("predictions") or []
        if str(p.get("model_version") or "").startswith(OUR_VERSIONS) and str(p.get("created_at") or "") < first
    ]
    if not earlier:
        return False
    latest = max(earlier, key=lambda p: str(p.get("created_at") or ""))
    chosen = {c.name: set(lab or []) for c, lab in zip(config.controls, labels, strict=True)}
    for region in latest.get("result") or []:
        said = set((region.get("value") or {}).get("choices") or [])
        truth = chosen.get(region.get("from_name"), set())
        if truth and said and said != truth and float(region.get("score") or 0) >= confidence:
            return True
    return False


def seed_tasks(
    config: LabelConfig, labels: dict[int, Labels], mispredicted: set[int], targets: set[tuple[str, str]]
) -> set[int]:
    """The labelled tasks to broaden from: positives of the hunted labels and confident mispredictions."""
    return {t for t, lab in labels.items() if is_target_positive(config, lab, targets)} | mispredicted
