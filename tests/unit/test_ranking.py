from backend.labelstudio.annotations import shown_before_labelling
from backend.labelstudio.labelconfig import parse_label_config
from backend.ranking.priorities import HEAD_FLOOR, TOP_EXACT, changed_groups, priorities
from backend.ranking.seeds import confidently_wrong, is_target_positive, target_columns, target_labels

CONFIG = parse_label_config(open("label_config.xml").read())


def test_priorities_are_descending_with_an_exact_head():
    order = list(range(1000, 1500))
    pr = priorities(order)
    values = [pr[t] for t in order]
    assert values == sorted(values, reverse=True)
    assert len(set(values[:TOP_EXACT])) == TOP_EXACT and min(values[:TOP_EXACT]) > HEAD_FLOOR
    assert max(values[TOP_EXACT:]) <= HEAD_FLOOR and values[-1] == 0
    assert len(set(values)) <= TOP_EXACT + 21  # a handful of bulk writes, whatever the size


def test_changed_groups_skip_unchanged_and_one_level_moves():
    old = {1: 110.0, 2: 50.0, 3: 50.0, 4: 50.0}
    new = {1: 110.0, 2: 55.0, 3: 80.0, 4: 109.0, 5: 0.0}
    head, tail = changed_groups(new, old)
    assert head == {109.0: [4]}
    assert tail == {80.0: [3], 0.0: [5]}  # task 2 moved one level: left alone
    assert changed_groups(new, old, exact=True)[1] == {55.0: [2], 80.0: [3], 0.0: [5]}


def test_targets_explicit_or_rare():
    labels = {i: [["Top"], ["OK"]] for i in range(9)} | {9: [["Bag"], ["Violation"]]}
    assert target_labels(CONFIG, labels, "policy:Violation") == {("policy", "Violation")}
    assert ("policy", "Violation") in target_labels(CONFIG, labels, "")
    assert ("category", "Top") not in target_labels(CONFIG, labels, "")
    assert is_target_positive(CONFIG, labels[9], {("policy", "Violation")})
    assert not is_target_positive(CONFIG, labels[0], {("policy", "Violation")})


def test_target_columns_name_the_model_outputs():
    hunted = {("policy", "Violation"), ("category", "Bag"), ("policy", "Nonsense"), ("nowhere", "OK")}
    assert target_columns(CONFIG, hunted) == [(0, 5), (1, 1)]
    assert target_columns(CONFIG, set()) == []


def task(pred_score: float, said: str, when: str = "2026-01-01", version: str = "vlmae-attention-x") -> dict:
    return {
        "annotations": [{"created_at": "2026-02-01", "result": []}],
        "predictions": [
            {
                "model_version": version,
                "created_at": when,
                "result": [{"from_name": "category", "value": {"choices": [said]}, "score": pred_score}],
            }
        ],
    }


def is_misprediction(task: dict, config, truth, confidence: float) -> bool:
    shown = shown_before_labelling(task)  # the Label Studio adapter, then the plain rule
    return shown is not None and confidently_wrong(shown, truth, config, confidence)


def test_misprediction_from_what_label_studio_stored():
    truth = [["Bag"], ["OK"]]
    assert is_misprediction(task(0.9, "Top"), CONFIG, truth, 0.8)
    assert not is_misprediction(task(0.7, "Top"), CONFIG, truth, 0.8)  # not confident
    assert not is_misprediction(task(0.9, "Bag"), CONFIG, truth, 0.8)  # right
    assert not is_misprediction(task(0.9, "Top", when="2026-03-01"), CONFIG, truth, 0.8)  # after the label
    assert not is_misprediction(task(0.9, "Top", version="someone-else"), CONFIG, truth, 0.8)
