"""The glue between a model's scores and a query strategy, shared by the workers and `broaden simulate`.

`build_pool` turns per-row probabilities, embeddings and plain labels into a `Pool` (seeds are the
labelled positives of the hunted labels plus the rows shown a confident misprediction), and
`make_strategy` builds the configured strategy. Both callers go through these two functions, so a
backtest's curve is what a project would have seen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt

from backend.config import Settings
from backend.labelstudio.labelconfig import LabelConfig, Labels
from backend.ranking.seeds import Target, is_target_positive, target_columns
from backend.ranking.strategies import STRATEGIES, Pool, Strategy


def build_pool(
    config: LabelConfig,
    probs: Sequence[npt.NDArray[np.float32]],
    embeddings: npt.NDArray[np.float32],
    labels: Sequence[Labels | None],
    mispredicted: Collection[int],
    targets: set[Target],
    frozen: npt.NDArray[np.float32] | None = None,
) -> Pool:
    """Rows are positions: `labels[i]` is row i's labels (None: unlabelled), `mispredicted` holds
    labelled rows, and probs/embeddings (and the frozen features, for BROADEN_LSB_SPACE=both) may
    carry extra rows past len(labels) (a test split)."""
    n = len(labels)
    labelled = np.array([lab is not None for lab in labels], dtype=bool)
    positives = {i for i, lab in enumerate(labels) if lab is not None and is_target_positive(config, lab, targets)}
    # A head with no honest answer (NaN: multiple choice at cold start) ranks as if uniform.
    filled = [np.nan_to_num(p[:n], nan=1.0 / max(p.shape[1], 1)) for p in probs]
    return Pool(
        probs=filled,
        multiple=[c.multiple for c in config.controls],
        embeddings=embeddings[:n],
        labelled=labelled,
        seeds=np.array(sorted(positives | set(mispredicted)), dtype=np.int64),
        targets=target_columns(config, targets),
        frozen=None if frozen is None else frozen[:n],
    )


def make_strategy(name: str, settings: Settings) -> Strategy:
    """The named strategy with the LSB settings (k, share; the threshold only when set, so each
    strategy otherwise keeps its own: lsb-lt's is 0.8)."""
    options: dict[str, float | str] = {"k": settings.lsb_k, "share": settings.lsb_share}
    if settings.lsb_threshold is not None:
        options["threshold"] = settings.lsb_threshold
    options["seed_order"] = settings.lsb_seed_order
    options["space"] = settings.lsb_space
    return STRATEGIES[name](**options)
