"""The benchmark suite: every recipe builds a set `broaden simulate` reads, with its rare labels in
both splits, audio at mixed rates, held-out wordings, and the same files for the same seed."""

from __future__ import annotations

import html
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from backend.lab import suite
from backend.lab.demo import DemoDataError
from backend.lab.simulate import read_manifest, task_data
from backend.labelstudio.labelconfig import parse_label_config
from backend.model.media import decode_audio

N_ITEMS = 32
EXTRA = 8  # extra test items
SEED = 5
# Per recipe: the control, then each rare label and the prefix of its sub-type tags.
RARE = {
    "podcast": ("rating", {"unsafe": "unsafe"}),
    "clips": ("flags", {"alert": "alert"}),
    "reviews": ("verdict", {"remove": "remove"}),
    "calls": ("escalate", {"security": "security"}),
    "meters": ("triage", {"Suspected tampering": "tamper", "Urgent – gas/CO!": "safety"}),
    "parcels": ("handling", {"undeclared_DG": "dg"}),
}
# calls has two Audio objects, so its records carry the task data keyed by the config (`data`)
FIELDS = {
    "podcast": {"text", "audio"},
    "clips": {"image", "audio"},
    "reviews": {"image", "text", "audio"},
    "calls": {"data", "agent_speech"},
    "meters": {"image", "text", "audio", "events"},
    "parcels": {"image", "text", "audio", "declared"},
}


def _tools_or_skip(recipe: str) -> None:
    if missing := [t for t in suite.RECIPES[recipe].tools if shutil.which(t) is None]:
        pytest.skip(f"needs {', '.join(missing)} (apt-get; ./dev setup installs them)")


class _Sets(dict):
    """Each recipe's manifest, built on first use (`-k parcels` builds one set); tests skip a recipe
    whose tools are missing before they ask for it."""

    def __init__(self, root: pytest.TempPathFactory) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, recipe: str) -> Path:
        self[recipe] = suite.build(recipe, self.root.mktemp(recipe), N_ITEMS, SEED)
        return self[recipe]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _Sets(tmp_path_factory)


@pytest.fixture(params=list(suite.RECIPES))
def recipe(request: pytest.FixtureRequest) -> str:
    _tools_or_skip(request.param)
    return request.param


def _media(record: dict, config) -> dict[str, str]:
    """A record's media files by modality of the object that reads them ("audio" may be several)."""
    kind = {o.value_key: o.modality for o in config.objects}
    return {key: path for key, path in task_data(record, config).items() if kind[key] != "text"}


def _config(manifest: Path):
    return parse_label_config((manifest.parent / "label_config.xml").read_text(encoding="utf-8"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_and_config_fit(recipe: str, sets: dict[str, Path]) -> None:
    manifest = sets[recipe]
    records = read_manifest(manifest)
    config = _config(manifest)
    controls = {c.name: c for c in config.controls}
    assert len(records) == N_ITEMS and len({r["id"] for r in records}) == N_ITEMS
    for r in records:
        assert set(r) == {"id", "label", "tags", "split", "speech"} | FIELDS[recipe]
        assert set(r["label"]) == set(controls)
        for name, value in r["label"].items():
            chosen = value if controls[name].multiple else [value]
            assert isinstance(value, list) == controls[name].multiple and chosen
            assert set(chosen) <= set(controls[name].labels)
        for path in _media(r, config).values():
            assert not Path(path).is_absolute() and (manifest.parent / path).is_file()
        assert set(task_data(r, config)) == {o.value_key for o in config.objects}  # every object has its value
    # simulate reads each item as Label Studio would: the tasks carry the same data.
    tasks = json.loads((manifest.parent / "tasks.json").read_text())
    assert [t["data"] for t in tasks] == [task_data(r, config) for r in records]
    assert all(len(c.labels) >= 3 for c in config.controls)


def test_rare_label_in_both_splits(recipe: str, sets: dict[str, Path]) -> None:
    control, rares = RARE[recipe]
    records = read_manifest(sets[recipe])
    for (rare, prefix), split in itertools.product(rares.items(), ("pool", "test")):
        hits = [r for r in records if r["split"] == split and rare in r["label"][control]]
        assert len(hits) >= suite.MIN_RARE_PER_SPLIT
        assert all(any(t.startswith(f"{prefix}:") for t in r["tags"]) for r in hits)  # its sub-type
    n_test = sum(r["split"] == "test" for r in records)
    assert abs(n_test - N_ITEMS * suite.TEST_FRACTION) <= 1


def test_media_decode(recipe: str, sets: dict[str, Path]) -> None:
    folder, rates, channels, config = sets[recipe].parent, set(), set(), _config(sets[recipe])
    kind = {o.value_key: o.modality for o in config.objects}
    for r in read_manifest(sets[recipe]):
        for key, path in _media(r, config).items():
            if kind[key] == "image":
                with Image.open(folder / path) as im:
                    assert im.mode == "RGB" and 96 <= im.size[0] <= 160 and np.asarray(im).std() > 5
                continue
            audio, rate = sf.read(folder / path, dtype="float32", always_2d=True)
            rates.add(rate)
            channels.add(audio.shape[1])
            assert rate in suite.RATES
            assert 1.0 < len(audio) / rate < suite.MAX_CLIP_S + 1.0
            assert np.sqrt(np.mean(audio.mean(axis=1) ** 2)) > 0.01
    assert len(rates) >= (2 if recipe == "calls" else 3)  # calls: narrowband (8 kHz) or 16 kHz
    assert channels == ({1, 2} if recipe == "parcels" else {1})  # parcels: desk and caller on a channel each


def test_same_seed_same_set(recipe: str, sets: dict[str, Path], tmp_path: Path) -> None:
    """The same seed makes the same files; extra test items are added after them and change none."""
    again = suite.build(recipe, tmp_path / "again", N_ITEMS, SEED, test_items=EXTRA)
    records, before = read_manifest(again), read_manifest(sets[recipe])
    assert records[:N_ITEMS] == before
    built = {f for f in _files(again.parent).items() if f[0].startswith(("audio/", "images/"))}
    assert built >= {f for f in _files(sets[recipe].parent).items() if f[0].startswith(("audio/", "images/"))}
    extra = records[N_ITEMS:]
    assert [r["id"] for r in extra] == [f"item-{i:04d}" for i in range(N_ITEMS, N_ITEMS + EXTRA)]
    control, rares = RARE[recipe]
    assert all(r["split"] == "test" for r in extra)
    assert all(sum(rare in r["label"][control] for r in extra) >= suite.MIN_RARE_PER_SPLIT for rare in rares)
    other = suite.build(recipe, tmp_path / "other", N_ITEMS, SEED + 1)
    assert other.read_text() != again.read_text()


def test_test_wordings_never_in_pool(recipe: str, sets: dict[str, Path]) -> None:
    records = read_manifest(sets[recipe])
    spoken = {s: {r["speech"] for r in records if r["split"] == s and r["speech"]} for s in ("pool", "test")}
    assert spoken["test"] and not spoken["test"] & spoken["pool"]
    # and none of the sentences the parts can make: hundreds per split for the rare label's sub-types
    kinds = {k: v for k, v in suite.PHRASES[recipe]["test"].items() if k != "fill"}
    roles = {kind: [k for k in parts if k not in ("opener", "closer")] for kind, parts in kinds.items()}
    for kind, names in roles.items():
        made = {s: {w for role in names for w in suite.wordings(recipe, s, kind, role)} for s in ("pool", "test")}
        assert not made["test"] & made["pool"]
    rare = [role for role in roles["speech"] if ":" in role]
    assert all(sum(len(suite.wordings(recipe, s, "speech", role)) for role in rare) >= 40 for s in ("pool", "test"))


def test_podcast_audio_only_blurbs_hide_the_rare_class(sets: dict[str, Path]) -> None:
    _tools_or_skip("podcast")
    records = read_manifest(sets["podcast"])
    words = re.compile(r"\b(" + "|".join(suite.PODCAST_RARE_WORDS) + r")", re.IGNORECASE)
    audio_only = [r for r in records if "audio_only" in r["tags"]]
    assert abs(len(audio_only) - N_ITEMS / 3) <= 3
    assert not [r["text"] for r in audio_only if words.search(r["text"])]
    for split in ("pool", "test"):  # every neutral blurb, and every unsafe clip names a rare word
        assert not [w for w in suite.wordings("podcast", split, "text", "neutral") if words.search(w)]
        for sub in suite.PODCAST_SUBTYPES:
            assert all(words.search(w) for w in suite.wordings("podcast", split, "speech", f"unsafe:{sub}"))


def test_calls_security_cases_only_the_agent_tells(sets: dict[str, Path]) -> None:
    """Half the security cases are told by the agent's side alone; the customer then states a reason."""
    _tools_or_skip("calls")
    records = read_manifest(sets["calls"])
    security = [r for r in records if r["label"]["escalate"] == "security"]
    agent_only = [r for r in security if "agent_only" in r["tags"]]
    assert agent_only and len(agent_only) < len(security)
    for split in ("pool", "test"):
        reasons = {w for reason in suite.CALLS_REASONS for w in suite.wordings("calls", split, "speech", reason)}
        assert all(r["speech"] in reasons for r in agent_only if r["split"] == split)
        told = {w for sub in suite.CALLS_SUBTYPES for w in suite.wordings("calls", split, "agent", f"security:{sub}")}
        assert all(r["agent_speech"] in told for r in agent_only if r["split"] == split)


def _red_pixels(path: Path) -> int:
    """Pixels of the tampering mark's red; no plot, grid or harmless mark comes near it."""
    with Image.open(path) as im:
        r, g, b = np.asarray(im, dtype=np.int16).transpose(2, 0, 1)
    return int(((r > 170) & (g < 80) & (b < 90)).sum())


def test_meters_some_tampering_only_the_chart_tells(sets: dict[str, Path]) -> None:
    """Some tampering cases have a routine note and memo: only the meter's logged event, a red
    mark on the chart, tells. No other visit's chart has that mark."""
    _tools_or_skip("meters")
    manifest = sets["meters"]
    records = read_manifest(manifest)
    chart_only = [r for r in records if "image_only" in r["tags"]]
    assert {r["split"] for r in chart_only} == {"pool", "test"}
    for r in chart_only:
        split, sub = r["split"], next(t for t in r["tags"] if t.startswith("tamper:")).partition(":")[2]
        assert r["label"]["triage"] == "Suspected tampering" and r["events"] == [suite.TAMPER_EVENTS[sub]]
        note = html.unescape(re.search(r"<p>(.*)</p>", r["text"]).group(1))
        assert note in suite.wordings("meters", split, "text", "file")
        assert r["speech"] in {
            w for role in ("file", "remark") for w in suite.wordings("meters", split, "speech", role)
        }
    for r in records:
        tampered = any(e in suite.TAMPER_EVENTS.values() for e in r["events"])
        assert tampered <= (r["label"]["triage"] == "Suspected tampering")
        assert (_red_pixels(manifest.parent / r["image"]) >= 10) == tampered


def test_meters_memos_in_mixed_formats(sets: dict[str, Path]) -> None:
    """WAV, FLAC and Ogg Vorbis memos, each read by the backend's own decoder."""
    _tools_or_skip("meters")
    records = read_manifest(sets["meters"])
    assert {Path(r["audio"]).suffix for r in records} == {".wav", ".flac", ".ogg"}
    for r in records:
        samples = decode_audio((sets["meters"].parent / r["audio"]).read_bytes(), 16000, 30.0)
        assert 1.0 < len(samples) / 16000 < suite.MAX_CLIP_S + 1.0


def _remark(form: str) -> str:
    return re.search(r"Remarks: (.*)$", form).group(1)


def test_parcels_a_mismatch_is_told_by_the_form_and_the_scan_together(sets: dict[str, Path]) -> None:
    """The form names goods the scan does not show only on a mismatch, whose remark and call are
    those of a parcel to ship; elsewhere the form names some of what is inside, or one vague word."""
    _tools_or_skip("parcels")
    records = read_manifest(sets["parcels"])
    assert any(r["label"]["handling"] == "contents_mismatch" for r in records)
    for r in records:
        split, shown, declared = r["split"], set(r["label"]["xray_shows"]), set(r["declared"])
        fill = suite.PHRASES["parcels"][split]["fill"]
        goods = re.search(r"Contents: (.*?)(\n| \| )", r["text"]).group(1)
        words = [fill[suite.PARCELS_CONTENTS[c]] for c in r["declared"]] or [fill["vague"]]
        assert any(goods == ", ".join(p) for p in itertools.product(*words))
        if r["label"]["handling"] != "contents_mismatch":
            assert declared <= shown
            continue
        assert "mismatch" in r["tags"] and declared - shown
        assert _remark(r["text"]) in suite.wordings("parcels", split, "text", "ship")
        assert r["speech"] in {
            w for role in ("ship", "remark") for w in suite.wordings("parcels", split, "speech", role)
        }


def test_parcels_audio_only_forms_are_neutral(sets: dict[str, Path]) -> None:
    """About a third of the parcels: a neutral remark and no goods named; only the call tells, in the
    role's own words, and for dangerous goods the scan shows their kind."""
    _tools_or_skip("parcels")
    records = read_manifest(sets["parcels"])
    audio_only = [r for r in records if "audio_only" in r["tags"]]
    assert abs(len(audio_only) - N_ITEMS / 3) <= 4
    assert {r["label"]["handling"] for r in audio_only} >= {"ship", "undeclared_DG"}
    for r in audio_only:
        split, label = r["split"], r["label"]["handling"]
        assert r["declared"] == [] and _remark(r["text"]) in suite.wordings("parcels", split, "text", "neutral")
        role = next((t for t in r["tags"] if t.startswith("dg:")), suite.PARCELS_ROLES[label])
        assert r["speech"] in suite.wordings("parcels", split, "speech", role)
        if role.startswith("dg:"):
            assert suite.PARCELS_DG_SHOWS[role[3:]] in r["label"]["xray_shows"]


@pytest.mark.parametrize("kind", list(suite.PARCELS_CONTENTS))
def test_parcels_scan_colours_tell_the_material(kind: str) -> None:
    """On the scan, organic goods absorb blue most (orange), metal red most (blue), electronics
    (mixed) green least: measured against the same box with nothing inside."""
    for seed in range(3):
        empty = suite.scan_light(np.random.default_rng(seed), [])
        packed = suite.scan_light(np.random.default_rng(seed), [kind])
        red, green, blue = np.log(empty / packed).sum(axis=(0, 1))
        assert red + green + blue > 20  # the object is there
        if kind in ("Loose cells", "Metal"):
            assert red > green > blue
        elif kind == "Electronics":
            assert green < min(red, blue)
        else:
            assert blue > green > red


def test_parcels_calls_in_mixed_formats(sets: dict[str, Path]) -> None:
    """MP3 and WAV calls, mono and stereo, each read by the backend's own decoder."""
    _tools_or_skip("parcels")
    records = read_manifest(sets["parcels"])
    assert {Path(r["audio"]).suffix for r in records} == {".mp3", ".wav"}
    assert any("stereo" in r["tags"] for r in records) and any("greeting" in r["tags"] for r in records)
    for r in records:
        samples = decode_audio((sets["parcels"].parent / r["audio"]).read_bytes(), 16000, 30.0)
        assert 1.0 < len(samples) / 16000 < suite.MAX_CLIP_S + 1.0


def test_missing_tool_says_which_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(suite.shutil, "which", lambda name: None if name == "text2wave" else f"/usr/bin/{name}")
    with pytest.raises(DemoDataError, match="apt-get install festival festvox-kallpc16k"):
        suite.build("clips", tmp_path, N_ITEMS, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--recipe", "nope"], "invalid choice"),
        (["--recipe", "podcast", "--items", "3"], "at least 16 items"),
        (["--recipe", "podcast", "--seed", "-1"], "seed must be 0 or more"),
        (["--recipe", "podcast", "--test-items", "-1"], "0 or more"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        suite.main([*argv, "--out", str(tmp_path)])
    # argparse prints the usage, then the error on one line; the build's errors are one line alone
    text = capsys.readouterr().err if exit_.value.code == 2 else str(exit_.value.code)
    assert message in text.strip().splitlines()[-1] and "Traceback" not in text
    assert exit_.value.code == 2 or "\n" not in text
