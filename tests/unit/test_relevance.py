"""Which objects each head reads: the probes that decide it, and a model that honours it."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.labelstudio.labelconfig import ChoicesControl, LabelConfig, ObjectTag
from backend.model.relevance import auc_standard_error, head_objects
from backend.model.training import from_bytes, to_bytes
from backend.model.vlmae import VLMAE, Ensemble, FusionConfig, collate

OBJECTS = [("photo", 12), ("note", 6), ("words", 4)]
CONFIG = LabelConfig(
    objects=(
        ObjectTag("photo", "Image", "image", "image"),
        ObjectTag("note", "Audio", "audio", "audio"),
    ),
    controls=(
        ChoicesControl("kind", "photo", ("shoe", "bag"), False),
        ChoicesControl("policy", "photo", ("ok", "remove"), False),
    ),
    fingerprint="test",
)

# A small model over the three objects of _tasks, two heads.
SMALL = FusionConfig(
    input_dims={"image": 12, "audio": 6, "speech": 4},
    objects=[("photo", "image"), ("note", "audio"), ("words", "speech")],
    heads=[("kind", 2, False), ("policy", 2, False)],
    d_model=16,
    n_heads=2,
)


def _tasks(rng: np.random.Generator, n: int, rare: float = 0.15) -> tuple[list[dict], list[list]]:
    """`kind` is in the photo, the rare `remove` in the spoken words; the sound frames are noise."""
    feats, labels = [], []
    for i in range(n):
        kind, remove = i % 2, rng.random() < rare
        photo = rng.normal(size=(5, 12)) + (1.0 if kind else -1.0) * np.tile([1, -1], 6)
        words = rng.normal(size=(1, 4)) + (1.0 if remove else -1.0) * np.array([1, -1, 1, -1])
        feats.append({"photo": photo, "note": rng.normal(size=(4, 6)), "words": words})
        labels.append([["bag" if kind else "shoe"], ["remove" if remove else "ok"]])
    return [{k: v.astype(np.float32) for k, v in f.items()} for f in feats], labels


def test_each_head_reads_the_objects_that_tell_it_something():
    feats, labels = _tasks(np.random.default_rng(0), 160)
    assert head_objects(feats, labels, CONFIG, OBJECTS) == [["photo"], ["words"]]


def test_with_too_few_labels_a_head_reads_every_object():
    feats, labels = _tasks(np.random.default_rng(1), 160, rare=0.0)
    labels = [[k, p if i < 4 else None] for i, (k, p) in enumerate(labels)]  # 4 labelled for policy
    assert head_objects(feats, labels, CONFIG, OBJECTS) == [["photo"], None]


def test_a_head_every_object_informs_reads_them_all():
    feats, labels = _tasks(np.random.default_rng(2), 160)
    for f, lab in zip(feats, labels, strict=True):  # every object now says the kind
        sign = 1.0 if lab[0] == ["bag"] else -1.0
        f["note"] += sign * np.tile([1, -1], 3).astype(np.float32)
        f["words"] += sign * np.array([1, 1, -1, -1], np.float32)
    assert head_objects(feats, labels, CONFIG, OBJECTS)[0] is None


def test_auc_standard_error_shrinks_with_more_tasks_and_vanishes_at_a_perfect_score():
    assert auc_standard_error(1.0, 4, 100) == 0.0
    assert auc_standard_error(0.7, 4, 100) > auc_standard_error(0.7, 40, 1000) > 0
    assert auc_standard_error(0.7, 4, 100) == pytest.approx(0.151, abs=0.005)


def test_a_head_with_a_view_ignores_every_other_object():
    cfg = replace(SMALL, head_objects=[["photo"], ["words"]])
    torch.manual_seed(0)
    model = VLMAE(cfg).eval()
    feats, _ = _tasks(np.random.default_rng(3), 4)
    scale = np.linspace(-2, 2, 12, dtype=np.float32)  # a shift alone would vanish in the LayerNorm
    changed = [{**f, "photo": f["photo"] * scale, "note": f["note"][::-1].copy()} for f in feats]
    with torch.inference_mode():
        before, after = model(collate(feats, cfg)), model(collate(changed, cfg))
        assert not torch.allclose(before[0], after[0])  # the photo moved the kind head...
        assert torch.allclose(before[1], after[1])  # ...and not the policy head, which reads the words only
        again = from_bytes(to_bytes(model))
        assert again.cfg.head_objects == [["photo"], ["words"]]
        assert torch.allclose(again(collate(feats, cfg))[1], before[1])
    everything = VLMAE(replace(cfg, head_objects=[])).eval()
    assert everything.views == [None, None]


def test_lsb_searches_the_views_the_heads_read():
    """With views, the latent space is the embeddings of the views read, side by side; without,
    the fused embedding itself (and an ensemble's, member by member)."""
    cfg = SMALL
    feats, _ = _tasks(np.random.default_rng(5), 6)
    torch.manual_seed(0)
    plain = VLMAE(cfg).eval()
    torch.manual_seed(0)
    viewed = VLMAE(replace(cfg, head_objects=[["photo"], ["words"]])).eval()
    batch = collate(feats, cfg)
    with torch.inference_mode():
        z = plain.embed(batch)
        assert torch.equal(plain.space(batch, z), z) and plain.dim == 16
        space = viewed.space(batch, viewed.embed(batch))
        assert space.shape == (6, 32) and viewed.dim == 32
        assert torch.allclose(space[:, 16:], viewed.embed(batch.only([2])))  # the policy head's view
        pair = Ensemble([viewed, viewed])
        assert torch.allclose(pair.space(batch, pair.embed(batch)), torch.cat([space, space], -1))
        assert pair.dim == 64


def test_training_gives_each_head_the_view_its_labels_call_for(encoders):
    """The shipped label config, the real encoders' widths: the category is in the photo, the
    violation in the spoken words; with the setting on, each head reads what carries it."""
    from pathlib import Path

    from backend.config import Settings
    from backend.labelstudio.labelconfig import parse_label_config
    from backend.model.features import feature_objects
    from backend.model.training import train

    config = parse_label_config((Path(__file__).resolve().parents[2] / "label_config.xml").read_text())
    dims = {o.name: encoders.for_modality(o.modality).dim for o in feature_objects(config, encoders)}
    rng, feats, labels = np.random.default_rng(7), [], []
    for i in range(120):
        kind, bad = i % 6, rng.random() < 0.2
        f = {name: rng.normal(size=(2, dim)).astype(np.float32) for name, dim in dims.items()}
        f["image"][:, kind * 10 : kind * 10 + 10] += 2.0
        f["voiceover.speech"][:, :10] += 2.0 if bad else -2.0
        feats.append(f)
        labels.append([[config.controls[0].labels[kind]], ["Violation" if bad else "OK"]])
    settings = Settings(train_head_objects=True, train_members=1, train_max_steps=10)
    model = train(feats, labels, config, encoders, settings).model
    assert model.cfg.head_objects == [["image"], ["voiceover.speech"]]
    off = train(feats, labels, config, encoders, settings.model_copy(update={"train_head_objects": False}))
    assert off.model.cfg.head_objects == []
