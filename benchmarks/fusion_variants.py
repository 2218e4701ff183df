"""Does attention fusion have to cost the visual label anything? Variants of VLMAE's fusion layer,
each trained on the same random pool subsets of the demo set and scored on its held-out split:
category macro-F1 (decided by photo and caption), and the policy label (decided by the voice-over).

The variants live here, not in backend/model/vlmae.py: none of them removed the cost without losing the
audio label (BENCHMARKS.md, "Layer shape and training settings").

    ./dev run python benchmarks/fusion_variants.py --manifest demo480/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from common import encoded_demo, ensure_malloc_env, out, subset_args, training_footer

from backend.lab.simulate import macro_f1, recall_at_precision
from backend.model import training, vlmae
from backend.model.vlmae import AUDIO_SIDE, VLMAE, Batch, collate


@dataclass(frozen=True)
class Variant:
    fusion: str = "attention"
    gate: float = vlmae.GATE_INIT
    heads_read: str = "fused"  # fused | both (the VL-only and the fused embedding, concatenated) | mix
    feed_forward: bool = True
    detach_queries: bool = False  # the audio side cannot reshape the VL tokens through the queries
    attn_dropout: float = 0.0  # dropout on what the VL tokens read from the audio
    row_audio_dropout: float = 0.0  # share of training rows whose audio is hidden


VARIANTS = {
    "broaden (attention, gate 1)": Variant(),
    "mean pooling": Variant(fusion="mean"),
    "per-head gate (heads read VL + a_h x audio part, a_h from 1)": Variant(heads_read="mix"),
    "heads read VL-only and fused embeddings": Variant(heads_read="both"),
    "same, no feed-forward": Variant(heads_read="both", feed_forward=False),
    "no feed-forward": Variant(feed_forward=False),
    "queries detached": Variant(detach_queries=True),
    "gate 0.5": Variant(gate=0.5),
    "gate 0.25": Variant(gate=0.25),
    "dropout 0.3 on the attention output": Variant(attn_dropout=0.3),
    "audio hidden for 30% of training rows": Variant(row_audio_dropout=0.3),
}
CURRENT: list[Variant] = [Variant()]  # what the next model built by training.train is


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens of each row (B, T, d) -> (B, d), as VLMAE pools."""
    m = mask[:, :, None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class VariantVLMAE(VLMAE):
    """VLMAE's layers, wired as the current variant says; with the default variant it computes what
    VLMAE does (tests/unit/test_benchmarks.py checks that it still does)."""

    def __init__(self, cfg: vlmae.FusionConfig) -> None:
        v = CURRENT[0]
        with mock.patch.object(vlmae, "GATE_INIT", v.gate):  # read when the gates are made
            super().__init__(cfg)
        self.v = v
        if self.fuse is not None and v.heads_read == "both":
            self.heads = nn.ModuleList([nn.Linear(2 * cfg.d_model, n) for _, n, _ in cfg.heads])
        self.mix = nn.Parameter(torch.ones(len(cfg.heads))) if v.heads_read == "mix" else None

    def fused(self, vl: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f, v = self.fuse, self.v
        has = mask.any(1)
        safe = mask.clone()
        safe[~has, 0] = True
        kv = f.norm_kv(audio)
        q = f.norm_q(vl.detach() if v.detach_queries else vl)
        y, _ = f.attn(q, kv, kv, key_padding_mask=~safe, need_weights=False)
        if v.attn_dropout:
            y = F.dropout(y, v.attn_dropout, self.training)
        y = y * has[:, None, None]
        vl = vl + torch.tanh(f.gate_attn) * y
        if v.feed_forward:
            vl = vl + torch.tanh(f.gate_ff) * f.ff(f.norm_ff(vl)) * has[:, None, None]
        return vl

    def projected(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One modality's tokens in the model's space (B, T, d), with their mask."""
        if modality not in batch.tokens or modality not in self.proj:
            return None
        x = self.proj[modality](batch.tokens[modality]) + self.object_emb(batch.objects[modality])
        return x, batch.masks[modality]

    def pooled(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(VL-only, fused) pooled embeddings, before the final norm."""
        b = batch.size
        parts = [(self.query.expand(b, -1, -1), torch.ones(b, 1, dtype=torch.bool))]
        parts += [p for k in ("image", "text") if (p := self.projected(batch, k)) is not None]
        vl, vl_mask = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
        heard = [p for k in AUDIO_SIDE if (p := self.projected(batch, k)) is not None]
        audio = None
        if heard and self.cfg.fusion != "none":
            audio = torch.cat([p[0] for p in heard], 1), torch.cat([p[1] for p in heard], 1)
        if audio is not None and self.training and self.v.row_audio_dropout:
            keep = torch.rand(b) >= self.v.row_audio_dropout
            audio = (audio[0], audio[1] & keep[:, None])
        vl_only = masked_mean(vl, vl_mask)
        if audio is None:
            return vl_only, vl_only
        if self.fuse is not None:
            return vl_only, masked_mean(self.fused(vl, *audio), vl_mask)
        return vl_only, self.mean_proj(torch.cat([vl_only, masked_mean(*audio)], -1))

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.norm(self.pooled(batch)[1])

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        vl_only, fused = self.pooled(batch)
        if self.mix is not None:
            return [
                h(self.drop(self.norm(vl_only + a * (fused - vl_only))))
                for h, a in zip(self.heads, self.mix, strict=True)
            ]
        z = self.norm(fused)
        if self.fuse is not None and self.v.heads_read == "both":
            z = torch.cat([self.norm(vl_only), z], -1)
        z = self.drop(z)  # one dropout mask shared by the heads, as in VLMAE.forward
        return [h(z) for h in self.heads]


def predict(model: VLMAE, rows: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    with torch.inference_mode():
        logits = model(collate(rows, model.cfg))
    return [p.numpy() for p in model.probabilities(logits)]


def train_and_score(ds, pool: list[int], test: list[int], labels: int, seed: int, encoders, settings) -> list[float]:
    """Train on `labels` random pool items (drawn by `seed`), score the test split: category and
    policy macro-F1, recall@80%P of Violation over all test items and over `audio_sensitive` ones."""
    config = ds.config
    chosen = np.random.default_rng(seed).choice(pool, size=min(labels, len(pool)), replace=False)
    s = settings.model_copy(update={"seed": seed, "train_members": 1})  # variants of one model's layer
    trained = training.train([ds.features[i] for i in chosen], [ds.labels[i] for i in chosen], config, encoders, s)
    probs = predict(trained.model, [ds.features[i] for i in test])
    f1 = macro_f1(probs, [ds.labels[i] for i in test], config)
    h = [c.name for c in config.controls].index("policy")
    truth = np.array([ds.labels[i][h] == ["Violation"] for i in test])
    audio = np.array(["audio_sensitive" in ds.tags[i] for i in test])
    v = probs[h][:, 1]
    return [f1["category"], f1["policy"], recall_at_precision(v, truth), recall_at_precision(v[audio], truth[audio])]


def main(argv: list[str] | None = None) -> None:
    args = subset_args(__doc__, "also write every (variant, seed) score here", argv)
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, test = encoded_demo(args.manifest, args.quick)
    config = ds.config
    scores: dict[str, np.ndarray] = {}  # variant -> (seeds, 4)
    # training.train builds the model through the name VLMAE of its module.
    with mock.patch.object(training, "VLMAE", VariantVLMAE):
        try:
            for name, variant in VARIANTS.items():
                CURRENT[0] = variant
                s = settings.model_copy(update={"fusion": variant.fusion})
                runs = [train_and_score(ds, pool, test, args.labels, seed, encoders, s) for seed in args.seeds]
                scores[name] = np.array(runs)
        finally:
            CURRENT[0] = Variant()
    policy = [c.name for c in config.controls].index("policy")
    n_pos = sum(ds.labels[i][policy] == ["Violation"] for i in test)
    report(scores, args, manifest, len(test), n_pos)
    if args.json:
        args.json.write_text(json.dumps({k: v.tolist() for k, v in scores.items()}, indent=1))
    training_footer(args.seeds, manifest, started, load)


def report(scores: dict[str, np.ndarray], args: argparse.Namespace, manifest: Path, n_test: int, n_pos: int) -> None:
    """Each variant's mean, and its difference from broaden's layer paired by seed (same labelled items)."""
    out(f"{args.labels} random labels per seed; {n_test} test items ({n_pos} violations); {manifest}")
    out("| variant | category macro-F1 | policy macro-F1 | recall@80%P Violation | same, `audio_sensitive` |")
    out("|---|---:|---:|---:|---:|")
    base = scores["broaden (attention, gate 1)"]
    for name, s in scores.items():
        cells = [f"{s[:, j].mean():.3f}" for j in range(4)]
        if s is not base:
            d = s - base
            cells = [f"{c} ({d[:, j].mean():+.3f} ± {d[:, j].std():.3f})" for j, c in enumerate(cells)]
        out(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    ensure_malloc_env()
    main()
