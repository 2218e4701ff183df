"""The Label Studio fixture itself: media upload, task import, authenticated media download."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from backend.lab.labelstudio_server import LabelStudioServer, data_keys

REPO = Path(__file__).resolve().parents[2]

# Used only while the project's own label_config.xml does not exist yet.
FALLBACK_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Text name="caption" value="$caption"/>
  <Audio name="audio" value="$audio"/>
  <Choices name="label" toName="image" choice="single">
    <Choice value="cat"/>
    <Choice value="dog"/>
  </Choices>
</View>"""


def _label_config() -> str:
    path = REPO / "label_config.xml"
    return path.read_text() if path.is_file() else FALLBACK_CONFIG


def _data_key(config: str, tag: str) -> str:
    """The task data key the config's first <tag> reads, e.g. "image" for value="$image"."""
    element = ET.fromstring(config).find(f".//{tag}")
    assert element is not None, f"label config has no <{tag}>"
    return element.get("value", "").lstrip("$")


def _write_png(path: Path) -> bytes:
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[:, :24] = (200, 30, 30)  # two halves, so a broken decode would show
    pixels[:, 24:] = (30, 30, 200)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _write_wav(path: Path) -> bytes:
    rate = 16_000
    t = np.arange(rate // 2) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path.read_bytes()


@pytest.fixture(scope="module")
def project(labelstudio: LabelStudioServer) -> int:
    return labelstudio.api.create_project("fixture check", _label_config())


def test_media_upload_and_task_round_trip(labelstudio: LabelStudioServer, project: int, tmp_path: Path) -> None:
    api = labelstudio.api
    config = _label_config()
    png, wav = tmp_path / "red-blue.png", tmp_path / "tone.wav"
    png_bytes, wav_bytes = _write_png(png), _write_wav(wav)

    urls = api.upload_files(project, [png, wav])

    assert set(urls) == {png, wav}
    for url in urls.values():
        assert url.startswith("/data/upload/"), url
    assert api.get_project(project)["task_number"] == 0, "uploading media must not create tasks"

    data = {
        _data_key(config, "Image"): urls[png],
        _data_key(config, "Audio"): urls[wav],
        _data_key(config, "Text"): "a red and a blue rectangle, and a tone",
    }
    task_ids = api.import_tasks(project, [{"data": data}])
    assert len(task_ids) == 1

    tasks = api.list_tasks(project)
    assert [task["id"] for task in tasks] == task_ids
    assert tasks[0]["data"] == data
    assert tasks[0]["predictions"] == [] and tasks[0]["annotations"] == []

    for path, expected in ((png, png_bytes), (wav, wav_bytes)):
        with_token = api.download(urls[path])
        assert with_token.status_code == 200
        assert with_token.content == expected
        # Label Studio 1.23.2 answers 401 (not a login redirect) to an anonymous media request.
        assert api.download(urls[path], authenticated=False).status_code == 401


def test_annotation_shows_in_task_list(labelstudio: LabelStudioServer, project: int) -> None:
    api = labelstudio.api
    config = ET.fromstring(_label_config())
    choices = config.find(".//Choices")
    assert choices is not None
    choice = choices.find("Choice")
    assert choice is not None
    region = {
        "from_name": choices.get("name"),
        "to_name": choices.get("toName"),
        "type": "choices",
        "value": {"choices": [choice.get("value")]},
    }
    # Annotating needs no real media: Label Studio stores the data as given.
    data = {key: f"placeholder {key}" for key in data_keys(_label_config())}
    (task_id,) = api.import_tasks(project, [{"data": data}])

    annotation_id = api.annotate(task_id, [region])

    (task,) = [task for task in api.list_tasks(project) if task["id"] == task_id]
    assert [annotation["id"] for annotation in task["annotations"]] == [annotation_id]
    assert task["annotations"][0]["result"][0]["value"] == region["value"]
    assert task["is_labeled"] is True
