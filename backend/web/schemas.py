"""Payloads that cross the wire between Label Studio and broaden.

Inbound models ignore unknown keys (Label Studio adds fields between releases);
our own responses forbid them so a typo cannot ship.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.labelstudio.predictions import Prediction


class Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Request(Inbound):
    """A whole request body: checked once for text no encoder can store (its parts are not again)."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        # JSON may spell a lone UTF-16 surrogate ("\ud800"); no text of it can be stored or encoded.
        if _has_lone_surrogate(value):
            raise ValueError("the payload holds a lone UTF-16 surrogate (such as \\ud800): send valid Unicode")
        return value


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


class Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid")


def parse_project_id(value: Any) -> int | None:
    """Label Studio sends the project as "<id>.<created unix ts>", an int, or {"id": ...}."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        raise ValueError("project must be an id, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isdigit():
            return int(head)
    raise ValueError(f"project must look like '<id>.<timestamp>' or an integer id, got {value!r}")


class Task(Inbound):
    id: int
    data: dict[str, Any]


class PredictParams(Inbound):
    context: dict[str, Any] | None = None


class PredictRequest(Request):
    tasks: list[Task] = Field(max_length=10_000)
    project: int | None = None
    label_config: str | None = None
    params: PredictParams | None = None

    _project = field_validator("project", mode="before")(parse_project_id)


class PredictResponse(Outbound):
    results: list[Prediction]


class SetupRequest(Request):
    project: int
    label_config: str = Field(alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    model_version: str | None = None
    extra_params: dict[str, Any] | str | None = None

    _project = field_validator("project", mode="before")(parse_project_id)


class SetupResponse(Outbound):
    model_version: str


class WebhookRequest(Request):
    action: str = Field(min_length=1, max_length=100)
    project: int | None = None
    annotation: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] | None = None
    task: dict[str, Any] | None = None
    tasks: list[dict[str, Any]] | None = None

    _project = field_validator("project", mode="before")(parse_project_id)

    def task_ids(self) -> list[int]:
        """Every task id the payload mentions (a hint: the job checks each against Label Studio)."""
        found: list[Any] = []
        for ann in ([self.annotation] if self.annotation else []) + (self.annotations or []):
            task = ann.get("task")
            found.append(task.get("id") if isinstance(task, dict) else task)
        for task in ([self.task] if self.task else []) + (self.tasks or []):
            found.append(task.get("id"))
        return sorted({int(t) for t in found if isinstance(t, int) and not isinstance(t, bool) and t > 0})


class WebhookResponse(Outbound):
    status: str
    job_id: str | None = None
    reason: str | None = None  # why an event was ignored


class JobStatusRequest(Request):
    job: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")


class JobStatusResponse(Outbound):
    job: str
    status: str
    meta: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(Outbound):
    error: str
    detail: str | list[Any]
