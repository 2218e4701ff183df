import numpy as np
import pytest

from backend.labelstudio.labelconfig import parse_label_config
from backend.model import fusion_choice
from backend.model.fusion_choice import FusionChoice, choose_fusion, oof_macro_f1, stratified_folds

CONFIG = parse_label_config(
    """<View>
  <Text name="t" value="$text"/>
  <Choices name="kind" toName="t"><Choice value="a"/><Choice value="b"/><Choice value="c"/></Choices>
  <Choices name="tags" toName="t" choice="multiple"><Choice value="x"/><Choice value="y"/></Choices>
</View>"""
)


def _labels(n: int, rare_every: int = 10) -> list:
    return [[["c"] if i % rare_every == 0 else ["a" if i % 2 else "b"], None] for i in range(n)]


def test_folds_spread_every_label_evenly_and_depend_only_on_the_seed():
    labels = _labels(100)
    folds = stratified_folds(labels, 3, seed=4)
    for value in ("a", "b", "c"):
        counts = np.bincount([f for f, lab in zip(folds, labels, strict=True) if lab[0] == [value]], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    assert (stratified_folds(labels, 3, seed=4) == folds).all()
    assert (stratified_folds(labels, 3, seed=5) != folds).any()


def test_near_copies_share_a_fold_and_do_not_chain():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 8))
    copy = base[0] + 0.01 * rng.normal(size=8)
    between = (base[0] + base[1]) / np.linalg.norm(base[0] + base[1]) * np.linalg.norm(base[0])
    features = [{"t": base[0][None]}, {"t": base[1][None]}, {"t": copy[None], "u": base[2][None]}, {"t": between[None]}]
    groups = fusion_choice.near_duplicates(features, sim=0.95)
    assert list(groups) == [0, 1, 0, 3]  # the copy joins 0; a task halfway between 0 and 1 joins neither
    labels = _labels(4)
    folds = stratified_folds(labels, 2, seed=0, groups=groups)
    assert folds[0] == folds[2]


def test_out_of_fold_macro_f1_averages_the_labels_present_and_the_heads_answered():
    one_hot = np.eye(3)
    labels = [[["a"], ["x"]], [["a"], ["x", "y"]], [["b"], None], [["b"], ["y"]]]
    probs = [
        [one_hot[0], np.array([0.9, 0.1])],  # a right; x right
        [one_hot[1], np.array([0.8, 0.7])],  # a called b; x and y right
        [one_hot[1], None],  # b right
        None,  # not predicted: left out
    ]
    # kind: a has F1 2*1/(1+2)=2/3, b 2*1/(2+1)=2/3 (c absent); tags: x 1.0, y 1.0
    assert oof_macro_f1(probs, labels, CONFIG) == pytest.approx((2 / 3 + 1.0) / 2)


def _trainer(quality: dict[str, float], truth: dict[int, tuple[int, str]]):
    """A stand-in for training in this one function's test: `quality` of each fusion is the share
    of rows it gets right (deterministically, by position)."""

    def fit(features, labels, fusion):
        def predict(rows):
            out = [np.zeros((len(rows), 3)), np.full((len(rows), 2), 0.1)]
            for r, row in enumerate(rows):
                i, label = truth[id(row["x"])]
                right = (i * 7919) % 100 < quality[fusion] * 100
                out[0][r, "abc".index(label) if right else ("abc".index(label) + 1) % 3] = 1.0
            return out

        return predict

    return fit


def _rows(n: int):
    labels = _labels(n)
    rows = [{"x": np.random.default_rng(i).normal(size=(1, 16))} for i in range(n)]
    return rows, labels, {id(r["x"]): (i, lab[0][0]) for i, (r, lab) in enumerate(zip(rows, labels, strict=True))}


def test_the_fusion_with_the_better_held_out_predictions_is_chosen():
    features, labels, truth = _rows(90)
    choice = choose_fusion(features, labels, CONFIG, _trainer({"attention": 0.6, "mean": 0.9}, truth), seed=0)
    assert choice.fusion == "mean" and choice.n_labels == 90
    assert choice.scores["mean"] > choice.scores["attention"]
    assert "mean" in choice.describe() and "90 labels" in choice.describe()
    tie = choose_fusion(features, labels, CONFIG, _trainer({"attention": 0.8, "mean": 0.8}, truth), seed=0)
    assert tie.fusion == "attention"


def test_too_few_labels_keep_attention_without_training():
    features, labels, _ = _rows(fusion_choice.MIN_LABELS - 1)

    def never(*_):
        raise AssertionError("nothing should be trained")

    choice = choose_fusion(features, labels, CONFIG, never, seed=0)
    assert choice == FusionChoice("attention", len(features), {})
    assert choice.holds_for(fusion_choice.MIN_LABELS - 1) and not choice.holds_for(fusion_choice.MIN_LABELS)


def test_a_choice_holds_until_the_labels_grow_by_half():
    choice = FusionChoice("mean", 100, {"attention": 0.7, "mean": 0.8})
    assert choice.holds_for(100) and choice.holds_for(149)
    assert not choice.holds_for(150)
