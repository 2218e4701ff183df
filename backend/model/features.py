"""Encoder outputs per task: fetched, decoded, encoded once, cached in Redis.

Two levels of keys so a changed media file is re-encoded and an unchanged one never is:
  ref key  (encoder id + where the media is, incl. mtime for files) -> content digest
  feat key (encoder id + content digest)                              -> float16 tokens
Ref keys of http(s) URLs expire after `url_revalidate_s`, so a URL whose content
changed is fetched again; if its bytes are the same, the features are reused.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import redis

from backend.config import Settings
from backend.errors import MediaError, OutOfTime
from backend.labelstudio.labelconfig import LabelConfig, ObjectTag
from backend.model.encoders import Array, Encoders
from backend.model.media import MediaFetcher, MediaRef, decode_audio, decode_image, decode_text
from backend.store import keys

log = logging.getLogger(__name__)

# One item per encoder call: batched calls change an item's features in the last bits (padding
# length, kernel choice by batch size), so a task's features, model and priorities would depend
# on what it happened to be encoded with. One at a time, features are a function of the media
# alone and a rebuild from Label Studio reproduces the same state, at some cost in throughput.
ENCODE_BATCH = 1
FETCH_THREADS = 8
FETCH_BATCH = 2 * FETCH_THREADS  # media fetched, decoded and encoded before the next batch starts

TaskFeatures = dict[str, Array]  # object tag name -> (tokens, dim)
SPEECH_SUFFIX = ".speech"  # feature name of what an audio object's clip says
MEDIA_OF = {"speech": "audio"}  # the speech encoder reads the audio object's clip


def feature_objects(config: LabelConfig, encoders: Encoders) -> list[ObjectTag]:
    """What gets encoded per task: the config's objects, plus a speech twin of each audio object
    when a speech encoder is loaded (same data key and clip, its own features)."""
    objects = list(config.objects)
    if encoders.speech is not None:
        audio = [o for o in config.objects if o.modality == "audio"]
        objects += [replace(o, name=o.name + SPEECH_SUFFIX, modality="speech") for o in audio]
    return objects


def object_means(rows: Sequence[TaskFeatures], objects: Sequence[tuple[str, int]]) -> dict[str, Array]:
    """Per (object name, width): each task's mean token, L2-normalised, (N, width); zeros where a
    task lacks the object. The model-free view of a task: LSB's space before training, and what
    relevance.py probes."""
    out = {}
    for name, dim in objects:
        block = np.zeros((len(rows), dim), np.float32)
        present = [r for r, feats in enumerate(rows) if name in feats]
        if present:
            means = np.stack([rows[r][name].mean(0) for r in present])
            block[present] = means / (np.linalg.norm(means, axis=1, keepdims=True) + 1e-8)
        out[name] = block
    return out


@dataclass
class Featurized:
    """Per task, in input order: its features, or the reason it could not be encoded."""

    features: list[TaskFeatures | None]
    errors: dict[int, str] = field(default_factory=dict)  # position -> reason
    deferred: set[int] = field(default_factory=set)  # positions left unencoded when time ran out
    encoded: int = 0  # media items that had to be encoded (cache misses)


@dataclass
class _Item:
    pos: int
    obj: ObjectTag
    ref: MediaRef
    ref_key: str
    digest: str | None = None


def pack(a: Array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a.astype(np.float16), allow_pickle=False)
    return buf.getvalue()


NPY_V1 = b"\x93NUMPY\x01\x00"  # what np.save writes for arrays with short headers, i.e. ours


def unpack(b: bytes) -> Array:
    # np.load parses the text header with ast.literal_eval on every call, which costs more than
    # the data itself for these small arrays; the headers repeat (one per shape), so parse each once.
    if b.startswith(NPY_V1) and len(b) >= 10:
        end = 10 + int.from_bytes(b[8:10], "little")
        dtype, shape, order = _npy_layout(b[:end])
        flat = np.frombuffer(b, dtype=dtype, count=math.prod(shape), offset=end)
        return flat.reshape(shape, order=order).astype(np.float32)
    return np.load(io.BytesIO(b), allow_pickle=False).astype(np.float32)


@lru_cache(maxsize=1024)
def _npy_layout(header: bytes) -> tuple[np.dtype[Any], tuple[int, ...], Literal["C", "F"]]:
    """dtype, shape and memory order of a version 1.0 .npy header (numpy's own parser)."""
    fp = io.BytesIO(header)
    np.lib.format.read_magic(fp)
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
    if dtype.hasobject:  # np.load refuses these without allow_pickle; so do we
        raise ValueError("object arrays cannot be loaded when allow_pickle=False")
    return dtype, shape, "F" if fortran_order else "C"


class FeatureStore:
    def __init__(
        self, r: redis.Redis, settings: Settings, encoders: Encoders, fetcher: MediaFetcher, memory: MemoryCache
    ) -> None:
        self.r, self.settings, self.encoders, self.fetcher, self.memory = r, settings, encoders, fetcher, memory

    def featurize(self, tasks: Sequence[dict[str, Any]], config: LabelConfig, until: float | None = None) -> Featurized:
        """tasks: Label Studio tasks ({"id", "data"}). Never raises for one bad task. Past `until`
        (time.monotonic()), media not yet fetched are left and their tasks marked deferred; the
        first batch of fetches always runs, so every call makes progress."""
        out = Featurized(features=[{} for _ in tasks])
        self._task_ids = [task.get("id") for task in tasks]  # for the log: which task a failure is
        items = self._resolve(tasks, config, out)
        self._lookup_digests(items)
        missing = [it for it in items if it.digest is None]
        self._fetch_and_encode(missing, out, until)
        out.deferred -= set(out.errors)
        self._load([it for it in items if it.pos not in out.deferred], out)
        for pos in (*out.errors, *out.deferred):
            out.features[pos] = None
        return out

    # -- steps

    def _resolve(self, tasks: Sequence[dict[str, Any]], config: LabelConfig, out: Featurized) -> list[_Item]:
        items = []
        objects = feature_objects(config, self.encoders)
        for pos, task in enumerate(tasks):
            data = task.get("data") or {}
            present = [o for o in objects if data.get(o.value_key) not in (None, "")]
            if not present:
                keys = sorted({o.value_key for o in config.objects})
                out.errors[pos] = f"task data has none of the keys {keys}"
                continue
            try:
                for obj in present:
                    items.append(self._item(pos, obj, data[obj.value_key]))
            except MediaError as e:
                out.errors[pos] = f"{obj.name}: {e}"
        return [it for it in items if it.pos not in out.errors]

    def _item(self, pos: int, obj: ObjectTag, value: Any) -> _Item:
        if not isinstance(value, str):
            raise MediaError(f"expected a string in data.{obj.value_key}, got {type(value).__name__}")
        inline = obj.modality == "text" and not obj.text_is_url
        ref = self.fetcher.resolve(value, inline_text=inline)
        enc_id = self.encoders.for_modality(obj.modality).id
        return _Item(pos, obj, ref, keys.media_ref(enc_id, _sha(self.fetcher.cache_key(ref))))

    def _lookup_digests(self, items: list[_Item]) -> None:
        if not items:
            return
        for it, digest in zip(items, self.r.mget([it.ref_key for it in items]), strict=True):
            it.digest = digest.decode() if digest else None

    def _fetch_and_encode(self, items: list[_Item], out: Featurized, until: float | None) -> None:
        # One fetch and decode per media file, however many tasks or encoders read it; a batch at
        # a time, so memory holds one batch of decoded media, not the request's.
        unique: dict[tuple[str, str], list[_Item]] = {}
        for it in items:
            unique.setdefault(self._media_key(it), []).append(it)
        groups = list(unique.values())
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            for start in range(0, len(groups), FETCH_BATCH):
                batch = groups[start : start + FETCH_BATCH]
                if start and until is not None and time.monotonic() >= until:
                    out.deferred.update(it.pos for group in groups[start:] for it in group)
                    return
                deadline = [until if start else None] * len(batch)  # the first batch always runs
                decoded = pool.map(self._fetch_decode, [g[0] for g in batch], deadline)
                self._encode_batch(list(zip(batch, decoded, strict=True)), out)

    def _encode_batch(self, batch: list[tuple[list[_Item], tuple[Any, str] | MediaError]], out: Featurized) -> None:
        by_modality: dict[str, list[tuple[_Item, Any, str]]] = {}
        for group, result in batch:
            for it in group:
                if isinstance(result, OutOfTime):
                    out.deferred.add(it.pos)
                elif isinstance(result, MediaError):
                    out.errors.setdefault(it.pos, f"{it.obj.name}: {result}")
                    log.warning("task %s: %s: %s", self._task_ids[it.pos], it.obj.name, result)
                else:
                    by_modality.setdefault(it.obj.modality, []).append((it, *result))
        pipe = self.r.pipeline(transaction=False)
        for modality, group in by_modality.items():
            self._encode_group(modality, group, pipe, out)
        pipe.execute()

    def _media_key(self, it: _Item) -> tuple[str, str]:
        return self.fetcher.cache_key(it.ref), MEDIA_OF.get(it.obj.modality, it.obj.modality)

    def _fetch_decode(self, it: _Item, until: float | None) -> tuple[Any, str] | MediaError:
        s = self.settings
        decoders: dict[str, Callable[[bytes], Any]] = {
            "image": lambda b: decode_image(b, s.image_max_pixels),
            "audio": lambda b: decode_audio(b, self.encoders.audio_sample_rate, s.audio_max_s),
            "text": lambda b: decode_text(b, s.text_max_chars),
        }
        try:
            raw = self.fetcher.fetch(it.ref, until)
            return decoders[MEDIA_OF.get(it.obj.modality, it.obj.modality)](raw), hashlib.sha256(raw).hexdigest()
        except MediaError as e:
            return e

    def _encode_group(self, modality: str, group: list[tuple[_Item, Any, str]], pipe: Any, out: Featurized) -> None:
        encoder = self.encoders.for_modality(modality)
        ttl = {"url": self.settings.url_revalidate_s}
        # Same bytes under several refs are encoded once, and never again once their features are
        # stored (a file moved, or uploaded again under a new URL, only costs its fetch).
        unique = {digest: media for _, media, digest in group}
        check = self.r.pipeline(transaction=False)
        for digest in unique:
            check.exists(keys.features(encoder.id, digest))
        stored = check.execute()
        unique = {d: media for (d, media), found in zip(unique.items(), stored, strict=True) if not found}
        digests = list(unique)
        for start in range(0, len(digests), ENCODE_BATCH):
            chunk = digests[start : start + ENCODE_BATCH]
            for digest, tokens in zip(chunk, encoder.encode([unique[d] for d in chunk]), strict=True):
                pipe.set(keys.features(encoder.id, digest), pack(tokens), ex=keys.FEATURE_TTL_S)
        for it, _, digest in group:
            pipe.set(it.ref_key, digest, ex=ttl.get(it.ref.source, keys.FEATURE_TTL_S))
            it.digest = digest
        out.encoded += len(digests)

    def _load(self, items: list[_Item], out: Featurized) -> None:
        items = [it for it in items if it.pos not in out.errors and it.digest]
        if not items:
            return
        names = [keys.features(self.encoders.for_modality(it.obj.modality).id, it.digest) for it in items]
        arrays = self.memory.get_many(names)
        missing = sorted({k for k in names if k not in arrays})  # media shared by tasks travel once
        for key, blob in zip(missing, self.r.mget(missing) if missing else [], strict=True):
            if blob is not None:
                arrays[key] = self.memory.put(key, unpack(blob))
        for it, key in zip(items, names, strict=True):
            if key not in arrays:  # evicted between lookup and load: rare, and only this task pays
                out.errors.setdefault(it.pos, f"{it.obj.name}: cached features vanished, retry")
                continue
            feats = out.features[it.pos]
            if feats is not None:
                feats[it.obj.name] = arrays[key]


class MemoryCache:
    """Decoded features kept in this process (keys name content digests, so entries never go
    stale): a worker rescoring a project at every label reads Redis only for what is new.
    The arrays are shared between tasks and calls: read them, never change them in place."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._data: OrderedDict[str, Array] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, Array]:
        with self._lock:
            found = {k: self._data[k] for k in keys if k in self._data}
            for k in found:
                self._data.move_to_end(k)
        return found

    def put(self, key: str, value: Array) -> Array:
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self.size += value.nbytes
            while self.size > self.max_bytes and self._data:
                self.size -= self._data.popitem(last=False)[1].nbytes
        return value


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
