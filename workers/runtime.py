"""What a worker process loads once and every job reuses: settings, Redis, the predictor."""

from __future__ import annotations

from functools import lru_cache

import redis

from backend.config import get_settings
from backend.encoders import load_encoders
from backend.predictor import Predictor


@lru_cache(maxsize=1)
def predictor() -> Predictor:
    settings = get_settings()
    r = redis.Redis.from_url(settings.redis_url)
    return Predictor(settings, load_encoders(settings), r)
