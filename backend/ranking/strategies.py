"""Query strategies: in which order annotators should see the unlabelled tasks.

Each strategy is a small frozen dataclass with one method, `rank(pool, rng)`, that
returns the pool's unlabelled rows best first. They share one `Pool` (model
probabilities, the fused embeddings, who is labelled, who is a seed) so the
workers and `broaden simulate` run exactly the same code.

LSB (latent space broadening) and its merge rule are our reading of the paper;
k, the lookalike threshold and the share of broadened slots are settings whose
defaults come from the backtests in BENCHMARKS.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from backend.ranking.index import VectorIndex, normalise

Rows = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass
class Pool:
    """All tasks of a project in one row space."""

    probs: list[npt.NDArray[np.float32]]  # per head (N, C)
    multiple: list[bool]  # per head
    embeddings: npt.NDArray[np.float32]  # (N, d): the latent space searched for neighbours
    labelled: npt.NDArray[np.bool_]  # (N,)
    seeds: Rows = field(default_factory=lambda: np.zeros(0, np.int64))  # labelled rows that matter
    targets: list[tuple[int, int]] = field(default_factory=list)  # hunted labels: (head, column)
    frozen: npt.NDArray[np.float32] | None = None  # (N, D): the encoders' features, a second space

    def __post_init__(self) -> None:
        self.embeddings = normalise(self.embeddings)
        if self.frozen is not None:
            self.frozen = normalise(self.frozen)

    @property
    def unlabelled(self) -> Rows:
        return np.flatnonzero(~self.labelled)

    @cached_property
    def _index(self) -> VectorIndex:
        return self._build(self.embeddings)

    @cached_property
    def _frozen_index(self) -> VectorIndex:
        assert self.frozen is not None
        return self._build(self.frozen)

    def _build(self, space: npt.NDArray[np.float32]) -> VectorIndex:
        rows = self.unlabelled
        return VectorIndex(space.shape[1]).build(space[rows], rows)

    def neighbours(
        self, rows: Rows, k: int, threshold: float | None = None, frozen: bool = False
    ) -> tuple[npt.NDArray[np.float32], Rows]:
        """The k nearest unlabelled rows of each given row: (similarities, rows), -1 where none
        (with a threshold, also where less similar than that: LSB-LT); frozen: in the encoders' space."""
        space, index = (self.frozen, self._frozen_index) if frozen else (self.embeddings, self._index)
        assert space is not None
        sims, near = index.search(space[rows], k)
        if threshold is not None:
            near = np.where(sims >= threshold, near, -1)
        return sims, near

    def neighbourhood(self, rows: Rows, k: int, threshold: float | None = None, frozen: bool = False) -> Rows:
        """The unlabelled rows among the (threshold-passing) k nearest of any given row, sorted, once."""
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        _, near = self.neighbours(rows, k, threshold, frozen)
        return np.unique(near[near >= 0])


def uncertainty(pool: Pool, measure: str = "margin") -> Floats:
    """Per task, the most uncertain of its heads, in [0, 1] (1 = no idea)."""
    per_head = []
    for p, multiple in zip(pool.probs, pool.multiple, strict=True):
        p = np.asarray(p, dtype=np.float64)
        if multiple:  # each label is its own yes/no question
            per_head.append((1 - np.abs(2 * p - 1)).mean(1))
        elif measure == "entropy":
            ent = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
            per_head.append(ent / np.log(max(p.shape[1], 2)))
        else:
            top2 = -np.sort(-p, axis=1)[:, :2]
            per_head.append(1 - (top2[:, 0] - top2[:, 1]))
    return np.max(per_head, axis=0) if per_head else np.zeros(len(pool.labelled))


def hunted(pool: Pool) -> Floats | None:
    """Per task, the model's probability of its likeliest hunted label; None when nothing is hunted."""
    if not pool.targets:
        return None
    return np.max([np.asarray(pool.probs[h][:, c], dtype=np.float64) for h, c in pool.targets], axis=0)


def by_score(rows: Rows, score: Floats, rng: np.random.Generator) -> Rows:
    """rows sorted by descending score; ties broken at random (seeded), never by id."""
    jitter = rng.random(len(rows))
    return rows[np.lexsort((jitter, -score[rows]))]


def interleave(first: Rows, second: Rows, share: float) -> Rows:
    """Merge two rankings: `share` of the leading slots go to `first`; duplicates keep their best slot."""
    out: list[int] = []
    i = j = 0
    taken = 0.0
    while i < len(first) or j < len(second):
        if i < len(first) and (j >= len(second) or taken < share * (len(out) + 1)):
            out.append(int(first[i]))
            i += 1
            taken += 1
        else:
            out.append(int(second[j]))
            j += 1
    return np.asarray(list(dict.fromkeys(out)), dtype=np.int64)


def round_robin(groups: list[Rows]) -> Rows:
    """One from each group in turn: no single seed's neighbourhood fills the top of the queue."""
    out: list[int] = []
    for depth in range(max((len(g) for g in groups), default=0)):
        out += [int(g[depth]) for g in groups if depth < len(g)]
    return np.asarray(list(dict.fromkeys(out)), dtype=np.int64)


def diversify(order: Rows, embeddings: npt.NDArray[np.float32], top: int = 100, max_sim: float = 0.97) -> Rows:
    """Push near-duplicates (cosine >= max_sim to a task already placed) out of the first `top` slots."""
    head: list[int] = []
    deferred: list[int] = []
    for pos, row in enumerate(order):
        if len(head) >= top:
            return np.asarray(head + deferred + [int(r) for r in order[pos:]], dtype=np.int64)
        if head and float(np.max(embeddings[head] @ embeddings[row])) >= max_sim:
            deferred.append(int(row))
        else:
            head.append(int(row))
    return np.asarray(head + deferred, dtype=np.int64)


class Strategy(ABC):
    name: str = ""

    @abstractmethod
    def rank(self, pool: Pool, rng: np.random.Generator) -> Rows:
        """The pool's unlabelled rows, best first."""


@dataclass(frozen=True)
class RandomSampling(Strategy):
    name: str = "random"

    def rank(self, pool: Pool, rng: np.random.Generator) -> Rows:
        return rng.permutation(pool.unlabelled)


@dataclass(frozen=True)
class UncertaintySampling(Strategy):
    measure: str = "margin"  # margin | entropy
    name: str = "uncertainty"

    def rank(self, pool: Pool, rng: np.random.Generator) -> Rows:
        return diversify(by_score(pool.unlabelled, uncertainty(pool, self.measure), rng), pool.embeddings)


@dataclass(frozen=True)
class KNNPoolSampling(Strategy):
    """SEALS-style: uncertainty restricted to the k nearest unlabelled neighbours of every labelled
    task, then the rest of the pool by uncertainty."""

    k: int = 20
    name: str = "seals"

    def rank(self, pool: Pool, rng: np.random.Generator) -> Rows:
        score = uncertainty(pool)
        candidates = pool.neighbourhood(np.flatnonzero(pool.labelled), self.k)
        rest = np.setdiff1d(pool.unlabelled, candidates)
        return np.concatenate([by_score(candidates, score, rng), by_score(rest, score, rng)])


@dataclass(frozen=True)
class LatentSpaceBroadening(Strategy):
    """LSB: the k nearest unlabelled neighbours of each seed (LSB-LT: only those with cosine
    similarity >= threshold), seeds taken in turn; optionally merged with uncertainty sampling.

    with_uncertainty=False: broadened tasks by similarity, then the rest at random (LSB alone).
    with_uncertainty=True: broadened tasks by uncertainty, interleaved with uncertainty over the
    rest so that `share` of the leading slots are broadened ones (LSB + uncertainty).
    """

    k: int = 10
    threshold: float | None = None
    with_uncertainty: bool = True
    share: float = 0.5
    name: str = "lsb+uncertainty"

    def broadened(self, pool: Pool) -> list[Rows]:
        """Per seed, its neighbours (nearest first, or by uncertainty later); -1 and repeats removed."""
        if len(pool.seeds) == 0:
            return []
        _, near = pool.neighbours(pool.seeds, self.k, self.threshold)
        return [row[row >= 0] for row in near]

    def rank(self, pool: Pool, rng: np.random.Generator) -> Rows:
        groups = self.broadened(pool)
        if not self.with_uncertainty:
            first = round_robin(groups)
            rest = rng.permutation(np.setdiff1d(pool.unlabelled, first))
            return np.concatenate([first, rest]).astype(np.int64)
        score = uncertainty(pool)
        first = round_robin([by_score(g, score, rng) for g in groups])
        rest = by_score(np.setdiff1d(pool.unlabelled, first), score, rng)
        return diversify(interleave(first, rest, self.share), pool.embeddings)


@dataclass(frozen=True)
class BroadenedPoolSampling(Strategy):
    """LSB as a broadened candidate pool: the k_pool nearest unlabelled neighbours of every labelled
    task (as the SEALS-style pool), widened by the k nearest of each seed (with a threshold: only
    those at least that similar, as LSB-LT). `share` of the leading slots go to the seeds'
    neighbours, most uncertain first (or, with seed_order="likely" while a label is hunted, the
    likeliest positives first, which in the fused space are near-copies of those found). The
    others go to the whole candidate pool by uncertainty; then the rest of the project by
    uncertainty; near-duplicates pushed out of the head. space="both": the seeds' neighbours are
    also searched in the pool's frozen encoder features. The default (BENCHMARKS.md)."""

    k: int = 20
    k_pool: int = 10
    threshold: float | None = None
    share: float = 0.5
    seed_order: str = "uncertain"  # uncertain | likely: how the seeds' neighbours are ordered
    space: str = "fused"  # fused | both: where the seeds' neighbours are searched
    name: str = "lsb-pool"

    def rank(self, pool: Pool, rng: np.random.Generator) -> Rows:
        score = uncertainty(pool)
        likely = hunted(pool) if self.seed_order == "likely" else None
        seeded = pool.neighbourhood(pool.seeds, self.k, self.threshold)
        if self.space == "both" and pool.frozen is not None:  # no threshold: cosines differ by space
            seeded = np.union1d(seeded, pool.neighbourhood(pool.seeds, self.k, frozen=True))
        candidates = np.union1d(pool.neighbourhood(np.flatnonzero(pool.labelled), self.k_pool), seeded)
        first = by_score(seeded, score if likely is None else likely, rng)
        head = interleave(first, by_score(candidates, score, rng), self.share)
        rest = by_score(np.setdiff1d(pool.unlabelled, candidates), score, rng)
        return diversify(np.concatenate([head, rest]).astype(np.int64), pool.embeddings)


STRATEGIES = {
    "random": lambda **kw: RandomSampling(),
    "margin": lambda **kw: UncertaintySampling("margin", name="margin"),
    "entropy": lambda **kw: UncertaintySampling("entropy", name="entropy"),
    "seals": lambda k=20, **kw: KNNPoolSampling(k=k),
    "lsb": lambda k=10, **kw: LatentSpaceBroadening(k=k, with_uncertainty=False, name="lsb"),
    "lsb-lt": lambda k=10, threshold=0.8, **kw: LatentSpaceBroadening(
        k=k, threshold=threshold, with_uncertainty=False, name="lsb-lt"
    ),
    "lsb+uncertainty": lambda k=10, threshold=None, share=0.5, **kw: LatentSpaceBroadening(
        k=k, threshold=threshold, share=share
    ),
    # BROADEN_LSB_K around every labelled task, twice that around each seed
    "lsb-pool": lambda k=10, threshold=None, share=0.5, seed_order="uncertain", space="fused", **kw: (
        BroadenedPoolSampling(k=2 * k, k_pool=k, threshold=threshold, share=share, seed_order=seed_order, space=space)
    ),
}
