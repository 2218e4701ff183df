"""A small, real multimodal demo set: second-hand marketplace listings to moderate.

Each listing has a product photo (a real Fashion-MNIST image), a seller caption and a spoken
voice-over (espeak-ng). Policy violations are said only in the voice-over while the caption
stays innocent, so those items can only be labelled from audio; so can their look-alikes,
OK voice-overs that talk about payment innocently. Both are tagged "audio_sensitive".
Test items draw from separate sentence pools and from the Fashion-MNIST test file, so a
benchmark can hold out wordings and images it has never seen.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image
from tqdm import tqdm

from backend.errors import BroadenError

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_RATE = 16_000
MAX_CLIP_S = 6.0
IMAGE_SIZE = 112
TEST_FRACTION = 0.25
VIOLATION_RATE = 0.17
PHRASINGS = ("fixed", "composed")
HARD_NEGATIVE_RATE = 0.25  # OK voice-overs that mention payment innocently
VAGUE_CAPTION_RATE = 0.25  # captions that say nothing about the category


def label_config(objects: list[tuple[str, str, str]], controls: list[tuple[str, str, str, list[str]]]) -> str:
    """A Label Studio config: objects as (tag, name, task key), then per Choices control
    (header, name, the object it labels, its choices); "multiple" after the name's colon
    makes it a multiple-choice control ("flags:multiple")."""
    lines = ["<View>"] + [f'  <{tag} name="{name}" value="${key}"/>' for tag, name, key in objects]
    for header, name, to_name, choices in controls:
        name, _, choice = name.partition(":")
        lines.append(f'  <Header value="{header}"/>')
        lines.append(f'  <Choices name="{name}" toName="{to_name}" choice="{choice or "single"}" showInline="true">')
        lines += [f'    <Choice value="{c}"/>' for c in choices] + ["  </Choices>"]
    return "\n".join([*lines, "</View>", ""])


LABEL_CONFIG = label_config(
    [("Image", "image", "image"), ("Text", "caption", "caption"), ("Audio", "voiceover", "audio")],
    [
        ("Product category", "category", "image", ["Top", "Bottom", "Dress", "Outerwear", "Footwear", "Bag"]),
        ("Policy", "policy", "voiceover", ["OK", "Violation"]),
    ],
)

# Fashion-MNIST class id -> (category, nouns a seller might use for it).
CLASSES: dict[int, tuple[str, list[str]]] = {
    0: ("Top", ["t-shirt", "tee", "top"]),
    1: ("Bottom", ["trousers", "jeans", "pants"]),
    2: ("Top", ["pullover", "jumper", "sweater"]),
    3: ("Dress", ["dress", "summer dress", "midi dress"]),
    4: ("Outerwear", ["coat", "winter coat", "jacket"]),
    5: ("Footwear", ["sandals", "summer sandals"]),
    6: ("Top", ["shirt", "blouse", "button-up shirt"]),
    7: ("Footwear", ["sneakers", "trainers"]),
    8: ("Bag", ["bag", "handbag", "tote bag"]),
    9: ("Footwear", ["ankle boots", "boots"]),
}
CATEGORIES = ["Top", "Bottom", "Dress", "Outerwear", "Footwear", "Bag"]
CONDITIONS = ["barely worn", "worn a few times", "in great condition", "new with tags", "gently used"]

# fmt: off
# Words that would give a violation away in text; captions must never contain them.
VIOLATION_TERMS = [
    "wire", "transfer", "gift card", "crypto", "bitcoin", "whatsapp", "telegram", "cash",
    "replica", "fake", "counterfeit", "copy", "bank", "outside", "pay", "payment",
    "signal", "western union", "money",
]

# Per split: caption templates, vague captions, OK / look-alike OK / violation voice-overs.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "pool": {
        "caption": ["{Noun}, {size}. {Cond}.", "Selling my {noun}, {cond}.",
                    "Like-new {noun}, {cond}, {size}.", "{Noun} up for grabs, {cond}."],
        "vague": ["Great item, barely used.", "Clearing out my wardrobe, everything must go.",
                  "Good condition, see photo.", "Lovely piece, just not my style anymore."],
        "ok": ["Ships within two days.", "Comes from a smoke-free home.",
               "Measurements are in the description.", "Washed once, never worn outside the house.",
               "Happy to answer questions about the fit.", "Bundle discount if you buy two items.",
               "Posted with tracking and packed carefully.", "True to size, it just never suited me."],
        "lookalike": ["Payment through the app only, please.",
                      "Please use the checkout button, I cannot accept anything else.",
                      "Buyer protection applies, so pay in the app.",
                      "Price is firm and payment goes through the platform."],
        "violation": ["Pay me by wire transfer and I will ship it today.",
                      "I only take gift cards, send me the codes first.",
                      "Text me on WhatsApp and we can skip the app fees.",
                      "Cash only, we meet outside the app.",
                      "It is a replica of a designer brand, looks just like the real thing.",
                      "I accept bitcoin, send it to my wallet before shipping.",
                      "Pay with crypto and I will give you ten percent off.",
                      "Do not buy through the app, send the money straight to my bank.",
                      "Add me on Telegram to arrange payment privately."],
    },
    "test": {
        "caption": ["{Noun} for sale. {Size}, {cond}.", "Pre-loved {noun}, {cond}, {size}."],
        "vague": ["Gently used, great value.", "Spring clean sale, see picture."],
        "ok": ["Dispatched the next working day.", "No pets and no smoking in our house.",
               "Check the photos for the exact colour.", "Worn twice, still in lovely condition."],
        "lookalike": ["I only accept payment in the app, for your safety.",
                      "Secure checkout only, no other payment methods."],
        "violation": ["Bank transfer only please, the app takes too much.",
                      "I can do it cheaper if you pay in cryptocurrency.",
                      "Reach me on WhatsApp and pay me there instead.",
                      "Buy me a gift card for the amount and I will post it.",
                      "It is a high quality fake of a luxury label.",
                      "Cancel the order here and pay me cash when we meet."],
    },
}

# fmt: on

# --phrasings composed: voice-overs built from parts, hundreds of wordings per split instead of
# 6-9, so that positives are not re-recordings of a few sentences. No sentence is in both splits,
# and the test split has phrases, and some payment means and apps, of its own.
PARTS: dict[str, dict[str, list[str]]] = {
    "pool": {
        "opener": ["", "Just so you know, ", "Quick note, ", "Before you buy, "],
        "closer": [".", ", thanks.", ", no exceptions.", " if you want it."],
        "means": ["wire transfer", "gift cards", "bitcoin", "a bank transfer", "crypto"],
        "app": ["WhatsApp", "Telegram"],
        "violation": [
            "pay me by {means}",
            "I only take {means}",
            "send the money by {means} first",
            "message me on {app} and pay there",
            "add me on {app} to skip the fees",
            "it is a replica of a designer brand",
            "this one is a copy of a famous label",
            "we meet outside the app and you pay cash",
        ],
        "lookalike": [
            "payment goes through the app only",
            "please use the checkout button",
            "buyer protection applies when you pay in the app",
            "I only accept the platform payment",
        ],
        "ok": [
            "it ships within two days",
            "it comes from a smoke-free home",
            "the measurements are in the description",
            "I am happy to answer questions",
            "there is a bundle discount on two items",
            "it is posted with tracking",
        ],
    },
    "test": {
        "opener": ["", "Heads up, ", "To be clear, "],
        "closer": [".", ", cheers.", ", that is the deal."],
        "means": ["bank transfer", "cryptocurrency", "a gift card", "Western Union"],
        "app": ["WhatsApp", "Signal"],
        "violation": [
            "the price is lower if you use {means}",
            "{means} is the only way I sell",
            "reach me on {app} and we sort the money there",
            "contact me on {app}, not here",
            "it is a high quality fake of a luxury label",
            "cancel the order here and bring cash when we meet",
        ],
        "lookalike": [
            "for your safety I only accept payment in the app",
            "secure checkout only",
            "pay with the in-app checkout and you are covered",
        ],
        "ok": [
            "it is dispatched the next working day",
            "no pets and no smoking in our house",
            "check the photos for the exact colour",
            "I wore it twice",
        ],
    },
}


def composed(split: str) -> dict[str, list[str]]:
    """Every voice-over the parts of a split make: opener + filled phrase + closer, per role
    (violation, look-alike, ok)."""
    parts = PARTS[split]
    out = {}
    for role in ("violation", "lookalike", "ok"):
        phrases = [
            phrase.format(means=m, app=a)
            for phrase in parts[role]
            for m in (parts["means"] if "{means}" in phrase else [""])
            for a in (parts["app"] if "{app}" in phrase else [""])
        ]
        out[role] = [_sentence(o, p, c) for o in parts["opener"] for p in phrases for c in parts["closer"]]
    return out


def _sentence(opener: str, phrase: str, closer: str) -> str:
    text = opener + phrase + closer
    return text[0].upper() + text[1:]


# Built-in espeak-ng voices and variants (mbrola voices need extra packages, so none here).
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbcwmd"]
VARIANTS = ["", "f2", "f3", "f4", "m3", "m4", "m7"]
APT_HINT = "sudo apt-get install espeak-ng dataset-fashion-mnist"


class DemoDataError(BroadenError):
    """The demo set cannot be built: a bad option, or a system package missing."""


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (big-endian header: magic, then one uint32 per dimension)."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(dims))


def load_fashion_mnist(data_dir: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) of one part: "train" or "t10k"."""
    files = [data_dir / f"{part}-images-idx3-ubyte.gz", data_dir / f"{part}-labels-idx1-ubyte.gz"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DemoDataError(f"Fashion-MNIST files missing ({', '.join(missing)}); install with: {APT_HINT}")
    return _read_idx(files[0]), _read_idx(files[1])


def _espeak_names(listing: str) -> set[str]:
    """Voice (language column) or variant (file basename) names espeak-ng knows."""
    out = subprocess.run(["espeak-ng", f"--voices={listing}"], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()[1:] if line.strip()]
    return {r[1] for r in rows} if listing == "en" else {r[-1].split("/")[-1] for r in rows}


def available_voices() -> list[str]:
    """espeak-ng voice strings to draw from; checked up front because unknown names fall back silently."""
    if shutil.which("espeak-ng") is None:
        raise DemoDataError(f"espeak-ng not found on PATH; install with: {APT_HINT}")
    langs, variants = _espeak_names("en"), _espeak_names("variant")
    voices = [v for v in VOICES if v in langs]
    if not voices:
        raise DemoDataError(f"espeak-ng has none of the English voices {VOICES}")
    return [v + (f"+{x}" if x else "") for v in voices for x in VARIANTS if not x or x in variants]


def speak(text: str, voice: str, speed: int, pitch: int, path: Path) -> float:
    """Render text with espeak-ng to a 16 kHz mono WAV at path; returns the duration in seconds."""
    import torch
    import torchaudio.functional as AF

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        for _ in range(2):  # a second, faster take if the first runs over the clip limit
            cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text]
            subprocess.run(cmd, capture_output=True, check=True, timeout=60)
            audio, rate = sf.read(raw, dtype="float32", always_2d=True)
            if len(audio) / rate <= MAX_CLIP_S:
                break
            speed = min(320, int(speed * len(audio) / rate / (MAX_CLIP_S - 0.3)) + 1)
    wave = torch.from_numpy(audio.mean(axis=1))
    if rate != SAMPLE_RATE:
        wave = AF.resample(wave, rate, SAMPLE_RATE)
    wave = wave[: int(MAX_CLIP_S * SAMPLE_RATE)].numpy()
    sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
    return len(wave) / SAMPLE_RATE


def render_image(pixels: np.ndarray, tint: np.ndarray, path: Path) -> None:
    """Upscale a 28x28 grey image to an RGB PNG, tinted so listings do not all look alike."""
    grey = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    rgb = np.asarray(grey, dtype=np.float32)[..., None] * tint[None, None, :]
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(path)


def _caption(rng: np.random.Generator, pools: dict[str, list[str]], fm_class: int, vague: bool) -> str:
    if vague:
        return str(rng.choice(pools["vague"]))
    noun = str(rng.choice(CLASSES[fm_class][1]))
    cat = CLASSES[fm_class][0]
    if cat == "Bag":
        size = "one size"
    elif cat == "Footwear":
        size = f"EU size {rng.integers(36, 45)}"
    else:
        size = f"size {rng.choice(['XS', 'S', 'M', 'L', 'XL'])}"
    cond = str(rng.choice(CONDITIONS))
    text = str(rng.choice(pools["caption"]))
    fields = dict(noun=noun, Noun=noun.capitalize(), size=size, Size=size[0].upper() + size[1:], cond=cond)
    return text.format(**fields, Cond=cond.capitalize())


def _pick_image(
    rng: np.random.Generator, data: tuple[np.ndarray, np.ndarray], fm_class: int, split: str, used: set
) -> np.ndarray:
    """A not yet used image of the class; test items come from the t10k file, pool items from train."""
    images, labels = data
    candidates = np.flatnonzero(labels == fm_class)
    index = int(rng.choice(candidates))
    while (split, index) in used:
        index = int(rng.choice(candidates))
    used.add((split, index))
    return images[index]


def _speech(rng: np.random.Generator, pools: dict[str, list[str]], violation: bool) -> tuple[str, str, list]:
    """Voice-over sentence, policy label and tags for one item."""
    if violation:  # caption and photo look fine; only the voice-over tells
        return str(rng.choice(pools["violation"])), "Violation", ["audio_sensitive"]
    if rng.random() < HARD_NEGATIVE_RATE:
        return str(rng.choice(pools["lookalike"])), "OK", ["audio_sensitive", "payment_lookalike"]
    return str(rng.choice(pools["ok"])), "OK", []


def _plan(rng: np.random.Generator, n_items: int, violation_rate: float, test_only: bool = False) -> list[dict]:
    """Category, split and policy per item: balanced categories, a few violations in each split
    (test_only: every item in the test split)."""
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(n_items)]
    categories = [categories[i] for i in rng.permutation(n_items)]
    n_test = n_items if test_only else max(1, round(n_items * TEST_FRACTION))
    splits = np.array(["test"] * n_test + ["pool"] * (n_items - n_test))[rng.permutation(n_items)]
    violation = np.zeros(n_items, dtype=bool)
    for split in ("pool", "test"):
        if len(members := np.flatnonzero(splits == split)):
            k = max(1, round(len(members) * violation_rate))
            violation[rng.choice(members, size=k, replace=False)] = True
    return [
        {"category": c, "split": str(s), "violation": bool(v)}
        for c, s, v in zip(categories, splits, violation, strict=True)
    ]


def build_demo(
    out_dir: Path,
    n_items: int = 48,
    seed: int = 0,
    data_dir: Path = FASHION_MNIST_DIR,
    violation_rate: float = VIOLATION_RATE,
    phrasings: str = "fixed",
    test_items: int = 0,
) -> Path:
    """Write images/, audio/, manifest.jsonl, tasks.json and label_config.xml; returns the manifest path.

    test_items: that many more listings, all in the test split, from a second random stream, so
    the first n_items are the same whatever their number (a bigger test split for benchmarks)."""
    if n_items < 4:
        raise DemoDataError("n_items must be at least 4 (both splits need a violation and an OK item)")
    if test_items < 0:
        raise DemoDataError("test_items must be 0 or more")
    if not 0 < violation_rate < 1:
        raise DemoDataError("violation_rate must be between 0 and 1")
    if phrasings not in PHRASINGS:
        raise DemoDataError(f"phrasings must be one of {', '.join(PHRASINGS)}")
    voice_overs = {split: composed(split) if phrasings == "composed" else {} for split in TEMPLATES}
    voices = available_voices()
    data = {"pool": load_fashion_mnist(data_dir, "train"), "test": load_fashion_mnist(data_dir, "t10k")}
    out_dir = Path(out_dir)
    for sub in ("images", "audio"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / sub).glob("item-*"):  # left over from a larger earlier build
            stale.unlink()

    make = _Maker(out_dir, data, voice_overs, voices)
    rng = np.random.default_rng(seed)
    records = make.items(rng, _plan(rng, n_items, violation_rate), first=0)
    if test_items:
        extra = np.random.default_rng([seed, 1])
        records += make.items(extra, _plan(extra, test_items, violation_rate, test_only=True), first=n_items)
    tasks = [{"data": {"image": r["image"], "caption": r["text"], "audio": r["audio"]}} for r in records]
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    (out_dir / "tasks.json").write_text(json.dumps(tasks, indent=1))
    (out_dir / "label_config.xml").write_text(LABEL_CONFIG)
    return manifest


class _Maker:
    """Writes listings' media and returns their manifest records; no image is used twice."""

    def __init__(self, out_dir: Path, data: dict, voice_overs: dict, voices: list[str]) -> None:
        self.out_dir, self.data, self.voice_overs, self.voices = out_dir, data, voice_overs, voices
        self.used: set[tuple[str, int]] = set()

    def items(self, rng: np.random.Generator, plans: list[dict], first: int) -> list[dict]:
        records = []
        for i, plan in enumerate(tqdm(plans, desc="demo items", disable=len(plans) < 24), start=first):
            split = plan["split"]
            pools = {**TEMPLATES[split], **self.voice_overs[split]}
            fm_class = int(rng.choice([k for k, (cat, _) in CLASSES.items() if cat == plan["category"]]))
            pixels = _pick_image(rng, self.data[split], fm_class, split, self.used)
            speech, policy, tags = _speech(rng, pools, plan["violation"])
            vague = bool(rng.random() < VAGUE_CAPTION_RATE)
            tags += ["vague_caption"] if vague else []  # the photo is needed for the category
            caption = _caption(rng, pools, fm_class, vague)

            item_id = f"item-{i:04d}"
            image_rel, audio_rel = f"images/{item_id}.png", f"audio/{item_id}.wav"
            render_image(pixels, rng.uniform(0.7, 1.0, size=3).astype(np.float32), self.out_dir / image_rel)
            voice, speed, pitch = str(rng.choice(self.voices)), int(rng.integers(140, 186)), int(rng.integers(25, 76))
            speak(speech, voice, speed, pitch, self.out_dir / audio_rel)
            label = {"category": plan["category"], "policy": policy}
            media = {"image": image_rel, "text": caption, "audio": audio_rel}
            records.append({"id": item_id, **media, "speech": speech, "label": label, "tags": tags, "split": split})
        return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory to write the demo set into")
    parser.add_argument("--items", type=int, default=48, help="number of listings (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--violation-rate",
        type=float,
        default=VIOLATION_RATE,
        help=f"share of policy violations in each split (default {VIOLATION_RATE})",
    )
    parser.add_argument(
        "--phrasings",
        choices=PHRASINGS,
        default="fixed",
        help="voice-over sentences: a few fixed ones per label (default), or hundreds composed from parts",
    )
    parser.add_argument(
        "--test-items",
        type=int,
        default=0,
        help="that many more listings, all held out for testing; the first --items stay the same (default 0)",
    )
    parser.add_argument(
        "--fashion-mnist",
        type=Path,
        default=FASHION_MNIST_DIR,
        help=f"directory with the Fashion-MNIST idx .gz files (default {FASHION_MNIST_DIR})",
    )


def run(args: argparse.Namespace) -> int:
    manifest = build_demo(
        args.out, args.items, args.seed, args.fashion_mnist, args.violation_rate, args.phrasings, args.test_items
    )
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    violations = sum(r["label"]["policy"] == "Violation" for r in records)
    n_test = sum(r["split"] == "test" for r in records)
    log.info("Wrote %d listings (%d violations, %d test) to %s", len(records), violations, n_test, manifest.parent)
    log.info(
        "Try it with active learning offline: broaden simulate %s --out runs/demo; "
        "or in a real Label Studio, with its media uploaded for you: ./dev demo",
        manifest,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m backend.lab.demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
