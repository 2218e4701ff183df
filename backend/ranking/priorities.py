"""From a ranking to the priorities written into Label Studio, and which of them need writing.

Each bulk write in Label Studio sets one value on many tasks, so a write-back costs one call per
distinct value that changed. The head of the queue (what annotators get next) gets a value per
task; the rest share a few levels, and a task one level off is left alone rather than rewritten.
"""

from __future__ import annotations

from collections import defaultdict

TOP_EXACT = 10
TAIL_LEVELS = 20
HEAD_FLOOR = 100.0  # head priorities are 101..110; the tail's levels lie in 0..100
LABELLED = -1.0  # a labelled task's priority: below every task still to label, so it leaves the top


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
