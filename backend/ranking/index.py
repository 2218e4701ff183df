"""Cosine nearest neighbours over task embeddings, keyed by task id.

Exact search is one matrix multiply and a top-k (torch), which benchmarks/knn.py
measured 3-8x faster than faiss's exact index for the few hundred queries a sync
makes (faiss only switches to BLAS from ~500 queries). The index is rebuilt at every
sync, because a retrain moves every embedding, and an IVF build costs more than the
exact searches it saves; so past `exact_max` vectors only, the index becomes faiss
IVF-Flat (nlist ~ 4*sqrt(N)), searched with nprobe growing with nlist.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import numpy.typing as npt
import torch

EXACT_MAX = 1_000_000
QUERY_CHUNK = 64  # queries per multiply: bounds the (chunk, N) similarity matrix

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def normalise(x: npt.ArrayLike) -> Vectors:
    v = np.ascontiguousarray(x, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class VectorIndex:
    def __init__(self, dim: int, exact_max: int = EXACT_MAX) -> None:
        self.dim, self.exact_max = dim, exact_max
        self._ids: Ids = np.zeros(0, np.int64)
        self._vectors: Vectors = np.zeros((0, dim), np.float32)
        self._ivf: faiss.IndexIVFFlat | None = None

    def __len__(self) -> int:
        return int(self._ivf.ntotal) if self._ivf is not None else len(self._ids)

    @property
    def approximate(self) -> bool:
        return self._ivf is not None

    def build(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> VectorIndex:
        """Replace the contents; exact up to `exact_max` vectors, IVF past it."""
        v, i = normalise(vectors).reshape(-1, self.dim), np.asarray(ids, dtype=np.int64)
        self._ivf = None
        self._ids, self._vectors = i, v
        if len(v) > self.exact_max:
            nlist = max(1, min(int(4 * math.sqrt(len(v))), len(v) // 39))  # faiss wants ~39 points a list
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(v)
            ivf.nprobe = max(16, nlist // 128)  # recall ~0.997 in benchmarks/knn.py
            ivf.add_with_ids(v, i)
            self._ivf = ivf
            self._ids, self._vectors = np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return self

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Add or replace vectors by id."""
        i = np.asarray(ids, dtype=np.int64)
        self.remove(i)
        if self._ivf is not None:
            self._ivf.add_with_ids(normalise(vectors), i)
        elif len(self._ids) + len(i) > self.exact_max:
            self.build(np.concatenate([self._vectors, normalise(vectors)]), np.concatenate([self._ids, i]))
        else:
            self._ids = np.concatenate([self._ids, i])
            self._vectors = np.concatenate([self._vectors, normalise(vectors)])

    def remove(self, ids: npt.ArrayLike) -> None:
        i = np.asarray(ids, dtype=np.int64)
        if not len(i) or not len(self):
            return
        if self._ivf is not None:
            self._ivf.remove_ids(faiss.IDSelectorBatch(i))
        else:
            keep = ~np.isin(self._ids, i)
            self._ids, self._vectors = self._ids[keep], self._vectors[keep]

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.float32], Ids]:
        """(similarities, ids), each (Q, k), best first; missing slots have id -1."""
        q = normalise(queries).reshape(-1, self.dim)
        sims = np.full((len(q), max(k, 0)), -np.inf, np.float32)
        ids = np.full((len(q), max(k, 0)), -1, np.int64)
        n = min(k, len(self))
        if n <= 0 or not len(q):
            return sims, ids
        if self._ivf is not None:
            s, i = self._ivf.search(q, n)
        else:
            s, i = self._exact(q, n)
        sims[:, :n], ids[:, :n] = s, i
        return sims, ids

    def _exact(self, q: Vectors, k: int) -> tuple[npt.NDArray[np.float32], Ids]:
        base = torch.from_numpy(self._vectors)
        sims, rows = [], []
        with torch.inference_mode():
            for start in range(0, len(q), QUERY_CHUNK):
                s, r = torch.topk(torch.from_numpy(q[start : start + QUERY_CHUNK]) @ base.T, k, dim=1)
                sims.append(s.numpy())
                rows.append(r.numpy())
        return np.concatenate(sims), self._ids[np.concatenate(rows)]
