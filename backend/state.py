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
        self.r.delete(_key(self.project, "model"), _key(self.project, "model_version"), _key(self.project, "model_info"))
