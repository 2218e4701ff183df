"""Label Studio's task JSON -> plain labels: what annotators chose, and what broaden showed them.

The ranking rules (`backend.ranking.seeds`) work on plain labels; this module is the adapter
from the records Label Studio keeps, so a resync from Label Studio finds the same labels and seeds.
Read from Label Studio's own records, a misprediction survives any loss of broaden's state.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from backend.labelstudio.labelconfig import LabelConfig, Labels, Shown

OUR_VERSIONS = ("zeroshot-", "vlmae-")  # model versions broaden stamps on its predictions


def labels_from_annotations(annotations: list[dict[str, Any]], config: LabelConfig) -> Labels:
    """One task's labels per Choices control: majority over its submitted, non-cancelled
    annotations (ties go to the most recent); labels outside the config are ignored."""
    kept = [a for a in annotations if not a.get("was_cancelled") and a.get("result") is not None]
    kept.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    out: Labels = []
    for control in config.controls:
        votes: list[tuple[str, ...]] = []
        for ann in kept:
            for region in ann["result"]:
                if region.get("from_name") == control.name and region.get("type", "choices") == "choices":
                    chosen = [c for c in (region.get("value") or {}).get("choices", []) if c in control.labels]
                    if chosen:
                        votes.append(tuple(sorted(chosen)))
        if not votes:
            out.append(None)
            continue
        counts = Counter(votes)
        best = max(counts.values())
        out.append(list(next(v for v in reversed(votes) if counts[v] == best)))
    return out


def shown_before_labelling(task: dict[str, Any]) -> Shown | None:
    """broaden's last prediction stored on the task before its first annotation, as
    (control, choices, score) per region; None when there was none (or nothing is annotated)."""
    annotated = [str(a.get("created_at") or "") for a in task.get("annotations") or []]
    if not annotated:
        return None
    first = min(annotated)
    earlier = [
        p
        for p in task.get("predictions") or []
        if str(p.get("model_version") or "").startswith(OUR_VERSIONS) and str(p.get("created_at") or "") < first
    ]
    if not earlier:
        return None
    latest = max(earlier, key=lambda p: str(p.get("created_at") or ""))
    return [
        (str(r.get("from_name")), list((r.get("value") or {}).get("choices") or []), float(r.get("score") or 0))
        for r in latest.get("result") or []
    ]
