"""The demo data set: files decode, labels fit the label config, and only audio tells violations."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from backend.lab import demo

REPO = Path(__file__).resolve().parents[2]
N_ITEMS = 12

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not (demo.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="needs espeak-ng and dataset-fashion-mnist (apt-get)",
)


def _choices(xml_text: str) -> dict[str, set[str]]:
    root = ET.fromstring(xml_text)
    return {c.get("name"): {ch.get("value") for ch in c.iter("Choice")} for c in root.iter("Choices")}


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.build_demo(tmp_path_factory.mktemp("demo"), n_items=N_ITEMS, seed=3)


def test_files_exist_and_decode(built: Path) -> None:
    out = built.parent
    records = _manifest(built)
    assert len(records) == N_ITEMS
    assert (out / "label_config.xml").is_file()
    for r in records:
        with Image.open(out / r["image"]) as im:
            assert im.mode == "RGB" and im.size == (112, 112)
            assert np.asarray(im).std() > 10  # a real picture, not a flat fill
        audio, rate = sf.read(out / r["audio"], dtype="float32")
        assert rate == 16_000 and audio.ndim == 1
        assert 0.5 < len(audio) / rate <= demo.MAX_CLIP_S
        assert np.sqrt(np.mean(audio**2)) > 0.01


def test_manifest_fields_and_tasks(built: Path) -> None:
    records = _manifest(built)
    for r in records:
        assert set(r) == {"id", "image", "text", "audio", "speech", "label", "tags", "split"}
        assert not Path(r["image"]).is_absolute() and not Path(r["audio"]).is_absolute()
        assert r["split"] in {"pool", "test"} and r["text"].strip()
    assert len({r["id"] for r in records}) == N_ITEMS
    tasks = json.loads((built.parent / "tasks.json").read_text())
    assert [t["data"] for t in tasks] == [
        {"image": r["image"], "caption": r["text"], "audio": r["audio"]} for r in records
    ]


def test_labels_match_label_config(built: Path) -> None:
    choices = _choices((REPO / "label_config.xml").read_text())
    assert choices == _choices(demo.LABEL_CONFIG)
    assert choices["category"] == set(demo.CATEGORIES)
    for r in _manifest(built):
        assert set(r["label"]) == set(choices)
        for name, value in r["label"].items():
            assert value in choices[name]


def test_splits_and_audio_sensitive_violations(built: Path) -> None:
    records = _manifest(built)
    assert {r["split"] for r in records} == {"pool", "test"}
    for split in ("pool", "test"):
        in_split = [r for r in records if r["split"] == split]
        assert any(r["label"]["policy"] == "Violation" and "audio_sensitive" in r["tags"] for r in in_split)
        assert any(r["label"]["policy"] == "OK" for r in in_split)
    violations = sum(r["label"]["policy"] == "Violation" for r in records)
    assert violations < N_ITEMS / 2
    counts = [sum(r["label"]["category"] == c for r in records) for c in demo.CATEGORIES]
    assert max(counts) - min(counts) <= 1  # class-balanced


def test_captions_of_audio_sensitive_items_look_innocent(built: Path) -> None:
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, demo.VIOLATION_TERMS)) + r")", re.IGNORECASE)
    sensitive = [r for r in _manifest(built) if "audio_sensitive" in r["tags"]]
    assert sensitive
    for r in sensitive:
        assert not pattern.search(r["text"]), r["text"]
    # The term list must actually catch what the voice-overs say, or the check above is empty.
    for split, pools in demo.TEMPLATES.items():
        assert all(pattern.search(s) for s in pools["violation"] + demo.composed(split)["violation"])
        assert not any(pattern.search(s) for s in pools["caption"] + pools["vague"])


def test_template_pools_do_not_overlap() -> None:
    pool, test = demo.TEMPLATES["pool"], demo.TEMPLATES["test"]
    for key in pool:
        assert not set(pool[key]) & set(test[key]), key
    pool, test = demo.composed("pool"), demo.composed("test")
    for key in pool:
        assert not set(pool[key]) & set(test[key]), key
    every = [s for split in ("pool", "test") for role in demo.composed(split).values() for s in role]
    assert len(every) == len(set(every))  # a sentence has one label


def test_composed_phrasings_vary_the_voice_overs(tmp_path: Path) -> None:
    manifest = demo.build_demo(tmp_path, n_items=N_ITEMS, seed=3, violation_rate=0.5, phrasings="composed")
    records = _manifest(manifest)
    said = {r["id"]: r["speech"] for r in records}
    violations = [r for r in records if r["label"]["policy"] == "Violation"]
    assert len(violations) == N_ITEMS // 2
    assert len({said[r["id"]] for r in violations}) >= len(violations) - 1  # almost all different
    for r in records:
        roles = demo.composed(r["split"])
        if r["label"]["policy"] == "Violation":
            expected = "violation"
        else:
            expected = "lookalike" if "payment_lookalike" in r["tags"] else "ok"
        assert [k for k, sentences in roles.items() if said[r["id"]] in sentences] == [expected], said[r["id"]]
    with pytest.raises(demo.DemoDataError, match="phrasings"):
        demo.build_demo(tmp_path, n_items=N_ITEMS, phrasings="poetic")


def test_same_seed_same_set(built: Path, tmp_path: Path) -> None:
    """The same seed makes the same set; extra test listings come after it and change nothing in it."""
    again = demo.build_demo(tmp_path, n_items=N_ITEMS, seed=3, test_items=4)
    records = _manifest(again)
    assert records[:N_ITEMS] == _manifest(built)
    assert [r["split"] for r in records[N_ITEMS:]] == ["test"] * 4
    assert sum(r["label"]["policy"] == "Violation" for r in records[N_ITEMS:]) >= 1
    for r in _manifest(built)[:3]:
        assert (tmp_path / r["audio"]).read_bytes() == (built.parent / r["audio"]).read_bytes()
        assert (tmp_path / r["image"]).read_bytes() == (built.parent / r["image"]).read_bytes()


def test_missing_fashion_mnist_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoDataError, match="apt-get install"):
        demo.build_demo(tmp_path / "out", n_items=N_ITEMS, data_dir=tmp_path / "nowhere")


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(demo.DemoDataError, match="apt-get install espeak-ng"):
        demo.build_demo(tmp_path / "out", n_items=N_ITEMS)


@pytest.mark.parametrize("rate", [0.05, 0.17, 0.5])
def test_plan_puts_the_violation_rate_in_each_split(rate: float) -> None:
    plan = demo._plan(np.random.default_rng(0), 400, rate)
    for split in ("pool", "test"):
        members = [p for p in plan if p["split"] == split]
        assert sum(p["violation"] for p in members) == max(1, round(len(members) * rate))
    with pytest.raises(demo.DemoDataError, match="violation_rate"):
        demo.build_demo(Path("unused"), n_items=8, violation_rate=1.0)
