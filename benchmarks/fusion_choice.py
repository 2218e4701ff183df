"""Which fusion `BROADEN_FUSION=auto` keeps, and whether the test split agrees. On the random subsets
fusion_suite.py trains on (same sizes and seeds), the held-out fit of attention and of mean pooling
as training weighs them (`fusion_fits`), and the choice. With `--scores`, fusion_suite.py's JSON of
both arms on the same subsets: the auto arm's test scores are the chosen arm's (auto trains exactly
the model that fusion trains; tests/unit/test_model.py holds it), and a choice is right when the
chosen arm's macro-F1 (mean over controls) is the higher.

    ./dev run python benchmarks/fusion_choice.py --manifest suite2/podcast/manifest.jsonl \\
        --labels 100 200 300 --seeds 0 1 2 --scores fusion-podcast-members3.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import encoded_demo, ensure_malloc_env, out, random_subset, training_footer

FUSIONS = ("attention", "mean")
TAGS = {"look-alikes": ("lookalike", "payment_lookalike"), "audio-decided": ("audio_only", "audio_sensitive")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, help="default: the 480-item demo set (--quick: 16 items)")
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes (default 100 200; --quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-2 (--quick: 0)")
    p.add_argument("--scores", type=Path, help="the JSON file fusion_suite.py wrote for the attention and mean arms")
    p.add_argument("--quick", action="store_true", help="a 16-item demo set, one seed, a few steps per training")
    args = p.parse_args(argv)
    from backend.model.training import fusion_fits, kept_fusion

    labels = args.labels or ([8] if args.quick else [100, 200])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, _ = encoded_demo(args.manifest, args.quick)
    choices = []
    out("| labels | seed | held-out fit, attention | mean pooling | kept |")
    out("|---:|---:|---:|---:|---|")
    for n in labels:
        for seed in seeds:
            rows = random_subset(pool, n, seed)
            s = settings.model_copy(update={"seed": seed})
            fits = fusion_fits([ds.features[i] for i in rows], [ds.labels[i] for i in rows], ds.config, encoders, s)
            kept = kept_fusion(fits)
            choices.append((n, seed, kept))
            out(f"| {n} | {seed} | {fits['attention']:.3f} | {fits['mean']:.3f} | {kept} |")
    if args.scores:
        report(choices, json.loads(args.scores.read_text()), manifest.parent.name)
    training_footer(seeds, manifest, started, load)


def report(choices: list[tuple[int, int, str]], results: list[dict], name: str) -> None:
    """Per size: the test scores of attention, mean pooling and auto, mean (worst seed), and the right choices."""
    scores = {(r["labels"], r["arm"], r["seed"]): _scores(r) for r in results if r["set"] == name}
    out()
    out("| labels | arm | macro-F1 | on look-alikes | on audio-decided items | right choices |")
    out("|---:|---|---|---|---|---|")
    for n in sorted({c[0] for c in choices}):
        picked = {seed: kept for m, seed, kept in choices if m == n}
        arms = {f: [scores[(n, f, seed)] for seed in picked] for f in FUSIONS}
        arms["auto"] = [scores[(n, kept, seed)] for seed, kept in picked.items()]
        right = sum(scores[(n, k, seed)]["macro-F1"] >= max(scores[(n, f, seed)]["macro-F1"] for f in FUSIONS)
                    for seed, k in picked.items())  # fmt: skip
        for arm, runs in arms.items():
            cells = [_stat([r[k] for r in runs]) for k in ("macro-F1", *TAGS)]
            cells.append(f"{right} of {len(picked)}" if arm == "auto" else "")
            out(f"| {n} | {arm} | " + " | ".join(cells) + " |")


def _scores(result: dict) -> dict[str, float | None]:
    scores = {"macro-F1": float(np.mean(list(result["macro_f1"].values())))}
    for name, tags in TAGS.items():
        found = [result["subsets"][t] for t in tags if t in result["subsets"]]
        scores[name] = float(np.mean(list(found[0]["macro_f1"].values()))) if found else None
    return scores


def _stat(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    return f"{np.mean(v):.3f} ({min(v):.3f})" if v else "–"


if __name__ == "__main__":
    ensure_malloc_env()
    main()
