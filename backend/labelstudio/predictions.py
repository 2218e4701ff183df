"""The prediction format Label Studio stores: regions of choices with honest scores.

Used by /predict's response and by the workers' bulk import alike.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from backend.labelstudio.labelconfig import LabelConfig


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_name: str
    to_name: str
    type: str = "choices"
    value: dict[str, list[str]]
    score: float


class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result: list[Region]
    score: float | None = None
    model_version: str


def empty(version: str) -> Prediction:
    """No answer for this task (it could not be encoded, or it is deferred)."""
    return Prediction(result=[], score=None, model_version=version)


def to_prediction(probs: list[np.ndarray] | None, config: LabelConfig, version: str) -> Prediction:
    """One region per control that has an honest answer: the argmax of a single-choice head, the
    labels at 0.5 or more of a multiple-choice one; NaN probabilities mean no answer."""
    if probs is None:
        return empty(version)
    regions = []
    for control, p in zip(config.controls, probs, strict=True):
        if np.isnan(p).any():
            continue  # this control has no honest prediction (multi-choice at cold start)
        if control.multiple:
            chosen = [i for i in np.argsort(-p) if p[i] >= 0.5]
            score = float(np.mean([p[i] for i in chosen])) if chosen else None
        else:
            chosen = [int(np.argmax(p))]
            score = float(p[chosen[0]])
        if chosen and score is not None:
            regions.append(
                Region(
                    from_name=control.name,
                    to_name=control.to_name,
                    value={"choices": [control.labels[i] for i in chosen]},
                    score=round(score, 4),
                )
            )
    score = round(float(np.mean([r.score for r in regions])), 4) if regions else None
    return Prediction(result=regions, score=score, model_version=version)
