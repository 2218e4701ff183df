"""What limits the audio-decided label: which audio inputs the model reads, and how well the words
were heard. broaden's model is trained on random pool subsets of a labelled manifest with its audio
side restricted (sound frames and heard words, heard words only, the true words, none), for
attention and mean fusion, and scored on the held-out split. "True words" embeds the sentence the
manifest's `speech` field says was spoken (demo sets record it) in place of Whisper's transcript:
the model as it would be with perfect transcription. Two arms also switch off the training of
audio-free heads reading tasks without audio (`train_audio_free_heads` off).

    ./dev run python benchmarks/audio_inputs.py --manifest bench1200c/manifest.jsonl --labels 110 900
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import add_manifest, encoded_demo, ensure_malloc_env, out, speech_records, training_footer, with_speech
from fusion_variants import train_and_score

# name -> (fusion, audio side: "frames+words" | "words" | "true words", train_audio_free_heads: None = broaden's)
ARMS = {
    "attention, sound frames + heard words (broaden)": ("attention", "frames+words", None),
    "attention, frames + heard words, no audio-free heads": ("attention", "frames+words", False),
    "mean pooling, sound frames + heard words": ("mean", "frames+words", None),
    "mean pooling, frames + heard words, no audio-free heads": ("mean", "frames+words", False),
    "attention, heard words only": ("attention", "words", None),
    "mean pooling, heard words only": ("mean", "words", None),
    "attention, true words only": ("attention", "true words", None),
    "no audio": ("none", "frames+words", None),
}


def audio_side(ds, side: str, records: list[dict] | None, text_encoder) -> object:
    """The dataset with its audio objects' features restricted to one side."""
    if side == "frames+words":
        return ds
    said = text_encoder.encode([r["speech"] for r in records]) if side == "true words" else None
    return with_speech(ds, said, frames=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_manifest(p)
    p.add_argument("--labels", type=int, nargs="+", help="subset sizes, more than the pool = all of it (default 110)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-4 (--quick: 0)")
    p.add_argument("--json", type=Path, help="also write every (size, arm, seed) score here")
    args = p.parse_args(argv)
    args.labels = args.labels or ([8] if args.quick else [110])
    args.seeds = args.seeds or ([0] if args.quick else list(range(5)))
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, test = encoded_demo(args.manifest, args.quick)
    records = speech_records(manifest, ds)
    arms = dict(ARMS)
    if records is None:
        out("(no `speech` field on every item, or items that failed to encode: no true-words arm)")
        arms = {k: v for k, v in arms.items() if v[1] != "true words"}
    sets = {side: audio_side(ds, side, records, encoders.text) for side in {s for _, s, _ in arms.values()}}
    scores: dict[str, dict[str, list]] = {}
    for size in args.labels:
        scores[str(size)] = {}
        for name, (fusion, side, free) in arms.items():
            s = settings.model_copy(update={"fusion": fusion})
            if free is not None:
                s = s.model_copy(update={"train_audio_free_heads": free})
            runs = [train_and_score(sets[side], pool, test, size, seed, encoders, s) for seed in args.seeds]
            scores[str(size)][name] = runs
        report(scores[str(size)], min(size, len(pool)), len(test))
    if args.json:
        args.json.write_text(json.dumps(scores, indent=1))
    training_footer(args.seeds, manifest, started, load)


def report(by_arm: dict[str, list], size: int, n_test: int) -> None:
    out(f"\n{size} random labels per seed; {n_test} test items; mean ± std over seeds")
    out(
        "| audio the model reads | category macro-F1 | policy macro-F1 | "
        "recall@80%P Violation | same, `audio_sensitive` |"
    )
    out("|---|---:|---:|---:|---:|")
    for name, runs in by_arm.items():
        a = np.array(runs)
        out(f"| {name} | " + " | ".join(f"{a[:, j].mean():.3f} ± {a[:, j].std():.3f}" for j in range(4)) + " |")


if __name__ == "__main__":
    ensure_malloc_env()
    main()
