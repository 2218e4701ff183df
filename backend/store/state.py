"""Per-project state in Redis: the label config and the trained model. Namespaced by project id;
everything here can be rebuilt from Label Studio (config from the project, model by retraining)."""

from __future__ import annotations

import json
from typing import Any

import redis

from backend.store import keys
from backend.store.keys import Hash, Value


class ProjectState:
    def __init__(self, r: redis.Redis, project: int):
        self.r, self.project = r, project

    def label_config(self) -> str | None:
        raw = self.r.get(keys.project(self.project, Value.CONFIG))
        return raw.decode() if raw else None

    def set_label_config(self, xml: str) -> None:
        self.r.set(keys.project(self.project, Value.CONFIG), xml)

    def mark_connected(self) -> int:
        """Label Studio called /setup for this project: its webhooks count (until a worker finds
        that Label Studio's ML settings do not point here). Returns how many setups so far."""
        return int(self.r.incr(keys.project(self.project, Value.CONNECTED)))

    def setups(self) -> int:
        return int(self.r.get(keys.project(self.project, Value.CONNECTED)) or 0)

    def connected(self) -> bool:
        """Set up by Label Studio, and not found out since: its webhooks count."""
        return bool(self.r.exists(keys.project(self.project, Value.CONNECTED))) and not self.refused()

    def trust_by_operator(self) -> None:
        """An operator with the API key says broaden serves this project (`broaden backfill`)."""
        self.mark_connected()
        self.r.set(keys.project(self.project, Value.VERIFIED), "operator")

    def _verdict(self) -> str | None:
        raw = self.r.get(keys.project(self.project, Value.VERIFIED))
        return raw.decode() if raw else None

    def verified(self) -> bool:
        return self._verdict() in ("labelstudio", "operator")

    def refused(self) -> bool:
        return self._verdict() == "refused"

    def set_verdict(self, served: bool, ttl_s: int) -> None:
        """What Label Studio's ML settings said, trusted for `ttl_s`: a project found not to point
        here is refused (webhooks ignored, no LS call) until then, and then asked again, so a
        check that failed for a passing reason (our /health slow to answer) heals by itself."""
        self.r.set(keys.project(self.project, Value.VERIFIED), "labelstudio" if served else "refused", ex=ttl_s)

    def model_blob(self) -> tuple[str, bytes] | None:
        """(version, weights) of the current model, read atomically."""
        version, blob = self.r.mget(
            keys.project(self.project, Value.MODEL_VERSION), keys.project(self.project, Value.MODEL)
        )
        return (version.decode(), blob) if version and blob else None

    def set_model(self, version: str, blob: bytes, info: dict[str, Any]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(keys.project(self.project, Value.MODEL), blob)
        pipe.set(keys.project(self.project, Value.MODEL_VERSION), version)
        pipe.set(keys.project(self.project, Value.MODEL_INFO), json.dumps(info))
        pipe.execute()

    def model_version(self) -> str | None:
        raw = self.r.get(keys.project(self.project, Value.MODEL_VERSION))
        return raw.decode() if raw else None

    def model_info(self) -> dict[str, Any]:
        raw = self.r.get(keys.project(self.project, Value.MODEL_INFO))
        return json.loads(raw) if raw else {}

    def drop_model(self) -> None:
        self.r.delete(
            keys.project(self.project, Value.MODEL),
            keys.project(self.project, Value.MODEL_VERSION),
            keys.project(self.project, Value.MODEL_INFO),
        )


class ProjectMirror:
    """What the workers know of a project's tasks, read from Label Studio's API (never from a
    webhook payload): task data, labels per task, written priorities and prediction versions, seeds.

    Hashes keyed by task id, so one task's update is one HSET and a resync can rebuild all of it.
    """

    def __init__(self, r: redis.Redis, project: int):
        self.r, self.project = r, project

    def key(self, what: Hash | Value) -> str:
        return keys.project(self.project, what)

    def load(self, what: Hash) -> dict[int, Any]:
        return {int(k): json.loads(v) for k, v in self.r.hgetall(self.key(what)).items()}

    def save(self, what: Hash, values: dict[int, Any], replace: bool = False) -> None:
        pipe = self.r.pipeline(transaction=True)
        if replace:
            pipe.delete(self.key(what))
        for start in range(0, len(values), 5000):
            chunk = dict(list(values.items())[start : start + 5000])
            pipe.hset(self.key(what), mapping={str(k): json.dumps(v) for k, v in chunk.items()})
        pipe.execute()

    def drop(self, what: Hash, task_ids: list[int]) -> None:
        if task_ids:
            self.r.hdel(self.key(what), *[str(t) for t in task_ids])

    def forget_tasks(self, task_ids: list[int]) -> None:
        for what in Hash:
            self.drop(what, task_ids)

    def count(self) -> int:
        return int(self.r.hlen(self.key(Hash.TASKS)))

    # hints from webhooks: which tasks to re-read, and whether everything must be re-read
    def add_hints(self, task_ids: list[int], full: bool = False, retrain: bool = False) -> None:
        """Remember what a webhook named; past MAX_HINTED_TASKS ids, a full re-read replaces them."""
        dirty = self.key(Value.DIRTY)
        pipe = self.r.pipeline(transaction=False)
        if task_ids:
            pipe.sadd(dirty, *task_ids[: keys.MAX_HINTED_TASKS + 1]).expire(dirty, keys.HINT_TTL_S)
        if full:
            pipe.set(self.key(Value.FULL), 1, ex=keys.HINT_TTL_S)
        if retrain:
            pipe.set(self.key(Value.RETRAIN), 1, ex=keys.HINT_TTL_S)
        pipe.scard(dirty)
        if pipe.execute()[-1] > keys.MAX_HINTED_TASKS:
            self.r.pipeline(transaction=True).set(self.key(Value.FULL), 1, ex=keys.HINT_TTL_S).delete(dirty).execute()

    def hints(self) -> tuple[list[int], bool, bool]:
        dirty, full, retrain = (
            self.r.pipeline()
            .smembers(self.key(Value.DIRTY))
            .get(self.key(Value.FULL))
            .get(self.key(Value.RETRAIN))
            .execute()
        )
        return sorted(int(t) for t in dirty), bool(full), bool(retrain)

    def clear_hints(self, task_ids: list[int], full: bool, retrain: bool) -> None:
        """Remove only the hints that were handled: ones that arrived meanwhile stay for the next run."""
        pipe = self.r.pipeline(transaction=False)
        if task_ids:
            pipe.srem(self.key(Value.DIRTY), *task_ids)
        if full:
            pipe.delete(self.key(Value.FULL))
        if retrain:
            pipe.delete(self.key(Value.RETRAIN))
        pipe.execute()

    def get(self, what: Value) -> str | None:
        raw = self.r.get(self.key(what))
        return raw.decode() if raw else None

    def put(self, what: Value, value: str) -> None:
        self.r.set(self.key(what), value)

    def reset(self) -> None:
        """Forget everything derived from the label config (it changed)."""
        self.r.delete(*[self.key(w) for w in keys.CONFIG_DERIVED])
