"""A real Label Studio connects to broaden by URL and stores its predictions on the tasks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config.xml").read_text()
LABELS = {"category": {"Top", "Bottom", "Dress", "Outerwear", "Footwear", "Bag"}, "policy": {"OK", "Violation"}}
TARGETS = {"category": "image", "policy": "voiceover"}


def import_demo(api, project: int, demo_dir: Path) -> tuple[list[int], list[dict]]:
    """Upload the demo media to Label Studio and import tasks pointing at the uploads."""
    manifest = [json.loads(line) for line in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    tasks = json.loads((demo_dir / "tasks.json").read_text())
    paths = [demo_dir / t["data"][k] for t in tasks for k in ("image", "audio")]
    urls = api.upload_files(project, paths)
    for t in tasks:
        t["data"]["image"] = urls[demo_dir / t["data"]["image"]]
        t["data"]["audio"] = urls[demo_dir / t["data"]["audio"]]
    return api.import_tasks(project, tasks), manifest


def check_predictions(tasks: list[dict], version: str) -> None:
    for task in tasks:
        (pred,) = [p for p in task["predictions"] if p["model_version"] == version]
        regions = {r["from_name"]: r for r in pred["result"]}
        assert set(regions) == set(LABELS), task["id"]
        for name, region in regions.items():
            assert region["to_name"] == TARGETS[name]
            assert region["type"] == "choices"
            (label,) = region["value"]["choices"]
            assert label in LABELS[name]
            assert 0.0 < region["score"] <= 1.0
        assert 0.0 < pred["score"] <= 1.0


def test_connect_retrieve_train_retrieve(labelstudio, backend, demo_dir):
    api = labelstudio.api
    project = api.create_project("broaden e2e", CONFIG)
    task_ids, manifest = import_demo(api, project, demo_dir)
    ml = api.connect_ml_backend(project, backend.url, "broaden")
    assert any(w["url"] == backend.url + "/webhook" for w in api.list_webhooks(project))

    # Cold start: zero-shot predictions from the label names, stored with the version /setup gave.
    setup_version = httpx.post(backend.url + "/setup", json={"project": project, "schema": CONFIG}).json()
    zero_shot = setup_version["model_version"]
    assert zero_shot.startswith("zeroshot-")
    api.retrieve_predictions(project, task_ids)
    check_predictions(api.list_tasks(project), zero_shot)

    # Label the pool items, press "Start training": Label Studio sends START_TRAINING to /webhook,
    # a real worker trains, and the next retrieval stores predictions of the trained model.
    for task_id, item in zip(task_ids, manifest, strict=True):
        if item["split"] == "pool":
            api.annotate(
                task_id,
                [
                    {"from_name": n, "to_name": TARGETS[n], "type": "choices", "value": {"choices": [item["label"][n]]}}
                    for n in LABELS
                ],
            )
    labelstudio.api.http.post(f"/api/ml/{ml}/train").raise_for_status()
    time.sleep(0.5)
    log = backend.run_worker()
    assert "sync_project" in log
    trained = httpx.post(backend.url + "/setup", json={"project": project, "schema": CONFIG}).json()["model_version"]
    assert trained.startswith("vlmae-attention-")

    api.retrieve_predictions(project, task_ids)
    tasks = api.list_tasks(project)
    check_predictions(tasks, trained)
    check_predictions(tasks, zero_shot)  # the earlier predictions stay, under their own version
