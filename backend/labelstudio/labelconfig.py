"""Read a Label Studio label config: which Choices controls broaden predicts, and from what.

broaden serves classification: every `<Choices>` control whose `toName` is an
object tag it can read. All readable object tags (images, texts, audio) are the
model's inputs, whichever control they belong to, so audio can inform a label
that annotators attach to the image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from backend.errors import UnsupportedConfig

# Object tag -> the modality broaden reads it as. Video frames are not decoded (yet).
OBJECT_MODALITIES = {
    "Image": "image",
    "Text": "text",
    "HyperText": "text",
    "Audio": "audio",
    "AudioPlus": "audio",
}
UNREAD_OBJECTS = {"Video", "TimeSeries", "Paragraphs", "Table", "Pdf", "Markdown", "Chat"}
MAX_CONFIG_CHARS = 1_000_000

Labels = list[list[str] | None]  # one task's labels per Choices control, in config order (None: unlabelled)
Shown = list[tuple[str, list[str], float]]  # a prediction as shown: (control, choices, score) per region


@dataclass(frozen=True)
class ObjectTag:
    name: str
    tag: str
    modality: str  # "image" | "text" | "audio" (and "speech" for a transcript)
    value_key: str  # key in task["data"]
    text_is_url: bool = False  # <Text valueType="url">: the value is a link to the text


@dataclass(frozen=True)
class ChoicesControl:
    name: str
    to_name: str
    labels: tuple[str, ...]
    multiple: bool


@dataclass(frozen=True)
class LabelConfig:
    objects: tuple[ObjectTag, ...]
    controls: tuple[ChoicesControl, ...]
    fingerprint: str  # changes whenever what the model predicts or reads changes


def parse_label_config(xml: str) -> LabelConfig:
    """Parse and validate; raise UnsupportedConfig with a reason a user can act on."""
    if not xml or not xml.strip():
        raise UnsupportedConfig("the label config is empty")
    if len(xml) > MAX_CONFIG_CHARS:
        raise UnsupportedConfig("the label config is larger than 1 MB")
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException) as e:
        raise UnsupportedConfig(f"the label config is not valid XML: {e}") from e

    objects = {o.name: o for o in _objects(root)}
    controls = [c for c in _controls(root) if c.to_name in objects]
    if not controls:
        raise UnsupportedConfig(_why_unsupported(root, objects))
    return LabelConfig(
        objects=tuple(objects.values()),
        controls=tuple(controls),
        fingerprint=_fingerprint(list(objects.values()), controls),
    )


def _objects(root: Element) -> list[ObjectTag]:
    found = []
    for el in root.iter():
        modality = OBJECT_MODALITIES.get(el.tag)
        name, value = el.get("name"), el.get("value", "")
        if modality is None or not name or not value.startswith("$") or len(value) < 2:
            continue  # static text/images in the layout carry no task data
        found.append(
            ObjectTag(
                name=name,
                tag=el.tag,
                modality=modality,
                value_key=value[1:],
                text_is_url=modality == "text" and el.get("valueType", "text") == "url",
            )
        )
    return found


def _controls(root: Element) -> list[ChoicesControl]:
    found = []
    for el in root.iter("Choices"):
        name, to_name = el.get("name"), el.get("toName", "")
        if not name or el.get("perRegion", "false").lower() == "true":
            continue  # per-region choices classify regions, not the task
        if el.get("value", "").startswith("$"):
            continue  # dynamic choices differ per task: no fixed head to train
        labels = tuple(dict.fromkeys(_choice_value(c) for c in el.iter("Choice") if _choice_value(c)))
        if len(labels) < 2 and el.get("choice", "single") != "multiple":
            continue  # one option is no decision
        for target in [t.strip() for t in to_name.split(",") if t.strip()][:1]:
            found.append(
                ChoicesControl(
                    name=name,
                    to_name=target,
                    labels=labels,
                    multiple=el.get("choice", "single") == "multiple",
                )
            )
    return found


def _choice_value(el: Element) -> str:
    # Label Studio stores the alias in results when one is set.
    return (el.get("alias") or el.get("value") or "").strip()


def _why_unsupported(root: Element, objects: dict[str, ObjectTag]) -> str:
    tags = {el.tag for el in root.iter()}
    if "Choices" not in tags:
        return (
            "broaden predicts classifications: the label config needs a <Choices> control "
            f"(found controls: {sorted(tags & CONTROL_TAGS) or 'none'})"
        )
    if not objects:
        unread = sorted(tags & UNREAD_OBJECTS)
        return (
            "no object broaden can read: it reads Image, Text, HyperText, Audio and AudioPlus "
            f"tags whose value is a task data key like $image (found: {unread or 'none'})"
        )
    return (
        "no <Choices> control (with two or more fixed <Choice> options, not perRegion) points "
        f"with toName at one of the objects {sorted(objects)}"
    )


CONTROL_TAGS = {"Choices", "Labels", "RectangleLabels", "PolygonLabels", "TextArea", "Rating", "Taxonomy"}


def _fingerprint(objects: list[ObjectTag], controls: list[ChoicesControl]) -> str:
    parts = [f"{o.name}|{o.modality}|{o.value_key}|{o.text_is_url}" for o in objects]
    parts += [f"{c.name}|{c.to_name}|{','.join(c.labels)}|{c.multiple}" for c in controls]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
