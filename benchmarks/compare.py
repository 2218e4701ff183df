"""Paired comparison of strategies across `broaden simulate` runs: the figures BENCHMARKS.md quotes.

Runs of the same manifest (for example seeds 0-4 and 5-9, written by two commands) are pooled and
paired by seed, so every difference is between strategies that started from the same random labels;
given several data sets, it also pools the paired differences over all of them.

    ./dev run python benchmarks/compare.py runs/a/simulate.json runs/b/simulate.json --base lsb-pool

Runs of one strategy under different settings (a sweep of k, say) are told apart with --by:

    ./dev run python benchmarks/compare.py k10/simulate.json k5/simulate.json --by k --base "lsb-pool k=10"
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

Runs = dict[str, dict[int, list[dict]]]  # strategy -> seed -> rounds
# What runs written before a setting existed did (their files do not name it).
BEFORE_THE_SETTING = {"lsb_seed_order": "likely", "lsb_space": "fused", "members": 1}
LSB_SETTINGS = {"lsb_seed_order", "lsb_space", "k", "share", "threshold"}  # they tell only LSB's arms apart


def load(paths: list[str], fusion: str | None, by: list[str]) -> tuple[str, dict[str, Runs]]:
    """(target, data set -> runs): files of one manifest are pooled; one target throughout. An arm is
    named by its strategy and, for each setting in `by`, that setting's value in its file.
    "FILE:a,b" takes only strategies a and b from FILE (a file that also holds an older version)."""
    sets: dict[str, Runs] = defaultdict(lambda: defaultdict(dict))
    targets = set()
    for given in paths:
        path, _, only = given.partition(":")
        result = json.loads(Path(path).read_text())
        targets.add(result["config"]["targets"][0])
        runs = sets[result["config"]["manifest"]]
        for run in result["runs"]:
            if (fusion and run["fusion"] != fusion) or (only and run["strategy"] not in only.split(",")):
                continue
            arm = run["strategy"] + "".join(
                f" {key}={result['config'].get(key, BEFORE_THE_SETTING.get(key))}"
                for key in by
                if run["strategy"].startswith("lsb") or key not in LSB_SETTINGS  # LSB's settings, LSB's arms
            )
            if run["seed"] in runs[arm]:
                raise SystemExit(f"{path}: seed {run['seed']} of {arm} twice (several fusions? --fusion)")
            runs[arm][run["seed"]] = run["rounds"]
    if len(targets) != 1:
        raise SystemExit(f"runs of different targets: {sorted(targets)}")
    return targets.pop(), sets


METRICS = {"recall_at_80p": "recall@80%P", "average_precision": "average precision"}
METRIC = "recall_at_80p"  # the one compared; main() sets it from --metric


def recall(rounds: list[dict], target: str, at: int | None) -> float:
    """The metric (recall@80%P by default) at one round (None: averaged over all rounds, the area
    under the curve)."""
    values = [r[METRIC][target] or 0.0 for r in rounds]
    return float(np.mean(values)) if at is None else float(values[at])


def print_paired(pairs: list[tuple[Runs, str, str]], target: str, base: str, other: str) -> None:
    last, curve = (paired(pairs, target, at) for at in (-1, None))
    print(f"{base} minus {other}: last round {last}; over rounds {curve}")


def paired(pairs: list[tuple[Runs, str, str]], target: str, at: int | None) -> str:
    """Mean ± std of a minus b over every seed both ran, on every data set given."""
    d = np.array(
        [
            recall(runs[a][s], target, at) - recall(runs[b][s], target, at)
            for runs, a, b in pairs
            for s in sorted(set(runs[a]) & set(runs[b]))
        ]
    )
    return f"{d.mean():+.3f} ± {d.std():.3f} (ahead in {(d > 1e-9).sum()}, behind in {(d < -1e-9).sum()} of {len(d)})"


def at_budgets(runs: Runs, target: str, budgets: list[int]) -> None:
    """Per arm and budget (labels): mean ± std, median and worst seed of the metric, and how many
    items of the run's hunted labels had been labelled by then (mean over seeds)."""
    print("| arm | labels | seeds | mean ± std | median | worst seed | hunted labelled |")
    print("|---|---|---|---|---|---|---|")
    for n in budgets:
        for strategy, by_seed in runs.items():
            rounds = [r for s in sorted(by_seed) for r in by_seed[s] if r["labelled"] == n]
            if not rounds:
                continue
            values = [r[METRIC][target] or 0.0 for r in rounds]
            found = [r["positives_per_100"] * n / 100 for r in rounds if r.get("positives_per_100") is not None]
            labelled = f"{np.mean(found):.1f}" if found else "–"
            print(f"| {strategy} | {n} | {len(values)} | {np.mean(values):.3f} ± {np.std(values):.3f} "
                  f"| {np.median(values):.2f} | {min(values):.2f} | {labelled} |")  # fmt: skip


def report(runs: Runs, target: str, base: str) -> None:
    for strategy, by_seed in runs.items():
        seeds = sorted(by_seed)
        last = [recall(by_seed[s], target, -1) for s in seeds]
        curve = [recall(by_seed[s], target, None) for s in seeds]
        found = [by_seed[s][-1].get("positives_per_100", np.nan) for s in seeds]
        labelled = by_seed[seeds[0]][-1]["labelled"]
        print(
            f"{strategy:16s} {labelled} labels, seeds {seeds}: {np.mean(last):.3f} ± {np.std(last):.3f}"
            f" (per seed {' '.join(f'{v:.2f}' for v in last)}); over rounds {np.mean(curve):.3f} ± {np.std(curve):.3f};"
            f" positives per 100 labels {np.mean(found):.1f}"
        )
    for other in runs:
        if base in runs and other != base:
            print_paired([(runs, base, other)], target, base, other)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="simulate.json files, each optionally :strategy,... (only those)")
    p.add_argument("--base", default="lsb-pool", help="the strategy compared with every other")
    p.add_argument("--fusion", help="only runs of this fusion (default: all; one per strategy expected)")
    p.add_argument("--by", nargs="+", default=[], help="settings that tell arms apart, e.g. k share threshold")
    p.add_argument("--at", type=int, nargs="+", help="also a table at these label budgets, e.g. 100 200 300")
    p.add_argument("--target", help="the hunted label to compare, control:Label (default: each file's first)")
    p.add_argument("--metric", choices=list(METRICS), default="recall_at_80p", help="what is compared (runs written "
                   "before average precision was recorded have only recall@80%%P)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="compare a tiny `broaden simulate` run made here (no files)")
    args = p.parse_args(argv)
    global METRIC
    METRIC = args.metric
    if args.quick and not args.runs:
        with tempfile.TemporaryDirectory(prefix="broaden-compare-") as tmp:
            compare([quick_simulation(Path(tmp), args.base)], args)
    elif args.runs:
        compare(args.runs, args)
    else:
        p.error("give simulate.json files (or --quick)")


def quick_simulation(out: Path, base: str) -> str:
    """`broaden simulate` of the base strategy and margin sampling on a tiny demo set: one seed,
    two rounds."""
    from common import QUICK_ITEMS, quick_demo

    from broaden.cli import main as broaden

    manifest = quick_demo() / "manifest.jsonl"
    strategies = [base, "margin"] if base != "margin" else [base, "random"]
    tiny = ["--seeds", "0", "--rounds", "2", "--seed-size", str(QUICK_ITEMS // 4), "--batch-size", "2", "--epochs", "2"]
    broaden(["simulate", str(manifest), "--strategies", *strategies, *tiny, "--out", str(out)])
    return str(out / "simulate.json")


def compare(runs: list[str], args: argparse.Namespace) -> None:
    target, sets = load(runs, args.fusion, args.by)
    target = args.target or target
    print(f"{METRICS[METRIC]} of {target}; last round and mean over rounds; mean ± std over seeds")
    for manifest, runs in sets.items():
        print(f"\n{manifest}")
        report(runs, target, args.base)
        if args.at:
            at_budgets(runs, target, args.at)
    if len(sets) > 1:
        print(f"\nall {len(sets)} data sets, paired by set and seed")
        others = sorted({o for runs in sets.values() for o in runs} - {args.base})
        for other in others:
            pairs = [(runs, args.base, other) for runs in sets.values() if args.base in runs and other in runs]
            print_paired(pairs, target, args.base, other)


if __name__ == "__main__":
    main()
