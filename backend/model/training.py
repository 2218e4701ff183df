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
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import GroupKFold

from backend.config import Settings
from backend.labelstudio.labelconfig import LabelConfig, Labels
from backend.model.encoders import Encoders
from backend.model.features import feature_objects
from backend.model.relevance import head_objects
from backend.model.vlmae import AUDIO_SIDE, VLMAE, Batch, Ensemble, FusionConfig, Model, collate

log = logging.getLogger(__name__)

WEIGHT_DECAY = 0.05  # AdamW's; 0.5 measured no better (BENCHMARKS.md, "Layer shape and training settings")
# A head is a candidate to do without the audio if it leans more on photo and text than on the audio,
# judged only once two or more of its labels have this many training tasks each: with fewer, a
# label is learned by heart from the photo whatever decides it (5 violations of bench1200 were).
AUDIO_FREE_RATIO = 1.0
AUDIO_FREE_MIN_TASKS = 10
# A candidate is freed if, trained without the audio, it predicts tasks held out of training (this
# many folds) as well as with it, or nearly. On training tasks the audio can look useless where the
# words alone decide some tasks (the calls set's `reason`), or useful where the model learned labels
# by heart through unique recordings (the meters set's `usage`); held-out tasks tell both apart
# (BENCHMARKS.md, "Heads the audio does not decide").
AUDIO_FREE_FOLDS = 3
# Held-out fit is the true labels' probability (mean over labels). A freed head also loses the fusion
# block's feed-forward layer (it runs only where there is audio): where the audio carries nothing,
# that still cost 0.016 on a toy set the photo decides (tests/unit/test_model.py), against gaps of
# 0.04-0.15 where it matters (calls' `reason` kept, meters' `usage` freed; BENCHMARKS.md).
AUDIO_FREE_TOLERANCE = 0.02
# Held-out folds keep tasks whose text or transcript says nearly the same (cosine of their sentence
# embeddings at least this: the same line give or take a word) in one fold, as long as the group fits
# in one. Pools repeat wordings (templates, copied lines) that new tasks do not, and a model that
# learns them by heart looks better on random folds than it is on new tasks (docs/training.md).
SAME_WORDING_COS = 0.95
# fusion="auto": with this many labelled tasks or more (our choice, not tuned), attention and mean
# pooling are each set up as above and each head reads the one with the better held-out fit, or both
# where their fits differ by HEAD_FUSION_WITHIN or less (0.01: of 0 to 0.05, best on meters, level on
# market); below it, attention. Not the default: no fold of the pool shows the new wordings of a
# test split, so where mean pooling fits the folds better it gives up attention's lead where the audio
# decides, and with labels rich in a rare label it lost that label on one set (BENCHMARKS.md, "Fusion
# chosen per project").
FUSION_CHOICE_MIN_TASKS = 50
HEAD_FUSIONS = ("attention", "mean")
HEAD_FUSION_WITHIN = 0.01
# fusion="mixed": member k uses MIXED_FUSIONS[k % 2]. The two err in different places (attention on
# look-alikes, mean pooling where a few spoken words decide), which averaging evens out in macro-F1;
# but a mean-pooling member that cannot rank a rare label drags its positives down, worst on labels
# as rich in it as active learning's (BENCHMARKS.md, "Members of both fusions").
MIXED_FUSIONS = ("attention", "mean")


@dataclass
class TrainedModel:
    model: Model
    version: str
    fingerprint: str  # label config fingerprint it was trained for
    n_train: int


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
) -> TrainedModel:
    """AdamW over the labelled tasks; deterministic for a given seed.

    With `train_head_objects`, each head reads only the objects that tell it something
    (relevance.py). With audio and `train_audio_free_heads`, a first model finds the heads that
    lean on the photo and text more than on the audio; those that predict tasks held out of training
    as well without the audio read each task without it in the model returned, so that a label the
    audio does not decide cannot over-fit to it (BENCHMARKS.md, "Heads the audio does not
    decide"). With `train_members` > 1, more models are trained alike from the next seeds and used
    together (`Ensemble`); with `fusion="mixed"`, at least two, alternating attention and mean
    pooling, each fusion set up on its own (MIXED_FUSIONS). With `fusion="auto"`, attention and mean
    pooling are each set up so and weighed per head on held-out tasks (`head_fusions`); each fusion
    some head reads gets `train_members` models, and a head averages only the members it reads."""
    started = time.perf_counter()
    cfg, batch, ys, has = _prepared(features, labels, config, encoders, settings)
    settled: dict[str, tuple[FusionConfig, VLMAE | None]] = {}  # per fusion: its config and first model
    count, votes = settings.train_members, None  # votes: fusion="auto"'s choice per head
    if settings.fusion == "auto" and len(features) >= FUSION_CHOICE_MIN_TASKS and _audio_rows(batch).any():
        settled, votes = _weigh_per_head(cfg, batch, ys, has, settings)
        plan = [(f, k) for f in settled for k in range(count)]  # each fusion in use: `count` members
    elif settings.fusion == "mixed":
        count = max(2, count)
        plan = [(MIXED_FUSIONS[k % 2], k) for k in range(count)]
    else:
        plan = [(cfg.fusion, k) for k in range(count)]
    members = []
    for fusion, k in plan:
        s = settings.model_copy(update={"seed": settings.seed + k})
        if fusion not in settled:
            c, model, _ = _settle(replace(cfg, fusion=fusion), batch, ys, has, s)
            settled[fusion] = (c, None)
        elif k == 0 and settled[fusion][1] is not None:
            model = settled[fusion][1]  # fusion="auto" trained it while weighing the fusions
        else:
            model = _fit(settled[fusion][0], batch, ys, has, s)
        if votes is not None and len(settled) > 1:
            model.cfg = replace(model.cfg, head_votes=[v in (fusion, "mixed") for v in votes])
        members.append(model)
    model = members[0] if len(members) == 1 else Ensemble(members)
    without_audio = {fusion: _audio_free_names(c) or "none" for fusion, (c, _) in settled.items()}
    log.info(
        "trained %d model(s) with %s fusion on %d tasks, %d epochs in %.2fs; heads without audio: %s",
        len(members), model.fusion, len(features), training_epochs(len(features), settings),
        time.perf_counter() - started, without_audio,
    )  # fmt: skip
    blob = to_bytes(model)
    return TrainedModel(model, version_of(blob, model.fusion), config.fingerprint, len(features))


def _weigh_per_head(
    cfg: FusionConfig, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor], settings: Settings
) -> tuple[dict[str, tuple[FusionConfig, VLMAE | None]], list[str]]:
    """fusion="auto": each head's choice (`head_fusions`), and per fusion some head reads, its config
    and first model."""
    options = _fusion_options(cfg, batch, ys, has, settings)
    votes = head_fusions({fusion: fit for fusion, (_, _, fit) in options.items()})
    fits = zip(cfg.heads, votes, options["attention"][2], options["mean"][2], strict=True)
    for (name, _, _), fusion, a, m in fits:
        log.info("head %s: held-out fit %.3f with attention, %.3f with mean pooling: %s", name, a, m, fusion)
    return {f: options[f][:2] for f in HEAD_FUSIONS if any(v in (f, "mixed") for v in votes)}, votes


def _audio_free_names(cfg: FusionConfig) -> list[str]:
    free = cfg.audio_free or [False] * len(cfg.heads)
    return [name for (name, _, _), f in zip(cfg.heads, free, strict=True) if f]


def _settle(
    cfg: FusionConfig, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor], settings: Settings
) -> tuple[FusionConfig, VLMAE, list[float] | None]:
    """The config to train (heads freed from the audio where they may be), its first model, and its
    held-out fit if that was measured on the way."""
    model = _fit(cfg, batch, ys, has, settings)
    if settings.train_audio_free_heads and cfg.fusion != "none" and _audio_rows(batch).any():
        return _free_from_audio(cfg, model, batch, ys, has, settings)
    return cfg, model, None


def fusion_fits(
    features: list[dict[str, np.ndarray]],
    labels: list[Labels],
    config: LabelConfig,
    encoders: Encoders,
    settings: Settings,
) -> dict[str, list[float]]:
    """What `fusion="auto"` weighs (with FUSION_CHOICE_MIN_TASKS labelled tasks or more): per fusion, the
    held-out fit per head of the config it would train (`head_fusions` weighs them)."""
    cfg, batch, ys, has = _prepared(features, labels, config, encoders, settings)
    return {fusion: fit for fusion, (_, _, fit) in _fusion_options(cfg, batch, ys, has, settings).items()}


def head_fusions(fits: dict[str, list[float]], within: float = HEAD_FUSION_WITHIN) -> list[str]:
    """What `fusion="auto"` trains for each head: the fusion with the better held-out fit, or "mixed"
    (the members of both, averaged) where the two differ by `within` or less."""
    out = []
    for a, m in zip(fits["attention"], fits["mean"], strict=True):
        out.append("mixed" if abs(a - m) <= within else "attention" if a > m else "mean")
    return out


def _prepared(
    features: list[dict[str, np.ndarray]],
    labels: list[Labels],
    config: LabelConfig,
    encoders: Encoders,
    settings: Settings,
) -> tuple[FusionConfig, Batch, list[torch.Tensor], list[torch.Tensor]]:
    """The starting config ("auto" starts from attention), the batch and the targets."""
    cfg = fusion_config(config, encoders, "attention" if settings.fusion == "auto" else settings.fusion)
    if settings.train_head_objects:
        widths = [(name, cfg.input_dims[modality]) for name, modality in cfg.objects]
        cfg = replace(cfg, head_objects=head_objects(features, labels, config, widths, settings.seed))
    ys, has = _targets(labels, cfg, config)
    return cfg, collate(features, cfg), ys, has


def _fusion_options(
    cfg: FusionConfig, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor], settings: Settings
) -> dict[str, tuple[FusionConfig, VLMAE, list[float]]]:
    """Per fusion: the config it trains, its first model, and its held-out fit per head."""
    options = {}
    for fusion in HEAD_FUSIONS:
        chosen, model, fit = _settle(replace(cfg, fusion=fusion), batch, ys, has, settings)
        options[fusion] = (chosen, model, fit if fit is not None else held_out_fit(chosen, batch, ys, has, settings))
    return options


def _fit(cfg: FusionConfig, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor], settings: Settings) -> VLMAE:
    """One training run."""
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
            loss = model.loss(model(_index(batch, idx)), [y[idx] for y in ys], [m[idx] for m in has], weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _free_from_audio(
    cfg: FusionConfig, model: VLMAE, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor], settings: Settings
) -> tuple[FusionConfig, VLMAE, list[float] | None]:
    """The config, its model and its held-out fit (if measured): of the heads that lean on photo and
    text, those that predict held-out tasks without the audio as well as with it read no audio."""
    candidates = audio_free_heads(model, batch, ys, has)
    if not any(candidates):
        return cfg, model, None
    heard = held_out_fit(cfg, batch, ys, has, settings)
    silent = held_out_fit(replace(cfg, audio_free=candidates), batch, ys, has, settings)
    free = [c and s >= h - AUDIO_FREE_TOLERANCE for c, h, s in zip(candidates, heard, silent, strict=True)]
    for (name, _, _), c, f, h, s in zip(cfg.heads, candidates, free, heard, silent, strict=True):
        if c:
            verdict = "reads tasks without" if f else "keeps"
            log.info("head %s %s the audio: held-out fit %.3f with it, %.3f without", name, verdict, h, s)
    if not any(free):
        return cfg, model, heard
    cfg = replace(cfg, audio_free=free)
    return cfg, _fit(cfg, batch, ys, has, settings), silent if free == candidates else None


def held_out_fit(
    cfg: FusionConfig, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor], settings: Settings
) -> list[float]:
    """Per head, over AUDIO_FREE_FOLDS folds of the labelled tasks: the probability a model trained
    on the other folds gives the true labels of the fold's tasks, averaged per label, then over the
    labels (a multiple-choice label: over its positive and its negative tasks)."""
    folds = held_out_folds(cfg, batch, settings.seed)
    probs: list[list[torch.Tensor]] = [[] for _ in cfg.heads]
    for k, held in enumerate(folds):
        rest = torch.cat([f for j, f in enumerate(folds) if j != k])
        model = _fit(cfg, _index(batch, rest), [y[rest] for y in ys], [m[rest] for m in has], settings)
        with torch.inference_mode():
            for h, p in enumerate(model.probabilities(model(_index(batch, held)))):
                probs[h].append(p)
    rows = torch.cat(folds)  # the tasks in the order their probabilities were stacked
    out = []
    for (_, _, multi), p, y, m in zip(cfg.heads, probs, ys, has, strict=True):
        p, y = torch.cat(p)[m[rows]], y[rows][m[rows]]
        if multi:  # each label as two: its positives and its negatives
            p, y = torch.cat([p, 1 - p], 1), torch.cat([y, 1 - y], 1)
        per_label = (p * y).sum(0) / y.sum(0).clamp(min=1)
        out.append(float(per_label[y.sum(0) > 0].mean()) if len(y) else 0.0)
    return out


def held_out_folds(cfg: FusionConfig, batch: Batch, seed: int) -> list[torch.Tensor]:
    """AUDIO_FREE_FOLDS folds of the tasks, as even as the wording groups allow (random for a seed)."""
    groups = wording_groups(cfg, batch)
    # GroupKFold balances fold sizes deterministically; groups numbered at random make the folds random.
    groups = np.random.default_rng(seed).permutation(batch.size)[groups]
    splits = GroupKFold(n_splits=AUDIO_FREE_FOLDS).split(np.zeros(batch.size), groups=groups)
    return [torch.from_numpy(held) for _, held in splits]


def wording_groups(cfg: FusionConfig, batch: Batch) -> np.ndarray:
    """(B,) group number per task: each task is linked to the first earlier task whose text or
    transcript object it nearly duplicates (SAME_WORDING_COS), object by object, as long as the
    group stays small enough for one fold. A line shared by more tasks than that links none."""
    n, most = batch.size, batch.size / AUDIO_FREE_FOLDS
    group, size = np.arange(n), np.ones(n, dtype=int)
    for k, (_, modality) in enumerate(cfg.objects):
        if modality not in ("text", "speech"):
            continue
        mask = (batch.objects[modality] == k) & batch.masks[modality]
        vectors = (batch.tokens[modality] * mask[..., None]).sum(1)  # zero where the task lacks it
        first = _first_duplicate(torch.nn.functional.normalize(vectors, dim=1))
        alone = _components(first)
        for i in np.flatnonzero((first != np.arange(n)) & (np.bincount(alone)[alone] <= most)):
            a, b = _root(group, i), _root(group, first[i])
            if a != b and size[a] + size[b] <= most:
                group[a], size[b] = b, size[a] + size[b]
    return np.array([_root(group, i) for i in range(n)])


def _components(first: np.ndarray) -> np.ndarray:
    """Group number per task, each task linked to first[task]."""
    n = len(first)
    graph = coo_matrix((np.ones(n), (np.arange(n), first)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _root(group: np.ndarray, i: int) -> int:
    """The task that names i's group (union-find; paths halved on the way)."""
    while group[i] != i:
        group[i] = group[group[i]]
        i = group[i]
    return int(i)


def _first_duplicate(vectors: torch.Tensor, chunk: int = 512) -> np.ndarray:
    """Per task, the first earlier task within SAME_WORDING_COS of it, else itself: one link per task,
    where all pairs of a line most tasks share would be quadratic."""
    first = np.arange(len(vectors))
    for start in range(0, len(vectors), chunk):
        stop = min(start + chunk, len(vectors))
        near = (vectors[start:stop] @ vectors[:stop].T >= SAME_WORDING_COS).tril(start - 1)
        found = near.any(1).numpy()
        first[start:stop][found] = near.float().argmax(1).numpy()[found]
    return first


def audio_free_heads(model: VLMAE, batch: Batch, ys: list[torch.Tensor], has: list[torch.Tensor]) -> list[bool]:
    """Per head: does the trained model lean on the photo and text more than on the audio?

    Reliance on a side = how much probability the true labels of the training tasks lose when
    that side is hidden (per label, then averaged over the labels seen). At 110 labels of the demo
    set, the category head loses 0.02-0.10 without audio and 0.7 without photo and text, the
    policy head 0.24-0.36 and nothing (BENCHMARKS.md, "Heads the audio does not decide")."""
    with torch.inference_mode():
        heard = model.probabilities(model(batch))
        no_audio = model.probabilities(model(batch.without(AUDIO_SIDE)))
        no_vl = model.probabilities(model(batch.without(("image", "text"))))
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


def _index(batch: Batch, idx: torch.Tensor) -> Batch:
    return Batch(
        {k: v[idx] for k, v in batch.tokens.items()},
        {k: v[idx] for k, v in batch.objects.items()},
        {k: v[idx] for k, v in batch.masks.items()},
    )


def to_bytes(model: Model) -> bytes:
    members = model.members if isinstance(model, Ensemble) else [model]
    saved = {"configs": [asdict(m.cfg) for m in members], "members": [m.state_dict() for m in members]}
    buf = io.BytesIO()
    torch.save(saved, buf)
    return buf.getvalue()


def from_bytes(blob: bytes) -> Model:
    saved = torch.load(io.BytesIO(blob), weights_only=True)
    if "configs" not in saved:  # saved before members could differ in fusion: one config for all
        saved["members"] = saved.get("members") or [saved["state_dict"]]
        saved["configs"] = [saved["config"]] * len(saved["members"])
    members = []
    for cfg, state in zip(saved["configs"], saved["members"], strict=True):
        cfg = dict(cfg)
        cfg["objects"] = [tuple(o) for o in cfg["objects"]]
        cfg["heads"] = [tuple(h) for h in cfg["heads"]]
        members.append(VLMAE(FusionConfig(**cfg)))
        members[-1].load_state_dict(state)
    return (members[0] if len(members) == 1 else Ensemble(members)).eval()


def version_of(blob: bytes, fusion: str) -> str:
    """The model version is the digest of the saved weights: it changes exactly when they do."""
    return f"vlmae-{fusion}-{hashlib.sha256(blob).hexdigest()[:10]}"
