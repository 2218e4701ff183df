"""Labels arrive in a real Label Studio; real RQ workers reorder its queue and pre-label imports."""

from __future__ import annotations

import ast
import json

import httpx
import numpy as np
import redis
from test_predictions import CONFIG, LABELS, TARGETS, import_demo

from backend.config import Settings
from backend.labelstudio.labelconfig import parse_label_config
from backend.queue import producer
from backend.ranking.seeds import seed_tasks, target_labels
from backend.store.keys import Hash
from backend.store.state import ProjectMirror

TAB = "broaden: most valuable first"
FIELD = "broaden_priority"


def tab_order(api, project: int) -> tuple[int, list[dict]]:
    views = api.http.get("/api/dm/views", params={"project": project}).json()
    (view,) = [v for v in views if v["data"].get("title") == TAB]
    body = api.http.get(
        "/api/tasks", params={"project": project, "view": view["id"], "page_size": 500, "fields": "all"}
    ).json()
    return view["id"], body["tasks"]


def priorities(api, project: int) -> dict[int, float]:
    return {t["id"]: t["data"].get(FIELD) for t in api.list_tasks(project)}


def label(api, task_id: int, item: dict, **override: str) -> int:
    chosen = {**item["label"], **override}
    return api.annotate(
        task_id,
        [{"from_name": n, "to_name": TARGETS[n], "type": "choices", "value": {"choices": [chosen[n]]}} for n in LABELS],
    )


def sync_reports(log: str) -> list[dict]:
    """The reports of the sync jobs a worker ran, in order."""
    return [ast.literal_eval(ln.split("sync ", 1)[1]) for ln in log.splitlines() if " sync {" in ln]


def total(log: str) -> dict:
    """The reports of the sync jobs a worker ran, added up (a run may need a follow-up job)."""
    reports = sync_reports(log)
    assert reports, log[-3000:]
    out = {k: sum(r[k] for r in reports) for k in ("ranked", "priorities_written", "predictions_written")}
    out["trained"] = next((r["trained"] for r in reports if r["trained"]), None)
    out["ranked"] = reports[-1]["ranked"]
    return out


def test_labels_reorder_the_queue(labelstudio, backend, demo_dir, redis_url):
    api = labelstudio.api
    project = api.create_project("broaden queue", CONFIG)
    api.connect_ml_backend(project, backend.url, "broaden")

    # Imports are pre-labelled without anyone asking: TASKS_CREATED reaches /webhook, a worker runs.
    task_ids, manifest = import_demo(api, project, demo_dir)
    report = total(backend.run_worker())
    assert report["ranked"] == len(task_ids) and report["predictions_written"] == len(task_ids)
    tasks = api.list_tasks(project)
    assert all(len(t["predictions"]) == 1 and t["predictions"][0]["result"] for t in tasks)
    assert api.get_project(project)["model_version"] == tasks[0]["predictions"][0]["model_version"]
    assert all(isinstance(t["data"][FIELD], float | int) for t in tasks)
    assert all(t["data"]["caption"] for t in tasks)  # the user's own keys are kept

    # The ranked tab serves tasks by priority, as numbers; "Label All Tasks" follows it. It sits
    # beside Label Studio's own "Default" tab, which comes first.
    titles = [v["data"].get("title") for v in api.http.get("/api/dm/views", params={"project": project}).json()]
    assert titles == ["Default", TAB]
    view, ordered = tab_order(api, project)
    values = [t["data"][FIELD] for t in ordered]
    assert values == sorted(values, reverse=True)
    nxt = api.http.get(f"/api/projects/{project}/next", params={"view": view}).json()
    assert nxt["data"][FIELD] == max(values)

    # Label the pool half: a retrain, and the order changes as the new priorities say.
    before = priorities(api, project)
    by_id = dict(zip(task_ids, manifest, strict=True))
    pool = [t for t in task_ids if by_id[t]["split"] == "pool"]
    annotations = {t: label(api, t, by_id[t]) for t in pool[:8]}
    # Before any training a two-label head is always >= 50% sure: no misprediction seeds from these
    # labels, so that the seeds' neighbourhoods below leave part of the queue out.
    no_seeds = {"BROADEN_MISPREDICTION_CONFIDENCE": "0.999"}
    report = total(backend.run_worker(**no_seeds))
    assert report["trained"].startswith("vlmae-attention-")
    after = priorities(api, project)
    assert after != before
    _, ordered = tab_order(api, project)
    unlabelled = [t for t in ordered if t["id"] not in annotations]
    values = [t["data"][FIELD] for t in unlabelled]
    assert values == sorted(values, reverse=True)
    # Labelled tasks left the top: they sit below every task still to label.
    assert {t["id"] for t in ordered[-len(annotations) :]} == set(annotations)
    assert all(after[t] == -1 for t in annotations)

    # A duplicated webhook changes nothing.
    payload = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": project},
        "annotation": {"id": annotations[pool[0]], "task": pool[0]},
        "task": {"id": pool[0]},
    }
    for _ in range(2):
        assert httpx.post(backend.url + "/webhook", json=payload).status_code == 200
    report = total(backend.run_worker(**no_seeds))
    assert report["trained"] is None and report["priorities_written"] == 0 and report["predictions_written"] == 0
    assert priorities(api, project) == after

    # A confident misprediction seeds the broadening: its nearest unlabelled neighbours move up.
    r = redis.Redis.from_url(redis_url)
    mirror = ProjectMirror(r, project)
    config = parse_label_config(CONFIG)
    shown = {
        t["id"]: {reg["from_name"]: reg for reg in t["predictions"][-1]["result"]}
        for t in api.list_tasks(project)
        if t["id"] in pool[8:]
    }
    target = max(shown, key=lambda t: shown[t]["category"]["score"])
    assert shown[target]["category"]["score"] >= 0.5, "no confident prediction to contradict"
    predicted = shown[target]["category"]["value"]["choices"][0]
    wrong = next(lab for lab in config.controls[0].labels if lab != predicted)
    annotations[target] = label(api, target, by_id[target], category=wrong)
    # The same sync twice, k = 1 (a seed's neighbourhood, its 2 nearest, is smaller than the queue):
    # first with a similarity floor no neighbour passes (no broadening), then as configured.
    backend.run_worker(BROADEN_LSB_K="1", BROADEN_LSB_THRESHOLD="1.01")
    plain = priorities(api, project)
    assert mirror.load(Hash.SEEDS).get(target) == "misprediction"
    again = {**payload, "annotation": {"id": annotations[target], "task": target}, "task": {"id": target}}
    assert httpx.post(backend.url + "/webhook", json=again).status_code == 200
    backend.run_worker(BROADEN_LSB_K="1")
    broadened = priorities(api, project)
    labels = mirror.load(Hash.LABELS)
    hunted = target_labels(config, labels, "")  # the rare labels so far
    seeds = seed_tasks(config, labels, set(mirror.load(Hash.SEEDS)), hunted)
    nearest = nearest_unlabelled(backend, project, set(annotations), k=2)
    seeded = {n for s in seeds for n in nearest[s]}
    unlabelled = [t for t in task_ids if t not in annotations]
    assert 0 < len(seeded) < len(unlabelled), "the check needs a neighbourhood smaller than the queue"

    def places(prio: dict[int, float]) -> int:
        order = sorted(unlabelled, key=lambda t: -prio[t])
        return sum(order.index(t) for t in seeded)

    assert places(broadened) < places(plain)  # the seeds' neighbours moved up

    # Deleting an annotation returns its task to the queue; deleting a task removes it.
    api.http.delete(f"/api/annotations/{annotations.pop(pool[0])}").raise_for_status()
    doomed = pool[9] if pool[9] != target else pool[10]
    api.http.delete(f"/api/tasks/{doomed}").raise_for_status()
    backend.run_worker()
    assert str(pool[0]) not in {k.decode() for k in r.hkeys(mirror.key(Hash.LABELS))}
    assert doomed not in mirror.load(Hash.TASKS)
    _, ordered = tab_order(api, project)
    assert pool[0] in [t["id"] for t in ordered] and doomed not in [t["id"] for t in ordered]


def nearest_unlabelled(backend, project: int, labelled: set[int], k: int) -> dict[int, list[int]]:
    """Each task's k nearest unlabelled neighbours in the trained model's fused space, computed
    here with the same encoders, model and Redis state as the workers."""
    from backend.model.encoders import load_encoders
    from backend.model.predictor import Predictor

    env = backend.env
    settings = Settings(
        redis_url=env["REDIS_URL"],
        label_studio_url=env["LABEL_STUDIO_URL"],
        label_studio_api_key=env["LABEL_STUDIO_API_KEY"],
    )
    r = redis.Redis.from_url(settings.redis_url)
    data = ProjectMirror(r, project).load(Hash.TASKS)
    ids = sorted(data)
    p = Predictor(settings, load_encoders(settings), r)
    scored = p.score([{"id": t, "data": data[t]} for t in ids], parse_label_config(CONFIG), project)
    emb = scored.embeddings / np.linalg.norm(scored.embeddings, axis=1, keepdims=True)
    rows = np.array([ids[i] for i in scored.rows])
    free = np.array([t not in labelled for t in rows])
    out = {}
    for i, task in enumerate(rows):
        order = np.argsort(-(emb @ emb[i]))
        out[int(task)] = [int(rows[j]) for j in order if free[j] and j != i][:k]
    return out


def test_payload_json_is_not_trusted(backend):
    """A webhook for a project Label Studio never set up with this backend is acknowledged and
    ignored: the web process neither fails nor queues work for it."""
    res = httpx.post(
        backend.url + "/webhook", json={"action": "TASKS_CREATED", "project": {"id": 987654}, "tasks": [{"id": 1}]}
    )
    assert res.status_code == 200 and res.json()["status"] == "ignored"
    json.dumps(res.json())


def test_a_forged_setup_opens_no_project(labelstudio, backend, demo_dir):
    """/setup and /webhook answer anyone. A project whose ML settings in Label Studio do not point at
    this backend gets nothing written, even after a forged /setup: the worker asks Label Studio first."""
    api = labelstudio.api
    project = api.create_project("broaden never connected", CONFIG)
    task_ids, _ = import_demo(api, project, demo_dir)  # no backend connected: nothing is sent to broaden
    assert httpx.post(backend.url + "/setup", json={"project": f"{project}.1", "schema": CONFIG}).status_code == 200
    forged = {"action": "TASKS_CREATED", "project": {"id": project}, "tasks": [{"id": t} for t in task_ids]}
    assert httpx.post(backend.url + "/webhook", json=forged).json()["status"] == "queued"

    log = backend.run_worker()
    assert f"project {project}: its ML settings in Label Studio do not point at this backend" in log
    assert not any(t["predictions"] or FIELD in t["data"] for t in api.list_tasks(project))
    views = api.http.get("/api/dm/views", params={"project": project}).json()
    assert not any(v["data"].get("title") == TAB for v in views)
    # Found out: its webhooks are ignored (for 10 minutes, then Label Studio is asked again).
    assert httpx.post(backend.url + "/webhook", json=forged).json()["status"] == "ignored"


def test_tasks_that_cannot_be_read_fail_alone_and_no_job_is_refused(labelstudio, backend, redis_url):
    """Relative paths (the demo's tasks.json imported as it is) cannot be read: each task fails with
    its reason, and no job asks Label Studio to show a model version it has no prediction of."""
    api = labelstudio.api
    project = api.create_project("broaden unreadable", CONFIG)
    api.connect_ml_backend(project, backend.url, "broaden")
    data = {"image": "images/item-0000.png", "audio": "audio/item-0000.wav", "caption": "Like-new bag."}
    task_ids = api.import_tasks(project, [{"data": data} for _ in range(3)])
    log = backend.run_worker()
    assert "outside BROADEN_MEDIA_ROOTS" in log or "local file paths are disabled" in log
    assert "HTTP 400" not in log
    q = producer.queue(redis.Redis.from_url(redis_url))
    ours = [j for r in (q.failed_job_registry, q.scheduled_job_registry) for j in r.get_job_ids(cleanup=False)]
    assert not [j for j in ours if f"-p{project}-" in j]  # none failed, none waiting to retry
    assert len(api.list_tasks(project)) == len(task_ids)
