"""More labels, fewer steps: broaden's model trained on random pool subsets of growing size under
several budgets of optimiser steps (`train_max_steps`), scored on the held-out split. With a fixed
number of epochs the steps grow with the labels; this measures what that does to each label.

    ./dev run python benchmarks/training_steps.py --manifest bench1200/manifest.jsonl --labels 300 900
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from common import QUICK_MAX_STEPS, add_manifest, encoded_demo, ensure_malloc_env, out, training_footer
from fusion_variants import train_and_score

from backend.model.training import training_epochs

UNCAPPED = 10**9  # 60 epochs whatever the number of labels: broaden before the step budget


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_manifest(p)
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes, more than the pool = all (default 300 900)")
    p.add_argument("--steps", type=int, nargs="+", help="step budgets compared (default 120 240 none)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-2 (--quick: 0)")
    p.add_argument("--json", type=Path, help="also write every (size, budget, seed) score here")
    args = p.parse_args(argv)
    args.labels = args.labels or ([4, 8] if args.quick else [300, 900])
    args.steps = args.steps or ([2, QUICK_MAX_STEPS] if args.quick else [120, 240, UNCAPPED])
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, test = encoded_demo(args.manifest, args.quick)
    out(f"random labels per seed, {len(test)} test items; mean ± std over seeds {args.seeds}")
    out("| labels | step budget | epochs | steps | category macro-F1 | policy macro-F1 | recall@80%P Violation"
        " | same, `audio_sensitive` |")  # fmt: skip
    out("|---:|---:|---:|---:|---:|---:|---:|---:|")
    scores: dict[str, list] = {}
    for size in args.labels:
        n = min(size, len(pool))
        for budget in args.steps:
            s = settings.model_copy(update={"train_max_steps": budget})
            epochs = training_epochs(n, s)
            runs = np.array([train_and_score(ds, pool, test, n, seed, encoders, s) for seed in args.seeds])
            scores[f"{n} labels, budget {budget}"] = runs.tolist()
            cells = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in zip(runs.mean(0), runs.std(0), strict=True))
            name = "none (60 epochs)" if budget == UNCAPPED else str(budget)
            out(f"| {n} | {name} | {epochs} | {epochs * math.ceil(n / s.train_batch_size)} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=1))
    training_footer(args.seeds, manifest, started, load)


if __name__ == "__main__":
    ensure_malloc_env()
    main()
