"""Settings, read once from the environment (prefix BROADEN_, plus Label Studio's own names)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

Fusion = Literal["attention", "mean", "none", "auto", "mixed"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROADEN_", extra="ignore", populate_by_name=True)

    # Shared with Label Studio's own conventions (no prefix).
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL"))
    label_studio_url: str | None = Field(None, validation_alias=AliasChoices("LABEL_STUDIO_URL"))
    label_studio_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("LABEL_STUDIO_API_KEY"))
    basic_auth_user: str | None = Field(None, validation_alias=AliasChoices("BASIC_AUTH_USER"))
    basic_auth_pass: SecretStr | None = Field(None, validation_alias=AliasChoices("BASIC_AUTH_PASS"))

    host: str = "0.0.0.0"
    port: int = 9090
    log_level: str = "INFO"

    # Encoders: "default" is the packaged, offline set; anything else is a Hugging Face
    # checkpoint name or a local directory saved with save_pretrained.
    image_encoder: str = "default"
    text_encoder: str = "default"
    audio_encoder: str = "default"
    # "auto": attention or mean pooling per project, by held-out fit on its labels; "mixed": members
    # alternate attention and mean pooling, their probabilities averaged (training.py).
    fusion: Fusion = "attention"
    # With the packaged Whisper: also transcribe speech and embed the words with the text encoder.
    transcribe: bool = True
    torch_threads: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1))
    # Where assembled model files live (the packaged Whisper-base is stored in two parts).
    cache_dir: str = Field(default_factory=lambda: os.path.expanduser("~/.cache/broaden"))

    # Media: where local paths may be read from (os.pathsep-separated), and the limits.
    media_roots: str = ""
    # Hosts media URLs may be fetched from besides Label Studio's own (backend/model/allowlist.py):
    # names, "*.suffix", addresses or networks, or "*" for any public host. Empty: Label Studio only.
    media_hosts: str = ""
    media_timeout_s: float = 15.0
    media_max_bytes: int = 50 * 1024 * 1024
    image_max_pixels: int = 64_000_000
    audio_max_s: float = 30.0
    text_max_chars: int = 20_000
    # Decoded encoder outputs kept in each process, so rescoring a project reads Redis only for new media.
    feature_memory_mb: int = 1024
    # How long an http(s) URL's content is trusted before it is fetched again to see if it changed.
    url_revalidate_s: int = 3600

    # Larger request bodies are refused (413) before they are parsed.
    max_body_mb: float = 32.0

    # /predict encodes unseen media for at most this long; a worker pre-labels the rest.
    # Label Studio waits 100 s for /predict.
    predict_budget_s: float = 60.0

    # Training of the fusion layer and head.
    train_epochs: int = 60
    # ...and at most this many optimiser steps: past it, more labels meant more steps, and the
    # audio-decided label over-fitted (900 labels: recall@80%P 0.07 at 900 steps, 0.71 at 120;
    # BENCHMARKS.md, "Training: step budget and many labels").
    # 120 is what 60 epochs give up to 128 labels.
    train_max_steps: int = 120
    train_batch_size: int = 64
    train_lr: float = 3e-3
    # Heads that lean on photo and text, not on audio, read each task without its audio. Without
    # it, such a label paid 1-2 points of macro-F1 for the audio (BENCHMARKS.md, "Heads the audio
    # does not decide").
    train_audio_free_heads: bool = True
    # Each head reads only the objects whose linear probe tells it something (cross-validated AUC
    # on the project's labels), so that a rare label does not drown among objects that do not carry
    # it. Off by default: on random labels it found the reviews set's rare label, but it was mixed
    # on clips, cost look-alikes, and fell behind early in active learning on market (BENCHMARKS.md,
    # "Objects each head reads").
    train_head_objects: bool = False
    # Models trained alike from seeds seed, seed+1, ...; their probabilities are averaged. With a
    # few rare positives, the training seed alone moved recall@80%P from 0.33 to 0.00 on the same
    # labels; three steadied the ranking, for about twice a sync's training and scoring
    # (BENCHMARKS.md, "Training seeds"). 1 is the fast choice.
    train_members: int = Field(default=3, ge=1, le=8)
    seed: int = 0

    # Ranking (LSB). Defaults chosen by the backtests in BENCHMARKS.md.
    strategy: Literal["random", "margin", "entropy", "seals", "lsb", "lsb-lt", "lsb+uncertainty", "lsb-pool"] = (
        "lsb-pool"
    )
    lsb_k: int = 10  # lsb-pool: neighbours of every labelled task; twice that around each seed
    lsb_threshold: float | None = None  # LSB-LT: keep only seed neighbours at least this similar
    lsb_share: float = 0.5  # share of the leading queue slots given to seed neighbours
    # lsb-pool: the seeds' neighbours most uncertain first, or likeliest to hold a hunted label
    # first. "likely" labelled near-copies of the positives already found: behind "uncertain" on
    # every set of the suite (BENCHMARKS.md, "On the benchmark suite").
    lsb_seed_order: Literal["uncertain", "likely"] = "uncertain"
    # lsb-pool: where the seeds' neighbours are searched: the model's fused space, or also the
    # frozen encoder features, whose looser neighbourhoods reach sub-types not labelled yet.
    lsb_space: Literal["fused", "both"] = "fused"
    # Labels to hunt, "control:Label,...". Empty: every label rarer than half a uniform share.
    targets: str = ""
    # A labelled task whose earlier prediction was this confident and wrong becomes a seed.
    misprediction_confidence: float = 0.8
    lock_ttl_s: int = 60  # a killed worker's project lock frees itself after this long
    # Every this many seconds one worker asks for a full sync of each connected project, catching
    # labels whose webhook was lost (0: never).
    reconcile_s: float = 900.0
    # A newly connected project encodes this many of its tasks first and ranks them, so the head
    # of its queue shows while the rest encodes (~15 s on one worker; the rest goes in chunks of 200).
    connect_head_tasks: int = Field(50, ge=1)
    priority_field: str = "broaden_priority"  # task data key the ranked tab sorts by
    ranked_tab: str = "broaden: most valuable first"

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir)

    @property
    def media_root_list(self) -> list[str]:
        return [os.path.realpath(p) for p in self.media_roots.split(os.pathsep) if p]


def describe(error: ValidationError) -> str:
    """A settings error as the environment variables to fix, e.g. "BROADEN_LSB_K='abc': Input should be ..."."""
    problems = []
    for e in error.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
        name = alias.choices[0] if isinstance(alias, AliasChoices) else f"BROADEN_{field.upper()}"
        problems.append(f"{name}={e.get('input')!r}: {e['msg']}")
    return "; ".join(problems)
