"""No label is lost when a worker is killed mid-job or Redis loses its data: a resync converges."""

from __future__ import annotations

import os
import signal
import time

import redis
from test_predictions import CONFIG, import_demo
from test_queue import FIELD, label, priorities

from backend.queue import producer
from backend.store.keys import Hash
from backend.store.state import ProjectMirror


def resync(backend, r: redis.Redis, project: int) -> str:
    producer.resync(r, project)
    return backend.run_worker()


def test_killed_worker_then_lost_redis_converge(labelstudio, backend, demo_dir, redis_url):
    api = labelstudio.api
    r = redis.Redis.from_url(redis_url)
    project = api.create_project("broaden recovery", CONFIG)
    api.connect_ml_backend(project, backend.url, "broaden")
    task_ids, manifest = import_demo(api, project, demo_dir)
    backend.run_worker()

    labelled = [t for t, item in zip(task_ids, manifest, strict=True) if item["split"] == "pool"][:6]
    for t in labelled:
        label(api, t, manifest[task_ids.index(t)])

    # A worker picks the sync up and is killed (its whole process group) in the middle of it.
    worker = backend.start_worker()
    deadline = time.monotonic() + 120
    while not producer.queue(r).started_job_registry.get_job_ids(cleanup=False):
        assert time.monotonic() < deadline and worker.poll() is None, "the worker never started the job"
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    resync(backend, r, project)  # waits out the dead worker's project lock (BROADEN_LOCK_TTL_S)
    mirror = ProjectMirror(r, project)
    assert sorted(mirror.load(Hash.LABELS)) == sorted(labelled)
    after_kill = priorities(api, project)
    assert all(after_kill[t] is not None for t in task_ids)

    # Redis comes back empty: every label and priority is rebuilt from Label Studio, identically.
    r.flushdb()
    resync(backend, r, project)
    assert sorted(mirror.load(Hash.LABELS)) == sorted(labelled)
    assert priorities(api, project) == after_kill

    # Priorities that differ from broaden's record (a write-back cut short by a crash, or an edit
    # in Label Studio) are put back by a full resync, which compares with what Label Studio holds.
    tampered = [t for t in task_ids if t not in labelled][:3]
    body = {"selectedItems": {"all": False, "included": tampered}, "value_name": FIELD, "value_type": "Number"}
    params = {"id": "add_data_field", "project": project}
    api.http.post("/api/dm/actions", params=params, json={**body, "value": "-7"}).raise_for_status()
    assert all(priorities(api, project)[t] == -7 for t in tampered)
    resync(backend, r, project)
    assert priorities(api, project) == after_kill
