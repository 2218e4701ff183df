"""How Whisper is asked to transcribe: word error rate and time per clip of each decoding setting
against the sentences a demo manifest's `speech` field says were spoken, and what the model learns
from those transcripts (random pool subsets, scored on the held-out split).

    ./dev run python benchmarks/transcripts.py --manifest demo480/manifest.jsonl
"""

from __future__ import annotations

import json
import os
import re
import time
from unittest import mock

import numpy as np
from common import encoded_demo, ensure_malloc_env, out, speech_records, subset_args, training_footer, with_speech
from fusion_variants import train_and_score

from backend.model import encoders as enc_module
from backend.model.media import decode_audio

SETTINGS = {  # name -> (seconds of silence after the clip, beam size)
    "the clip alone, greedy (before)": (0, 1),
    "4 s of silence after it, greedy": (4, 1),
    "the clip alone, beam 5": (0, 5),
    "4 s of silence after it, beam 5 (broaden)": (4, 5),
}


def word_error_rate(truth: str, heard: str) -> float:
    """Word-level edit distance over the number of true words (case and punctuation ignored)."""
    a, b = (re.sub(r"[^a-z' ]", " ", s.lower()).split() for s in (truth, heard))
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (x != y))
    return row[len(b)] / max(len(a), 1)


def main(argv: list[str] | None = None) -> None:
    args = subset_args(__doc__, "also write every setting's scores here", argv)
    started, load = time.time(), os.getloadavg()
    manifest, settings, encoders, ds, pool, test = encoded_demo(args.manifest, args.quick)
    records = speech_records(manifest, ds)
    if records is None or not all(r.get("audio") for r in records):
        raise SystemExit("needs a demo manifest whose every item encoded and records its `speech`")
    waves = [
        decode_audio((manifest.parent / r["audio"]).read_bytes(), encoders.audio_sample_rate, settings.audio_max_s)
        for r in records
    ]
    results = {}
    for name, (pad_s, beam) in SETTINGS.items():
        # Read at each call; a name the encoders no longer have fails here rather than going unread.
        with mock.patch.object(enc_module, "TRANSCRIBE_PAD_S", pad_s), mock.patch.object(enc_module, "BEAM_SIZE", beam):
            t0 = time.perf_counter()
            heard = encoders.audio.transcribe(waves)
            per_clip = (time.perf_counter() - t0) / len(waves)
        wer = float(np.mean([word_error_rate(r["speech"], h) for r, h in zip(records, heard, strict=True)]))
        heard_ds = with_speech(ds, encoders.text.encode(heard))
        scores = [train_and_score(heard_ds, pool, test, args.labels, seed, encoders, settings) for seed in args.seeds]
        results[name] = {"wer": wer, "s_per_clip": per_clip, "scores": scores}
    report(results, args.labels, len(test))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    training_footer(args.seeds, manifest, started, load)


def report(results: dict, labels: int, n_test: int) -> None:
    out(f"{labels} random labels per seed; {n_test} test items; mean over seeds")
    out(
        "| transcription | word error rate | s per clip | category macro-F1 | policy macro-F1 | "
        "recall@80%P Violation | same, `audio_sensitive` |"
    )
    out("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        m = np.array(r["scores"]).mean(0)
        out(f"| {name} | {r['wer']:.3f} | {r['s_per_clip']:.3f} | " + " | ".join(f"{v:.3f}" for v in m) + " |")


if __name__ == "__main__":
    ensure_malloc_env()
    main()
