"""Encoding throughput: broaden's feature pipeline against the bare encoders, same inputs.

  pipeline  Predictor.featurize (MediaFetcher + FeatureStore.featurize) on N demo tasks whose
            features are not cached: read files, decode, resample, encode with all three
            encoders, write to Redis, read back. The cache keys are deleted before each run.
  bare      the encoders' encode() on the same media, decoded beforehand and kept in memory
            (PIL images, caption strings, float32 waves), the same unique items in the same
            batches (ENCODE_BATCH per kind) the pipeline uses.

Runs alternate (pipeline, bare, pipeline, bare, ...) after one untimed warm-up of each, so
slow phases of a noisy machine hit both; medians are reported.

    PYTHONPATH=. python benchmarks/encode_throughput.py
    ./dev run python benchmarks/encode_throughput.py --quick   # 8 items, one pair: seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from common import (
    MALLOC_ENV,
    clear_feature_cache,
    code_version,
    command_line,
    cpu_model,
    demo_set,
    ensure_malloc_env,
    out,
    own_redis,
    quick_demo,
)

GOAL_RATIO = 0.9
DEMO_DIR = Path(tempfile.gettempdir()) / "broaden-bench-demo"
# The order the pipeline meets them in a demo task; "speech" is the voice-over's transcript token.
KINDS = ("image", "text", "audio", "speech")


@dataclass
class BareInputs:
    """Per kind, the unique decoded media the pipeline would encode (deduplicated by content)."""

    media: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class Runs:
    pipeline_s: list[float] = field(default_factory=list)
    bare_s: list[float] = field(default_factory=list)
    bare_kind_s: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    pipeline_encode_s: list[float] = field(default_factory=list)  # inside encode() during pipeline runs


class EncodeClock:
    """Sums the time spent inside the encoders' encode(), to split a pipeline run into encoding and
    everything else; measured within the same run, so machine noise cannot widen the gap."""

    def __init__(self) -> None:
        self.total, self.depth = 0.0, 0

    @contextmanager
    def timing(self, encoders: Any) -> Iterator[EncodeClock]:
        """The encoders' encode() timed inside the block (an instance attribute shadows the method)."""
        timed = list({id(e): e for e in map(encoders.for_modality, KINDS)}.values())
        for encoder in timed:
            encoder.encode = self._timed(encoder.encode)
        try:
            yield self
        finally:
            for encoder in timed:
                del encoder.encode

    def _timed(self, encode: Any) -> Any:
        def timed(items: list[Any]) -> Any:
            # The speech encoder calls the text encoder inside: count only the outermost call.
            self.depth += 1
            started = time.perf_counter()
            try:
                return encode(items)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.total += time.perf_counter() - started

        return timed


# ---------------------------------------------------------------- environment


def machine_lines(load_start: float) -> list[str]:
    import torch

    cpu = cpu_model()
    malloc = " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in MALLOC_ENV)
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), "
        f"{platform.system()} {platform.release()}",
        f"- code: git {code_version()}",
        # Other work on the machine shows here; its noise is why comparisons are made within one run.
        f"- load average (1 min) at start / end of the run: {load_start:.2f} / {os.getloadavg()[0]:.2f}",
        f"- malloc env: {malloc}",
    ]


# ---------------------------------------------------------------- inputs


def demo_tasks(demo_dir: Path, n: int) -> list[dict[str, Any]]:
    lines = (demo_dir / "manifest.jsonl").read_text().splitlines()[:n]
    recs = [json.loads(line) for line in lines]
    return [
        {
            "id": i,
            "data": {
                "image": str(demo_dir / r["image"]),
                "caption": r["text"],
                "audio": str(demo_dir / r["audio"]),
            },
        }
        for i, r in enumerate(recs, start=1)
    ]


def bare_inputs(tasks: list[dict[str, Any]], settings: Any, encoders: Any) -> BareInputs:
    """Decode every task's media once, with broaden's own decoders, keeping one copy per content digest."""
    from backend.model.media import decode_audio, decode_image, decode_text

    raw_of = {
        "image": lambda t: Path(t["data"]["image"]).read_bytes(),
        "text": lambda t: t["data"]["caption"].encode("utf-8"),
        "audio": lambda t: Path(t["data"]["audio"]).read_bytes(),
        "speech": lambda t: Path(t["data"]["audio"]).read_bytes(),
    }
    decode = {
        "image": lambda b: decode_image(b, settings.image_max_pixels),
        "text": lambda b: decode_text(b, settings.text_max_chars),
        "audio": lambda b: decode_audio(b, encoders.audio_sample_rate, settings.audio_max_s),
        "speech": lambda b: decode_audio(b, encoders.audio_sample_rate, settings.audio_max_s),
    }
    inputs = BareInputs()
    for kind in KINDS:
        unique: dict[str, Any] = {}
        for task in tasks:
            raw = raw_of[kind](task)
            unique.setdefault(hashlib.sha256(raw).hexdigest(), decode[kind](raw))
        inputs.media[kind] = list(unique.values())
    return inputs


# ---------------------------------------------------------------- the two contenders


def run_pipeline(
    predictor: Any, r: redis.Redis, tasks: list[dict[str, Any]], config: Any, expect: int, clock: EncodeClock
) -> tuple[float, float]:
    """(wall seconds, seconds of it inside encode())."""
    clear_feature_cache(r)  # outside the timing: it is not part of the pipeline
    clock.total = 0.0
    started = time.perf_counter()
    feats = predictor.featurize(tasks, config)
    took = time.perf_counter() - started
    if feats.errors or feats.encoded != expect:
        raise RuntimeError(f"pipeline encoded {feats.encoded} items (expected {expect}), errors {feats.errors}")
    return took, clock.total


def run_bare(encoders: Any, inputs: BareInputs) -> dict[str, float]:
    from backend.model.features import ENCODE_BATCH

    took = {}
    for kind in KINDS:
        encoder, media = encoders.for_modality(kind), inputs.media[kind]
        started = time.perf_counter()
        for start in range(0, len(media), ENCODE_BATCH):
            encoder.encode(media[start : start + ENCODE_BATCH])
        took[kind] = time.perf_counter() - started
    return took


def interleaved(args: argparse.Namespace, redis_url: str) -> tuple[Runs, BareInputs, int]:
    from backend.config import Settings
    from backend.labelstudio.labelconfig import parse_label_config
    from backend.model.encoders import load_encoders
    from backend.model.predictor import Predictor

    demo_dir = demo_set(args.demo_dir.resolve(), args.items) if args.demo_dir else quick_demo()
    tasks = demo_tasks(demo_dir, args.items)
    settings = Settings(redis_url=redis_url, media_roots=str(demo_dir))
    encoders = load_encoders(settings)
    r = redis.Redis.from_url(redis_url)
    predictor = Predictor(settings, encoders, r)
    config = parse_label_config((demo_dir / "label_config.xml").read_text())
    inputs = bare_inputs(tasks, settings, encoders)
    expect = sum(len(m) for m in inputs.media.values())

    runs = Runs()
    with EncodeClock().timing(encoders) as clock:
        run_pipeline(predictor, r, tasks, config, expect, clock)  # warm-up: first batches pay one-time costs
        run_bare(encoders, inputs)
        for rep in range(args.reps):
            took, encoding = run_pipeline(predictor, r, tasks, config, expect, clock)
            runs.pipeline_s.append(took)
            runs.pipeline_encode_s.append(encoding)
            bare = run_bare(encoders, inputs)
            runs.bare_s.append(sum(bare.values()))
            for kind, s in bare.items():
                runs.bare_kind_s[kind].append(s)
            bare_s = runs.bare_s[-1]
            out(f"rep {rep + 1}/{args.reps}: pipeline {took:.2f}s ({encoding:.2f}s encoding), bare {bare_s:.2f}s")
    if args.profile:
        profile_pipeline(predictor, r, tasks, config)
    r.close()
    return runs, inputs, len(tasks)


def profile_pipeline(predictor: Any, r: redis.Redis, tasks: list[dict[str, Any]], config: Any) -> None:
    """One extra pipeline run under pyinstrument (pip install pyinstrument), printed as text."""
    from pyinstrument import Profiler

    clear_feature_cache(r)
    profiler = Profiler(interval=0.001)
    profiler.start()
    predictor.featurize(tasks, config)
    profiler.stop()
    out(profiler.output_text(unicode=False, color=False))


# ---------------------------------------------------------------- report


def table(runs: Runs, inputs: BareInputs, n_tasks: int) -> list[str]:
    pipe, bare = statistics.median(runs.pipeline_s), statistics.median(runs.bare_s)
    n_media = sum(len(m) for m in inputs.media.values())
    rows = [
        "| | median s | tasks/s | media items/s | min s | max s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| pipeline (featurize, uncached) | {pipe:.2f} | {n_tasks / pipe:.2f} | {n_media / pipe:.2f} "
        f"| {min(runs.pipeline_s):.2f} | {max(runs.pipeline_s):.2f} |",
        f"| bare encoders (pre-decoded) | {bare:.2f} | {n_tasks / bare:.2f} | {n_media / bare:.2f} "
        f"| {min(runs.bare_s):.2f} | {max(runs.bare_s):.2f} |",
    ]
    ratios = [b / p for p, b in zip(runs.pipeline_s, runs.bare_s, strict=True)]
    outside = [p - e for p, e in zip(runs.pipeline_s, runs.pipeline_encode_s, strict=True)]
    shares = [o / p for o, p in zip(outside, runs.pipeline_s, strict=True)]
    rows += [
        "",
        f"Ratio pipeline/bare throughput (bare time / pipeline time): median of medians {bare / pipe:.3f}; "
        f"per A/B pair: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} "
        f"(goal: at least {GOAL_RATIO})",
        "",
        f"Within the pipeline runs, time outside encode() (fetch, decode, hashing, Redis): median "
        f"{statistics.median(outside):.3f} s, {100 * statistics.median(shares):.1f}% of the run "
        f"(max {100 * max(shares):.1f}%)",
        "",
        "| modality | unique items | bare median s | share of bare | ms per item |",
        "|---|---:|---:|---:|---:|",
    ]
    kind_total = sum(statistics.median(v) for v in runs.bare_kind_s.values())
    for kind in KINDS:
        s, n = statistics.median(runs.bare_kind_s[kind]), len(inputs.media[kind])
        rows.append(f"| {kind} | {n} | {s:.2f} | {100 * s / kind_total:.0f}% | {1000 * s / max(n, 1):.1f} |")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--demo-dir",
        type=Path,
        help=f"demo set to use, built there if missing or too small (default {DEMO_DIR}; --quick: a small one)",
    )
    p.add_argument("--items", type=int, help="tasks per run, image + caption + voice-over each (default 48)")
    p.add_argument("--reps", type=int, help="timed pipeline/bare pairs (default 9)")
    p.add_argument("--redis-url", help="use this Redis instead of a private one (its broaden keys are deleted)")
    p.add_argument("--profile", action="store_true", help="profile one more pipeline run (needs pyinstrument)")
    p.add_argument("--quick", action="store_true", help="8 items of a small demo set, one timed pair")
    args = p.parse_args(argv)
    if not args.quick:
        args.demo_dir = args.demo_dir or DEMO_DIR
    args.items = args.items or (8 if args.quick else 48)
    args.reps = args.reps or (1 if args.quick else 9)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args.redis_url:
        runs, inputs, n_tasks = interleaved(args, args.redis_url)
    else:
        with tempfile.TemporaryDirectory(prefix="broaden-bench-") as tmp, own_redis(Path(tmp)) as url:
            runs, inputs, n_tasks = interleaved(args, url)
    out("\n## Encoding throughput\n")
    out("\n".join(machine_lines(load_start)))
    out(f"- command: `{command_line(__file__, argv)}`")
    out(f"- {n_tasks} demo tasks per run, {args.reps} interleaved pipeline/bare pairs after one warm-up each\n")
    out("\n".join(table(runs, inputs, n_tasks)))


if __name__ == "__main__":
    ensure_malloc_env()
    main()
