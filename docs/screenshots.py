"""The README's screenshots: the ranked tab of the running demo before and after a few labels.

Starts `broaden demo`, waits until its tasks are pre-labelled and ranked, opens the ranked tab in
headless Chromium and saves a picture; then labels the head of the queue with the demo set's true
labels (as an annotator would), waits for the worker to re-rank, and saves a second picture.

    ./dev run python docs/screenshots.py            # writes docs/img/ranked-before.png, ranked-after.png

Needs Debian's Chromium (`sudo apt-get install chromium`) and the playwright package
(`./dev run pip install playwright`); it drives the system's Chromium, never downloads one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config import Settings  # noqa: E402
from backend.lab.labelstudio_server import DEFAULT_TOKEN, LabelStudioApi  # noqa: E402
from backend.lab.stack import READY  # noqa: E402
from backend.labelstudio.labelconfig import parse_label_config  # noqa: E402

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]  # fmt: skip
N_LABELS = 8  # labels given between the two pictures
# Data Manager columns hidden in the pictures, so that the photo, caption, priority and prediction fit.
HIDDEN = ["inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators",
          "annotations_results", "annotations_ids", "predictions_model_versions", "file_upload",
          "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time", "draft_exists",
          "comment_count", "unresolved_comment_count", "comment_authors", "last_comment_updated_at",
          "predictions_results", "annotations", "predictions", "data.audio"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check, timeout: float = 600, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        time.sleep(every)
    return result


def start_demo(workdir: Path, items: int) -> tuple[subprocess.Popen[str], str, int, tuple[str, str]]:
    """`broaden demo` on free ports; returns it with Label Studio's URL, the project and the login."""
    ls_port, port = free_port(), free_port()
    cmd = [sys.executable, "-m", "broaden.cli", "demo", "--items", str(items), "--dir", str(workdir),
           "--label-studio-port", str(ls_port), "--port", str(port)]  # fmt: skip
    demo = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    lines = []
    for line in demo.stdout:  # until it says it is ready, or exits
        sys.stdout.write(line)
        lines.append(line)
        if READY in line:
            break
    if READY not in "".join(lines):
        raise SystemExit("screenshots: broaden demo did not come up (see its output above)")
    ready = re.search(r"open (\S+)/projects/(\d+)/data and log in as (\S+) / (\S+)", lines[-1])
    url, project, user, password = ready.groups()
    return demo, url, int(project), (user, password)


def ranked(api: LabelStudioApi, project: int, field: str) -> dict[int, float] | None:
    """{task id: priority} once every task is pre-labelled and ranked, else None."""
    tasks = api.list_tasks(project)
    if tasks and all(t["predictions"] and field in t["data"] for t in tasks):
        return {t["id"]: t["data"][field] for t in tasks}
    return None


def shoot(page, url: str, path: Path) -> None:
    page.goto(url, wait_until="domcontentloaded")
    try:
        page.wait_for_selector("text=broaden: most valuable first", timeout=120_000)
    except Exception:
        failed = path.with_suffix(".failed.png")
        page.screenshot(path=str(failed))
        raise SystemExit(f"screenshots: the ranked tab did not show at {page.url}; see {failed}") from None
    page.wait_for_timeout(3000)  # rows and their image thumbnails
    page.screenshot(path=str(path))
    sys.stdout.write(f"saved {path}\n")


def trim_columns(api: LabelStudioApi, project: int) -> int:
    """Hide the HIDDEN columns in the ranked tab; returns the tab's id."""
    views = api.http.get("/api/dm/views", params={"project": project}).json()
    view = next(v for v in views if v["data"]["title"] == Settings().ranked_tab)
    data = {**view["data"], "hiddenColumns": {"explore": [f"tasks:{c}" for c in HIDDEN], "labeling": []}}
    api.http.patch(f"/api/dm/views/{view['id']}", json={"project": project, "data": data}).raise_for_status()
    return int(view["id"])


def log_in(page, url: str, user: str, password: str) -> None:
    page.goto(f"{url}/user/login")
    page.fill("input[name=email]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.click("button[type=submit]")


def label_head(api: LabelStudioApi, project: int, workdir: Path, items: int, field: str, n: int) -> None:
    """The n highest-priority tasks get the demo set's true labels; tasks were imported in manifest order."""
    config = parse_label_config((ROOT / "label_config.xml").read_text())
    truth = [json.loads(line)["label"] for line in (workdir / f"data-{items}" / "manifest.jsonl").open()]
    tasks = sorted(api.list_tasks(project), key=lambda t: t["id"])
    order = {t["id"]: i for i, t in enumerate(tasks)}
    head = sorted(tasks, key=lambda t: -t["data"][field])[:n]
    for t in head:
        chosen = truth[order[t["id"]]]
        result = [{"from_name": c.name, "to_name": c.to_name, "type": "choices", "value": {"choices": [chosen[c.name]]}}
                  for c in config.controls]  # fmt: skip
        api.annotate(t["id"], result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the pictures go")
    parser.add_argument("--items", type=int, default=48, help="demo listings (default 48)")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        raise SystemExit("screenshots: needs Debian's chromium (sudo apt-get install chromium) and playwright "
                         "(./dev run pip install playwright)")  # fmt: skip
    field = Settings().priority_field
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        demo, url, project, (user, password) = start_demo(workdir, args.items)
        try:
            api = LabelStudioApi(url, DEFAULT_TOKEN)
            before = wait_for("the tasks to be pre-labelled and ranked", lambda: ranked(api, project, field))
            tab = trim_columns(api, project)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                log_in(page, url, user, password)
                tab_url = f"{url}/projects/{project}/data?tab={tab}"
                shoot(page, tab_url, args.out / "ranked-before.png")
                label_head(api, project, workdir, args.items, field, N_LABELS)
                wait_for("the queue to be re-ranked", lambda: (now := ranked(api, project, field)) and now != before)
                time.sleep(5)  # a follow-up sync may still be writing
                shoot(page, tab_url, args.out / "ranked-after.png")
                browser.close()
        finally:
            demo.send_signal(signal.SIGINT)
            demo.wait(120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
