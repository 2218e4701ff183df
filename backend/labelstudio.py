"""The one place broaden talks to Label Studio's API (label-studio-sdk's `LabelStudio` client)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from backend.config import Settings
from backend.errors import LabelStudioUnavailable

log = logging.getLogger(__name__)
API_TIMEOUT_S = 30.0


@lru_cache(maxsize=8)
def _client(url: str, api_key: str) -> Any:
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=api_key, timeout=API_TIMEOUT_S)


def client(settings: Settings) -> Any:
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise LabelStudioUnavailable(
            "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set for broaden to read from Label Studio"
        )
    return _client(settings.label_studio_url.rstrip("/"), settings.label_studio_api_key.get_secret_value())


def auth_headers(settings: Settings) -> dict[str, str]:
    """Headers that authenticate a plain HTTP request (a media download) to Label Studio.

    The SDK decides between a legacy token ("Token <key>") and a personal access token
    (a JWT it exchanges for a short-lived access token), so we ask it rather than guess.
    """
    if not settings.label_studio_url or not settings.label_studio_api_key:
        return {}
    try:
        headers = client(settings)._client_wrapper.get_headers()
    except Exception as e:  # the SDK raises its own types for a refused refresh
        raise LabelStudioUnavailable(f"could not authenticate to Label Studio: {type(e).__name__}") from e
    return {"Authorization": headers["Authorization"]}


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else dict(obj)


def label_config(settings: Settings, project: int) -> str:
    """The project's current label config: the truth, whatever a webhook said."""
    try:
        return str(client(settings).projects.get(id=project).label_config)
    except LabelStudioUnavailable:
        raise
    except Exception as e:
        raise LabelStudioUnavailable(f"could not read project {project}: {type(e).__name__}: {e}") from e


def annotated_tasks(settings: Settings, project: int, page_size: int = 500) -> list[dict[str, Any]]:
    """Every task of the project that has annotations, with them (raw data URLs, not resolved)."""
    try:
        pager = client(settings).tasks.list(
            project=project, fields="all", only_annotated=True, resolve_uri=False, page_size=page_size
        )
        return [t for t in map(_dump, pager) if t.get("annotations")]
    except Exception as e:
        raise LabelStudioUnavailable(f"could not list tasks of project {project}: {type(e).__name__}: {e}") from e
