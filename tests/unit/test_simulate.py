"""`broaden simulate` on a tiny demo set: output shape and sanity, and reproducibility per seed."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.config import Settings
from backend.lab import demo, simulate
from backend.labelstudio.labelconfig import parse_label_config
from broaden import cli

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not (demo.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="needs espeak-ng and dataset-fashion-mnist (apt-get)",
)

STRATEGIES = ["random", "lsb-pool"]
SEEDS = [0, 1]
SEED_SIZE, BATCH, ROUNDS = 6, 3, 2


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.build_demo(tmp_path_factory.mktemp("simdemo"), n_items=24, seed=0)


def _args(manifest: Path, out: Path, extra: tuple[str, ...] = ()) -> argparse.Namespace:
    """The arguments exactly as `broaden simulate ...` parses them (the run itself is intercepted)."""
    argv = ["simulate", str(manifest), "--out", str(out), "--strategies", *STRATEGIES, "--seeds", *map(str, SEEDS)]
    argv += list(extra)
    argv += ["--seed-size", str(SEED_SIZE), "--batch-size", str(BATCH), "--rounds", str(ROUNDS), "--epochs", "5"]
    seen: list[argparse.Namespace] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulate, "run", seen.append)
        cli.main(argv)
    return seen[0]


def _simulate(manifest: Path, out: Path, redis_url: str, encoders, monkeypatch, extra: tuple[str, ...] = ()) -> dict:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert simulate.run(_args(manifest, out, extra), encoders=encoders) == 0
    return json.loads((out / "simulate.json").read_text())


def test_output_shape_and_sanity(manifest, tmp_path, redis_url, encoders, monkeypatch) -> None:
    result = _simulate(manifest, tmp_path / "out", redis_url, encoders, monkeypatch)
    assert (tmp_path / "out" / "simulate.png").stat().st_size > 0
    table = (tmp_path / "out" / "summary.md").read_text().split("\n\n")[0].splitlines()
    assert len(table) == 2 + 2 and table[2].startswith("| random / attention |")  # header, rule, a row an arm
    assert "(worst " in table[2]  # the lowest seed beside the mean: a collapsing seed shows
    assert result["config"]["strategies"] == STRATEGIES
    assert result["config"]["audio_free_heads"] == Settings().train_audio_free_heads  # training settings recorded
    made = result["provenance"]  # what a reader needs to compare two runs' figures
    assert made["encoders"]["image"] == encoders.image.id and made["encoders"]["audio"] == encoders.audio.id
    assert made["seconds"] > 0 and made["cpus"] >= 1 and made["torch_threads"] >= 1
    targets = set(result["config"]["targets"])
    assert "policy:Violation" in targets  # the demo's rare label (a category may be rare too in 24 items)
    assert len(result["runs"]) == len(STRATEGIES) * len(SEEDS)
    assert {(r["strategy"], r["seed"]) for r in result["runs"]} == {(s, d) for s in STRATEGIES for d in SEEDS}
    for run in result["runs"]:
        rounds = run["rounds"]
        assert [r["labelled"] for r in rounds] == [SEED_SIZE + i * BATCH for i in range(ROUNDS)]
        for r in rounds:
            assert set(r["recall_at_80p"]) == targets
            assert all(0.0 <= v <= 1.0 for v in r["recall_at_80p"].values())
            assert set(r["average_precision"]) == targets
            assert all(0.0 < v <= 1.0 for v in r["average_precision"].values())  # positives exist: above 0
            assert set(r["macro_f1"]) == {"category", "policy"}
            assert all(0.0 <= v <= 1.0 for v in r["macro_f1"].values())
            assert 0.0 <= r["positives_per_100"] <= 100.0
            assert 0 <= r["mispredictions_found"] <= r["labelled"] - SEED_SIZE
            sensitive = r["subsets"]["audio_sensitive"]  # the demo tags what only the audio decides
            assert 0 < sensitive["items"] < 24 and set(sensitive["recall_at_80p"]) == targets
            lookalikes = r["subsets"]["payment_lookalike"]  # all OK: no recall to measure there
            assert lookalikes["recall_at_80p"]["policy:Violation"] is None
        assert rounds[0]["mispredictions_found"] == 0  # the random start was picked by no model


def test_fusion_ablation_labels_the_same_items_for_each_fusion(manifest, tmp_path, redis_url, encoders, monkeypatch):
    extra = ("--fusion", "attention", "none")
    result = _simulate(manifest, tmp_path / "ablation", redis_url, encoders, monkeypatch, extra)
    arms = [f"{s} / {f}" for f in ("attention", "none") for s in STRATEGIES]
    assert result["config"]["arms"] == arms and [r["arm"] for r in result["runs"]] == [a for a in arms for _ in SEEDS]
    random = {(r["fusion"], r["seed"]): r["rounds"] for r in result["runs"] if r["strategy"] == "random"}
    for seed in SEEDS:  # random picks do not depend on the model: the arms differ only in fusion
        found = [[rnd["positives_per_100"] for rnd in random[(f, seed)]] for f in ("attention", "none")]
        assert found[0] == found[1]
    assert "| random / none | audio_sensitive |" in (tmp_path / "ablation" / "summary.md").read_text()


def test_same_seed_same_result(manifest, tmp_path, redis_url, encoders, monkeypatch) -> None:
    first = _simulate(manifest, tmp_path / "a", redis_url, encoders, monkeypatch)
    second = _simulate(manifest, tmp_path / "b", redis_url, encoders, monkeypatch)
    assert first["runs"] == second["runs"]


def test_searching_the_frozen_features_too_is_recorded_and_replayed(
    manifest, tmp_path, redis_url, encoders, monkeypatch
):
    monkeypatch.setenv("BROADEN_LSB_SPACE", "both")
    result = _simulate(manifest, tmp_path / "both", redis_url, encoders, monkeypatch)
    assert result["config"]["lsb_space"] == "both"
    assert all(len(run["rounds"]) == ROUNDS for run in result["runs"])


def test_an_ensemble_is_recorded_and_scores_otherwise(manifest, tmp_path, redis_url, encoders, monkeypatch):
    monkeypatch.setenv("BROADEN_TRAIN_MEMBERS", "1")
    single = _simulate(manifest, tmp_path / "one", redis_url, encoders, monkeypatch)
    monkeypatch.setenv("BROADEN_TRAIN_MEMBERS", "2")
    pair = _simulate(manifest, tmp_path / "two", redis_url, encoders, monkeypatch)
    assert (single["config"]["members"], pair["config"]["members"]) == (1, 2)
    # the same rounds, and the average of two models scores the test items otherwise than one
    assert [r["labelled"] for r in single["runs"][0]["rounds"]] == [r["labelled"] for r in pair["runs"][0]["rounds"]]
    assert single["runs"][0]["rounds"][0]["macro_f1"] != pair["runs"][0]["rounds"][0]["macro_f1"]


def test_macro_f1_averages_over_every_label_of_a_control() -> None:
    from backend.labelstudio.labelconfig import parse_label_config as parse

    config = parse(
        '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="ok"/>'
        '<Choice value="bad"/><Choice value="other"/></Choices></View>'
    )
    negatives = [(["ok"],)] * 10  # a subset of look-alikes: all "ok"
    clean = np.tile([0.9, 0.05, 0.05], (10, 1))
    one_alarm = clean.copy()
    one_alarm[0] = [0.1, 0.8, 0.1]
    perfect, alarmed = (simulate.macro_f1([p], negatives, config)["c"] for p in (clean, one_alarm))
    assert perfect == pytest.approx(1 / 3)  # F1 1 on "ok", 0 on the two labels absent here
    assert alarmed == pytest.approx((2 * 9 / 19) / 3)  # one false alarm costs its share, not half


def test_recall_at_precision() -> None:
    truth = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert simulate.recall_at_precision(scores, truth) == pytest.approx(2 / 3)  # 3/4 precision at full recall
    assert simulate.recall_at_precision(scores, np.zeros(6, dtype=bool)) == 0.0
    tied = np.full(6, 0.5)  # one threshold only: precision 1/2 everywhere
    assert simulate.recall_at_precision(tied, truth) == 0.0


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"image": "a.png", "label": ', "m.jsonl:2: not JSON"),
        ('["a.png", "OK"]', "m.jsonl:2: expected a JSON object, got list"),
        ('{"image": "a.png", "label": 3}', "m.jsonl:2: label must be a string or an object"),
        ('{"image": "a.png", "label": "OK", "split": "train"}', 'split must be "pool" or "test"'),
        ('{"audio": 7, "label": "OK"}', "audio must be a path or URL"),
        ('{"text": "hi", "label": "OK", "tags": "rare"}', "tags must be a list"),
        ('{"data": {"clip": 3}, "label": "OK"}', "data must be an object of strings"),
    ],
)
def test_a_bad_manifest_line_is_named_and_nothing_runs(tmp_path: Path, line: str, says: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"text": "fine", "label": "OK"}\n' + line + "\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", str(manifest), "--out", str(tmp_path / "out")])
    assert str(exit_.value).startswith("broaden simulate: ") and says in str(exit_.value)
    assert not (tmp_path / "out").exists()


def test_a_missing_manifest_or_config_is_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read the manifest"):
        cli.main(["simulate", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "out")])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"text": "fine", "label": "OK"}\n')
    with pytest.raises(SystemExit, match="cannot read the label config"):
        cli.main(["simulate", str(manifest), "--out", str(tmp_path / "out")])
    (tmp_path / "label_config.xml").write_text("<View><Text name='t' value='$text'/></View>")
    with pytest.raises(SystemExit, match="broaden simulate: .*Choices"):
        cli.main(["simulate", str(manifest), "--out", str(tmp_path / "out")])


def test_no_test_items_is_a_message(manifest, tmp_path, redis_url, encoders, monkeypatch) -> None:
    pool_only = manifest.with_name("pool-only.jsonl")  # beside the media its relative paths name
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    pool_only.write_text("".join(json.dumps(r | {"split": "pool"}) + "\n" for r in records))
    with pytest.raises(simulate.ManifestError, match="24 pool and 0 test items"):
        _simulate(pool_only, tmp_path / "out", redis_url, encoders, monkeypatch)
    assert not (tmp_path / "out").exists()


def test_targets_are_checked_against_the_config() -> None:
    config = parse_label_config(
        "<View><Text name='t' value='$text'/>"
        "<Choices name='policy' toName='t'><Choice value='OK'/><Choice value='Violation'/></Choices></View>"
    )
    labels = [[["OK"]], [["OK"]], [["OK"]], [["Violation"]]]
    ds = simulate.Dataset(config, [{}] * 4, labels, ["pool"] * 4, [[]] * 4)
    assert simulate.resolve_targets(ds, "policy:Violation") == [("policy", "Violation")]
    assert simulate.resolve_targets(ds, "") == [("policy", "Violation")]  # the least frequent
    with pytest.raises(simulate.ManifestError, match=r"targets not in the label config: \[\('policy', 'Fraud'\)\]"):
        simulate.resolve_targets(ds, "policy:Violation,policy:Fraud")


def test_the_rarest_label_leads_the_targets() -> None:
    config = parse_label_config(
        "<View><Text name='t' value='$text'/><Choices name='verdict' toName='t'><Choice value='keep'/>"
        "<Choice value='flag'/><Choice value='remove'/></Choices></View>"
    )
    labels = [[["keep"]]] * 16 + [[["flag"]]] * 3 + [[["remove"]]]  # both rare; "remove" the rarer
    ds = simulate.Dataset(config, [{}] * 20, labels, ["pool"] * 20, [[]] * 20)
    assert simulate.resolve_targets(ds, "") == [("verdict", "remove"), ("verdict", "flag")]


def test_absolute_paths_elsewhere_are_read_without_media_roots(manifest, tmp_path, redis_url, encoders, monkeypatch):
    """The user chose the manifest: files it names by absolute path are readable wherever they are."""
    monkeypatch.delenv("BROADEN_MEDIA_ROOTS", raising=False)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in records:
        for field in ("image", "audio"):
            r[field] = str(manifest.parent / r[field])  # absolute, and not beside the new manifest
    elsewhere = tmp_path / "elsewhere" / "m.jsonl"
    elsewhere.parent.mkdir()
    elsewhere.write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copy(manifest.parent / "label_config.xml", elsewhere.parent)
    result = _simulate(elsewhere, tmp_path / "out", redis_url, encoders, monkeypatch)
    assert result["config"]["items"] == len(records)


def test_a_record_may_carry_its_task_data_for_several_objects_of_a_modality() -> None:
    """Two Audio objects: a record's `data` is the task data as Label Studio holds it; without one,
    each field goes to the first object of its modality. Only media paths widen the readable folders."""
    config = parse_label_config(
        "<View><Text name='ticket' value='$ticket'/><Audio name='customer' value='$customer'/>"
        "<Audio name='agent' value='$agent'/>"
        "<Choices name='c' toName='ticket'><Choice value='OK'/><Choice value='Bad'/></Choices></View>"
    )
    both = {"data": {"ticket": "/not/a/folder", "customer": "/calls/a.wav", "agent": "file:///agents/b.wav"}}
    assert simulate.task_data(both, config) == both["data"]
    assert simulate.task_data({"text": "hi", "audio": "c.wav"}, config) == {"ticket": "hi", "customer": "c.wav"}
    assert simulate.local_dirs([both], config) == ["/agents", "/calls"]


def test_when_nothing_can_be_read_the_error_says_why(tmp_path, redis_url, encoders, monkeypatch) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"gone{i}.png", "label": "OK"}) + "\n" for i in range(3)))
    (tmp_path / "label_config.xml").write_text(
        "<View><Image name='image' value='$image'/>"
        "<Choices name='c' toName='image'><Choice value='OK'/><Choice value='Bad'/></Choices></View>"
    )
    with pytest.raises(
        simulate.ManifestError, match=r"no item could be read \(3 of 3 failed\), e\.g\. item 0: .*gone0"
    ):
        _simulate(manifest, tmp_path / "out", redis_url, encoders, monkeypatch)


def test_encoding_goes_a_batch_at_a_time(manifest, r, redis_url, encoders) -> None:
    from backend.labelstudio.labelconfig import parse_label_config as parse
    from backend.model.predictor import Predictor

    records = simulate.read_manifest(manifest)
    settings = Settings(redis_url=redis_url, media_roots=str(manifest.parent))
    predictor = Predictor(settings, encoders, r)
    sizes: list[int] = []
    featurize = predictor.featurize
    predictor.featurize = lambda tasks, config: sizes.append(len(tasks)) or featurize(tasks, config)  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulate, "ENCODE_BATCH", 10)
        ds = simulate.load_dataset(records, parse((manifest.parent / "label_config.xml").read_text()), predictor)
    assert sizes == [10, 10, 4] and len(ds.labels) == len(records)


def test_a_private_redis_keeps_its_data_for_the_next_run(tmp_path) -> None:
    """With no Redis configured, features outlive the run: a second (or resumed) one skips them."""
    nowhere = "redis://127.0.0.1:9/0"  # the discard port: nothing answers
    with simulate.redis_client(nowhere, keep_dir=tmp_path / "keep") as first:
        first.set("encoded", b"features")
    with simulate.redis_client(nowhere, keep_dir=tmp_path / "keep") as second:
        assert second.get("encoded") == b"features"
    with simulate.redis_client(nowhere) as memory_only:  # no folder: nothing kept
        assert memory_only.get("encoded") is None
