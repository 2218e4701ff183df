"""Is the category cost of attention fusion a matter of training? Training settings changed one at
a time, each for attention and for mean pooling, on the same random pool subsets of the demo set
as benchmarks/fusion_variants.py, scored on its held-out split.

None of them closed the gap (BENCHMARKS.md, "Layer shape and training settings").

    ./dev run python benchmarks/fusion_training.py --manifest demo480/manifest.jsonl
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from unittest import mock

import numpy as np
from common import encoded_demo, ensure_malloc_env, out, subset_args, training_footer
from fusion_variants import train_and_score

from backend.model import training, vlmae

# name -> (Settings fields, FusionConfig fields, module constants) changed from broaden's defaults
KNOBS: dict[str, tuple[dict, dict, dict]] = {
    "broaden (60 epochs, lr 3e-3, weight decay 0.05, dropout 0.1, d 256, smoothing 0.05)": ({}, {}, {}),
    "30 epochs": ({"train_epochs": 30}, {}, {}),
    "120 epochs": ({"train_epochs": 120}, {}, {}),
    "lr 1e-3": ({"train_lr": 1e-3}, {}, {}),
    "weight decay 0.5": ({}, {}, {"WEIGHT_DECAY": 0.5}),
    "dropout 0.3": ({}, {"dropout": 0.3}, {}),
    "d 128": ({}, {"d_model": 128}, {}),
    "label smoothing 0.2": ({}, {}, {"LABEL_SMOOTHING": 0.2}),
}
CONSTANTS = {"WEIGHT_DECAY": training, "LABEL_SMOOTHING": vlmae}


@contextmanager
def knob(cfg_fields: dict, constants: dict) -> Iterator[None]:
    """FusionConfig fields and module constants changed inside the block, then put back (a name the
    backend no longer has is an error, not a new attribute nobody reads)."""
    build = training.fusion_config

    def changed(*a: object, **kw: object) -> vlmae.FusionConfig:
        return replace(build(*a, **kw), **cfg_fields)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(training, "fusion_config", changed))
        for k, v in constants.items():
            stack.enter_context(mock.patch.object(CONSTANTS[k], k, v))
        yield


def main(argv: list[str] | None = None) -> None:
    args = subset_args(__doc__, "also write every (setting, fusion, seed) score here", argv)
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, test = encoded_demo(args.manifest, args.quick)
    scores: dict[str, dict[str, np.ndarray]] = {}  # setting -> fusion -> (seeds, 4)
    for name, (fields, cfg_fields, constants) in KNOBS.items():
        scores[name] = {}
        for fusion in ("attention", "mean"):
            s = settings.model_copy(update={**fields, "fusion": fusion})
            with knob(cfg_fields, constants):
                runs = [train_and_score(ds, pool, test, args.labels, seed, encoders, s) for seed in args.seeds]
            scores[name][fusion] = np.array(runs)
    out(f"{args.labels} random labels per seed, {len(args.seeds)} seeds; {len(test)} test items; {manifest}")
    out(
        "| training | category macro-F1, attention | mean pooling | attention minus mean | "
        "recall@80%P `audio_sensitive`, attention | mean |"
    )
    out("|---|---:|---:|---:|---:|---:|")
    for name, by in scores.items():
        a, m = by["attention"], by["mean"]
        d = a[:, 0] - m[:, 0]
        worse = int((d < 0).sum())
        out(
            f"| {name} | {a[:, 0].mean():.3f} | {m[:, 0].mean():.3f} | {d.mean():+.3f} ± {d.std():.3f} "
            f"(lower in {worse} of {len(d)}) | {a[:, 3].mean():.3f} | {m[:, 3].mean():.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({k: {f: v.tolist() for f, v in by.items()} for k, by in scores.items()}))
    training_footer(args.seeds, manifest, started, load)


if __name__ == "__main__":
    ensure_malloc_env()
    main()
