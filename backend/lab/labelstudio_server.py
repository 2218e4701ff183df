"""A real Label Studio 1.23.2 for end-to-end tests, benchmarks and demos.

Label Studio pins Django, redis and rq versions that clash with ours, so it
lives in its own virtual environment under the broaden cache, installed on
first use. `LabelStudioServer` runs it on a free loopback port with a fresh
data directory; `LabelStudioApi` wraps the few REST calls the tests need.

Facts this module relies on were checked against a running 1.23.2:

* Media upload without tasks: `POST /api/projects/{id}/import?commit_to_project=false`
  with multipart files stores the files and returns `file_upload_ids`;
  `GET /api/projects/{id}/file-uploads?ids=[...]` lists them as
  `{"id", "file": "upload/<project>/<uuid8>-<name>", "size"}`, served at
  `/data/<file>`. The import refuses media files outright when the label config
  has more than one data key ("direct file upload supports only one data
  key"), so such projects get their files stored under a companion project
  with the default config. Either way `/data/upload/...` needs the token
  (401 without it), and any user of the organisation may read it.
* `GET /api/tasks?project=N` leaves predictions out; `fields=all` adds
  `predictions` (each with `result`, `score`, `model_version`) and `annotations`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

logger = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_USERNAME = "admin@example.com"
DEFAULT_PASSWORD = "broaden-e2e-password"
# A legacy API token: Label Studio requires more than 5 characters and stores at most 40.
DEFAULT_TOKEN = "broadene2etoken0000000000000000000000000"

_INSTALL_MARKER = ".broaden-install-complete"
_TEMPLATE_DIR = "broaden-db-template"
_DB_NAME = "label_studio.sqlite3"
_UPLOAD_BATCH = 50
# Environment variables handed through to Label Studio; everything else is dropped because
# Label Studio reads bare names too (HOST, PORT, DEBUG, ...) and the test run's own
# PYTHONPATH or VIRTUAL_ENV would leak our packages into its interpreter.
_PASSTHROUGH_ENV = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


# --------------------------------------------------------------------------- install


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where broaden keeps heavy, re-creatable things: `$BROADEN_CACHE_DIR` or ~/.cache/broaden."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("BROADEN_CACHE_DIR") or "~/.cache/broaden").expanduser()


def _venv_executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


def _install_complete(venv: Path) -> bool:
    # The marker is written last, so its presence means pip finished and the import check passed.
    return (
        (venv / _INSTALL_MARKER).is_file()
        and _venv_executable(venv).is_file()
        and (venv / "bin" / "python").exists()  # a dangling symlink means the base python is gone
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so parallel test processes install or write only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process holding %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(cmd: Sequence[str], log_path: Path) -> None:
    """Run a command, appending its output to log_path and echoing milestones to the logger."""
    milestones = ("Collecting", "Installing collected", "Successfully", "ERROR")
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith(milestones):
                logger.info("pip: %s", line.rstrip()[:200])
        returncode = proc.wait()
    if returncode != 0:
        raise RuntimeError(
            f"command failed ({returncode}): {' '.join(cmd)}\n--- last lines of {log_path} ---\n" + log_tail(log_path)
        )


def _install(venv: Path, log_path: Path) -> None:
    if venv.exists():
        logger.info("removing incomplete Label Studio environment %s", venv)
        shutil.rmtree(venv)
    log_path.write_text("")
    started = time.monotonic()
    logger.info("creating %s with %s", venv, sys.executable)
    _run_logged([sys.executable, "-m", "venv", str(venv)], log_path)
    python = str(venv / "bin" / "python")
    logger.info("installing label-studio==%s (about 1 GB; log: %s)", LABEL_STUDIO_VERSION, log_path)
    _run_logged(
        [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            f"label-studio=={LABEL_STUDIO_VERSION}",
        ],
        log_path,
    )
    # pip can succeed yet leave a package that does not import (a wheel for another python):
    # only a working import earns the marker.
    check = "import importlib.metadata as m; print(m.version('label-studio'))"
    version = subprocess.run([python, "-c", check], capture_output=True, text=True, check=True).stdout.strip()
    if version != LABEL_STUDIO_VERSION:
        raise RuntimeError(f"installed label-studio {version}, wanted {LABEL_STUDIO_VERSION}")
    marker = {"label_studio": version, "python": sys.version, "installed_at": time.time()}
    (venv / _INSTALL_MARKER).write_text(json.dumps(marker))
    logger.info("label-studio %s installed in %.0f s", version, time.monotonic() - started)


def ensure_labelstudio_venv(cache_dir: Path | None = None) -> Path:
    """Install label-studio==1.23.2 into its own venv unless already there; return `label-studio`.

    The venv is `<cache>/labelstudio-1.23.2`, made with the interpreter running this code.
    Raises RuntimeError with the tail of the pip log when the install fails.
    """
    root = cache_root(cache_dir)
    venv = root / f"labelstudio-{LABEL_STUDIO_VERSION}"
    if _install_complete(venv):
        return _venv_executable(venv)
    with _file_lock(root / f"labelstudio-{LABEL_STUDIO_VERSION}.lock"):
        # Another process may have finished the install while we waited for the lock.
        if not _install_complete(venv):
            # Said on stderr, not only logged: the first test run is otherwise silent for a minute.
            sys.stderr.write(f"installing Label Studio {LABEL_STUDIO_VERSION} into {venv} (once; about a minute)\n")
            _install(venv, root / f"labelstudio-{LABEL_STUDIO_VERSION}-install.log")
    return _venv_executable(venv)


# --------------------------------------------------------------------------- server


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it if the test runner dies,
    so a killed CI run does not leave Label Studio holding a port."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def can_tie_to_parent() -> bool:
    # Linux delivers the death signal when the forking *thread* exits, so only tie the
    # server to the main thread, which lives as long as the test run.
    return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()


class LabelStudioStartError(RuntimeError):
    """Label Studio did not come up; the message carries the tail of its log."""


class LabelStudioServer:
    """One Label Studio process on 127.0.0.1 with its own data directory.

    Usage::

        with LabelStudioServer(tmp_dir) as ls:
            project = ls.api.create_project("demo", config)

    The first start on a machine runs all migrations (25-110 s); the migrated, empty
    database is then kept beside the install and copied into later data dirs (3-10 s).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        executable: Path | None = None,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        token: str = DEFAULT_TOKEN,
        startup_timeout: float = 180.0,
        migrate_timeout: float = 600.0,
        use_db_template: bool = True,
        port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.fixed_port = port  # None: a free one
        self.executable = Path(executable) if executable is not None else None
        self.username = username
        self.password = password
        self.token = token
        self.startup_timeout = startup_timeout
        # A start without the template runs every migration: 25 s on an idle 2-core machine,
        # 110 s seen under load, so it gets its own, longer limit.
        self.migrate_timeout = max(migrate_timeout, startup_timeout)
        self.use_db_template = use_db_template
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._api: LabelStudioApi | None = None

    # -- public surface

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Label Studio is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> LabelStudioApi:
        if self._api is None:
            self._api = LabelStudioApi(self.url, self.token)
        return self._api

    @property
    def log_path(self) -> Path:
        if self.data_dir is None:
            raise RuntimeError("no data dir yet")
        return self.data_dir / "labelstudio.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, data_dir: Path | None = None) -> LabelStudioServer:
        """Start on a free port with a fresh data dir; return once the API answers with our token."""
        if self.running:
            raise RuntimeError("Label Studio is already running")
        if data_dir is not None:
            self.data_dir = Path(data_dir)
        if self.data_dir is None:
            raise ValueError("start() needs a data_dir")
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            # Start-up wipes and reseeds the directory, so it must be one we own outright.
            raise ValueError(f"Label Studio needs a fresh data dir; {self.data_dir} is not empty")
        if self.executable is None:
            self.executable = ensure_labelstudio_venv()
        started = time.monotonic()
        template = self._template_path()
        seeded = self._prepare_data_dir(template)
        try:
            self._launch_until_ready(self.startup_timeout if seeded else self.migrate_timeout)
        except LabelStudioStartError:
            if not seeded:
                raise
            # A template from an older run must never block the tests: drop it, start clean.
            logger.warning("Label Studio did not start from the database template; starting clean")
            self.stop()
            assert template is not None
            with contextlib.suppress(OSError):
                template.unlink()
            seeded = self._prepare_data_dir(None)
            self._launch_until_ready(self.migrate_timeout)
        if not seeded:
            self._save_template(template)
        self.startup_seconds = time.monotonic() - started
        logger.info("Label Studio ready at %s in %.1f s (data: %s)", self.url, self.startup_seconds, self.data_dir)
        return self

    def stop(self, grace: float = 15.0) -> None:
        """Terminate the whole process group: SIGTERM, then SIGKILL after `grace` seconds."""
        if self._api is not None:
            self._api.close()
            self._api = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("Label Studio ignored SIGTERM for %.0f s; killing it", grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Children left behind (none are expected with --noreload) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _RUNNING.discard(self)
        logger.info("Label Studio stopped (exit %s)", proc.returncode)

    def __enter__(self) -> LabelStudioServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start-up internals

    def _environment(self) -> dict[str, str]:
        assert self.executable is not None and self.data_dir is not None and self.port is not None
        env = {key: os.environ[key] for key in _PASSTHROUGH_ENV if key in os.environ}
        env["PATH"] = f"{self.executable.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "DJANGO_DB": "sqlite",
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                # Our ML backend and its webhook live on loopback, which Label Studio blocks by default.
                "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
                "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
                # No network here: an error reporter would only add timeouts.
                "LABEL_STUDIO_SENTRY_DSN": "",
                "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
                # Sent to the backend as `hostname` in /setup; the default would be localhost:<port>.
                "LABEL_STUDIO_HOST": self.url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _launch_until_ready(self, timeout: float, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self.port = self.fixed_port or free_port()
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except LabelStudioStartError:
                port_taken = "already in use" in log_tail(self.log_path, 20)
                self.stop()
                if not port_taken or attempt == attempts or self.fixed_port:
                    raise
                logger.warning("port %s was taken before Label Studio bound it; retrying", self.port)

    def _spawn(self) -> None:
        assert self.executable is not None and self.data_dir is not None
        cmd = [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        logger.info("starting Label Studio on port %s (log: %s)", self.port, self.log_path)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, so stop() reaches every child
                preexec_fn=die_with_parent if can_tie_to_parent() else None,
            )
        _RUNNING.add(self)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Token {self.token}"}
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise LabelStudioStartError(
                        f"Label Studio exited with {self._proc.returncode} during start-up\n"
                        f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    # /api/version answers before the admin user exists; whoami proves the token works.
                    if client.get("/api/version").status_code == 200:
                        whoami = client.get("/api/current-user/whoami", headers=headers)
                        if whoami.status_code == 200:
                            return
                time.sleep(0.25)
        raise LabelStudioStartError(
            f"Label Studio did not answer within {timeout:.0f} s\n"
            f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
        )

    # -- migrated-database template

    def _template_path(self) -> Path | None:
        if not self.use_db_template or self.executable is None:
            return None
        # Kept inside the install, so a reinstall (other version) throws it away too.
        key = hashlib.sha256(f"{self.username}\0{self.password}\0{self.token}".encode()).hexdigest()[:16]
        return self.executable.parent.parent / _TEMPLATE_DIR / f"{key}.sqlite3"

    def _prepare_data_dir(self, template: Path | None) -> bool:
        """Empty the data dir and seed it with the template database if there is one."""
        assert self.data_dir is not None
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        if template is not None and template.is_file():
            shutil.copyfile(template, self.data_dir / _DB_NAME)
            logger.info("seeded %s from %s", self.data_dir, template)
            return True
        return False

    def _save_template(self, template: Path | None) -> None:
        assert self.data_dir is not None
        if template is None:
            return
        try:
            template.parent.mkdir(parents=True, exist_ok=True)
            partial = template.with_suffix(f".{os.getpid()}.partial")
            # The backup API gives a consistent copy while Label Studio keeps the file open.
            with (
                contextlib.closing(sqlite3.connect(self.data_dir / _DB_NAME)) as src,
                contextlib.closing(sqlite3.connect(partial)) as dst,
            ):
                src.backup(dst)
            os.replace(partial, template)
            logger.info("saved migrated database template %s", template)
        except (OSError, sqlite3.Error) as exc:
            logger.warning("could not save database template %s: %s", template, exc)


_RUNNING: set[LabelStudioServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop(grace=5.0)


# --------------------------------------------------------------------------- API helpers


def data_keys(label_config: str) -> set[str]:
    """The task data keys a label config reads (`value="$key"` on named tags), as Label Studio counts them."""
    keys: set[str] = set()
    for element in ET.fromstring(label_config).iter():
        value = element.get("value", "")
        if element.get("name") and value.startswith("$") and len(value) > 1:
            keys.add(value[1:])
    return keys


class LabelStudioApi:
    """The calls the end-to-end tests make, authenticated with a legacy token.

    Uses the label-studio-sdk client where it fits; plain httpx where the SDK drops
    the response (Data Manager actions) or lacks the call (uploads without tasks).
    """

    def __init__(self, url: str, token: str, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        # Long timeout: retrieve_predictions waits for the backend's /predict (LS allows it 100 s).
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {token}"}, timeout=timeout)
        self._timeout = timeout
        self._sdk: Any = None
        self._media_projects: dict[int, int] = {}

    @property
    def sdk(self) -> Any:
        """label_studio_sdk.LabelStudio, created on first use."""
        if self._sdk is None:
            from label_studio_sdk import LabelStudio

            # No retries: a retried POST (import, annotation) would create duplicates.
            self._sdk = LabelStudio(base_url=self.url, api_key=self.token, timeout=self._timeout, max_retries=0)
        return self._sdk

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelStudioApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            request = response.request
            detail = response.text[:2000]
            raise RuntimeError(f"{request.method} {request.url} -> {response.status_code}: {detail}")
        return response.json()

    # -- projects and media

    def create_project(self, title: str, label_config: str | None = None, **settings: Any) -> int:
        """Create a project; Label Studio wants a title of at least 3 characters."""
        fields: dict[str, Any] = {"title": title, **settings}
        if label_config is not None:
            fields["label_config"] = label_config
        return int(self.sdk.projects.create(**fields).id)

    def get_project(self, project_id: int) -> dict[str, Any]:
        return self._json(self.http.get(f"/api/projects/{project_id}"))

    def upload_files(self, project_id: int, paths: Iterable[Path]) -> dict[Path, str]:
        """Store media files in Label Studio without creating tasks; return their `/data/upload/...` URLs.

        Label Studio serves the URLs only with the token. Files go into the project itself when
        its label config has one data key, else into a companion project (see module docstring).
        """
        paths = [Path(p) for p in paths]
        holder = self._media_project_for(project_id)
        urls: dict[Path, str] = {}
        for start in range(0, len(paths), _UPLOAD_BATCH):
            urls.update(self._upload_batch(holder, paths[start : start + _UPLOAD_BATCH]))
        return urls

    def _media_project_for(self, project_id: int) -> int:
        if project_id in self._media_projects:
            return self._media_projects[project_id]
        config = self.get_project(project_id)["label_config"]
        holder = project_id
        if len(data_keys(config)) > 1:
            # No label config: the default one has no data key, so any media file is accepted.
            holder = self.create_project(f"media for project {project_id}")
            logger.info("project %s has several data keys; its uploads go to project %s", project_id, holder)
        self._media_projects[project_id] = holder
        return holder

    def _upload_batch(self, holder: int, paths: list[Path]) -> dict[Path, str]:
        with contextlib.ExitStack() as stack:
            # One form field per file: Django keeps only the last file of a repeated field name.
            files = [(f"file{i}", (path.name, stack.enter_context(open(path, "rb")))) for i, path in enumerate(paths)]
            response = self.http.post(
                f"/api/projects/{holder}/import", params={"commit_to_project": "false"}, files=files
            )
        ids = self._json(response)["file_upload_ids"]
        listing = self._json(self.http.get(f"/api/projects/{holder}/file-uploads", params={"ids": json.dumps(ids)}))
        by_id = {item["id"]: item for item in listing}
        if len(ids) != len(paths) or set(by_id) != set(ids):
            raise RuntimeError(f"uploaded {len(paths)} files, Label Studio lists {listing}")
        urls: dict[Path, str] = {}
        # Label Studio creates the uploads in form order, so ids line up with paths.
        for path, upload_id in zip(paths, ids, strict=True):
            item = by_id[upload_id]
            if item.get("size") not in (None, path.stat().st_size):
                raise RuntimeError(f"{path}: stored {item['size']} bytes, expected {path.stat().st_size}")
            urls[path] = "/data/" + item["file"].lstrip("/")
        return urls

    def download(self, url: str, *, authenticated: bool = True) -> httpx.Response:
        """GET a Label Studio URL (absolute or `/data/...`), with or without the token."""
        if authenticated:
            return self.http.get(url)
        absolute = url if url.startswith("http") else self.url + url
        return httpx.get(absolute, timeout=30.0)

    # -- tasks, predictions, annotations

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import tasks (either `{"data": {...}, ...}` or bare data dicts); return their ids in order."""
        response = self.sdk.projects.import_tasks(id=project_id, request=tasks, return_task_ids=True)
        return [int(task_id) for task_id in response.task_ids]

    def list_tasks(self, project_id: int, page_size: int = 100) -> list[dict[str, Any]]:
        """All tasks of a project with `annotations` and `predictions` (result, score, model_version)."""
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._json(
                self.http.get(
                    "/api/tasks",
                    params={"project": project_id, "fields": "all", "page": page, "page_size": page_size},
                )
            )
            tasks.extend(body["tasks"])
            if not body["tasks"] or len(tasks) >= body["total"]:
                return tasks
            page += 1

    def get_task(self, task_id: int) -> dict[str, Any]:
        return self._json(self.http.get(f"/api/tasks/{task_id}"))

    def annotate(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> int:
        """Create an annotation as the admin user; return its id."""
        return int(self.sdk.annotations.create(id=task_id, result=result, **fields).id)

    # -- ML backend

    def connect_ml_backend(self, project_id: int, url: str, title: str, *, require_connected: bool = True) -> int:
        """`POST /api/ml`: Label Studio calls the backend's /health and /setup before answering."""
        backend = self.sdk.ml.create(project=project_id, url=url, title=title)
        if require_connected and backend.state != "CO":
            raise RuntimeError(f"ML backend {url} not connected: {backend.state} {backend.error_message}")
        return int(backend.id)

    def retrieve_predictions(self, project_id: int, task_ids: Sequence[int]) -> dict[str, Any]:
        """Run the Data Manager action "Retrieve predictions" on these tasks.

        Synchronous: returns after Label Studio has called the backend's /predict and stored
        the predictions. Tasks that already hold a prediction with the backend's current
        model_version are skipped without calling /predict.
        """
        return self._json(
            self.http.post(
                "/api/dm/actions",
                params={"id": "retrieve_tasks_predictions", "project": project_id},
                json={"selectedItems": {"all": False, "included": list(task_ids)}},
            )
        )

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return self._json(self.http.get("/api/webhooks", params={"project": project_id}))
