"""Train the fusion layer and heads of VLMAE on cached encoder features; save and load them.

Only the small trainable part lives here: the encoders stay frozen, so a project's
model is a few MB and trains in seconds on a CPU.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from backend.config import Settings
from backend.encoders import Encoders
from backend.features import feature_objects
from backend.labelconfig import LabelConfig
from backend.model import VLMAE, FusionConfig, collate

log = logging.getLogger(__name__)

WEIGHT_DECAY = 0.05  # AdamW's; 0.5 measured no better (BENCHMARKS.md, "The category cost")

Labels = list[list[str] | None]  # per head: the task's chosen labels, or None if unlabelled


@dataclass
class TrainedModel:
    model: VLMAE
    version: str
    fingerprint: str  # label config fingerprint it was trained for
    n_train: int


def fusion_config(config: LabelConfig, encoders: Encoders, fusion: str) -> FusionConfig:
    objects = feature_objects(config, encoders)
    kinds = sorted({o.kind for o in objects})
    return FusionConfig(
        input_dims={k: encoders.for_kind(k).dim for k in kinds},
        objects=[(o.name, o.kind) for o in objects],
        heads=[(c.name, len(c.labels), c.multiple) for c in config.controls],
        fusion=fusion,
        extra={k: encoders.for_kind(k).id for k in kinds},
    )


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


def _targets(
    labels: list[Labels], cfg: FusionConfig, config: LabelConfig
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    ys, has = [], []
    for h, control in enumerate(config.controls):
        y = torch.zeros(len(labels), len(control.labels))
        m = torch.zeros(len(labels), dtype=torch.bool)
        for i, task_labels in enumerate(labels):
            chosen = task_labels[h]
            if chosen:
                m[i] = True
                for name in chosen:
                    y[i, control.labels.index(name)] = 1.0
        ys.append(y)
        has.append(m)
    return ys, has


def class_weights(ys: list[torch.Tensor], has: list[torch.Tensor], multiple: list[bool]) -> list[torch.Tensor]:
    """Per head, inverse square-root label frequency over the labelled tasks, mean 1 over the labels
    seen: a middle ground between no weights and full inverse frequency, which over-predicts rare
    labels (on the demo set all three rank alike; BENCHMARKS.md). For multiple-choice heads this
    is a positive weight per label: sqrt(negatives / positives)."""
    out = []
    for y, m, multi in zip(ys, has, multiple, strict=True):
        y = y[m]
        pos = y.sum(0)
        if multi:
            out.append(((len(y) - pos).clamp(min=1) / pos.clamp(min=1)).sqrt())
            continue
        w = torch.where(pos > 0, pos.clamp(min=1).rsqrt(), torch.zeros_like(pos))
        out.append(w * (pos > 0).sum() / w.sum().clamp(min=1e-8))
    return out


def training_epochs(n: int, settings: Settings) -> int:
    """`train_epochs`, cut so that training takes at most `train_max_steps` optimiser steps (at least one epoch)."""
    steps_per_epoch = max(1, math.ceil(n / settings.train_batch_size))
    return max(1, min(settings.train_epochs, settings.train_max_steps // steps_per_epoch))


def train(
    features: list[dict[str, np.ndarray]],
    labels: list[Labels],
    config: LabelConfig,
    encoders: Encoders,
    settings: Settings,
) -> TrainedModel:
    """Full-batch-ish AdamW over the labelled tasks; deterministic for a given seed."""
    torch.manual_seed(settings.seed)
    cfg = fusion_config(config, encoders, settings.fusion)
    model = VLMAE(cfg)
    batch_all = collate(features, cfg)
    ys, has = _targets(labels, cfg, config)
    weights = class_weights(ys, has, [multi for _, _, multi in cfg.heads])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.train_lr, weight_decay=WEIGHT_DECAY)
    n, bs = len(features), settings.train_batch_size
    epochs = training_epochs(n, settings)
    gen = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            sub = _index(batch_all, idx)
            loss = model.loss(model(sub), [y[idx] for y in ys], [m[idx] for m in has], weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    log.info("trained on %d tasks, %d epochs in %.2fs", n, epochs, time.perf_counter() - started)
    blob = to_bytes(model)
    return TrainedModel(model, version_of(blob, cfg.fusion), config.fingerprint, n)


def _index(batch: Any, idx: torch.Tensor) -> Any:
    from backend.model import Batch

    return Batch(
        {k: v[idx] for k, v in batch.tokens.items()},
        {k: v[idx] for k, v in batch.objects.items()},
        {k: v[idx] for k, v in batch.masks.items()},
    )


def to_bytes(model: VLMAE) -> bytes:
    buf = io.BytesIO()
    torch.save({"config": asdict(model.cfg), "state_dict": model.state_dict()}, buf)
    return buf.getvalue()


def from_bytes(blob: bytes) -> VLMAE:
    saved = torch.load(io.BytesIO(blob), weights_only=True)
    cfg = saved["config"]
    cfg["objects"] = [tuple(o) for o in cfg["objects"]]
    cfg["heads"] = [tuple(h) for h in cfg["heads"]]
    model = VLMAE(FusionConfig(**cfg))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def version_of(blob: bytes, fusion: str) -> str:
    """The model version is the digest of the saved weights: it changes exactly when they do."""
    return f"vlmae-{fusion}-{hashlib.sha256(blob).hexdigest()[:10]}"
