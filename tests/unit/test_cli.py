"""The command line turns bad input and unreachable services into one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import get_settings
from broaden import cli


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch):
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_demo_data_with_a_bad_option_says_which(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^broaden demo-data: n_items must be at least 4"):
        cli.main(["demo-data", "--out", str(tmp_path / "d"), "--items", "2"])


def test_backfill_without_label_studio_says_what_to_set(settings_from_env) -> None:
    settings_from_env.delenv("LABEL_STUDIO_URL", raising=False)
    with pytest.raises(SystemExit, match="set LABEL_STUDIO_URL"):
        cli.main(["backfill", "--project", "1"])


def test_backfill_with_label_studio_down_names_the_url(settings_from_env) -> None:
    settings_from_env.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    settings_from_env.setenv("LABEL_STUDIO_API_KEY", "a-legacy-token")
    with pytest.raises(SystemExit, match=r"^broaden backfill: GET http://127\.0\.0\.1:9/api/tasks"):
        cli.main(["backfill", "--project", "1"])


def test_a_bad_setting_names_the_variable(settings_from_env) -> None:
    settings_from_env.setenv("BROADEN_LSB_K", "ten")
    settings_from_env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(SystemExit, match=r"^broaden status: bad setting: BROADEN_LSB_K='ten': .*integer"):
        cli.main(["status"])
