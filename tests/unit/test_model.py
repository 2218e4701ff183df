import numpy as np
import pytest
import torch

from backend.config import Settings
from backend.model import training
from backend.model.training import (
    _fit,
    _free_from_audio,
    audio_free_heads,
    class_weights,
    from_bytes,
    held_out_fit,
    to_bytes,
    training_epochs,
    version_of,
)
from backend.model.vlmae import AUDIO_SIDE, VLMAE, Batch, Ensemble, FusionConfig, collate


def config(fusion: str) -> FusionConfig:
    return FusionConfig(
        input_dims={"image": 12, "text": 8, "audio": 6},
        objects=[("img", "image"), ("cap", "text"), ("voice", "audio")],
        heads=[("category", 3, False), ("tags", 4, True)],
        fusion=fusion,
        d_model=16,
        n_heads=2,
    )


def features(rng: np.random.Generator, audio: bool = True) -> dict[str, np.ndarray]:
    f = {"img": rng.normal(size=(5, 12)), "cap": rng.normal(size=(1, 8))}
    if audio:
        f["voice"] = rng.normal(size=(int(rng.integers(1, 9)), 6))
    return {k: v.astype(np.float32) for k, v in f.items()}


def test_shapes_and_tasks_without_audio():
    rng = np.random.default_rng(0)
    for fusion in ("attention", "mean", "none"):
        model = VLMAE(config(fusion)).eval()
        batch = collate([features(rng), features(rng, audio=False), {"cap": np.ones((1, 8), np.float32)}], model.cfg)
        logits = model(batch)
        assert [tuple(lg.shape) for lg in logits] == [(3, 3), (3, 4)]
        assert all(torch.isfinite(lg).all() for lg in logits)
        probs = model.probabilities(logits)
        assert torch.allclose(probs[0].sum(-1), torch.ones(3))
        assert model.embed(batch).shape == (3, 16)


def test_collate_pads_each_modality_and_marks_what_is_real():
    cfg = FusionConfig(
        input_dims={"image": 2, "audio": 2},
        objects=[("photo", "image"), ("voice", "audio"), ("music", "audio")],
        heads=[("c", 2, False)],
    )
    rows = [
        {"photo": np.ones((1, 2)), "voice": np.full((2, 2), 2.0), "music": np.full((1, 2), 3.0)},  # float64 in
        {"photo": np.ones((1, 2), np.float32)},
    ]
    batch = collate(rows, cfg)
    assert batch.tokens["audio"].dtype == torch.float32 and batch.objects["audio"].dtype == torch.long
    # Objects in name order (music before voice), padded to the longest row.
    assert batch.tokens["audio"][0, :, 0].tolist() == [3.0, 2.0, 2.0]
    assert batch.objects["audio"][0].tolist() == [2, 1, 1]
    assert batch.masks["audio"].tolist() == [[True, True, True], [False, False, False]]
    assert batch.tokens["audio"][1].abs().sum() == 0
    assert batch.masks["image"].tolist() == [[True], [True]]


def test_untrained_attention_fusion_already_hears_the_audio():
    """The gate starts open (tanh(1)): audio changes even an untrained model's embedding."""
    rng = np.random.default_rng(1)
    model = VLMAE(config("attention")).eval()
    f = features(rng)
    without = {k: v for k, v in f.items() if k != "voice"}
    a, b = model.embed(collate([f], model.cfg)), model.embed(collate([without], model.cfg))
    assert not torch.allclose(a, b, atol=1e-3)


def _audio_only_task(rng: np.random.Generator, n: int) -> tuple[list[dict[str, np.ndarray]], torch.Tensor]:
    """The label is in the spoken words (one speech token) and nowhere else; sound frames are noise."""
    feats, y = [], []
    for i in range(n):
        label = i % 2
        words = rng.normal(size=(1, 4)) + (1.5 if label else -1.5) * np.array([1, -1, 1, -1])  # survives LayerNorm
        feats.append({
            "img": rng.normal(size=(5, 12)),
            "voice": rng.normal(size=(int(rng.integers(3, 9)), 6)),
            "voice.speech": words,
        })  # fmt: skip
        y.append(label)
    return [{k: v.astype(np.float32) for k, v in f.items()} for f in feats], torch.tensor(y)


def test_fusion_learns_a_label_only_the_speech_carries():
    rng = np.random.default_rng(2)
    accuracy = {}
    for fusion in ("attention", "none"):
        torch.manual_seed(0)
        cfg = FusionConfig(
            input_dims={"image": 12, "audio": 6, "speech": 4},
            objects=[("img", "image"), ("voice", "audio"), ("voice.speech", "speech")],
            heads=[("policy", 2, False)],
            fusion=fusion,
            d_model=16,
            n_heads=2,
            dropout=0.0,
        )
        model = VLMAE(cfg)
        train_x, train_y = _audio_only_task(rng, 64)
        batch = collate(train_x, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(150):
            loss = model.loss(model(batch), [torch.eye(2)[train_y]], [torch.ones(64, dtype=torch.bool)])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        test_x, test_y = _audio_only_task(rng, 64)
        accuracy[fusion] = (model(collate(test_x, cfg))[0].argmax(-1) == test_y).float().mean().item()
    assert accuracy["attention"] > 0.9  # held-out items: learned from the audio side, not memorised
    assert accuracy["none"] < 0.75  # without audio there is nothing to learn it from


def test_class_weights_favour_rare_labels_and_keep_unseen_ones_at_zero():
    y = torch.tensor([[1, 0, 0]] * 16 + [[0, 1, 0]] * 4, dtype=torch.float32)
    has = torch.ones(20, dtype=torch.bool)
    (single,) = class_weights([y], [has], [False])
    assert single[1] == 2 * single[0]  # 4x rarer -> 2x the weight (inverse square root)
    assert single[2] == 0 and torch.isclose(single[:2].mean(), torch.tensor(1.0))
    (multi,) = class_weights([y], [has], [True])
    assert torch.allclose(multi, torch.tensor([0.5, 2.0, (20 / 1) ** 0.5]))  # sqrt(negatives / positives)


def test_save_load_round_trip_and_version():
    model = VLMAE(config("mean")).eval()
    blob = to_bytes(model)
    again = from_bytes(blob)
    batch = collate([features(np.random.default_rng(3))], model.cfg)
    assert torch.allclose(model(batch)[0], again(batch)[0])
    assert version_of(blob, "mean") == version_of(to_bytes(again), "mean")
    with torch.no_grad():
        again.heads[0].bias += 1
    assert version_of(to_bytes(again), "mean") != version_of(blob, "mean")


def test_an_ensemble_averages_its_members_probabilities_and_saves_them_all():
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(VLMAE(config("attention")).eval())
    ensemble = Ensemble(members).eval()
    batch = collate([features(np.random.default_rng(s)) for s in range(4)], ensemble.cfg)
    with torch.inference_mode():
        z = ensemble.embed(batch)
        assert z.shape == (4, ensemble.dim) == (4, 3 * 16)
        mixed = ensemble.probabilities(ensemble.logits(batch, z))
        each = [m.probabilities(m(batch)) for m in members]
        for h in range(2):  # a single-choice and a multiple-choice head
            assert torch.allclose(mixed[h], torch.stack([p[h] for p in each]).mean(0), atol=1e-6)
        again = from_bytes(to_bytes(ensemble))
        assert isinstance(again, Ensemble) and len(again.members) == 3
        assert torch.allclose(again(batch)[1], ensemble(batch)[1])
    assert version_of(to_bytes(ensemble), "attention") != version_of(to_bytes(members[0]), "attention")


def test_training_takes_the_set_epochs_up_to_a_budget_of_steps():
    s = Settings(train_epochs=60, train_max_steps=120, train_batch_size=64)
    assert [training_epochs(n, s) for n in (1, 64, 110, 128)] == [60, 60, 60, 60]  # 60 or 120 steps
    assert [training_epochs(n, s) for n in (129, 300, 900)] == [40, 24, 8]  # 120 steps
    assert training_epochs(100_000, s) == 1  # one pass over the labels at least
    assert training_epochs(900, s.model_copy(update={"train_max_steps": 10**6})) == 60


def _two_heads(rng: np.random.Generator, n: int) -> tuple[FusionConfig, list[dict], list[torch.Tensor]]:
    """`category` is in the image tokens, `policy` in the spoken words; each is independent of the other."""
    cfg = FusionConfig(
        input_dims={"image": 12, "audio": 6, "speech": 4},
        objects=[("img", "image"), ("voice", "audio"), ("voice.speech", "speech")],
        heads=[("category", 2, False), ("policy", 2, False)],
        d_model=16,
        n_heads=2,
    )
    speech, _ = _audio_only_task(rng, n)
    category = rng.integers(0, 2, n)
    for f, c in zip(speech, category, strict=True):
        f["img"] = (f["img"] + (2.0 if c else -2.0) * np.tile([1, -1], 6)).astype(np.float32)
    policy = torch.tensor([i % 2 for i in range(n)])
    return cfg, speech, [torch.eye(2)[torch.from_numpy(category)], torch.eye(2)[policy]]


def test_heads_that_lean_on_photo_and_text_are_told_apart_from_those_the_audio_decides():
    cfg, feats, ys = _two_heads(np.random.default_rng(4), 64)
    batch, has = collate(feats, cfg), [torch.ones(64, dtype=torch.bool)] * 2
    model = _fit(cfg, batch, ys, has, Settings(seed=0))
    assert audio_free_heads(model, batch, ys, has) == [True, False]
    few = torch.arange(64) < 12  # under 10 tasks a label: too few to tell what decides it
    assert audio_free_heads(model, batch, ys, [few, few]) == [False, False]


def test_held_out_fit_scores_each_head_on_tasks_its_model_did_not_see():
    """Each task is scored by the model of the folds it was left out of: the photo-decided head fits
    held-out tasks, the head the spoken words decide does only while it hears them."""
    from dataclasses import replace

    cfg, feats, ys = _two_heads(np.random.default_rng(6), 96)
    batch, has = collate(feats, cfg), [torch.ones(96, dtype=torch.bool)] * 2
    category, policy = held_out_fit(cfg, batch, ys, has, Settings(seed=0))
    assert category > 0.8 and policy > 0.8
    _, silent_policy = held_out_fit(replace(cfg, audio_free=[True, True]), batch, ys, has, Settings(seed=0))
    assert silent_policy < 0.6  # chance is 0.5: nothing but the audio tells it


def _worded(captions: list[np.ndarray | None], speech: list[np.ndarray | None]) -> tuple[FusionConfig, Batch]:
    """Tasks with the same photo, and the given caption and transcript vectors (None: missing)."""
    cfg = FusionConfig(
        input_dims={"image": 4, "text": 8, "audio": 3, "speech": 8},
        objects=[("img", "image"), ("cap", "text"), ("voice", "audio"), ("voice.speech", "speech")],
        heads=[("c", 2, False)],
    )
    feats = []
    for cap, said in zip(captions, speech, strict=True):
        f = {"img": np.ones((1, 4)), "voice": np.ones((2, 3))}
        f |= {"cap": cap[None]} if cap is not None else {}
        f |= {"voice.speech": said[None]} if said is not None else {}
        feats.append({k: v.astype(np.float32) for k, v in f.items()})
    return cfg, collate(feats, cfg)


def test_wording_groups_link_near_duplicate_texts_and_transcripts_only():
    """Same caption give or take a little, or the same transcript, links two tasks (and what they
    link to); the same photo or audio does not, nor does a missing object."""
    rng = np.random.default_rng(0)
    a, b, c, d, e, f = rng.normal(size=(6, 8))
    near = lambda v: v + 0.02 * rng.normal(size=8)  # noqa: E731
    captions = [a, near(a), b, d, None, None, e, f]
    speech = [None, None, c, near(c), None, None, None, near(b)]  # the last says task 2's caption
    groups = training.wording_groups(*_worded(captions, speech))
    same = lambda i, j: groups[i] == groups[j]  # noqa: E731
    assert same(0, 1) and same(2, 3)
    assert not same(2, 7)  # a caption and a transcript are not compared with each other
    assert len({groups[i] for i in (0, 2, 4, 5, 6, 7)}) == 6


@pytest.mark.parametrize("caption", ["worded", "one line for all"])
def test_held_out_folds_keep_a_wording_in_one_fold(caption: str):
    """10 wordings said by 3 tasks each and 30 said once: each wording's tasks share a fold, and
    the folds stay even. A caption every task shares (too big a group for a fold) links nothing."""
    rng = np.random.default_rng(1)
    lines = rng.normal(size=(10, 8))
    worded = [lines[i // 3] for i in range(30)] + list(rng.normal(size=(30, 8)))
    captions = worded if caption == "worded" else [lines[0]] * 60
    cfg, batch = _worded(captions, [None] * 60 if caption == "worded" else worded)
    folds = training.held_out_folds(cfg, batch, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(60))
    assert [len(f) for f in folds] == [20, 20, 20]
    fold_of = {int(i): k for k, f in enumerate(folds) for i in f}
    assert all(fold_of[3 * w] == fold_of[3 * w + 1] == fold_of[3 * w + 2] for w in range(10))
    assert [f.tolist() for f in training.held_out_folds(cfg, batch, seed=1)] != [f.tolist() for f in folds]


def _photo_or_words(rng: np.random.Generator, n: int, every: int) -> tuple[FusionConfig, list[dict], list]:
    """Three categories the photo tells, but for one task in `every` (if any) the photo is the same
    blank for all and only the words (the speech token) tell."""
    cfg = FusionConfig(
        input_dims={"image": 12, "audio": 6, "speech": 4},
        objects=[("img", "image"), ("voice", "audio"), ("voice.speech", "speech")],
        heads=[("category", 3, False)],
        d_model=16,
        n_heads=2,
    )
    category, feats = np.arange(n) % 3, []
    for i, c in enumerate(category):
        img, words = rng.normal(size=(5, 12)), rng.normal(size=(1, 4))
        if every and i % every == 0:
            img, words[0, c] = np.zeros((5, 12)), words[0, c] + 4.0
        else:
            img[:, 4 * c : 4 * c + 4] += 5.0
        f = {"img": img, "voice": rng.normal(size=(4, 6)), "voice.speech": words}
        feats.append({k: v.astype(np.float32) for k, v in f.items()})
    return cfg, feats, [torch.eye(3)[torch.from_numpy(category)]]


@pytest.mark.parametrize(("every", "freed"), [(5, False), (0, True)])
def test_a_head_is_freed_only_if_it_predicts_held_out_tasks_as_well_without_audio(monkeypatch, every: int, freed: bool):
    """With the ratio forced to pass, the head is judged on held-out tasks: where the words alone
    tell one task in 5, it predicts those worse without the audio and keeps it; where the photo
    tells all, it is freed."""
    cfg, feats, ys = _photo_or_words(np.random.default_rng(5), 96, every)
    batch, has, settings = collate(feats, cfg), [torch.ones(96, dtype=torch.bool)], Settings(seed=0)
    monkeypatch.setattr(training, "AUDIO_FREE_RATIO", 0.0)
    model = _fit(cfg, batch, ys, has, settings)
    cfg_out, model_out, fit = _free_from_audio(cfg, model, batch, ys, has, settings)
    assert cfg_out.audio_free == ([True] if freed else [])
    assert (model_out is model) != freed  # kept back: the first model, not trained again
    assert fit == held_out_fit(cfg_out, batch, ys, has, settings)  # the fit of the config returned


def test_an_audio_free_head_answers_the_same_with_or_without_the_audio():
    """Trained with the category head audio-free, the category head ignores the audio entirely while
    the policy head still learns it from the spoken words."""
    from dataclasses import replace

    cfg, feats, ys = _two_heads(np.random.default_rng(5), 64)
    batch, has = collate(feats, cfg), [torch.ones(64, dtype=torch.bool)] * 2
    model = _fit(replace(cfg, audio_free=[True, False]), batch, ys, has, Settings(seed=0))
    policy, category = (model(batch)[h].argmax(-1) == ys[h].argmax(-1) for h in (1, 0))
    assert policy.float().mean() > 0.9 and category.float().mean() > 0.9
    with torch.inference_mode():
        heard, silent = model(batch), model(batch.without(AUDIO_SIDE))
    assert torch.allclose(heard[0], silent[0])  # the category head never sees the audio
    assert not torch.allclose(heard[1], silent[1])
    assert from_bytes(to_bytes(model)).cfg.audio_free == [True, False]  # saved with the model


def _demo_config_tasks(encoders, n: int = 60):
    """The demo label config and `n` tasks whose category the photo tells and whose policy label the
    spoken words tell."""
    from pathlib import Path

    from backend.labelstudio.labelconfig import parse_label_config
    from backend.model.features import feature_objects

    config = parse_label_config((Path(__file__).resolve().parents[2] / "label_config.xml").read_text())
    dims = {o.name: encoders.for_modality(o.modality).dim for o in feature_objects(config, encoders)}
    rng, feats, labels = np.random.default_rng(3), [], []
    for i in range(n):
        kind, bad = i % 6, i % 3 == 0
        f = {name: rng.normal(size=(2, dim)).astype(np.float32) for name, dim in dims.items()}
        f["image"][:, kind * 10 : kind * 10 + 10] += 2.0
        f["voiceover.speech"][:, :10] += 1.0 if bad else -1.0
        feats.append(f)
        labels.append([[config.controls[0].labels[kind]], ["Violation" if bad else "OK"]])
    return config, feats, labels


def test_auto_fusion_weighs_both_fusions_per_head_on_held_out_tasks(encoders, caplog):
    """With enough labels, "auto" weighs attention against mean pooling per head on held-out tasks and
    logs it; where every head picks one fusion it returns exactly the model that fusion trains (its
    name in the version); with few labels, attention untried."""
    config, feats, labels = _demo_config_tasks(encoders)
    auto = Settings(fusion="auto", train_members=1, train_max_steps=20, train_audio_free_heads=False)
    with caplog.at_level("INFO", logger="backend.model.training"):
        trained = training.train(feats, labels, config, encoders, auto)
    fits = training.fusion_fits(feats, labels, config, encoders, auto)
    picks = training.head_fusions(fits)
    for c, pick, a, m in zip(config.controls, picks, fits["attention"], fits["mean"], strict=True):
        assert f"head {c.name}: held-out fit {a:.3f} with attention, {m:.3f} with mean pooling: {pick}" in caplog.text
    cfg = training.fusion_config(config, encoders, "mean")
    batch = collate(feats, cfg)
    ys, has = training._targets(labels, cfg, config)
    assert fits["mean"] == pytest.approx(training.held_out_fit(cfg, batch, ys, has, auto))  # no head freed
    if len(set(picks)) == 1 and picks[0] != "mixed":
        direct = training.train(feats, labels, config, encoders, auto.model_copy(update={"fusion": picks[0]}))
        assert trained.version == direct.version and trained.version.startswith(f"vlmae-{picks[0]}-")
    else:
        assert list(trained.model.head_fusions.values()) == picks
    caplog.clear()
    few = training.train(feats[:40], labels[:40], config, encoders, auto)
    assert few.model.cfg.fusion == "attention" and "held-out fit" not in caplog.text


def test_head_fusions_pick_the_better_fit_per_head_and_both_when_close():
    fits = {"attention": [0.80, 0.50, 0.600, 0.7], "mean": [0.70, 0.60, 0.605, 0.7]}
    assert training.head_fusions(fits, within=0.01) == ["attention", "mean", "mixed", "mixed"]
    assert training.head_fusions(fits, within=0.0) == ["attention", "mean", "mean", "mixed"]


def test_auto_fusion_trains_each_fusion_its_heads_read_and_each_head_averages_its_own(encoders, monkeypatch):
    """Heads that pick different fusions: `train_members` models of each fusion, each voting only
    for the heads that read its fusion (both where a head is "mixed"); the votes survive saving."""
    config, feats, labels = _demo_config_tasks(encoders)
    auto = Settings(fusion="auto", train_members=2, train_max_steps=20, train_audio_free_heads=False)
    monkeypatch.setattr(training, "head_fusions", lambda fits: ["mean", "attention"])
    trained = training.train(feats, labels, config, encoders, auto).model
    assert [m.cfg.fusion for m in trained.members] == ["attention", "attention", "mean", "mean"]
    assert [m.cfg.head_votes for m in trained.members] == [[False, True]] * 2 + [[True, False]] * 2
    assert trained.head_fusions == {c.name: f for c, f in zip(config.controls, ["mean", "attention"], strict=True)}
    batch = collate(feats[:5], trained.cfg)
    again = from_bytes(to_bytes(trained))
    with torch.inference_mode():
        each = [m.probabilities(m(batch)) for m in trained.members]
        probs = trained.probabilities(trained(batch))
        assert torch.allclose(probs[0], (each[2][0] + each[3][0]) / 2, atol=1e-6)
        assert torch.allclose(probs[1], (each[0][1] + each[1][1]) / 2, atol=1e-6)
        assert torch.allclose(again.probabilities(again(batch))[0], probs[0])
    monkeypatch.setattr(training, "head_fusions", lambda fits: ["mixed", "attention"])
    both = training.train(feats, labels, config, encoders, auto).model
    assert [m.cfg.head_votes for m in both.members] == [[True, True]] * 2 + [[True, False]] * 2
    assert list(both.head_fusions.values()) == ["mixed", "attention"]


def test_mixed_fusion_alternates_attention_and_mean_pooling_members(encoders):
    """fusion="mixed" trains members that alternate attention and mean pooling, each the model its own
    fusion trains from that member's seed; saved and loaded, every member keeps its fusion."""
    config, feats, labels = _demo_config_tasks(encoders)
    mixed = Settings(fusion="mixed", train_members=3, train_max_steps=20, train_head_objects=False)
    trained = training.train(feats, labels, config, encoders, mixed)
    assert isinstance(trained.model, Ensemble) and trained.model.fusion == "mixed"
    assert [m.cfg.fusion for m in trained.model.members] == ["attention", "mean", "attention"]
    assert trained.version.startswith("vlmae-mixed-")
    alone = mixed.model_copy(update={"fusion": "mean", "seed": 1, "train_members": 1})
    direct = training.train(feats, labels, config, encoders, alone).model
    assert to_bytes(direct) == to_bytes(trained.model.members[1])
    batch = collate(feats[:5], trained.model.cfg)
    again = from_bytes(to_bytes(trained.model))
    assert [m.cfg.fusion for m in again.members] == ["attention", "mean", "attention"]
    with torch.inference_mode():
        assert torch.allclose(again(batch)[1], trained.model(batch)[1])
    one = training.train(feats, labels, config, encoders, mixed.model_copy(update={"train_members": 1}))
    assert [m.cfg.fusion for m in one.model.members] == ["attention", "mean"]  # two at least


def test_a_model_saved_with_one_config_for_all_members_still_loads():
    """Models saved before members could differ in fusion hold one config and a state per member."""
    import io
    from dataclasses import asdict

    torch.manual_seed(0)
    model = VLMAE(config("attention")).eval()
    for weights in ({"state_dict": model.state_dict()}, {"members": [model.state_dict()] * 2}):
        buf = io.BytesIO()
        torch.save({"config": asdict(model.cfg), **weights}, buf)
        again = from_bytes(buf.getvalue())
        members = again.members if isinstance(again, Ensemble) else [again]
        assert len(members) == len(weights.get("members", [0]))
        batch = collate([features(np.random.default_rng(4))], model.cfg)
        with torch.inference_mode():
            assert all(torch.allclose(m(batch)[0], model(batch)[0]) for m in members)
