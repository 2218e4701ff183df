"""VLMAE: frozen encoder tokens, audio mid-fusion by gated cross-attention, one head per Choices.

Our reading of the paper (its exact layer shapes are not public, so these are ours):

    image tokens ─┐                       (B, Tv, d)                      (B, d)
    text tokens  ─┼─ proj + object emb ─▶ VL seq ─ x-attn(audio) ─ gate ─▶ pool ─▶ heads
    [query token]─┘                          ▲
    audio frames  ─┬─ proj + object emb ─────┘ (B, Ta, d)
    spoken words  ─┘  (transcript embedding, one token per clip, when transcription is on)

The gate is tanh(alpha) with alpha = 1 at init. Flamingo-style zero init keeps a
pretrained stack unchanged, but nothing after this layer is pretrained here, and a
zero gate also zeroes the attention's gradient: trained from a few dozen labels, the
layer then never learned to use audio at all (BENCHMARKS.md, "Layer shape and training settings").
`fusion="mean"` is the baseline the paper beats (average-pooled audio
concatenated to the pooled VL embedding); `fusion="none"` ignores audio.
The pooled embedding (B, d) is also the latent space LSB searches. A head may see less: only the
objects that tell it something (`FusionConfig.head_objects`, relevance.py), or the task without
its audio when the audio does not decide it (`FusionConfig.audio_free`); both are set by training,
and such a head reads the embedding of its tasks seen that way. When heads read only some
objects, LSB searches the embeddings of the views they read instead (`VLMAE.space`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

AUDIO_SIDE = ("audio", "speech")  # what the VL tokens attend to
LABEL_SMOOTHING = 0.05  # single-choice heads
GATE_INIT = 1.0  # tanh(1) = 0.76: audio is let in from the first step (see the module docstring)


@dataclass
class FusionConfig:
    input_dims: dict[str, int]  # encoder output size per modality: {"image": 1280, "text": 384, "audio": 512}
    objects: list[tuple[str, str]]  # (object tag name, modality) from the label config; index = embedding id
    heads: list[tuple[str, int, bool]]  # (control name, number of labels, multiple choice)
    fusion: str = "attention"  # attention | mean | none
    d_model: int = 256
    n_heads: int = 4
    dropout: float = 0.1
    # Per head: it reads the embedding of the task without its audio (training.py, audio_free_heads).
    audio_free: list[bool] = field(default_factory=list)
    # Per head: the objects it reads, None for all (relevance.py, set by training).
    head_objects: list[list[str] | None] = field(default_factory=list)
    # Per head: whether this member's probabilities count in an ensemble (fusion="auto" picks a fusion
    # per head, training.py); empty: every head counts.
    head_votes: list[bool] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # free-form provenance (encoder ids)


@dataclass
class Batch:
    """Padded tokens per modality: tokens (B, T, D_modality), object index (B, T), mask (B, T) True = real."""

    tokens: dict[str, torch.Tensor]
    objects: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]

    @property
    def size(self) -> int:
        return next(iter(self.masks.values())).shape[0]

    def without(self, modalities: tuple[str, ...]) -> Batch:
        """The same tasks as if they had no tokens of these modalities."""
        masks = {k: torch.zeros_like(m) if k in modalities else m for k, m in self.masks.items()}
        return Batch(self.tokens, self.objects, masks)

    def only(self, objects: list[int]) -> Batch:
        """The same tasks as if they had only these objects (indices into FusionConfig.objects)."""
        keep = torch.tensor(objects, dtype=torch.long)
        masks = {k: m & torch.isin(self.objects[k], keep) for k, m in self.masks.items()}
        return Batch(self.tokens, self.objects, masks)


class GatedCrossAttention(nn.Module):
    """VL tokens attend to the audio side; a tanh gate (alpha = GATE_INIT at start) scales what is added."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        self.gate_attn = nn.Parameter(torch.full((1,), GATE_INIT))
        self.gate_ff = nn.Parameter(torch.full((1,), GATE_INIT))

    def forward(self, vl: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
        has_audio = audio_mask.any(1)  # (B,)
        # A row with no audio would attend over nothing (NaN); let it see a dummy key, then zero it.
        safe_mask = audio_mask.clone()
        safe_mask[~has_audio, 0] = True
        kv = self.norm_kv(audio)
        y, _ = self.attn(self.norm_q(vl), kv, kv, key_padding_mask=~safe_mask, need_weights=False)
        y = y * has_audio[:, None, None]
        vl = vl + torch.tanh(self.gate_attn) * y
        return vl + torch.tanh(self.gate_ff) * self.ff(self.norm_ff(vl)) * has_audio[:, None, None]


class VLMAE(nn.Module):
    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.proj = nn.ModuleDict(
            {k: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, d)) for k, dim in cfg.input_dims.items()}
        )
        self.object_emb = nn.Embedding(max(1, len(cfg.objects)), d)
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)  # keeps the VL sequence non-empty
        self.fuse = GatedCrossAttention(d, cfg.n_heads, cfg.dropout) if cfg.fusion == "attention" else None
        self.mean_proj = nn.Linear(2 * d, d) if cfg.fusion == "mean" else None
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleList([nn.Linear(d, n) for _, n, _ in cfg.heads])

    def _tokens(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if modality not in batch.tokens or modality not in self.proj:
            return None
        x = self.proj[modality](batch.tokens[modality]) + self.object_emb(batch.objects[modality])
        return x, batch.masks[modality]

    def _audio(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Sound frames and spoken-word tokens as one sequence (B, Ta, d) with its mask."""
        parts = [p for k in AUDIO_SIDE if (p := self._tokens(batch, k)) is not None]
        if not parts:
            return None
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    def embed(self, batch: Batch) -> torch.Tensor:
        """The fused, pooled embedding (B, d): the latent space of LSB."""
        b = batch.size
        parts = [(self.query.expand(b, -1, -1), torch.ones(b, 1, dtype=torch.bool))]
        parts += [p for k in ("image", "text") if (p := self._tokens(batch, k)) is not None]
        vl = torch.cat([p[0] for p in parts], 1)  # (B, Tv, d)
        vl_mask = torch.cat([p[1] for p in parts], 1)
        audio = self._audio(batch) if self.cfg.fusion != "none" else None
        if audio is not None and self.fuse is not None:
            vl = self.fuse(vl, *audio)
        pooled = _masked_mean(vl, vl_mask)
        if audio is not None and self.mean_proj is not None:
            pooled = self.mean_proj(torch.cat([pooled, _masked_mean(*audio)], -1))
        return self.norm(pooled)

    @property
    def fusion(self) -> str:
        return self.cfg.fusion

    @property
    def head_fusions(self) -> dict[str, str]:
        return {name: self.cfg.fusion for name, _, _ in self.cfg.heads}

    @property
    def dim(self) -> int:
        """Width of `space`'s output."""
        return self.cfg.d_model * len(self._space_views)

    def space(self, batch: Batch, z: torch.Tensor) -> torch.Tensor:
        """The latent space LSB searches: the fused embedding `z` itself, or, once heads read only
        some objects, the embeddings of the views the heads read, side by side: `z` may then train
        through no head, a space no label shaped (BENCHMARKS.md, "Objects each head reads")."""
        parts = [z if view is None else self.embed(self._seen(batch, view)) for view in self._space_views]
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    @property
    def _space_views(self) -> list[tuple[tuple[int, ...] | None, bool] | None]:
        """The distinct views the heads read when some read only some objects, else [None] (`z`)."""
        views = self.views
        if all(v is None or v[0] is None for v in views):
            return [None]
        return list(dict.fromkeys(views))

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        """Logits per head, each (B, n_labels)."""
        return self.logits(batch, self.embed(batch))

    def logits(self, batch: Batch, z: torch.Tensor) -> list[torch.Tensor]:
        """Logits per head from the fused embedding `z`; a head with a view of its own (some objects
        only, or no audio) reads the embedding of the same tasks seen that way instead."""
        views = {None: self.drop(z)}
        out = []
        for head, view in zip(self.heads, self.views, strict=True):
            if view not in views:
                views[view] = self.drop(self.embed(self._seen(batch, view)))
            out.append(head(views[view]))
        return out

    @property
    def views(self) -> list[tuple[tuple[int, ...] | None, bool] | None]:
        """Per head: None (everything) or (object indices it reads, None for all; without audio)."""
        n = len(self.cfg.heads)
        free = self.cfg.audio_free or [False] * n
        index = {name: i for i, (name, _) in enumerate(self.cfg.objects)}
        out = []
        for names, f in zip(self.cfg.head_objects or [None] * n, free, strict=True):
            objs = None if names is None else tuple(sorted(index[k] for k in names))
            out.append(None if objs is None and not f else (objs, f))
        return out

    @staticmethod
    def _seen(batch: Batch, view: tuple[tuple[int, ...] | None, bool]) -> Batch:
        objects, audio_free = view
        batch = batch if objects is None else batch.only(list(objects))
        return batch.without(AUDIO_SIDE) if audio_free else batch

    def probabilities(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            torch.sigmoid(lg) if multiple else F.softmax(lg, -1)
            for lg, (_, _, multiple) in zip(logits, self.cfg.heads, strict=True)
        ]

    def loss(
        self,
        logits: list[torch.Tensor],
        targets: list[torch.Tensor],
        has: list[torch.Tensor],
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mean over heads of the loss on the tasks labelled for that head.

        targets[h]: (B, n) one-hot / multi-hot; has[h]: (B,) bool, the task has a label for head h;
        weights[h]: (n,) per-class weight (single choice) or positive weight (multiple choice).
        """
        total, count = logits[0].new_zeros(()), 0
        weights = weights or [None] * len(logits)
        for lg, y, m, w, (_, _, multiple) in zip(logits, targets, has, weights, self.cfg.heads, strict=True):
            if not m.any():
                continue
            lg, y = lg[m], y[m]
            if multiple:
                total = total + F.binary_cross_entropy_with_logits(lg, y, pos_weight=w)
            else:
                total = total + F.cross_entropy(lg, y.argmax(-1), weight=w, label_smoothing=LABEL_SMOOTHING)
            count += 1
        return total / max(count, 1)


class Ensemble(nn.Module):
    """VLMAE models trained from different seeds (with fusion="mixed" or "auto", also with different
    fusions), used as one: per head, the probabilities of the members that vote for it are averaged,
    and the latent space is their embeddings side by side (each ends in a LayerNorm, so the cosine of
    two tasks is close to the members' mean cosine)."""

    def __init__(self, members: list[VLMAE]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg  # heads and width, alike in every member; the fusion may differ

    @property
    def fusion(self) -> str:
        return _one_or_mixed({m.cfg.fusion for m in self.members})

    @property
    def head_fusions(self) -> dict[str, str]:
        """Per head: the fusion of the members voting for it ("mixed" if they differ)."""
        return {
            name: _one_or_mixed({m.cfg.fusion for m in self.members if _votes(m, h)})
            for h, (name, _, _) in enumerate(self.cfg.heads)
        }

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    def embed(self, batch: Batch) -> torch.Tensor:
        return torch.cat([m.embed(batch) for m in self.members], -1)

    def space(self, batch: Batch, z: torch.Tensor) -> torch.Tensor:
        chunks = z.split(self.cfg.d_model, -1)
        return torch.cat([m.space(batch, zm) for m, zm in zip(self.members, chunks, strict=True)], -1)

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        return self.logits(batch, self.embed(batch))

    def logits(self, batch: Batch, z: torch.Tensor) -> list[torch.Tensor]:
        """Logits whose probabilities are the members' mean probabilities."""
        chunks = z.split(self.cfg.d_model, -1)
        each = [m.probabilities(m.logits(batch, zm)) for m, zm in zip(self.members, chunks, strict=True)]
        out = []
        for h, (_, _, multiple) in enumerate(self.cfg.heads):
            probs = [p[h] for m, p in zip(self.members, each, strict=True) if _votes(m, h)]
            p = torch.stack(probs).mean(0).clamp(1e-7, 1 - 1e-7)
            out.append(torch.logit(p) if multiple else p.log())  # softmax(log p) = p, as p sums to 1
        return out

    def probabilities(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.members[0].probabilities(logits)


Model = VLMAE | Ensemble  # what training returns and the predictor serves


def _one_or_mixed(fusions: set[str]) -> str:
    return fusions.pop() if len(fusions) == 1 else "mixed"


def _votes(member: VLMAE, head: int) -> bool:
    return not member.cfg.head_votes or member.cfg.head_votes[head]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[:, :, None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def collate(features: list[dict[str, np.ndarray]], cfg: FusionConfig) -> Batch:
    """Per-task {object name: (T, D)} -> padded tensors per modality (rows with nothing are all-masked)."""
    index = {name: i for i, (name, _) in enumerate(cfg.objects)}
    modality_of = dict(cfg.objects)
    tokens, objects, masks = {}, {}, {}
    for modality, dim in cfg.input_dims.items():
        rows = [
            [(index[name], arr) for name, arr in sorted(f.items()) if modality_of.get(name) == modality]
            for f in features
        ]
        width = max([1] + [sum(len(a) for _, a in row) for row in rows])
        # Filled in numpy, handed to torch once: indexing torch tensors slice by slice made this
        # ~15 times slower (32 ms against 2 ms for 100 demo-shaped tasks on a busy machine).
        t = np.zeros((len(rows), width, dim), np.float32)
        o = np.zeros((len(rows), width), np.int64)
        m = np.zeros((len(rows), width), bool)
        for b, row in enumerate(rows):
            at = 0
            for obj, arr in row:
                n = len(arr)
                t[b, at : at + n] = arr
                o[b, at : at + n], m[b, at : at + n] = obj, True
                at += n
        t, o, m = torch.from_numpy(t), torch.from_numpy(o), torch.from_numpy(m)
        tokens[modality], objects[modality], masks[modality] = t, o, m
    return Batch(tokens, objects, masks)
