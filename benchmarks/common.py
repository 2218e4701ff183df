"""What the benchmark scripts share: machine description, the code measured, a private Redis,
the malloc settings, the small inputs of `--quick`. Scripts run as `python benchmarks/<name>.py`,
so this imports as `common`; each has `main(argv)`, and `--quick` runs the same code on tiny
inputs in seconds (tests/unit/test_benchmarks.py runs every script that way)."""

from __future__ import annotations

import argparse
import functools
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
QUICK_ITEMS = 16  # the demo set of --quick
QUICK_MAX_STEPS = 8  # optimiser steps per training under --quick
# Torch re-maps freed buffers through the kernel on these VMs; glibc reads these only at start-up.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def ensure_malloc_env() -> None:
    """Re-execute this process with the malloc settings if it was started without them (call it
    only where a script starts, never from main(): a caller's process is not ours to replace)."""
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def subset_args(doc: str, json_help: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Options of the benchmarks that train on random pool subsets of a labelled manifest."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_manifest(p)
    p.add_argument("--labels", type=int, help="default 110 (--quick: 8)")
    p.add_argument("--seeds", type=int, nargs="+", help="default 0-7 (--quick: 0)")
    p.add_argument("--json", type=Path, help=json_help)
    args = p.parse_args(argv)
    args.labels = args.labels or (8 if args.quick else 110)
    args.seeds = args.seeds or ([0] if args.quick else list(range(8)))
    return args


def add_manifest(p: argparse.ArgumentParser) -> None:
    """--manifest and --quick, the options of every benchmark that trains on a labelled manifest."""
    p.add_argument("--manifest", type=Path, help="default: a 480-item demo set under /tmp")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny inputs (a {QUICK_ITEMS}-item demo set, one seed, {QUICK_MAX_STEPS} steps per training)",
    )


def training_footer(seeds: list[int], manifest: Path, started: float, load: tuple[float, ...]) -> None:
    """The closing lines of a training benchmark: machine, torch, code, seeds, load and duration."""
    import torch

    out()
    out(f"- machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    out(f"- torch {torch.__version__}, threads {torch.get_num_threads()}")
    out(f"- code: git {code_version()}; seeds {seeds}; manifest {manifest}")
    out(f"- load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}; {time.time() - started:.0f} s")


def speech_records(manifest: Path, ds: Any) -> list[dict] | None:
    """The manifest's items, one per dataset row, when every item encoded and records what its
    voice-over says (`speech`, written by `broaden demo-data`); else None."""
    from backend.lab.simulate import read_manifest

    records = read_manifest(manifest)
    return records if len(records) == len(ds.features) and all("speech" in r for r in records) else None


def with_speech(ds: Any, said: list[Any] | None = None, frames: bool = True) -> Any:
    """The dataset with each audio object's speech token replaced by `said` (one text embedding per
    row), and without its sound frames unless `frames`."""
    from dataclasses import replace

    from backend.model.features import SPEECH_SUFFIX

    names = {name for f in ds.features for name in f}
    audio = {name for name in names if name + SPEECH_SUFFIX in names}  # audio objects with a speech twin
    features = [{k: v for k, v in f.items() if frames or k not in audio} for f in ds.features]
    for f, emb in zip(features, said, strict=True) if said is not None else ():
        for key in (name + SPEECH_SUFFIX for name in audio):
            if key in f:
                f[key] = np.asarray(emb, dtype=np.float32).reshape(1, -1)
    return replace(ds, features=features)


def command_line(script: str, argv: list[str] | None) -> str:
    """How this run was asked for: the script and its options (argv when main() was given them)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([Path(sys.executable).name, f"benchmarks/{Path(script).name}", *args])


def clear_feature_cache(r: redis.Redis) -> None:
    """Forget every cached encoder output (both cache levels); project state stays."""
    from backend.store import keys

    for pattern in keys.feature_patterns():
        found = list(r.scan_iter(pattern, count=1000))
        for start in range(0, len(found), 1000):
            r.unlink(*found[start : start + 1000])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@functools.cache
def code_version() -> str:
    """The commit measured, and whether the working tree differed from it (other edits in flight).
    Read once, when a benchmark imports this module: a commit made during a long run is not it."""
    git = ["git", "-C", str(ROOT)]
    try:
        sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except OSError:
        return "unknown (no git)"
    changed = " ".join(line[3:] for line in dirty.stdout.splitlines())
    return f"{sha.strip() or 'unknown'}" + (f" + uncommitted changes in {changed}" if changed else "")


code_version()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_redis(workdir: Path) -> AbstractContextManager[str]:
    """A private redis-server without persistence, stopped on exit (the demo's own)."""
    from backend.lab.stack import private_redis

    return private_redis(workdir)


def demo_set(demo_dir: Path, n_items: int) -> Path:
    """Reuse a demo set with at least n_items listings, else build one (espeak-ng: ~3 items/s)."""
    manifest = demo_dir / "manifest.jsonl"
    if manifest.exists() and len(manifest.read_text().splitlines()) >= n_items:
        return demo_dir
    from backend.lab.demo import build_demo

    out(f"building a demo set of {n_items} items in {demo_dir} ...")
    build_demo(demo_dir, n_items=n_items, seed=0)
    return demo_dir


def quick_demo() -> Path:
    """The demo set of --quick, kept in the temporary directory like the full one under /tmp."""
    return demo_set(Path(tempfile.gettempdir()) / f"broaden-bench-quick{QUICK_ITEMS}", QUICK_ITEMS)


def random_subset(pool: list[int], n: int, seed: int) -> list[int]:
    """`n` pool rows drawn at random (seeded): the labelled tasks of the fusion benchmarks."""
    chosen = np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in chosen]


def enriched_subset(pool: list[int], positive: set[int], n: int, share: float, seed: int) -> list[int]:
    """`n` pool rows drawn at random (seeded) of which `share` are `positive` rows (as many as the pool
    has): labels as rich in the hunted label as the ones active learning gathers."""
    pos = [i for i in pool if i in positive]
    neg = [i for i in pool if i not in positive]
    k = min(round(n * share), len(pos))
    rng = np.random.default_rng(seed)
    chosen = [pos[i] for i in rng.choice(len(pos), size=k, replace=False)]
    return chosen + [neg[i] for i in rng.choice(len(neg), size=min(n - k, len(neg)), replace=False)]


def hunted_rows(ds: Any, pool: list[int], target: tuple[str, str]) -> set[int]:
    """The pool rows that carry the hunted label."""
    from backend.ranking.seeds import is_target_positive

    return {i for i in pool if is_target_positive(ds.config, ds.labels[i], {target})}


def encoded_demo(manifest: Path | None, quick: bool = False) -> tuple[Path, Any, Any, Any, list[int], list[int]]:
    """(manifest, settings, encoders, dataset, pool rows, test rows) of a labelled manifest, encoded
    through the backend's cache; by default a 480-item demo set under /tmp. `quick`: by default the
    small demo set, and every training capped at a few steps."""
    from backend.config import Settings
    from backend.lab.simulate import load_dataset, read_manifest, redis_client
    from backend.labelstudio.labelconfig import parse_label_config
    from backend.model.encoders import load_encoders
    from backend.model.predictor import Predictor

    if manifest is None:
        manifest = (quick_demo() if quick else demo_set(Path("/tmp/broaden-bench-demo480"), 480)) / "manifest.jsonl"
    settings = Settings(media_roots=str(manifest.parent.resolve()))
    if quick:
        settings = settings.model_copy(update={"train_max_steps": QUICK_MAX_STEPS})
    encoders = load_encoders(settings)
    records = read_manifest(manifest)
    config = parse_label_config((manifest.parent / "label_config.xml").read_text())
    with redis_client(settings.redis_url) as r:
        ds = load_dataset(records, config, Predictor(settings, encoders, r))
    pool = [i for i, s in enumerate(ds.splits) if s != "test"]
    test = [i for i, s in enumerate(ds.splits) if s == "test"]
    return manifest, settings, encoders, ds, pool, test
