"""What makes the fusion layer learn an audio-only label from few labels: an ablation of VLMAE's
training choices on the demo set's policy label (said only in the voice-over).

Each variant trains the real model (backend.model.training.train) on the same random subsets of the pool
split (5 seeds per size) and is scored on the held-out test split, whose wordings the pool never
uses. Variants switch off, one at a time, what broaden does by default:

- frames only: no transcript token (the Whisper encoder's sound frames alone);
- gate 0: the cross-attention gates start at 0 (Flamingo's init) instead of 1;
- no class weights / full inverse frequency instead of its square root.

    ./dev run python benchmarks/fusion_learning.py --manifest demo480/manifest.jsonl
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import ExitStack
from unittest import mock

import numpy as np
import torch
from common import add_manifest, encoded_demo, ensure_malloc_env, out, training_footer

from backend.lab.simulate import macro_f1, recall_at_precision
from backend.model import training, vlmae
from backend.model.features import SPEECH_SUFFIX
from backend.model.predictor import forward

SQRT_WEIGHTS = training.class_weights  # broaden's: inverse square root of label frequency


def full_inverse(ys: list, has: list, multiple: list[bool]) -> list[torch.Tensor]:
    """Inverse label frequency (the square of broaden's weights), mean 1 over the labels seen."""
    out = []
    for w, multi in zip(SQRT_WEIGHTS(ys, has, multiple), multiple, strict=True):
        w = w**2
        out.append(w if multi else w * (w > 0).sum() / w.sum())
    return out


def no_weights(ys: list, has: list, multiple: list[bool]) -> list[None]:
    return [None for _ in ys]


# name -> (keep the transcript token, gate init, class weights)
VARIANTS = {
    "broaden (words + frames, gate 1, 1/sqrt weights)": (True, 1.0, SQRT_WEIGHTS),
    "gate 0": (True, 0.0, SQRT_WEIGHTS),
    "no class weights": (True, 1.0, no_weights),
    "full inverse-frequency weights": (True, 1.0, full_inverse),
    "frames only (no transcript)": (False, 1.0, SQRT_WEIGHTS),
    "frames only, gate 0, no weights (before)": (False, 0.0, no_weights),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_manifest(p)
    p.add_argument("--sizes", type=int, nargs="+", help="default 30 60 110 (--quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-4 (--quick: 0)")
    p.add_argument("--fusions", nargs="+", default=["attention", "mean"])
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([8] if args.quick else [30, 60, 110])
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, test = encoded_demo(args.manifest, args.quick)
    config = ds.config
    h = [c.name for c in config.controls].index("policy")
    truth = np.array([ds.labels[i][h] == ["Violation"] for i in test])
    out(f"{len(pool)} pool / {len(test)} test items ({truth.sum()} test violations); target policy:Violation")
    out("| fusion | variant | " + " | ".join(f"recall@80%P, {n} labels" for n in args.sizes)
        + " | " + " | ".join(f"policy macro-F1, {n}" for n in args.sizes) + " |")  # fmt: skip
    out("|---|---|" + "---:|" * 2 * len(args.sizes))
    for fusion in args.fusions:
        for name, (words, gate, weights) in VARIANTS.items():
            if fusion != "attention" and gate == 0.0:
                continue  # only the attention layer has a gate
            recall, f1 = np.zeros((len(args.sizes), len(args.seeds))), np.zeros((len(args.sizes), len(args.seeds)))
            with ExitStack() as stack:
                stack.enter_context(mock.patch.object(vlmae, "GATE_INIT", gate))
                stack.enter_context(mock.patch.object(training, "class_weights", weights))
                if not words:
                    stack.enter_context(mock.patch.object(encoders, "speech", None))
                for a, n in enumerate(args.sizes):
                    for b, seed in enumerate(args.seeds):
                        chosen = np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)
                        feats = [ds.features[i] for i in chosen]
                        if not words:
                            feats = [{k: v for k, v in f.items() if not k.endswith(SPEECH_SUFFIX)} for f in feats]
                        s = settings.model_copy(update={"seed": seed, "fusion": fusion})
                        trained = training.train(feats, [ds.labels[i] for i in chosen], config, encoders, s)
                        probs, _ = forward(trained.model, [ds.features[i] for i in test])
                        recall[a, b] = recall_at_precision(probs[h][:, 1], truth)
                        f1[a, b] = macro_f1(probs, [ds.labels[i] for i in test], config)["policy"]
            cells = [f"{m.mean():.2f} ± {m.std():.2f}" for m in (*recall, *f1)]
            out(f"| {fusion} | {name} | " + " | ".join(cells) + " |")
    training_footer(args.seeds, manifest, started, load)


if __name__ == "__main__":
    ensure_malloc_env()
    main()
