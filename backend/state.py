"""Per-project state in Redis: the label config and the trained model. Namespaced by project id;
everything here can be rebuilt from Label Studio (config from the project, model by retraining)."""

from __future__ import annotations

import json
from typing import Any

import redis


def _key(project: int, what: str) -> str:
    return f"broaden:p:{project}:{what}"


class ProjectState:
    def __init__(self, r: redis.Redis, project: int):
        self.r, self.project = r, project

    def label_config(self) -> str | None:
        raw = self.r.get(_key(self.project, "config"))
        return raw.decode() if raw else None

    def set_label_config(self, xml: str) -> None:
        self.r.set(_key(self.project, "config"), xml)

    def model_blob(self) -> tuple[str, bytes] | None:
        """(version, weights) of the current model, read atomically."""
        version, blob = self.r.mget(_key(self.project, "model_version"), _key(self.project, "model"))
        return (version.decode(), blob) if version and blob else None

    def set_model(self, version: str, blob: bytes, info: dict[str, Any]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(_key(self.project, "model"), blob)
        pipe.set(_key(self.project, "model_version"), version)
        pipe.set(_key(self.project, "model_info"), json.dumps(info))
        pipe.execute()

    def model_version(self) -> str | None:
        raw = self.r.get(_key(self.project, "model_version"))
        return raw.decode() if raw else None

    def model_info(self) -> dict[str, Any]:
        raw = self.r.get(_key(self.project, "model_info"))
        return json.loads(raw) if raw else {}

    def drop_model(self) -> None:
        self.r.delete(
            _key(self.project, "model"), _key(self.project, "model_version"), _key(self.project, "model_info")
        )


class ProjectMirror:
    """What the workers know of a project's tasks, read from Label Studio's API (never from a
    webhook payload): task data, labels per task, written priorities and prediction versions, seeds.

    Hashes keyed by task id, so one task's update is one HSET and a resync can rebuild all of it.
    """

    FIELDS = ("tasks", "labels", "priority", "predver", "seeds", "outbox")

    def __init__(self, r: redis.Redis, project: int):
        self.r, self.project = r, project

    def key(self, what: str) -> str:
        return _key(self.project, what)

    def load(self, what: str) -> dict[int, Any]:
        return {int(k): json.loads(v) for k, v in self.r.hgetall(self.key(what)).items()}

    def save(self, what: str, values: dict[int, Any], replace: bool = False) -> None:
        pipe = self.r.pipeline(transaction=True)
        if replace:
            pipe.delete(self.key(what))
        for start in range(0, len(values), 5000):
            chunk = dict(list(values.items())[start : start + 5000])
            pipe.hset(self.key(what), mapping={str(k): json.dumps(v) for k, v in chunk.items()})
        pipe.execute()

    def drop(self, what: str, task_ids: list[int]) -> None:
        if task_ids:
            self.r.hdel(self.key(what), *[str(t) for t in task_ids])

    def forget_tasks(self, task_ids: list[int]) -> None:
        for what in self.FIELDS:
            self.drop(what, task_ids)

    def count(self) -> int:
        return int(self.r.hlen(self.key("tasks")))

    # hints from webhooks: which tasks to re-read, and whether everything must be re-read
    def add_hints(self, task_ids: list[int], full: bool = False, retrain: bool = False) -> None:
        pipe = self.r.pipeline(transaction=False)
        if task_ids:
            pipe.sadd(self.key("dirty"), *task_ids)
        if full:
            pipe.set(self.key("full"), 1)
        if retrain:
            pipe.set(self.key("retrain"), 1)
        pipe.execute()

    def hints(self) -> tuple[list[int], bool, bool]:
        dirty, full, retrain = (
            self.r.pipeline().smembers(self.key("dirty")).get(self.key("full")).get(self.key("retrain")).execute()
        )
        return sorted(int(t) for t in dirty), bool(full), bool(retrain)

    def clear_hints(self, task_ids: list[int], full: bool, retrain: bool) -> None:
        """Remove only the hints that were handled: ones that arrived meanwhile stay for the next run."""
        pipe = self.r.pipeline(transaction=False)
        if task_ids:
            pipe.srem(self.key("dirty"), *task_ids)
        if full:
            pipe.delete(self.key("full"))
        if retrain:
            pipe.delete(self.key("retrain"))
        pipe.execute()

    def get(self, what: str) -> str | None:
        raw = self.r.get(self.key(what))
        return raw.decode() if raw else None

    def put(self, what: str, value: str) -> None:
        self.r.set(self.key(what), value)

    def reset(self) -> None:
        """Forget everything derived from the label config (it changed)."""
        self.r.delete(*[self.key(w) for w in (*self.FIELDS, "trained_digest", "shown_version", "outbox_version")])
