"""Which fusion `BROADEN_FUSION=auto` gives each head, and whether the test split agrees. On the
random subsets fusion_suite.py trains on (same sizes and seeds; `--positives` as there), each head's
held-out fit with attention and with mean pooling as training weighs them (`fusion_fits`), kept in
`--fits` (one JSON line per subset, reused when there). With `--scores`, fusion_suite.py's JSON of
the attention, mean and mixed arms on the same subsets: "per head, within D" scores each head (and
the hunted label's recall) as the arm it picks, `mixed` where its two fits differ by D or less;
"one for all" is the earlier rule (the better mean fit over heads, every head on it), right when its
arm's macro-F1 (mean over controls) is the higher of attention's and mean pooling's.

    ./dev run python benchmarks/fusion_choice.py --manifest suite2/podcast/manifest.jsonl \\
        --labels 100 200 300 --seeds 0 1 2 --fits choice-fits.jsonl \\
        --scores fusion-podcast-members3.json fusion-podcast-mixed-members3.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import encoded_demo, enriched_subset, ensure_malloc_env, hunted_rows, out, random_subset, training_footer

FUSIONS = ("attention", "mean")
TAGS = {"look-alikes": ("lookalike", "payment_lookalike"), "audio-decided": ("audio_only", "audio_sensitive")}
KEYS = ("macro-F1", *TAGS)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, help="default: the 480-item demo set (--quick: 16 items)")
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes (default 100 200; --quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-2 (--quick: 0)")
    p.add_argument("--scores", type=Path, nargs="+", help="fusion_suite.py JSON: attention, mean (mixed)")
    p.add_argument("--positives", type=float, help="share of each subset drawn from the hunted label's items")
    p.add_argument("--fits", type=Path, help="JSON lines of per-head fits: read where present, appended to")
    p.add_argument("--within", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05], help="per-head closeness D")
    p.add_argument("--quick", action="store_true", help="a 16-item demo set, one seed, a few steps per training")
    args = p.parse_args(argv)
    from backend.model.training import fusion_fits, head_fusions

    labels = args.labels or ([8] if args.quick else [100, 200])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, _ = encoded_demo(args.manifest, args.quick)
    from backend.lab.simulate import resolve_targets

    target = resolve_targets(ds, "")[0]
    hunted = hunted_rows(ds, pool, target)
    name, known = manifest.parent.name, _known_fits(args.fits, args.positives)
    choices = []
    out("| labels | seed | held-out fit per head, attention | mean pooling | one for all | per head |")
    out("|---:|---:|---|---|---|---|")
    for n in labels:
        for seed in seeds:
            fits = known.get((name, n, seed))
            if fits is None:
                if args.positives is None:
                    rows = random_subset(pool, n, seed)
                else:
                    rows = enriched_subset(pool, hunted, n, args.positives, seed)
                s = settings.model_copy(update={"seed": seed})
                fits = fusion_fits([ds.features[i] for i in rows], [ds.labels[i] for i in rows], ds.config, encoders, s)
                if args.fits:
                    with args.fits.open("a") as f:
                        row = {"set": name, "labels": n, "seed": seed, "positives": args.positives, "fits": fits}
                        f.write(json.dumps(row) + "\n")
            choices.append((n, seed, fits))
            cells = [" ".join(f"{x:.3f}" for x in fits[f]) for f in FUSIONS]
            out(f"| {n} | {seed} | {cells[0]} | {cells[1]} | {whole_model(fits)} | {' '.join(head_fusions(fits))} |")
    if args.scores:
        results = [r for path in args.scores for r in json.loads(path.read_text())]
        heads = [c.name for c in ds.config.controls]
        report(choices, results, name, heads, ":".join(target), args.within)
    training_footer(seeds, manifest, started, load)


def _known_fits(path: Path | None, positives: float | None) -> dict[tuple[str, int, int], dict[str, list[float]]]:
    if path is None or not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["set"], r["labels"], r["seed"]): r["fits"] for r in rows if r.get("positives") == positives}


def whole_model(fits: dict[str, list[float]]) -> str:
    """The earlier rule, kept for comparison: one fusion for every head, the better mean fit."""
    return "attention" if np.mean(fits["attention"]) >= np.mean(fits["mean"]) else "mean"


def report(
    choices: list[tuple[int, int, dict]],
    results: list[dict],
    name: str,
    heads: list[str],
    target: str,
    within: list[float],
) -> None:
    """Per size: the test scores of each arm and of the choices, mean (worst seed), and, for a whole-model
    choice, how often it kept the arm with the higher macro-F1."""
    from backend.model.training import head_fusions

    scores = {(r["labels"], r["arm"], r["seed"]): _head_scores(r, target) for r in results if r["set"] == name}
    arms = [a for a in ("attention", "mean", "mixed") if any(k[1] == a for k in scores)]
    out()
    out(f"| labels | arm | macro-F1 | on look-alikes | on audio-decided | recall@80%P, {target} | right choices |")
    out("|---:|---|---|---|---|---|---|")
    for n in sorted({c[0] for c in choices}):
        runs = [(seed, fits) for m, seed, fits in choices if m == n]
        picks = {a: [[a] * len(heads)] * len(runs) for a in arms}
        picks["one for all"] = [[whole_model(f)] * len(heads) for _, f in runs]
        for d in within if "mixed" in arms else []:
            picks[f"per head, within {d:g}"] = [head_fusions(f, d) for _, f in runs]
        seeds = [seed for seed, _ in runs]
        rows = {
            arm: [_combine({a: scores[(n, a, s)] for a in p}, p, heads, target) for s, p in zip(seeds, ps, strict=True)]
            for arm, ps in picks.items()
        }
        best = [max(rows[f][i]["macro-F1"] for f in FUSIONS) for i in range(len(runs))]
        for arm, values in rows.items():
            cells = [_stat([r[k] for r in values]) for k in (*KEYS, "recall")]
            right = sum(v["macro-F1"] >= b for v, b in zip(values, best, strict=True)) if arm == "one for all" else None
            cells.append("" if right is None else f"{right} of {len(runs)}")
            out(f"| {n} | {arm} | " + " | ".join(cells) + " |")


def _head_scores(result: dict, target: str) -> dict:
    """{"macro-F1" and each tag: per-head macro-F1 or None; "recall": the hunted label's}."""
    scores: dict = {"macro-F1": result["macro_f1"], "recall": result["recall_at_80p"][target]}
    for tag_name, tags in TAGS.items():
        found = [result["subsets"][t] for t in tags if t in result["subsets"]]
        scores[tag_name] = found[0]["macro_f1"] if found else None
    return scores


def _combine(by_arm: dict, picks: list[str], heads: list[str], target: str) -> dict[str, float | None]:
    """Mean over heads of each head's score in the arm it picks, and the hunted label's recall in the
    arm its head picks."""
    out: dict[str, float | None] = {}
    for key in KEYS:
        per = [by_arm[a][key] for a in picks]
        if all(p is not None for p in per):
            out[key] = float(np.mean([p[h] for p, h in zip(per, heads, strict=True)]))
        else:
            out[key] = None
    out["recall"] = by_arm[picks[heads.index(target.split(":")[0])]]["recall"]
    return out


def _stat(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    return f"{np.mean(v):.3f} ({min(v):.3f})" if v else "–"


if __name__ == "__main__":
    ensure_malloc_env()
    main()
