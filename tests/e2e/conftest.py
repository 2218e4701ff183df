"""End-to-end fixtures: one real Label Studio 1.23.2 per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
# The helper module sits beside this file; make it importable as `labelstudio_server`
# whatever import mode or package layout pytest ends up using.
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from labelstudio_server import LabelStudioServer, ensure_labelstudio_venv  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Hooks in a conftest see the whole session's items, so mark only the ones under this folder.
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A running Label Studio (installed on first use); `.url`, `.token`, `.api` for the helpers.

    A failed install or start-up is an error with the reason, never a skip: these tests are
    the only check of the real protocol.
    """
    executable = ensure_labelstudio_venv()
    server = LabelStudioServer(tmp_path_factory.mktemp("labelstudio"), executable=executable)
    with server:
        yield server
