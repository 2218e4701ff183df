"""What ranking costs a sync: each strategy's `rank` on a synthetic project of N tasks.

Pools are clustered unit vectors (d=256, broaden's embedding size; 100 topics), two heads (a 6-class
and a binary one) with Dirichlet probabilities, 1% of the tasks labelled and a tenth of those seeds.
Every strategy is warmed up once, then timed in rounds that run all of them back to back in a
rotating order (noise hits all alike); medians are reported, with each strategy's time as a ratio
of margin sampling's, measured in the same rounds. Pool building (the neighbour index) is part of
the cost, as in a sync, so each timing starts from a fresh Pool.

    ./dev run python benchmarks/rank.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from common import code_version, cpu_model, out

from backend.ranking.strategies import STRATEGIES, Pool


def project(n: int, rng: np.random.Generator) -> dict:
    centres = rng.normal(size=(100, 256))
    emb = centres[rng.integers(0, 100, n)] + 0.5 * rng.normal(size=(n, 256))
    labelled = np.zeros(n, bool)
    labelled[rng.choice(n, size=max(1, n // 100), replace=False)] = True
    seeds = rng.choice(np.flatnonzero(labelled), size=max(1, labelled.sum() // 10), replace=False)
    probs = [rng.dirichlet(np.ones(c), n).astype(np.float32) for c in (6, 2)]
    return {"probs": probs, "embeddings": emb.astype(np.float32), "labelled": labelled, "seeds": seeds}


def timed(name: str, data: dict, rng: np.random.Generator) -> float:
    started = time.perf_counter()
    pool = Pool(probs=data["probs"], multiple=[False, False], embeddings=data["embeddings"],
                labelled=data["labelled"], seeds=data["seeds"])  # fmt: skip
    STRATEGIES[name]().rank(pool, rng)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", help="default 10000 100000 (--quick: 300)")
    p.add_argument("--rounds", type=int, help="default 5 (--quick: 1)")
    p.add_argument("--quick", action="store_true", help="a project of 300 tasks, one round")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([300] if args.quick else [10_000, 100_000])
    args.rounds = args.rounds or (1 if args.quick else 5)
    started, load = time.time(), os.getloadavg()
    names = list(STRATEGIES)
    out("| tasks | " + " | ".join(names) + " |")
    out("|---:|" + "---:|" * len(names))
    for n in args.sizes:
        rng = np.random.default_rng(0)
        data = project(n, rng)
        for name in names:
            timed(name, data, rng)  # warm-up
        times = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(timed(name, data, rng))
        base = np.median(times["margin"])
        cells = [f"{np.median(times[x]):.3f} s ({np.median(times[x]) / base:.2f}x)" for x in names]
        out(f"| {n} | " + " | ".join(cells) + " |")
    out()
    out(f"- machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    out(f"- code: git {code_version()}; {args.rounds} rounds; ratios are to margin sampling in the same rounds")
    out(f"- load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}; {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
