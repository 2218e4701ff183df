"""The one place broaden talks to Label Studio's API (label-studio-sdk's `LabelStudio` client,
plus plain HTTP for the Data Manager endpoints the SDK does not wrap)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from backend.config import Settings
from backend.errors import LabelStudioRefused, LabelStudioUnavailable

log = logging.getLogger(__name__)
API_TIMEOUT_S = 30.0


class LabelStudioClient:
    """One per process (see `backend.runtime`); the SDK client is made on first use, so a
    process that never talks to Label Studio needs neither its URL nor its key."""

    def __init__(self, settings: Settings) -> None:
        self.url = (settings.label_studio_url or "").rstrip("/")
        self._key = settings.label_studio_api_key
        self._sdk: Any = None

    @property
    def configured(self) -> bool:
        return bool(self.url and self._key)

    def _check(self) -> None:
        if not self.configured:
            raise LabelStudioUnavailable(
                "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for broaden to reach Label Studio"
            )

    def sdk(self) -> Any:
        if self._sdk is None:
            from label_studio_sdk import LabelStudio

            self._check()
            key = self._key.get_secret_value() if self._key else ""
            self._sdk = LabelStudio(base_url=self.url, api_key=key, timeout=API_TIMEOUT_S)
        return self._sdk

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a plain HTTP request (a media download) to Label Studio.

        The SDK decides between a legacy token ("Token <key>") and a personal access token
        (a JWT it exchanges for a short-lived access token), so we ask it rather than guess.
        """
        if not self.configured:
            return {}
        try:
            headers = self.sdk()._client_wrapper.get_headers()
        except Exception as e:  # the SDK raises its own types for a refused refresh
            raise LabelStudioUnavailable(f"could not authenticate to Label Studio: {type(e).__name__}") from e
        return {"Authorization": headers["Authorization"]}

    def label_config(self, project: int) -> str:
        """The project's current label config: the truth, whatever a webhook said."""
        try:
            return str(self.sdk().projects.get(id=project).label_config)
        except LabelStudioUnavailable:
            raise
        except Exception as e:  # the SDK raises its own error types per HTTP status
            # from None: a chained SDK error would put its response headers in the stored traceback
            error = _error_class(getattr(e, "status_code", None))
            raise error(f"could not read project {project}: {_describe(e)}") from None

    def list_ml_backends(self, project: int) -> int:
        """How many ML backends the project has. Label Studio answers this by calling each one's
        /health and /setup, which is how a backend learns that a project really points at it."""
        try:
            return len(self.sdk().ml.list(project=project))
        except LabelStudioUnavailable:
            raise
        except Exception as e:  # the SDK raises its own error types per HTTP status
            error = _error_class(getattr(e, "status_code", None))
            raise error(f"could not list project {project}'s ML backends: {_describe(e)}") from None

    def _http(self, method: str, path: str, **kwargs: Any) -> Any:
        """A plain API call for the endpoints the SDK does not wrap (Data Manager actions, views)."""
        self._check()
        url = self.url + path
        try:
            response = httpx.request(method, url, headers=self.auth_headers(), timeout=API_TIMEOUT_S, **kwargs)
        except httpx.HTTPError as e:
            raise LabelStudioUnavailable(f"{method} {url}: {type(e).__name__}: {e}") from e
        if response.status_code >= 400:
            error = _error_class(response.status_code)
            raise error(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def tasks(self, project: int, ids: list[int] | None = None, page_size: int = 1000) -> list[dict[str, Any]]:
        """Tasks of a project with their annotations: all, or those with the given ids (ids that no
        longer exist are simply absent)."""
        if ids is None:
            return self._task_pages({"project": project}, page_size)
        unique = sorted(set(ids))
        out: list[dict[str, Any]] = []
        for start in range(0, len(unique), 500):  # ids travel in the query string: keep it short
            selected = {"selectedItems": {"all": False, "included": unique[start : start + 500]}}
            out += self._task_pages({"project": project, "query": json.dumps(selected)}, page_size)
        return out

    def _task_pages(self, query: dict[str, Any], page_size: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            # resolve_uri: cloud-storage values come as Label Studio's proxy URLs, as in /predict,
            # so a task's media have one reference (and one cache entry) on both paths.
            params = {**query, "fields": "all", "page_size": page_size, "page": page, "resolve_uri": True}
            body = self._http("GET", "/api/tasks", params=params)
            batch = body.get("tasks", []) if isinstance(body, dict) else body
            out += batch
            total = body.get("total", len(out)) if isinstance(body, dict) else len(out)
            if not batch or len(out) >= total:
                return out
            page += 1

    def set_data_field(self, project: int, task_ids: list[int], name: str, value: float) -> None:
        """Set data[name] = value on the tasks in one bulk update, keeping their other data keys
        (the Data Manager's "add_data_field" action)."""
        self._http(
            "POST",
            "/api/dm/actions",
            params={"id": "add_data_field", "project": project},
            json={
                "selectedItems": {"all": False, "included": task_ids},
                "value_name": name,
                "value_type": "Number",
                "value": str(value),
            },
        )

    def import_predictions(self, project: int, predictions: list[dict[str, Any]]) -> None:
        for start in range(0, len(predictions), 1000):
            self._http("POST", f"/api/projects/{project}/import/predictions", json=predictions[start : start + 1000])

    def set_model_version(self, project: int, version: str) -> None:
        """Make the project show (and pre-label with) predictions of this model version."""
        self._http("PATCH", f"/api/projects/{project}", json={"model_version": version})

    def ensure_view(self, project: int, title: str, field: str) -> int:
        """A Data Manager tab ordered by data[field] as a number, highest first; created once, kept
        in shape, beside Label Studio's own "Default" tab."""
        column = f"tasks:data.{field}"
        data = {
            "title": title,
            "ordering": [f"-{column}"],
            "columnsDisplayType": {column: "Number"},
            "hiddenColumns": {"explore": [], "labeling": []},
        }
        views = self._http("GET", "/api/dm/views", params={"project": project}) or []
        if not views:  # Label Studio makes its "Default" tab only for a project with no tab yet
            self._http("POST", "/api/dm/views", json={"project": project, "data": {"title": "Default"}})
        for view in views:
            if (view.get("data") or {}).get("title") == title:
                current = view["data"]
                if (
                    current.get("ordering") != data["ordering"]
                    or (current.get("columnsDisplayType") or {}).get(column) != "Number"
                ):
                    merged = {
                        **current,
                        "ordering": data["ordering"],
                        "columnsDisplayType": {**(current.get("columnsDisplayType") or {}), column: "Number"},
                    }
                    self._http("PATCH", f"/api/dm/views/{view['id']}", json={"project": project, "data": merged})
                return int(view["id"])
        created = self._http("POST", "/api/dm/views", json={"project": project, "data": data})
        return int(created["id"])


def _describe(e: Exception) -> str:
    """An SDK error as status and body only: its str() also prints the response headers, and those
    carry session cookies that must not end up in a stored failure reason."""
    status, body = getattr(e, "status_code", None), getattr(e, "body", None)
    if status is None:
        return f"{type(e).__name__}: {e}"
    return f"HTTP {status}: {str(body)[:300]}"


def _error_class(status: int | None) -> type[LabelStudioUnavailable]:
    """A 4xx is a refusal of this request (408 and 429 only ask us to come back later)."""
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return LabelStudioRefused
    return LabelStudioUnavailable
