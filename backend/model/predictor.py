"""The model behind the ML backend protocol: `predict(tasks, ...)` and `fit(...)`.

One object per process holds the frozen encoders and a small cache of trained
fusion models (keyed by version); per-project state lives in Redis.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
import torch

from backend.config import Settings
from backend.errors import PayloadError
from backend.labelstudio.annotations import labels_from_annotations
from backend.labelstudio.labelconfig import ChoicesControl, LabelConfig, Labels, parse_label_config
from backend.labelstudio.predictions import Prediction, empty, to_prediction
from backend.model.encoders import Encoders
from backend.model.features import FeatureStore, Featurized, MemoryCache, feature_objects, object_means
from backend.model.media import MediaFetcher
from backend.model.training import from_bytes, to_bytes, train
from backend.model.vlmae import Model, collate
from backend.store.state import ProjectState

log = logging.getLogger(__name__)

# Cold start: cosine similarity between the task's text and each label name, sharpened
# by this factor before the softmax. Kept low so zero-shot scores stay modest.
ZERO_SHOT_SCALE = 10.0
MODEL_CACHE_SIZE = 16
PREDICT_BATCH = 256  # tasks per forward pass
PREDICT_CHUNK = 64  # tasks encoded between two looks at the /predict time budget (~15 s uncached with audio)


@dataclass(frozen=True)
class FitResult:
    """What a training run did: `version` is None when nothing was trained."""

    version: str | None
    trained_on: int = 0
    skipped: int = 0  # labelled tasks whose media could not be read
    reason: str = ""  # why nothing was trained


@dataclass
class Scored:
    rows: np.ndarray  # positions (in the input list) of the tasks that could be encoded
    probs: list[np.ndarray]  # per head (len(rows), C); NaN where there is no honest answer
    embeddings: np.ndarray  # (len(rows), d): the latent space for neighbours
    predictions: list[Prediction]  # one per input task, empty result where encoding failed
    version: str
    deferred: list[int] = field(default_factory=list)  # positions left unencoded when time ran out
    frozen: np.ndarray | None = None  # (len(rows), D) encoder features, when LSB searches them too


def forward(model: Model, rows: list[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-head probabilities (N, C) and the latent space (N, d) of encoded tasks, in batches."""
    if not rows:
        return [np.zeros((0, n), np.float32) for _, n, _ in model.cfg.heads], np.zeros((0, model.dim))
    probs: list[list[np.ndarray]] = [[] for _ in model.cfg.heads]
    embs = []
    with torch.inference_mode():
        for start in range(0, len(rows), PREDICT_BATCH):
            batch = collate(rows[start : start + PREDICT_BATCH], model.cfg)
            z = model.embed(batch)
            embs.append(model.space(batch, z).numpy())
            for h, p in enumerate(model.probabilities(model.logits(batch, z))):
                probs[h].append(p.numpy())
    return [np.concatenate(p) for p in probs], np.concatenate(embs)


def pooled_features(rows: list[dict[str, np.ndarray]], config: LabelConfig, encoders: Encoders) -> np.ndarray:
    """Before training, the neighbour space is each object's mean encoder token, L2-normalised and
    concatenated (zeros where an object is missing)."""
    objects = [(o.name, encoders.for_modality(o.modality).dim) for o in feature_objects(config, encoders)]
    parts = list(object_means(rows, objects).values())
    return np.concatenate(parts, 1) if parts else np.zeros((len(rows), 1), np.float32)


def _no_headers() -> dict[str, str]:
    return {}


class Predictor:
    """`media_headers` authenticates media downloads from Label Studio (its client's `auth_headers`)."""

    def __init__(
        self,
        settings: Settings,
        encoders: Encoders,
        r: redis.Redis,
        media_headers: Callable[[], dict[str, str]] = _no_headers,
    ) -> None:
        self.settings, self.encoders, self.r = settings, encoders, r
        self.media_headers = media_headers
        # Decoded encoder outputs kept in this process: rescoring a project reads Redis only for new media.
        self.memory = MemoryCache(settings.feature_memory_mb * 1024 * 1024)
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._label_vectors: dict[tuple[str, ...], np.ndarray] = {}

    # -- protocol

    def setup(self, project: int, label_config: str) -> str:
        config = parse_label_config(label_config)
        ProjectState(self.r, project).set_label_config(label_config)
        return self.model_version(project, config)

    def model_version(self, project: int | None, config: LabelConfig) -> str:
        trained = self._trained(project, config)
        return trained[0] if trained else self.zero_shot_version(config)

    def zero_shot_version(self, config: LabelConfig) -> str:
        digest = hashlib.sha256(f"{self.encoders.text.id}|{config.fingerprint}".encode()).hexdigest()[:10]
        return f"zeroshot-{digest}"

    def config_for(self, project: int | None, label_config: str | None) -> LabelConfig:
        xml = label_config or (ProjectState(self.r, project).label_config() if project is not None else None)
        if not xml:
            raise PayloadError("no label config: send label_config, or connect the project first (/setup)")
        return parse_label_config(xml)

    def predict(
        self, tasks: list[dict[str, Any]], config: LabelConfig, project: int | None, budget_s: float | None = None
    ) -> tuple[list[Prediction], list[int]]:
        """One prediction per task, in order; a task that cannot be encoded gets an empty result.

        Fetching and encoding unseen media is the slow part. Once `budget_s` is spent (fetches
        are cut at it, and it is checked between batches of media), the tasks not yet encoded get
        an empty result and their ids are returned, to be pre-labelled by a worker instead:
        Label Studio gives up on /predict after 100 s and would then store nothing at all. Each
        chunk's first batch always runs, so a request makes progress and can overrun the budget
        by one batch at most (BROADEN_MEDIA_TIMEOUT_S and its encoding).
        """
        until = None if budget_s is None else time.monotonic() + budget_s
        out: list[Prediction] = []
        deferred: list[dict[str, Any]] = []
        for start in range(0, len(tasks), PREDICT_CHUNK):
            chunk = tasks[start : start + PREDICT_CHUNK]
            if start and until is not None and time.monotonic() >= until:
                version = self.model_version(project, config)
                out += [empty(version) for _ in tasks[start:]]
                deferred += tasks[start:]
                break
            scored = self.score(chunk, config, project, until)
            out += scored.predictions
            deferred += [chunk[pos] for pos in scored.deferred]
        return out, [int(t["id"]) for t in deferred if isinstance(t.get("id"), int)]

    def score(
        self, tasks: list[dict[str, Any]], config: LabelConfig, project: int | None, until: float | None = None
    ) -> Scored:
        """Probabilities, embeddings and predictions of the tasks that could be encoded (by `until`)."""
        feats = self.featurize(tasks, config, until)
        for pos, reason in feats.errors.items():
            log.warning("task %s: no prediction: %s", tasks[pos].get("id"), reason)
        ok = [i for i, f in enumerate(feats.features) if f is not None]
        rows = [feats.features[i] or {} for i in ok]
        trained = self._trained(project, config)
        if trained:
            version, model = trained
            probs, emb = forward(model, rows)
        else:
            version = self.zero_shot_version(config)
            probs = self._zero_shot(rows, config)
            emb = pooled_features(rows, config, self.encoders)
        per_task: list[list[np.ndarray] | None] = [None] * len(tasks)
        for row, i in enumerate(ok):
            per_task[i] = [p[row] for p in probs]
        predictions = [to_prediction(p, config, version) for p in per_task]
        frozen = None
        if self.settings.lsb_space == "both":
            frozen = emb if not trained else pooled_features(rows, config, self.encoders)
        ok_rows = np.asarray(ok, dtype=np.int64)
        return Scored(ok_rows, probs, emb, predictions, version, sorted(feats.deferred), frozen)

    def fit(self, project: int, tasks: list[dict[str, Any]], label_config: str) -> FitResult:
        """Train on the annotated tasks given (Label Studio tasks with their annotations)."""
        config = parse_label_config(label_config)
        labels = [labels_from_annotations(t.get("annotations") or [], config) for t in tasks]
        return self.fit_labels(
            project, [{"id": t.get("id"), "data": t.get("data") or {}} for t in tasks], labels, config
        )

    def fit_labels(
        self, project: int, tasks: list[dict[str, Any]], labels: list[Labels], config: LabelConfig
    ) -> FitResult:
        """Train on tasks ({"id", "data"}) with their labels (one list, or None, per control)."""
        pairs = [(t, lab) for t, lab in zip(tasks, labels, strict=True) if any(x is not None for x in lab)]
        if not pairs:
            return FitResult(None, reason="no labels")
        feats = self.featurize([t for t, _ in pairs], config)
        keep = [(f, lab) for f, (_, lab) in zip(feats.features, pairs, strict=True) if f is not None]
        if not keep:
            return FitResult(None, skipped=len(feats.errors), reason="no encodable labelled tasks")
        trained = train([f for f, _ in keep], [lab for _, lab in keep], config, self.encoders, self.settings)
        model = trained.model
        info = {"fingerprint": config.fingerprint, "trained_on": trained.n_train, "fusion": model.fusion,
                "head_fusions": model.head_fusions}  # fmt: skip
        ProjectState(self.r, project).set_model(trained.version, to_bytes(model), info)
        self._remember(trained.version, model)
        return FitResult(trained.version, trained_on=trained.n_train, skipped=len(feats.errors))

    # -- internals

    def featurize(self, tasks: list[dict[str, Any]], config: LabelConfig, until: float | None = None) -> Featurized:
        with MediaFetcher(self.settings, headers=self.media_headers()) as fetcher:
            store = FeatureStore(self.r, self.settings, self.encoders, fetcher, self.memory)
            return store.featurize(tasks, config, until)

    def _trained(self, project: int | None, config: LabelConfig) -> tuple[str, Model] | None:
        if project is None:
            return None
        state = ProjectState(self.r, project)
        version = state.model_version()
        if not version:
            return None
        if version not in self._models:
            if state.model_info().get("fingerprint") != config.fingerprint:
                return None  # trained for another label config: its heads do not fit
            saved = state.model_blob()
            if saved is None:
                return None
            version, blob = saved
            self._remember(version, from_bytes(blob))
        model = self._models[version]
        self._models.move_to_end(version)
        return version, model

    def _remember(self, version: str, model: Model) -> None:
        self._models[version] = model
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)

    def _zero_shot(self, rows: list[dict[str, np.ndarray]], config: LabelConfig) -> list[np.ndarray]:
        """Per head (N, C): softmax over cosine(task text or transcript, label name); uniform where a task
        has neither, NaN for multiple-choice heads (no honest cold-start answer), so no region is emitted."""
        # Transcripts are embedded by the same text encoder, so they answer like captions do.
        text_objs = [o.name for o in feature_objects(config, self.encoders) if o.modality in ("text", "speech")]
        out = []
        for control in config.controls:
            p = np.full((len(rows), len(control.labels)), np.nan if control.multiple else 1 / len(control.labels))
            labels = self._labels_vectors(control)
            for r, feats in enumerate(rows):
                texts = [feats[name][0] for name in text_objs if name in feats]
                if texts and not control.multiple:
                    query = np.mean(texts, 0)
                    logits = ZERO_SHOT_SCALE * (labels @ (query / (np.linalg.norm(query) + 1e-8)))
                    e = np.exp(logits - logits.max())
                    p[r] = e / e.sum()
                elif not control.multiple:
                    p[r] = np.nan  # no text: no zero-shot answer; ranking treats it as uniform
            out.append(p.astype(np.float32))
        return out

    def _labels_vectors(self, control: ChoicesControl) -> np.ndarray:
        key = (self.encoders.text.id, *control.labels)
        if key not in self._label_vectors:
            vecs = np.concatenate(self.encoders.text.encode(list(control.labels)))
            self._label_vectors[key] = vecs / (np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-8)
        return self._label_vectors[key]
