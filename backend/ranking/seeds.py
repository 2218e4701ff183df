"""Which labels are hunted and which labelled tasks LSB broadens from: rules on plain labels.

Labels come as one list per Choices control (`Labels`); the Label Studio JSON adapter is
`backend.labelstudio.annotations`. The workers and `broaden simulate` share these rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from backend.labelstudio.labelconfig import LabelConfig, Labels, Shown

Target = tuple[str, str]  # (control name, label)


def parse_targets(explicit: str) -> list[Target]:
    """ "control:Label,..." in the given order, duplicates dropped."""
    pairs = [p.strip().split(":", 1) for p in explicit.split(",") if ":" in p]
    return list(dict.fromkeys((c, lab) for c, lab in pairs))


def unknown_targets(config: LabelConfig, targets: list[Target]) -> list[Target]:
    known = {(c.name, lab) for c in config.controls for lab in c.labels}
    return sorted(set(targets) - known)


def rare_labels(config: LabelConfig, labels: Mapping[int, Labels]) -> set[Target]:
    """Labels seen, but in under half the share a uniform spread over the control's labels would give."""
    rare = set()
    for h, control in enumerate(config.controls):
        counts = Counter(lab for task in labels.values() if task[h] for lab in task[h] or [])
        total = sum(counts.values())
        for label, count in counts.items():
            if total and count / total < 0.5 / len(control.labels):
                rare.add((control.name, label))
    return rare


def target_labels(config: LabelConfig, labels: Mapping[int, Labels], explicit: str) -> set[Target]:
    """(control, label) pairs to hunt: the configured ones, else the rare ones among the labels so far.
    Configured pairs the label config does not have hunt nothing (`target_columns` leaves them out)."""
    if explicit.strip():
        return set(parse_targets(explicit))
    return rare_labels(config, labels)


def is_target_positive(config: LabelConfig, labels: Labels, targets: set[Target]) -> bool:
    """The task carries a label being hunted: its neighbours are likely positives too."""
    return any(
        (control.name, lab) in targets
        for control, chosen in zip(config.controls, labels, strict=True)
        for lab in chosen or []
    )


def target_columns(config: LabelConfig, targets: set[Target]) -> list[tuple[int, int]]:
    """The hunted labels as (head, column) of the model's outputs, in config order; unknown ones left out."""
    return [(h, j) for h, c in enumerate(config.controls) for j, lab in enumerate(c.labels) if (c.name, lab) in targets]


def confidently_wrong(shown: Shown, labels: Labels, config: LabelConfig, confidence: float) -> bool:
    """A prediction shown for a task chose other labels than the annotator, with at least `confidence`."""
    chosen = {c.name: set(lab or []) for c, lab in zip(config.controls, labels, strict=True)}
    for control, said, score in shown:
        truth = chosen.get(control, set())
        if truth and said and set(said) != truth and score >= confidence:
            return True
    return False


def seed_tasks(
    config: LabelConfig, labels: Mapping[int, Labels], mispredicted: set[int], targets: set[Target]
) -> set[int]:
    """The labelled tasks to broaden from: positives of the hunted labels and confident mispredictions."""
    return {t for t, lab in labels.items() if is_target_positive(config, lab, targets)} | mispredicted
