"""The command line turns bad input and unreachable services into one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from broaden import cli


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch):
    """Settings are read from the environment once per command: set them here."""
    return monkeypatch


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


def test_status_with_redis_down_says_so_in_one_line(settings_from_env) -> None:
    settings_from_env.setenv("REDIS_URL", "redis://:s3cret@127.0.0.1:9/0")  # discard port: nothing listens
    with pytest.raises(SystemExit, match=r"^broaden status: cannot reach Redis at redis://127\.0\.0\.1:9/0 ") as e:
        cli.main(["status"])
    assert "set REDIS_URL" in str(e.value) and "s3cret" not in str(e.value) and "\n" not in str(e.value)


def test_a_bad_setting_names_the_variable(settings_from_env) -> None:
    settings_from_env.setenv("BROADEN_LSB_K", "ten")
    settings_from_env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(SystemExit, match=r"^broaden status: bad setting: BROADEN_LSB_K='ten': .*integer"):
        cli.main(["status"])


def test_simulate_without_the_lab_extra_names_it(tmp_path: Path) -> None:
    """The server install has no scikit-learn or matplotlib: simulate says which extra to install."""
    import subprocess
    import sys

    code = (
        "import importlib.util; real = importlib.util.find_spec\n"  # as if matplotlib were not installed
        "importlib.util.find_spec = lambda n, *a: None if n == 'matplotlib' else real(n, *a)\n"
        "from broaden import cli; cli.main(['simulate', 'm.jsonl', '--out', 'o'])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().endswith(
        "broaden simulate: needs the lab extra (matplotlib missing): pip install 'broaden[lab]'"
    )


def test_the_server_install_leaves_the_offline_tools_to_an_extra() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert not names & {"matplotlib", "rich"}
    assert "scikit-learn" in names  # training's object probes (backend/model/relevance.py)
    assert {d.split(">")[0] for d in project["optional-dependencies"]["lab"]} == {"matplotlib"}
