"""How much of the spread between runs is the training seed alone, and what averaging models
trained from several seeds does to it (`BROADEN_TRAIN_MEMBERS`). Per labelled manifest and subset
size: random pool subsets (one per subset seed), each trained from several seeds and scored on the
test split; then the `Ensemble` of the first m of those models. Recall@80%P and average precision
of the hunted label (the pool's rarest, as `broaden simulate` picks it). `--positives 0.3`: subsets
with that share of the hunted label, as rich in it as active learning's labels.

    ./dev run python benchmarks/training_seeds.py --manifests suite2/market/manifest.jsonl \\
        --labels 200 --subsets 0 1 2 --inits 0 1 2 3 4 --members 3 5 --json training_seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import (
    encoded_demo,
    enriched_subset,
    ensure_malloc_env,
    hunted_rows,
    out,
    random_subset,
    training_footer,
)


def trained(ds, rows: list[int], inits: list[int], encoders, settings) -> list:
    """One model per training seed on the same labelled rows (single models: the ensembles are
    built here from them)."""
    from backend.model.training import train

    feats, labels = [ds.features[i] for i in rows], [ds.labels[i] for i in rows]
    one = [settings.model_copy(update={"seed": s, "train_members": 1}) for s in inits]
    return [train(feats, labels, ds.config, encoders, s).model for s in one]


def quality(ds, model, test: list[int], target: tuple[str, str]) -> tuple[float, float]:
    """(recall@80%P, average precision) of the hunted label on the test rows."""
    from backend.lab.simulate import test_quality
    from backend.model.predictor import forward

    probs, _ = forward(model, [ds.features[i] for i in test])
    q = test_quality(ds, np.asarray(test), probs, [target])
    key = f"{target[0]}:{target[1]}"
    return q["recall_at_80p"][key], q["average_precision"][key]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifests", type=Path, nargs="+", help="default: the 480-item demo set (--quick: 16 items)")
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes (default 200; --quick: 8)")
    p.add_argument("--subsets", type=int, nargs="+", help="one random subset per seed (default 0 1 2)")
    p.add_argument("--inits", type=int, nargs="+", help="training seeds (default 0-4; --quick: 0 1)")
    p.add_argument("--members", type=int, nargs="+", help="ensemble sizes, the first m inits (default 3 5)")
    p.add_argument("--positives", type=float, help="share of each subset drawn from the hunted label's items")
    p.add_argument("--json", type=Path, help="also write every score here")
    p.add_argument("--quick", action="store_true", help="a 16-item demo set, a few steps per training")
    args = p.parse_args(argv)
    labels = args.labels or ([8] if args.quick else [200])
    subsets = args.subsets or ([0] if args.quick else [0, 1, 2])
    inits = args.inits or ([0, 1] if args.quick else list(range(5)))
    members = [m for m in args.members or ([2] if args.quick else [3, 5]) if m <= len(inits)]
    started, load = time.time(), os.getloadavg()
    results = []
    for manifest in args.manifests or [None]:
        manifest, settings, encoders, ds, pool, test = encoded_demo(manifest, args.quick)
        from backend.lab.simulate import resolve_targets
        from backend.model.vlmae import Ensemble

        target = resolve_targets(ds, "")[0]
        hunted = hunted_rows(ds, pool, target)
        for n, sub in ((n, sub) for n in labels for sub in subsets):
            if args.positives is None:
                rows = random_subset(pool, n, sub)
            else:
                rows = enriched_subset(pool, hunted, n, args.positives, sub)
            models = trained(ds, rows, inits, encoders, settings)
            row = {"set": manifest.parent.name, "labels": n, "subset": sub}
            row["single"] = [quality(ds, m, test, target) for m in models]
            row["ensembles"] = {m: quality(ds, Ensemble(models[:m]).eval(), test, target) for m in members}
            results.append(row)
        report([r for r in results if r["set"] == manifest.parent.name], target, members)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    training_footer(inits, Path(" ".join(str(m) for m in args.manifests or ["demo"])), started, load)


def report(results: list[dict], target: tuple[str, str], members: list[int]) -> None:
    out(f"\n{results[0]['set']}: hunted label {target[0]}:{target[1]}; recall@80%P / average precision")
    head = ["labels", "subset", "single models: mean", "worst", "best", *[f"ensemble of {m}" for m in members]]
    out("| " + " | ".join(head) + " |")
    out("|" + "---|" * len(head))
    for r in results:
        single = np.array([[x or 0.0 for x in q] for q in r["single"]])  # (inits, 2)
        cells = [str(r["labels"]), str(r["subset"]), _pair(single.mean(0))]
        cells += [_pair(single[single[:, 0].argmin()]), _pair(single[single[:, 0].argmax()])]
        cells += [_pair(r["ensembles"][m]) for m in members]
        out("| " + " | ".join(cells) + " |")


def _pair(q) -> str:
    return f"{q[0] or 0.0:.2f} / {q[1] or 0.0:.2f}"


if __name__ == "__main__":
    ensure_malloc_env()
    main()
