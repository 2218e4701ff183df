"""The model behind the ML backend protocol: `predict(tasks, ...)` and `fit(...)`.

One object per process holds the frozen encoders and a small cache of trained
fusion models (keyed by version); per-project state lives in Redis.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import redis
import torch

from backend.config import Settings
from backend.encoders import Encoders
from backend.errors import PayloadError
from backend.features import FeatureStore, Featurized
from backend.labelconfig import ChoicesControl, LabelConfig, parse_label_config
from backend.labelstudio import auth_headers
from backend.media import MediaFetcher
from backend.model import VLMAE, collate
from backend.schemas import Prediction, Region
from backend.state import ProjectState
from backend.training import from_bytes, train

log = logging.getLogger(__name__)

# Cold start: cosine similarity between the task's text and each label name, sharpened
# by this factor before the softmax. Kept low so zero-shot scores stay modest.
ZERO_SHOT_SCALE = 10.0
MODEL_CACHE_SIZE = 16
PREDICT_BATCH = 256


class Predictor:
    def __init__(self, settings: Settings, encoders: Encoders, r: redis.Redis):
        self.settings, self.encoders, self.r = settings, encoders, r
        self._models: OrderedDict[str, VLMAE] = OrderedDict()
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

    def predict(self, tasks: list[dict[str, Any]], config: LabelConfig, project: int | None) -> list[Prediction]:
        """One prediction per task, in order; a task that cannot be encoded gets an empty result."""
        out: list[Prediction] = []
        for start in range(0, len(tasks), PREDICT_BATCH):
            out += self._predict_batch(tasks[start : start + PREDICT_BATCH], config, project)
        return out

    def fit(self, project: int, tasks: list[dict[str, Any]], label_config: str) -> dict[str, Any]:
        """Train on the annotated tasks given (full Label Studio tasks with annotations)."""
        from backend.training import labels_from_annotations, to_bytes

        config = parse_label_config(label_config)
        labelled = [(t, labels_from_annotations(t.get("annotations") or [], config)) for t in tasks]
        labelled = [(t, lab) for t, lab in labelled if any(x is not None for x in lab)]
        if not labelled:
            return {"status": "no labels", "trained_on": 0}
        feats = self.featurize([t for t, _ in labelled], config)
        keep = [(f, lab) for f, (_, lab) in zip(feats.features, labelled, strict=True) if f is not None]
        if not keep:
            return {"status": "no encodable labelled tasks", "trained_on": 0, "errors": len(feats.errors)}
        trained = train([f for f, _ in keep], [lab for _, lab in keep], config, self.encoders, self.settings)
        info = {"fingerprint": config.fingerprint, "trained_on": trained.n_train, "fusion": self.settings.fusion}
        ProjectState(self.r, project).set_model(trained.version, to_bytes(trained.model), info)
        self._remember(trained.version, trained.model)
        return {"status": "trained", "model_version": trained.version, **info, "skipped": len(feats.errors)}

    # -- internals

    def featurize(self, tasks: list[dict[str, Any]], config: LabelConfig) -> Featurized:
        with MediaFetcher(self.settings, headers=auth_headers(self.settings)) as fetcher:
            return FeatureStore(self.r, self.settings, self.encoders, fetcher).featurize(tasks, config)

    def _predict_batch(self, tasks: list[dict[str, Any]], config: LabelConfig, project: int | None) -> list[Prediction]:
        feats = self.featurize(tasks, config)
        for pos, reason in feats.errors.items():
            log.warning("task %s: no prediction: %s", tasks[pos].get("id"), reason)
        ok = [i for i, f in enumerate(feats.features) if f is not None]
        trained = self._trained(project, config)
        version = trained[0] if trained else self.zero_shot_version(config)
        probs: list[list[np.ndarray] | None] = [None] * len(tasks)
        if ok and trained:
            model = trained[1]
            with torch.inference_mode():
                batch = collate([feats.features[i] for i in ok], model.cfg)  # type: ignore[misc]
                per_head = [p.numpy() for p in model.probabilities(model(batch))]
            for row, i in enumerate(ok):
                probs[i] = [p[row] for p in per_head]
        elif ok:
            for i in ok:
                probs[i] = self._zero_shot(feats.features[i] or {}, config)
        return [self._prediction(p, config, version) for p in probs]

    def _trained(self, project: int | None, config: LabelConfig) -> tuple[str, VLMAE] | None:
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

    def _remember(self, version: str, model: VLMAE) -> None:
        self._models[version] = model
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)

    def _zero_shot(self, features: dict[str, np.ndarray], config: LabelConfig) -> list[np.ndarray] | None:
        """Softmax over cosine(task text, label name) per single-choice control; None without text."""
        texts = [features[o.name][0] for o in config.objects if o.kind == "text" and o.name in features]
        if not texts:
            return None
        query = np.mean(texts, 0)
        query = query / (np.linalg.norm(query) + 1e-8)
        out = []
        for control in config.controls:
            sims = self._labels_vectors(control) @ query
            logits = ZERO_SHOT_SCALE * sims
            p = np.exp(logits - logits.max())
            out.append(p / p.sum() if not control.multiple else np.full(len(control.labels), np.nan))
        return out

    def _labels_vectors(self, control: ChoicesControl) -> np.ndarray:
        key = (self.encoders.text.id, *control.labels)
        if key not in self._label_vectors:
            vecs = np.concatenate(self.encoders.text.encode(list(control.labels)))
            self._label_vectors[key] = vecs / (np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-8)
        return self._label_vectors[key]

    @staticmethod
    def _prediction(probs: list[np.ndarray] | None, config: LabelConfig, version: str) -> Prediction:
        if probs is None:
            return Prediction(result=[], score=None, model_version=version)
        regions = []
        for control, p in zip(config.controls, probs, strict=True):
            if np.isnan(p).any():
                continue  # this control has no honest prediction (multi-choice at cold start)
            if control.multiple:
                chosen = [i for i in np.argsort(-p) if p[i] >= 0.5]
                score = float(np.mean([p[i] for i in chosen])) if chosen else None
            else:
                chosen = [int(np.argmax(p))]
                score = float(p[chosen[0]])
            if chosen and score is not None:
                regions.append(Region(
                    from_name=control.name, to_name=control.to_name,
                    value={"choices": [control.labels[i] for i in chosen]}, score=round(score, 4),
                ))
        score = round(float(np.mean([r.score for r in regions])), 4) if regions else None
        return Prediction(result=regions, score=score, model_version=version)
