"""Every Redis key broaden writes, and how long each lives. No other module spells a key.

Per-project keys are namespaced `broaden:p:<project>:...`; encoder features are shared by
all projects (keyed by encoder and content digest, so two projects with the same media
encode it once).
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "broaden"
FEATURE_TTL_S = 90 * 24 * 3600  # unused features age out; anything here can be recomputed
PENDING_TTL_S = 900  # a crash between a pending flag and its enqueue blocks a project at most this long
# Webhook hints wait for a sync, which normally runs within seconds; unhandled ones age out.
RECONCILE_LOCK = f"{PREFIX}:reconcile"  # held by the worker that reconciles this period
JOB_METRICS = f"{PREFIX}:metrics:jobs"  # a hash: "<kind>:count", "<kind>:sum", "<kind>:le:<bound>", "<kind>:failed"
# Projects whose first setup queued the ranking of their existing tasks (a set, capped: past the
# cap, reconciliation ranks them instead, so forged setups cannot queue work without bound).
CONNECTING = f"{PREFIX}:connecting"
MAX_CONNECTING = 50
HINT_TTL_S = 24 * 3600
# More task ids than this waiting to be re-read: the next sync re-reads the whole project instead
# (fewer Label Studio calls than reading that many by id, and a payload cannot grow the set further).
MAX_HINTED_TASKS = 20_000


class Hash(StrEnum):
    """Per-project hashes keyed by task id (the project's mirror of Label Studio)."""

    TASKS = "tasks"  # task id -> task data
    LABELS = "labels"  # task id -> one list of labels (or None) per Choices control
    PRIORITY = "priority"  # task id -> priority last written to Label Studio
    PREDVER = "predver"  # task id -> model version of the prediction Label Studio holds
    SEEDS = "seeds"  # task id -> why it is a seed ("misprediction")
    OUTBOX = "outbox"  # task id -> prediction waiting to be imported


class Value(StrEnum):
    """Per-project single values."""

    CONFIG = "config"  # the label config XML
    MODEL = "model"  # trained weights
    MODEL_VERSION = "model_version"
    MODEL_INFO = "model_info"  # JSON: fingerprint, trained_on, fusion, head_fusions
    FINGERPRINT = "fingerprint"  # of the label config the mirror was built for
    TRAINED_DIGEST = "trained_digest"  # of the labels the current model was trained on
    OUTBOX_VERSION = "outbox_version"  # model version of the predictions in the outbox
    SHOWN_VERSION = "shown_version"  # model version the project was last switched to
    LAST_SYNC = "last_sync"  # JSON report of the last sync
    FULL = "full"  # hint: re-read every task
    RETRAIN = "retrain"  # hint: retrain even if the labels did not change
    DIRTY = "dirty"  # hint (a set): task ids to re-read
    SYNC_PENDING = "sync-pending"  # a sync job is queued (holds its id)
    PUSH_PENDING = "push-pending"  # a prediction push job is queued
    LOCK = "lock"  # one job at a time per project
    CONNECTED = "connected"  # how many times Label Studio set the project up with this backend (/setup)
    VERIFIED = "verified"  # Label Studio's ML settings were seen to point here ("operator": told so, no TTL)


# What a changed label config invalidates (the model is dropped separately).
CONFIG_DERIVED = (*Hash, Value.TRAINED_DIGEST, Value.SHOWN_VERSION, Value.OUTBOX_VERSION)


def project(project_id: int, what: Hash | Value) -> str:
    return f"{PREFIX}:p:{project_id}:{what.value}"


def project_pattern(what: Hash | Value) -> str:
    """A SCAN pattern matching this key in every project."""
    return f"{PREFIX}:p:*:{what.value}"


def project_of(key: str | bytes) -> int:
    """The project id in a per-project key."""
    text = key.decode() if isinstance(key, bytes) else key
    return int(text.split(":")[2])


def media_ref(encoder_id: str, ref_digest: str) -> str:
    """Where a media item is (as the encoder saw it) -> the digest of its content."""
    return f"{PREFIX}:ref:{encoder_id}:{ref_digest}"


def features(encoder_id: str, content_digest: str) -> str:
    """An encoder's output for one content digest (float16 tokens)."""
    return f"{PREFIX}:feat:{encoder_id}:{content_digest}"


def feature_patterns() -> tuple[str, str]:
    """SCAN patterns of every cached encoder output (for benchmarks that start cold)."""
    return f"{PREFIX}:ref:*", f"{PREFIX}:feat:*"
