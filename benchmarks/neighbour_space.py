"""Which space should LSB search? Neighbourhoods of the labelled positives in the fused embedding
(per fusion) against the frozen encoder features (each object's mean token, as before training).

For random labelled subsets of each manifest's pool: the k nearest unlabelled pool items of every
labelled item of the hunted label; `precision` = share of those neighbours that are positives
themselves, `found` = share of the unlabelled positives that some labelled positive has among its
k nearest. `base rate` is the share of positives among the unlabelled items (what a random pick
finds).

    ./dev run python benchmarks/neighbour_space.py --manifests suite/podcast/manifest.jsonl \\
        --labels 100 200 --seeds 0 1 2 3 4 --arms attention mean
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import encoded_demo, ensure_malloc_env, out, training_footer

K = 20  # lsb-pool's neighbours per seed at the default BROADEN_LSB_K


def neighbourhoods(emb: np.ndarray, positives: np.ndarray, labelled: np.ndarray, k: int) -> tuple[float, float]:
    """(precision, found) of the k nearest unlabelled rows of the labelled positives."""
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
    seeds, candidates = np.flatnonzero(labelled & positives), np.flatnonzero(~labelled)
    if len(seeds) == 0 or not positives[candidates].any():
        return float("nan"), float("nan")
    sims = x[seeds] @ x[candidates].T
    near = candidates[np.argsort(-sims, axis=1)[:, :k]]
    precision = float(positives[near].mean())
    found = len(set(near[positives[near]].tolist())) / int(positives[candidates].sum())
    return precision, found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifests", type=Path, nargs="+", help="default: the 480-item demo set (--quick: 16 items)")
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes (default 100 200; --quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-4 (--quick: 0)")
    p.add_argument("--arms", nargs="+", default=["attention", "mean"], help="fusions whose embedding is searched")
    p.add_argument("--k", type=int, default=K)
    p.add_argument("--quick", action="store_true", help="a 16-item demo set, one seed, a few steps per training")
    args = p.parse_args(argv)
    from backend.lab.simulate import resolve_targets
    from backend.model.predictor import forward, pooled_features
    from backend.model.training import train
    from backend.ranking.seeds import is_target_positive

    labels = args.labels or ([8] if args.quick else [100, 200])
    seeds = args.seeds or ([0] if args.quick else list(range(5)))
    started, load = time.time(), os.getloadavg()
    for manifest in args.manifests or [None]:
        manifest, settings, encoders, ds, pool, _ = encoded_demo(manifest, args.quick)
        targets = resolve_targets(ds, "")
        feats = [ds.features[i] for i in pool]
        positives = np.array([is_target_positive(ds.config, ds.labels[i], {targets[0]}) for i in pool])
        frozen = pooled_features(feats, ds.config, encoders)
        out(f"\n{manifest.parent.name}: hunted {targets[0][0]}:{targets[0][1]}, k = {args.k}; mean ± std (worst seed)")
        out("| labels | space | precision | found | base rate |")
        out("|---|---|---|---|---|")
        for n in labels:
            rows: dict[str, list[tuple[float, float]]] = {}
            base = []
            for seed in seeds:
                labelled = np.zeros(len(pool), dtype=bool)
                labelled[np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)] = True
                base.append(float(positives[~labelled].mean()))
                rows.setdefault("frozen features", []).append(neighbourhoods(frozen, positives, labelled, args.k))
                for arm in args.arms:
                    s = settings.model_copy(update={"fusion": arm, "seed": seed})
                    x = [feats[i] for i in np.flatnonzero(labelled)]
                    y = [ds.labels[pool[i]] for i in np.flatnonzero(labelled)]
                    _, emb = forward(train(x, y, ds.config, encoders, s).model, feats)
                    rows.setdefault(f"fused, {arm}", []).append(neighbourhoods(emb, positives, labelled, args.k))
            for space, values in rows.items():
                prec, found = np.array(values).T
                out(f"| {n} | {space} | {_stat(prec)} | {_stat(found)} | {np.mean(base):.3f} |")
    training_footer(seeds, Path(" ".join(str(m) for m in args.manifests or ["demo"])), started, load)


def _stat(v: np.ndarray) -> str:
    v = v[~np.isnan(v)]
    return f"{v.mean():.3f} ± {v.std():.3f} ({v.min():.3f})" if len(v) else "–"


if __name__ == "__main__":
    ensure_malloc_env()
    main()
