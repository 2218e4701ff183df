"""What a process builds once and passes to everything it runs: settings, Redis, the Label
Studio client and the predictor (the frozen encoders). The web app keeps one on its state;
a worker builds one before its first job (`workers.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient

if TYPE_CHECKING:  # the predictor pulls in torch; only `build` loads it
    from backend.model.encoders import Encoders
    from backend.model.predictor import Predictor


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: redis.Redis
    labelstudio: LabelStudioClient
    predictor: Predictor

    @classmethod
    def build(cls, settings: Settings, r: redis.Redis | None = None, encoders: Encoders | None = None) -> Runtime:
        """Connect and load the encoders (the slow part: seconds). Pass `encoders` to share loaded ones."""
        from backend.model.encoders import load_encoders
        from backend.model.predictor import Predictor

        r = r if r is not None else redis.Redis.from_url(settings.redis_url)
        ls = LabelStudioClient(settings)
        encoders = encoders if encoders is not None else load_encoders(settings)
        return cls(settings, r, ls, Predictor(settings, encoders, r, media_headers=ls.auth_headers))
