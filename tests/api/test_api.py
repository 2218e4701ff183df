"""The HTTP contract, through the real app, real encoders and a real Redis."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.config import Settings
from backend.model.predictor import PREDICT_CHUNK, Predictor
from backend.runtime import Runtime
from backend.web.app import create_app

CONFIG = Path("label_config.xml").read_text()


def demo_tasks(demo_dir: Path) -> list[dict]:
    tasks = json.loads((demo_dir / "tasks.json").read_text())
    for i, t in enumerate(tasks, start=1):
        t["id"] = i
        t["data"]["image"] = str(demo_dir / t["data"]["image"])
        t["data"]["audio"] = str(demo_dir / t["data"]["audio"])
    return tasks


def with_auth(settings: Settings, user: str, password: str) -> Settings:
    fields = settings.model_dump(exclude={"basic_auth_user", "basic_auth_pass", "label_studio_api_key"})
    return Settings(**fields, basic_auth_user=user, basic_auth_pass=password)


@pytest.fixture
def settings(redis_url, demo_dir, tmp_path) -> Settings:
    return Settings(redis_url=redis_url, media_roots=f"{demo_dir}:{tmp_path}")


@pytest.fixture
def client(settings, encoders, r):
    app = create_app(settings, Runtime.build(settings, r, encoders))
    with TestClient(app) as c:
        yield c


def test_health_setup_predict(client, demo_dir):
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_class"] == "VLMAE"
    version = client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG}).json()["model_version"]
    assert version.startswith("zeroshot-")

    tasks = demo_tasks(demo_dir)[:6]
    body = client.post("/predict", json={"tasks": tasks, "project": "3.1700000000"}).json()
    assert len(body["results"]) == 6
    for res in body["results"]:
        assert res["model_version"] == version
        names = {(r["from_name"], r["to_name"]) for r in res["result"]}
        assert names == {("category", "image"), ("policy", "voiceover")}
        for region in res["result"]:
            assert 0.0 < region["score"] <= 1.0
            (label,) = region["value"]["choices"]
            assert label in {"Top", "Bottom", "Dress", "Outerwear", "Footwear", "Bag", "OK", "Violation"}


def test_bad_media_fails_only_its_task(client, demo_dir, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    good = demo_tasks(demo_dir)[0]
    tasks = [
        good,
        {"id": 2, "data": {**good["data"], "image": str(broken)}},
        {"id": 3, "data": {**good["data"], "audio": str(tmp_path / "missing.wav")}},
        {"id": 4, "data": {"something_else": 1}},
        {"id": 5, "data": {**good["data"], "image": "/etc/passwd"}},  # outside the media roots
        {"id": 6, "data": {**good["data"], "caption": 42}},
        good | {"id": 7},
    ]
    body = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert body.status_code == 200
    results = body.json()["results"]
    assert [bool(r["result"]) for r in results] == [True, False, False, False, False, False, True]
    assert results[0]["result"] == results[6]["result"]


def test_task_with_only_some_objects_is_predicted(client, demo_dir):
    task = demo_tasks(demo_dir)[0]
    del task["data"]["audio"]
    (res,) = client.post("/predict", json={"tasks": [task], "label_config": CONFIG}).json()["results"]
    assert res["result"]


@pytest.mark.parametrize(
    "body, status, error",
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 422, "invalid payload"),
        (json.dumps({"tasks": "nope", "label_config": CONFIG}).encode(), 422, "invalid payload"),
        (json.dumps({"label_config": CONFIG}).encode(), 422, "invalid payload"),
        (json.dumps({"tasks": [{"id": "x", "data": {}}], "label_config": CONFIG}).encode(), 422, "invalid payload"),
        (json.dumps({"tasks": [{"id": 1}], "label_config": CONFIG}).encode(), 422, "invalid payload"),
        (json.dumps({"tasks": [], "project": "99.1"}).encode(), 422, "PayloadError"),
        (json.dumps({"tasks": [], "project": "abc"}).encode(), 422, "invalid payload"),
        (json.dumps({"tasks": [], "label_config": "<View/>"}).encode(), 422, "UnsupportedConfig"),
        # a lone surrogate, as JSON may spell it, in task text or in the label config
        (b'{"tasks": [{"id": 1, "data": {"text": "hi \\ud800"}}], "label_config": "<View/>"}', 422, "invalid payload"),
        (b'{"tasks": [], "label_config": "<View>\\udfff</View>"}', 422, "invalid payload"),
    ],
)
def test_predict_rejects_bad_payloads_with_a_message(client, body, status, error):
    res = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert res.status_code == status
    assert res.json()["error"] == error
    assert "Traceback" not in res.text


def test_setup_rejects_unsupported_config(client):
    res = client.post("/setup", json={"project": "1.1", "schema": "<View><Text name='t' value='$t'/></View>"})
    assert res.status_code == 422
    assert "needs a <Choices>" in res.json()["detail"]
    assert client.post("/setup", json={"schema": CONFIG}).status_code == 422
    lone = b'{"project": 1, "schema": "<View><Text name=\\"t\\" value=\\"$t\\"/>\\ud800</View>"}'
    res = client.post("/setup", content=lone, headers={"Content-Type": "application/json"})
    assert res.status_code == 422 and "surrogate" in res.text


def test_job_status_takes_only_job_ids(client):
    for job in ("a/b", "../x", "sync p1", "x" * 201, "é"):
        res = client.post("/job_status", json={"job": job})
        assert res.status_code == 422 and res.json()["error"] == "invalid payload"
    assert client.post("/job_status", json={"job": "sync-p1-abc"}).json()["status"] == "unknown"


def test_empty_task_list_gives_empty_results(client):
    assert client.post("/predict", json={"tasks": [], "label_config": CONFIG}).json() == {"results": []}


def test_webhook_validates_coalesces_and_needs_no_auth(settings, encoders, r):
    settings = with_auth(settings, "u", "p")
    with TestClient(create_app(settings, Runtime.build(settings, r, encoders))) as c:
        assert c.post("/webhook", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
        assert c.post("/webhook", json={"project": {"id": 1}}).status_code == 422
        assert c.post("/setup", json={"project": 4, "schema": CONFIG}, auth=("u", "p")).status_code == 200
        assert c.post("/webhook", json={"action": "PROJECT_CREATED", "project": {"id": 4}}).json() == {
            "status": "ignored",
            "job_id": None,
            "reason": None,
        }
        first = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 4}, "annotation": {}})
        second = c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 4}})
        assert first.json()["status"] == "queued"
        assert first.json()["job_id"] == second.json()["job_id"]
        assert c.post("/job_status", json={"job": first.json()["job_id"]}, auth=("u", "p")).json()["status"] == "queued"


def test_webhooks_count_only_for_projects_set_up_with_this_backend(client, r):
    """Anyone can post a webhook; only Label Studio's /setup (behind basic auth when it is on)
    makes a project's webhooks count. A forged one for another project starts nothing."""
    from backend.queue import spec
    from backend.queue.producer import queue
    from backend.store import keys

    forged = {"action": "TASKS_CREATED", "project": {"id": 2}, "tasks": [{"id": 201}]}
    res = client.post("/webhook", json=forged).json()
    assert res["status"] == "ignored" and res["job_id"] is None and "not set up" in res["reason"]
    assert queue(r).count == 0 and not r.exists(keys.project(2, keys.Value.DIRTY))  # no job, no hint stored
    assert client.post("/setup", json={"project": "2.1700000000", "schema": CONFIG}).status_code == 200
    # The first setup queues the ranking of the tasks the project already has; later ones do not.
    assert [job.func_name for job in queue(r).get_jobs()] == [spec.Job.CONNECTED.value]
    assert client.post("/setup", json={"project": "2.1700000001", "schema": CONFIG}).status_code == 200
    assert client.post("/webhook", json=forged).json()["status"] == "queued"
    assert queue(r).count == 2


def test_basic_auth(settings, encoders, r):
    settings = with_auth(settings, "admin", "s3cret")
    with TestClient(create_app(settings, Runtime.build(settings, r, encoders))) as c:
        assert c.get("/health").status_code == 401
        assert c.get("/health", auth=("admin", "wrong")).status_code == 401
        token = base64.b64encode(b"admin:s3cret").decode()
        assert c.get("/health", headers={"Authorization": f"Basic {token}"}).status_code == 200
        assert c.post("/setup", json={"project": 1, "schema": CONFIG}).status_code == 401
        for path in ("/docs", "/openapi.json", "/redoc"):  # the API description is behind the same auth
            assert c.get(path).status_code in (401, 404)
        assert c.get("/openapi.json", auth=("admin", "s3cret")).json()["info"]["title"] == "broaden"
        assert "swagger" in c.get("/docs", auth=("admin", "s3cret")).text.lower()


def test_bodies_over_the_limit_are_refused_before_parsing(settings, encoders, r):
    settings = settings.model_copy(update={"max_body_mb": 0.01})  # about 10 KB
    big = json.dumps({"action": "TASKS_CREATED", "project": 1, "tasks": [{"id": i} for i in range(2000)]})
    with TestClient(create_app(settings, Runtime.build(settings, r, encoders))) as c:
        res = c.post("/webhook", content=big, headers={"Content-Type": "application/json"})
        assert res.status_code == 413 and "BROADEN_MAX_BODY_MB" in res.json()["detail"]
        chunks = (big[i : i + 1000].encode() for i in range(0, len(big), 1000))  # no Content-Length
        assert c.post("/webhook", content=chunks, headers={"Content-Type": "application/json"}).status_code == 413
        small = {"action": "TASKS_CREATED", "project": 1, "tasks": [{"id": 5}]}
        assert c.post("/setup", json={"project": 1, "schema": CONFIG}).status_code == 200
        assert c.post("/webhook", json=small).json()["status"] == "queued"
        assert c.post("/predict", json={"tasks": [], "label_config": CONFIG}).json() == {"results": []}


def test_versions(client):
    assert client.get("/versions").json()["versions"] == []


def test_predict_defers_what_does_not_fit_its_time_budget(settings, encoders, r, demo_dir):
    settings = settings.model_copy(update={"predict_budget_s": 0.0})
    tasks = demo_tasks(demo_dir) * 20  # 320 tasks: several chunks
    tasks = [{**t, "id": i} for i, t in enumerate(tasks, start=1)]
    with TestClient(create_app(settings, Runtime.build(settings, r, encoders))) as c:
        c.post("/setup", json={"project": 8, "schema": CONFIG})
        results = c.post("/predict", json={"tasks": tasks, "project": 8}).json()["results"]
    assert len(results) == len(tasks)
    # Budget 0: the first batch of media is encoded (a request always makes progress), the rest deferred.
    unanswered = [t["id"] for t, res in zip(tasks, results, strict=True) if not res["result"]]
    assert results[0]["result"] and all(not res["result"] for res in results[PREDICT_CHUNK:])
    from backend.queue.producer import queue
    from backend.store.state import ProjectMirror

    assert ProjectMirror(r, 8).hints()[0] == unanswered
    jobs = {j.func_name.rsplit(".", 1)[1]: j.kwargs["project_id"] for j in queue(r).get_jobs()}
    assert jobs == {"project_connected": 8, "sync_project": 8}  # the first setup's, and the deferred tasks


def test_predict_budget_holds_across_slow_fetches(settings, encoders, r, tmp_path):
    """Fetches are cut at the budget, not only between chunks: 40 images that each take 2 s to
    arrive, 8 fetched at a time, would take 10 s; with a 1 s budget the first batch is answered
    and the other 24 tasks are left to a worker."""
    import io
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "PNG")

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(2)
            self.send_response(200)
            self.send_header("Content-Length", str(len(buf.getvalue())))
            self.end_headers()
            self.wfile.write(buf.getvalue())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    choices = '<Choices name="c" toName="img"><Choice value="a"/><Choice value="b"/></Choices>'
    config = f'<View><Image name="img" value="$image"/>{choices}</View>'
    tasks = [{"id": i, "data": {"image": f"{base}/{i}.png"}} for i in range(1, 41)]
    settings = settings.model_copy(update={"predict_budget_s": 1.0, "media_hosts": "127.0.0.1"})
    try:
        with TestClient(create_app(settings, Runtime.build(settings, r, encoders))) as c:
            c.post("/setup", json={"project": 9, "schema": config})
            assert len(c.post("/predict", json={"tasks": tasks, "project": 9}).json()["results"]) == 40
    finally:
        server.shutdown()
    from backend.store.state import ProjectMirror

    assert ProjectMirror(r, 9).hints()[0] == list(range(17, 41))  # all but the first batch of 16 media


def test_encoder_outputs_are_cached_by_content_and_a_changed_file_re_encoded(settings, encoders, r, demo_dir, tmp_path):
    import shutil

    from PIL import Image

    from backend.labelstudio.labelconfig import parse_label_config

    task = demo_tasks(demo_dir)[0]
    image = tmp_path / "photo.png"
    shutil.copy(task["data"]["image"], image)
    task["data"]["image"] = str(image)
    p = Predictor(settings, encoders, r)
    config = parse_label_config(CONFIG)
    first = p.featurize([task], config)
    # image, caption, the voice-over's sound and its transcript; then all cached
    assert first.encoded == 4 and p.featurize([task], config).encoded == 0
    assert first.features[0]["voiceover.speech"].shape == (1, encoders.text.dim)
    Image.new("RGB", (64, 64), (250, 10, 10)).save(image)  # same path, new content
    changed = p.featurize([task], config)
    assert changed.encoded == 1
    assert not (changed.features[0]["image"] == first.features[0]["image"]).all()
    moved = tmp_path / "moved.png"  # the same bytes under a new path: fetched, hashed, never encoded again
    shutil.copy(image, moved)
    task["data"]["image"] = str(moved)
    again = p.featurize([task], config)
    assert again.encoded == 0 and (again.features[0]["image"] == changed.features[0]["image"]).all()


def _annotated_demo_tasks(demo_dir) -> list[dict]:
    manifest = [json.loads(line) for line in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    tasks = demo_tasks(demo_dir)
    for task, item in zip(tasks, manifest, strict=True):
        task["annotations"] = [{"id": task["id"], "created_at": "2026-01-01", "result": [
            {"from_name": "category", "to_name": "image", "type": "choices",
             "value": {"choices": [item["label"]["category"]]}},
            {"from_name": "policy", "to_name": "voiceover", "type": "choices",
             "value": {"choices": [item["label"]["policy"]]}},
        ]}]  # fmt: skip
    return tasks


def test_fit_on_annotated_tasks_changes_the_model_version(settings, encoders, r, demo_dir):
    from backend.labelstudio.labelconfig import parse_label_config

    tasks = _annotated_demo_tasks(demo_dir)
    p = Predictor(settings.model_copy(update={"fusion": "attention"}), encoders, r)
    config = parse_label_config(CONFIG)
    before = p.setup(11, CONFIG)
    result = p.fit(11, tasks, CONFIG)
    assert result.version is not None and result.trained_on == len(tasks)
    assert p.model_version(11, config) == result.version != before
    assert result.version.startswith("vlmae-attention-")


def test_scores_carry_the_frozen_features_when_lsb_searches_them(settings, encoders, r, demo_dir):
    from backend.labelstudio.labelconfig import parse_label_config

    tasks, config = demo_tasks(demo_dir)[:3], parse_label_config(CONFIG)
    assert Predictor(settings, encoders, r).score(tasks, config, None).frozen is None  # the default: fused only
    both = Predictor(settings.model_copy(update={"lsb_space": "both"}), encoders, r).score(tasks, config, None)
    assert both.frozen is not None and both.frozen.shape[0] == len(both.rows) == 3
