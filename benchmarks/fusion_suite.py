"""Fusion arms on any labelled manifests: broaden's model trained on random pool subsets, scored on
the test split. General over label configs (any Choices controls, any mix of image, text, audio):
per arm, macro-F1 of every control, recall@80%P of the hunted label (the pool's rarest, as
`broaden simulate` picks it) and its average precision, the worst seed of each, and macro-F1 on
the test items of the tags that tell look-alikes and audio-only items apart (as the manifest names
them). `--positives 0.3`: subsets with that share of the hunted label, as rich in it as the labels
active learning gathers; the JSON then also holds each ensemble member's scores.

    ./dev run python benchmarks/fusion_suite.py --manifests suite/podcast/manifest.jsonl \\
        suite/clips/manifest.jsonl --labels 100 200 --seeds 0 1 2 3 4 --json fusion_suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import encoded_demo, enriched_subset, ensure_malloc_env, hunted_rows, out, random_subset, training_footer

# per-tag macro-F1, where a manifest has them
TAGS = ("lookalike", "payment_lookalike", "audio_only", "audio_sensitive")


def scores(ds, rows: list[int], test: list[int], seed: int, encoders, settings, targets, members: bool = False) -> dict:
    """Train on the given pool rows, score the test rows (`members`: also each member's scores)."""
    from backend.lab.simulate import test_quality
    from backend.model.predictor import forward
    from backend.model.training import train
    from backend.model.vlmae import Ensemble

    s = settings.model_copy(update={"seed": seed})
    model = train([ds.features[i] for i in rows], [ds.labels[i] for i in rows], ds.config, encoders, s).model
    test_features = [ds.features[i] for i in test]
    q = test_quality(ds, np.asarray(test), forward(model, test_features)[0], targets)
    if members and isinstance(model, Ensemble):  # which member ranks the hunted label how
        q["members"] = [
            {"fusion": m.cfg.fusion, **test_quality(ds, np.asarray(test), forward(m, test_features)[0], targets)}
            for m in model.members
        ]
    return q


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifests", type=Path, nargs="+", help="default: the 480-item demo set (--quick: 16 items)")
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes (default 100 200; --quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-4 (--quick: 0)")
    p.add_argument("--arms", nargs="+", default=["attention", "mean", "none"], help="BROADEN_FUSION values")
    p.add_argument("--objects", nargs="+", help="the model reads only these objects (names from the label config)")
    p.add_argument("--positives", type=float, help="share of each subset drawn from the hunted label's items")
    p.add_argument("--json", type=Path, help="also write every (set, size, arm, seed) score here")
    p.add_argument("--quick", action="store_true", help="a 16-item demo set, one seed, a few steps per training")
    args = p.parse_args(argv)
    labels = args.labels or ([8] if args.quick else [100, 200])
    seeds = args.seeds or ([0] if args.quick else list(range(5)))
    started, load = time.time(), os.getloadavg()
    results = []
    for manifest in args.manifests or [None]:
        manifest, settings, encoders, ds, pool, test = encoded_demo(manifest, args.quick)
        if args.objects:  # as if the other objects were missing from every task
            ds.features = [{k: v for k, v in f.items() if k in args.objects} for f in ds.features]
        from backend.lab.simulate import resolve_targets

        targets = resolve_targets(ds, "")
        hunted = hunted_rows(ds, pool, targets[0])
        for n in labels:
            for arm in args.arms:
                s = settings.model_copy(update={"fusion": arm})
                for seed in seeds:
                    if args.positives is None:
                        rows = random_subset(pool, n, seed)
                    else:
                        rows = enriched_subset(pool, hunted, n, args.positives, seed)
                    q = scores(ds, rows, test, seed, encoders, s, targets, members=args.positives is not None)
                    results.append({"set": manifest.parent.name, "labels": n, "arm": arm, "seed": seed, **q})
        report([r for r in results if r["set"] == manifest.parent.name], targets)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    training_footer(seeds, Path(" ".join(str(m) for m in args.manifests or ["demo"])), started, load)


def _stat(values: list[float]) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f} (worst {v.min():.3f})" if len(v) else "–"


def report(results: list[dict], targets: list[tuple[str, str]]) -> None:
    target = f"{targets[0][0]}:{targets[0][1]}"
    controls = list(results[0]["macro_f1"])
    tags = [t for t in TAGS if t in results[0]["subsets"]]
    out(f"\n{results[0]['set']}: mean ± std over seeds (worst seed); hunted label {target}")
    head = ["labels", "arm", *[f"macro-F1 {c}" for c in controls], f"recall@80%P {target}", "average precision"]
    head += [f"macro-F1 on `{t}`" for t in tags]
    out("| " + " | ".join(head) + " |")
    out("|" + "---|" * len(head))
    for n, arm in dict.fromkeys((r["labels"], r["arm"]) for r in results):
        runs = [r for r in results if (r["labels"], r["arm"]) == (n, arm)]
        cells = [str(n), arm, *[_stat([r["macro_f1"][c] for r in runs]) for c in controls]]
        cells.append(_stat([r["recall_at_80p"][target] for r in runs]))
        cells.append(_stat([r["average_precision"][target] for r in runs]))
        cells += [_stat([float(np.mean(list(r["subsets"][t]["macro_f1"].values()))) for r in runs]) for t in tags]
        out("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    ensure_malloc_env()
    main()
