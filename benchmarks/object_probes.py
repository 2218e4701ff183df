"""Which object of a task carries the hunted label? Linear probes on the frozen encoder features.

For each object of the label config (a photo, a caption, a clip's sound frames, its transcript) and
for all of them side by side: a balanced logistic regression on the object's mean token
(L2-normalised, as LSB's cold-start space), trained on the whole labelled pool or on random pool
subsets (the same subsets, seed for seed, as fusion_suite.py), scored on the test split: average
precision and recall@80%P of the hunted label (the pool's rarest, as `broaden simulate` picks it).
Set beside what broaden's model reaches on the same labels, it tells a feature limit (no probe
finds the label) from a model limit (a probe does, the model does not).

    ./dev run python benchmarks/object_probes.py --manifest suite2/reviews/manifest.jsonl --labels 100 300 900
    ./dev run python benchmarks/object_probes.py --quick
"""

from __future__ import annotations

import argparse

import numpy as np
from common import add_manifest, encoded_demo, out
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

ALL = "all objects"


def object_blocks(features: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per object: (N, D) mean tokens, L2-normalised; zeros where a task lacks the object; and all side by side."""
    from backend.model.features import object_means

    names = sorted({k for f in features for k in f})
    blocks = object_means(features, [(n, next(f[n].shape[1] for f in features if n in f)) for n in names])
    blocks[ALL] = np.concatenate(list(blocks.values()), 1)
    return blocks


def probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[float, float] | None:
    """(average precision, recall@80%P) on the test rows; None without both classes to learn from."""
    from backend.lab.simulate import recall_at_precision

    if len(set(y[train])) < 2 or not y[test].any():
        return None
    clf = LogisticRegression(class_weight="balanced", max_iter=3000).fit(x[train], y[train])
    s = clf.decision_function(x[test])
    return float(average_precision_score(y[test], s)), recall_at_precision(s, y[test])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_manifest(p)
    p.add_argument("--labels", type=int, nargs="+", help="random pool subsets of these sizes (default: the whole pool)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="subsets per size (default 0-2)")
    args = p.parse_args(argv)
    from backend.lab.simulate import resolve_targets

    manifest, _, _, ds, pool, test = encoded_demo(args.manifest, args.quick)
    (control, label), *_ = resolve_targets(ds, "")
    c = [ctl.name for ctl in ds.config.controls].index(control)
    y = np.array([bool(lab[c]) and label in lab[c] for lab in ds.labels])
    held = np.asarray(test)
    out(f"{manifest.parent.name}: {control}:{label}, {y[pool].sum()} of {len(pool)} pool items, "
        f"{y[held].sum()} of {len(held)} test items (base rate {y[held].mean():.3f}); mean (worst subset)")  # fmt: skip
    out("| labels | object | average precision | recall@80%P |")
    out("|---|---|---:|---:|")
    blocks = object_blocks(ds.features)
    for n in args.labels or [len(pool)]:
        seeds = args.seeds if n < len(pool) else [0]
        subsets = [np.asarray(pool)[np.random.default_rng(s).choice(len(pool), size=n, replace=False)] for s in seeds]
        for name, x in blocks.items():
            got = [g for train in subsets if (g := probe(x, y, train, held)) is not None]
            cells = [f"{np.mean(v):.2f} ({np.min(v):.2f})" for v in zip(*got, strict=True)] if got else ["–", "–"]
            out(f"| {min(n, len(pool))} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
