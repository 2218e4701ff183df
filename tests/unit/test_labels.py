from backend.labelstudio.annotations import labels_from_annotations
from backend.labelstudio.labelconfig import parse_label_config

CONFIG = parse_label_config(open("label_config.xml").read())


def ann(i: int, category: str | None, when: str, cancelled: bool = False, policy: str | None = None) -> dict:
    result = []
    if category:
        result.append(
            {"from_name": "category", "to_name": "image", "type": "choices", "value": {"choices": [category]}}
        )
    if policy:
        result.append(
            {"from_name": "policy", "to_name": "voiceover", "type": "choices", "value": {"choices": [policy]}}
        )
    return {"id": i, "result": result, "was_cancelled": cancelled, "created_at": when, "updated_at": when}


def test_majority_of_submitted_annotations_wins():
    anns = [ann(1, "Top", "2026-01-01"), ann(2, "Bag", "2026-01-02"), ann(3, "Top", "2026-01-03")]
    assert labels_from_annotations(anns, CONFIG) == [["Top"], None]


def test_ties_go_to_the_most_recent_annotation():
    anns = [ann(2, "Bag", "2026-01-05"), ann(1, "Top", "2026-01-01")]
    assert labels_from_annotations(anns, CONFIG)[0] == ["Bag"]


def test_skipped_annotations_and_unknown_labels_are_ignored():
    anns = [ann(1, "Top", "2026-01-01", cancelled=True), ann(2, "Spaceship", "2026-01-02", policy="OK")]
    assert labels_from_annotations(anns, CONFIG) == [None, ["OK"]]
    assert labels_from_annotations([], CONFIG) == [None, None]
