"""End-to-end fixtures: one real Label Studio 1.23.2 per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent.parent
# The test modules here import helpers from each other (test_queue, test_predictions):
# make them importable whatever import mode pytest ends up using.
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from backend.lab.labelstudio_server import LabelStudioServer, ensure_labelstudio_venv  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Hooks in a conftest see the whole session's items, so mark only the ones under this folder.
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def labelstudio(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioServer]:
    """A running Label Studio (installed on first use); `.url`, `.token`, `.api` for the helpers.

    A failed install or start-up is an error with the reason, never a skip: these tests are
    the only check of the real protocol.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # the first install says so, rather than a silent minute
        executable = ensure_labelstudio_venv()
    server = LabelStudioServer(tmp_path_factory.mktemp("labelstudio"), executable=executable)
    with server:
        yield server


class Backend:
    """`broaden serve` in a subprocess, configured against the session's Redis and Label Studio."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_dir / "backend.log", "ab")
        cmd = [sys.executable, "-m", "broaden.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited: {(self.log_dir / 'backend.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("backend did not answer /health in 120 s")

    def run_worker(self, timeout: float = 300, **env: str) -> str:
        """One `broaden worker --burst` (with these settings changed): runs what is queued, then
        exits. Returns its log."""
        cmd = [sys.executable, "-m", "broaden.cli", "worker", "--burst"]
        done = subprocess.run(cmd, env={**self.env, **env}, capture_output=True, timeout=timeout, cwd=ROOT)
        out = done.stdout.decode() + done.stderr.decode()
        if done.returncode != 0:
            raise RuntimeError(f"worker failed: {out[-3000:]}")
        return out

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A long-running `broaden worker` in its own process group (to be killed whole)."""
        cmd = [sys.executable, "-m", "broaden.cli", "worker"]
        log = open(self.log_dir / "worker.log", "ab")
        return subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def backend(
    labelstudio: LabelStudioServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LABEL_STUDIO_URL": labelstudio.url,
        "LABEL_STUDIO_API_KEY": labelstudio.token,
        "BROADEN_LOG_LEVEL": "INFO",
        # A 16-task demo rarely makes a model 80% sure; the product default is 0.8.
        "BROADEN_MISPREDICTION_CONFIDENCE": "0.5",
        "BROADEN_LOCK_TTL_S": "6",  # the recovery test kills a worker holding it
        "PYTHONPATH": str(ROOT),
    }
    server = Backend(env, tmp_path_factory.mktemp("backend"))
    server.start()
    yield server
    server.stop()
