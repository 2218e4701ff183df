"""Cosine nearest neighbours over task embeddings, keyed by task id (faiss).

Exact search (inner product on L2-normalised vectors) while the index is small;
past `exact_max` vectors it is rebuilt as IVF-Flat (nlist ~ 4*sqrt(N), trained on
the vectors at hand), whose search cost grows far slower. The switch-over size
is chosen by benchmarks/knn.py.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import numpy.typing as npt

EXACT_MAX = 50_000
NPROBE = 8

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def normalise(x: npt.ArrayLike) -> Vectors:
    v = np.ascontiguousarray(x, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class VectorIndex:
    def __init__(self, dim: int, exact_max: int = EXACT_MAX, nprobe: int = NPROBE) -> None:
        self.dim, self.exact_max, self.nprobe = dim, exact_max, nprobe
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def approximate(self) -> bool:
        return not isinstance(self._index, faiss.IndexIDMap2)

    def build(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> VectorIndex:
        """Replace the contents; picks exact or IVF by size."""
        v, i = normalise(vectors), np.asarray(ids, dtype=np.int64)
        if len(v) > self.exact_max:
            nlist = max(1, min(int(4 * math.sqrt(len(v))), len(v) // 39))  # faiss wants ~39 points a list
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(v)
            ivf.nprobe = self.nprobe
            self._index = ivf
        else:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if len(v):
            self._index.add_with_ids(v, i)
        return self

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Add or replace vectors by id; grows into an IVF index past `exact_max`."""
        i = np.asarray(ids, dtype=np.int64)
        self.remove(i)
        if not self.approximate and len(self) + len(i) > self.exact_max:
            old_ids, old = self._contents()
            self.build(np.concatenate([old, normalise(vectors)]), np.concatenate([old_ids, i]))
            return
        self._index.add_with_ids(normalise(vectors), i)

    def remove(self, ids: npt.ArrayLike) -> None:
        i = np.asarray(ids, dtype=np.int64)
        if len(i) and len(self):
            self._index.remove_ids(faiss.IDSelectorBatch(i))

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.float32], Ids]:
        """(similarities, ids), each (Q, k), best first; missing slots have id -1."""
        q = normalise(queries)
        if len(self) == 0 or k <= 0:
            return np.zeros((len(q), max(k, 0)), np.float32), np.full((len(q), max(k, 0)), -1, np.int64)
        sims, ids = self._index.search(q, min(k, len(self)))
        if ids.shape[1] < k:  # pad to k so callers can rely on the shape
            pad = k - ids.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return sims, ids

    def _contents(self) -> tuple[Ids, Vectors]:
        index = self._index
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        flat = faiss.downcast_index(index.index)
        return ids, faiss.rev_swig_ptr(flat.get_xb(), len(ids) * self.dim).reshape(len(ids), self.dim).copy()
