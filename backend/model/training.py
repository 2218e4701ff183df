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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from backend.config import Settings
from backend.labelstudio.labelconfig import LabelConfig, Labels
from backend.model.encoders import Encoders
from backend.model.features import feature_objects
from backend.model.fusion_choice import FusionChoice, Trainer, choose_fusion
from backend.model.vlmae import AUDIO_SIDE, VLMAE, Batch, FusionConfig, collate

log = logging.getLogger(__name__)

WEIGHT_DECAY = 0.05  # AdamW's; 0.5 measured no better (BENCHMARKS.md, "Layer shape and training settings")
# A head is trained to do without the audio if it leans this many times more on photo and text,
# judged only once two or more of its labels have this many training tasks each: with fewer, a
# label is learned by heart from the photo whatever decides it (5 violations of bench1200 were).
AUDIO_FREE_RATIO = 4.0
AUDIO_FREE_MIN_TASKS = 10


@dataclass
class TrainedModel:
    model: VLMAE
    version: str
    fingerprint: str  # label config fingerprint it was trained for
    n_train: int
    choice: FusionChoice | None = None  # with fusion="auto": which fusion, and why


def fusion_config(config: LabelConfig, encoders: Encoders, fusion: str) -> FusionConfig:
    objects = feature_objects(config, encoders)
    modalities = sorted({o.modality for o in objects})
    return FusionConfig(
        input_dims={k: encoders.for_modality(k).dim for k in modalities},
        objects=[(o.name, o.modality) for o in objects],
        heads=[(c.name, len(c.labels), c.multiple) for c in config.controls],
        fusion=fusion,
        extra={k: encoders.for_modality(k).id for k in modalities},
    )


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
    choice: FusionChoice | None = None,
) -> TrainedModel:
    """AdamW over the labelled tasks; deterministic for a given seed. With `fusion="auto"`, the
    fusion is `choice` while it holds for this many labels, else chosen again (fusion_choice.py)."""
    fusion = settings.fusion
    if fusion == "auto":
        if choice is None or not choice.holds_for(len(features)):
            choice = choose_fusion(features, labels, config, _trainer(config, encoders, settings), settings.seed)
        fusion = choice.fusion
    started = time.perf_counter()
    model = train_fixed(features, labels, config, encoders, settings, fusion)
    log.info("trained %s on %d tasks in %.2fs", fusion, len(features), time.perf_counter() - started)
    blob = to_bytes(model)
    return TrainedModel(model, version_of(blob, fusion), config.fingerprint, len(features), choice)


def train_fixed(
    features: list[dict[str, np.ndarray]],
    labels: list[Labels],
    config: LabelConfig,
    encoders: Encoders,
    settings: Settings,
    fusion: str,
) -> VLMAE:
    """One fusion, trained. With audio and `train_audio_dropout`, a first model finds the heads
    that lean on the photo and text far more than on the audio; the model returned is trained
    again, and those heads also learn from silent copies of some rows, so that a label the audio
    does not decide stops over-fitting to it (BENCHMARKS.md, "Heads the audio does not decide")."""
    cfg = fusion_config(config, encoders, fusion)
    batch = collate(features, cfg)
    ys, has = _targets(labels, cfg, config)
    model = _fit(cfg, batch, ys, has, settings)
    if settings.train_audio_dropout > 0 and cfg.fusion != "none" and _audio_rows(batch).any():
        free = audio_free_heads(model, batch, ys, has)
        if any(free):
            log.debug(
                "heads also trained without audio: %s", [h for (h, _, _), f in zip(cfg.heads, free, strict=True) if f]
            )
            model = _fit(cfg, batch, ys, has, settings, silent_copies_for=free)
    return model


def _trainer(config: LabelConfig, encoders: Encoders, settings: Settings) -> Trainer:
    """For cross-validation: train one fusion on some rows, return its probabilities function."""

    def fit(features: list[dict[str, np.ndarray]], labels: list[Labels], fusion: str) -> Any:
        model = train_fixed(features, labels, config, encoders, settings, fusion)

        def predict(rows: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
            with torch.inference_mode():
                return [p.numpy() for p in model.probabilities(model(collate(rows, model.cfg)))]

        return predict

    return fit


def _fit(
    cfg: FusionConfig,
    batch: Batch,
    ys: list[torch.Tensor],
    has: list[torch.Tensor],
    settings: Settings,
    silent_copies_for: list[bool] | None = None,
) -> VLMAE:
    """One training run. `silent_copies_for[h]`: head h also learns from copies of rows with their audio
    hidden (each step copies `train_audio_dropout` of its rows). The copies are extra: every head
    still learns from every real row, so a head that needs the audio sees what it would without."""
    torch.manual_seed(settings.seed)
    model = VLMAE(cfg)
    weights = class_weights(ys, has, [multi for _, _, multi in cfg.heads])
    opt = torch.optim.AdamW(model.parameters(), lr=settings.train_lr, weight_decay=WEIGHT_DECAY)
    n, bs = batch.size, settings.train_batch_size
    gen = torch.Generator().manual_seed(settings.seed)
    model.train()
    for _ in range(training_epochs(n, settings)):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            sub, sub_has, sub_ys = _index(batch, idx), [m[idx] for m in has], [y[idx] for y in ys]
            if silent_copies_for:
                copy = torch.rand(len(idx), generator=gen) < settings.train_audio_dropout
                sub, sub_has, sub_ys = _with_silent_copies(sub, sub_has, sub_ys, copy, silent_copies_for)
            loss = model.loss(model(sub), sub_ys, sub_has, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _with_silent_copies(
    batch: Batch, has: list[torch.Tensor], ys: list[torch.Tensor], copy: torch.Tensor, free: list[bool]
) -> tuple[Batch, list[torch.Tensor], list[torch.Tensor]]:
    """The batch followed by copies of its `copy` rows with their audio hidden; only the `free`
    heads learn from the copies."""
    rows = copy.nonzero()[:, 0]
    silent = _hide(_index(batch, rows), AUDIO_SIDE, torch.ones(len(rows), dtype=torch.bool))
    has = [torch.cat([m, m[rows] & f]) for m, f in zip(has, free, strict=True)]
    return _cat(batch, silent), has, [torch.cat([y, y[rows]]) for y in ys]


def audio_free_heads(model: VLMAE, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor]) -> list[bool]:
    """Per head: does the trained model lean on the photo and text far more than on the audio?

    Reliance on a side = how much probability the true labels of the training tasks lose when
    that side is hidden (per label, then averaged over the labels seen). At 110 labels of the demo
    set, the category head loses 0.02-0.10 without audio and 0.7 without photo and text, the
    policy head 0.24-0.36 and nothing (BENCHMARKS.md, "Heads the audio does not decide")."""
    audio, everyone = _audio_rows(batch), torch.ones(batch.size, dtype=torch.bool)
    with torch.inference_mode():
        heard = model.probabilities(model(batch))
        no_audio = model.probabilities(model(_hide(batch, AUDIO_SIDE, audio)))
        no_vl = model.probabilities(model(_hide(batch, ("image", "text"), everyone)))
    out = []
    for p, pa, pv, y, m in zip(heard, no_audio, no_vl, ys, has, strict=True):
        counts = y[m].sum(0)
        seen = counts[counts > 0]
        if len(seen) < 2 or (seen < AUDIO_FREE_MIN_TASKS).any():
            out.append(False)
            continue
        out.append(_reliance(p[m], pa[m], y[m]) * AUDIO_FREE_RATIO < _reliance(p[m], pv[m], y[m]))
    return out


def _reliance(p: torch.Tensor, hidden: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the labels present of the probability their tasks lose when a side is hidden."""
    lost = ((p - hidden) * y).sum(0) / y.sum(0).clamp(min=1)
    return float(lost[y.sum(0) > 0].mean())


def _audio_rows(batch: Batch) -> torch.Tensor:
    """(B,) True where the task has any audio-side token."""
    rows = torch.zeros(batch.size, dtype=torch.bool)
    for modality in AUDIO_SIDE:
        if modality in batch.masks:
            rows |= batch.masks[modality].any(1)
    return rows


def _hide(batch: Batch, modalities: tuple[str, ...], rows: torch.Tensor) -> Batch:
    """The batch with the tokens of `modalities` masked out in `rows` (as if those tasks had none)."""
    masks = {k: (m & ~rows[:, None]) if k in modalities else m for k, m in batch.masks.items()}
    return Batch(batch.tokens, batch.objects, masks)


def _index(batch: Batch, idx: torch.Tensor) -> Batch:
    return Batch(
        {k: v[idx] for k, v in batch.tokens.items()},
        {k: v[idx] for k, v in batch.objects.items()},
        {k: v[idx] for k, v in batch.masks.items()},
    )


def _cat(a: Batch, b: Batch) -> Batch:
    return Batch(
        {k: torch.cat([v, b.tokens[k]]) for k, v in a.tokens.items()},
        {k: torch.cat([v, b.objects[k]]) for k, v in a.objects.items()},
        {k: torch.cat([v, b.masks[k]]) for k, v in a.masks.items()},
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
