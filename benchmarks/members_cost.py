"""What `BROADEN_TRAIN_MEMBERS` (and `BROADEN_FUSION=auto`) cost a sync: the stages that grow with
the number of models trained.

On a labelled manifest's real encoded features: train on L random pool items, rescore a project of
N tasks (the encoded items repeated, as a sync's forward pass over every task reads them), and rank
it with the default strategy (the neighbour index over the wider ensemble embeddings included).
Each (fusion, member count) is timed in the same rounds, in a rotating order (noise hits all alike); medians,
with each count's time as a ratio of one model's. Reading cached features from Redis and writing
priorities into Label Studio do not depend on it ("Label to reordered queue").

    ./dev run python benchmarks/members_cost.py --manifest suite2/market/manifest.jsonl \\
        --labels 100 300 --tasks 10000 --members 1 3 --fusions attention auto
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import encoded_demo, ensure_malloc_env, out, training_footer


def one_round(ds, settings, encoders, rows: list[int], project: list[int], arm: tuple[str, int]) -> dict[str, float]:
    """Seconds to train (fusion, members) models on rows, rescore the project and rank it."""
    from backend.model.predictor import forward
    from backend.model.training import train
    from backend.ranking.pool import build_pool, make_strategy
    from backend.ranking.seeds import target_labels

    s = settings.model_copy(update={"fusion": arm[0], "train_members": arm[1]})
    t0 = time.perf_counter()
    model = train([ds.features[i] for i in rows], [ds.labels[i] for i in rows], ds.config, encoders, s).model
    t1 = time.perf_counter()
    probs, emb = forward(model, [ds.features[i] for i in project])
    t2 = time.perf_counter()
    labelled = set(rows)
    labels = [ds.labels[i] if i in labelled else None for i in project]
    known = {k: lab for k, lab in enumerate(labels) if lab is not None}
    pool = build_pool(ds.config, probs, emb, labels, (), target_labels(ds.config, known, s.targets))
    make_strategy(s.strategy, s).rank(pool, np.random.default_rng(0))
    t3 = time.perf_counter()
    return {"train": t1 - t0, "rescore": t2 - t1, "rank": t3 - t2}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, help="default: the 480-item demo set (--quick: 16 items)")
    p.add_argument("--labels", type=int, nargs="+", help="labelled tasks trained on (default 100 300; --quick: 8)")
    p.add_argument("--tasks", type=int, help="project size rescored and ranked (default 10000; --quick: 64)")
    p.add_argument("--members", type=int, nargs="+", help="member counts (default 1 3)")
    p.add_argument("--fusions", nargs="+", help="BROADEN_FUSION values (default: the setting's)")
    p.add_argument("--rounds", type=int, help="default 3 (--quick: 1)")
    p.add_argument("--quick", action="store_true", help="a 16-item demo set, a few steps per training")
    args = p.parse_args(argv)
    labels = args.labels or ([8] if args.quick else [100, 300])
    n_tasks = args.tasks or (64 if args.quick else 10_000)
    members = args.members or [1, 3]
    rounds = args.rounds or (1 if args.quick else 3)
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, _ = encoded_demo(args.manifest, args.quick)
    arms = [(f, m) for f in args.fusions or [settings.fusion] for m in members]
    out(f"{manifest.parent.name}: {n_tasks} tasks; median seconds (ratio to {arms[0][0]}, {arms[0][1]} member(s))")
    out("| labels | fusion | members | train | rescore | rank | together |")
    out("|---:|---|---:|---:|---:|---:|---:|")
    for n in labels:
        rows = [pool[i] for i in np.random.default_rng(0).choice(len(pool), size=min(n, len(pool)), replace=False)]
        project = rows + [pool[i % len(pool)] for i in range(max(0, n_tasks - len(rows)))]
        times: dict[tuple[str, int], list[dict[str, float]]] = {a: [] for a in arms}
        for r in range(rounds):
            for a in arms[r % len(arms) :] + arms[: r % len(arms)]:
                times[a].append(one_round(ds, settings, encoders, rows, project, a))
        base = _medians(times[arms[0]])
        for a in arms:
            med = _medians(times[a])
            cells = [f"{med[k]:.2f} ({med[k] / base[k]:.2f}x)" for k in med]
            out(f"| {n} | {a[0]} | {a[1]} | " + " | ".join(cells) + " |")
    training_footer([settings.seed], manifest, started, load)
    out(f"- {rounds} rounds; ratios are to {arms[0][0]}, {arms[0][1]} member(s) in the same rounds")


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    med = {k: float(np.median([x[k] for x in rounds])) for k in rounds[0]}
    med["together"] = sum(med.values())
    return med


if __name__ == "__main__":
    ensure_malloc_env()
    main()
