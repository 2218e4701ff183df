"""Which object of a task carries the hunted label? Linear probes on the frozen encoder features.

For each object of the label config (a photo, a caption, a clip's sound frames, its transcript) and
for all of them side by side: a balanced logistic regression on the object's mean token
(L2-normalised, as LSB's cold-start space), trained on every labelled pool item, scored on the test
split: average precision and recall@80%P of the hunted label (the pool's rarest, as `broaden
simulate` picks it). Set beside what broaden's model reaches, it tells a feature limit (no probe
finds the label) from a model limit (one object's probe does, the model does not).

    ./dev run python benchmarks/object_probes.py --manifest suite2/reviews/manifest.jsonl
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
    """Per object: (N, D) mean tokens, L2-normalised; zeros where a task lacks the object."""
    blocks = {}
    for name in sorted({k for f in features for k in f}):
        dim = next(f[name].shape[1] for f in features if name in f)
        x = np.zeros((len(features), dim), np.float32)
        for i, f in enumerate(features):
            if name in f:
                m = f[name].mean(0)
                x[i] = m / (np.linalg.norm(m) + 1e-8)
        blocks[name] = x
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
    args = p.parse_args(argv)
    from backend.lab.simulate import resolve_targets

    manifest, _, _, ds, pool, test = encoded_demo(args.manifest, args.quick)
    (control, label), *_ = resolve_targets(ds, "")
    c = [ctl.name for ctl in ds.config.controls].index(control)
    y = np.array([bool(lab[c]) and label in lab[c] for lab in ds.labels])
    train, held = np.asarray(pool), np.asarray(test)
    out(f"{manifest.parent.name}: {control}:{label}, {y[train].sum()} of {len(train)} pool items, "
        f"{y[held].sum()} of {len(held)} test items; a probe per object, trained on the whole pool")  # fmt: skip
    out("| object | average precision | recall@80%P |")
    out("|---|---:|---:|")
    for name, x in object_blocks(ds.features).items():
        got = probe(x, y, train, held)
        out(f"| {name} | " + (f"{got[0]:.2f} | {got[1]:.2f} |" if got else "– | – |"))
    out(f"base rate on the test split: {y[held].mean():.3f}")


if __name__ == "__main__":
    main()
