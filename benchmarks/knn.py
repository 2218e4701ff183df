"""Nearest neighbours: VectorIndex (broaden's index) against numpy / torch brute force, faiss exact and IVF-Flat.

Data: clustered unit vectors (d=256, broaden's fused embedding size). Uniform random vectors
have no neighbour structure, so IVF recall on them says nothing; here 100 topics of 20 sub-topics
each (skewed sizes) carry a 16-dimensional local spread per topic plus a little isotropic noise,
which gives top-1 / top-10 cosines around 0.8 / 0.7 and neighbours that cross sub-topic borders.
Queries are Q=100 extra points of the same distribution, not in the database (broaden's seeds are
labelled rows, the index holds the unlabelled ones); k=10. Every N is a prefix of one data set.

Per N, every method is warmed up once, then timed in rounds that run all methods back to back in
a rotating order (noise hits all of them alike); medians are reported.

  numpy       unit rows, q @ x.T, argpartition, sort of the top k
  torch       torch.topk on the same matmul (torch's own BLAS, MKL)
  VectorIndex built exact (its default up to EXACT_MAX): torch matmul + topk, queries in chunks
  faiss exact IndexIDMap2(IndexFlatIP), what VectorIndex was before it multiplied matrices itself
  faiss BLAS  the same index with faiss's BLAS cut-over lowered so it multiplies matrices
              (diagnostic: why faiss exact is slow at Q=100)
  IVF         faiss IVF-Flat with VectorIndex's nlist (~ 4 sqrt(N)), searched with nprobe 8, 16, 32
  VectorIndex IVF  VectorIndex built approximate (exact_max=0): its own nlist and nprobe
  diagnostics at N=100k: numpy with 1 BLAS thread, faiss exact (scan and BLAS path) and IVF with
              1 OpenMP thread, to see what the second core buys on a shared machine

"build" is what a sync pays before it can search: normalising the rows (numpy, torch), building
the faiss index (normalise + add; IVF: normalise + k-means training + add) or VectorIndex.build.
broaden builds a fresh index on every sync (Pool is made per sync), so build + search is the
per-sync cost.

k-means for IVF at 1M (nlist 4000 on all 1M points) takes 5-10 minutes on two cores, so by
default the 1M IVF is trained on 39 points a list with 10 iterations (marked *, search numbers
only), VectorIndex IVF is not built at 1M, and its build time there is extrapolated; --full-ivf
builds both for real.

    PYTHONPATH=. python benchmarks/knn.py [--full-ivf]
    ./dev run python benchmarks/knn.py --quick   # a few thousand vectors, the same code: seconds
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import torch

from backend.ranking.index import EXACT_MAX, VectorIndex, normalise

ROOT = Path(__file__).resolve().parent.parent
D, Q, K = 256, 100, 10
NPROBES = (8, 16, 32)
NPROBE = 16  # the IVF row the summary quotes: VectorIndex's nprobe up to ~2M vectors (max(16, nlist // 128))
TOPICS, SUBTOPICS, LOCAL_RANK = 100, 20, 16
SUB_SPREAD, LOCAL_SPREAD, NOISE = 0.5, 1.0, 0.3
CHUNK = 100_000  # rows generated / scored at a time, to bound temporaries at 1M
RESCORE_S_PER_TASK = (1e-4, 2e-4)  # a sync rescoring 10k tasks takes 1-2 s
WARM_Q = 20  # same code paths as Q=100 (faiss changes path below 2 queries and from 500)
TIE = 1e-5  # float32 dot products of unit vectors differ from exact ones by ~1e-6
ENV_REPORTED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Plan:
    """What a run measures: the sizes, timed rounds per size, where the thread diagnostics run,
    from which size the IVF gets reduced training, and a growing index across its switch to IVF."""

    sizes: tuple[int, ...]
    reps: dict[int, int]
    diag_n: int
    reduced_from: int
    grow: tuple[int, int, int, int]  # start, stop, step, exact_max of the growing index


FULL = Plan(
    sizes=(10_000, 50_000, 100_000, 1_000_000),
    reps={10_000: 9, 50_000: 7, 100_000: 5, 1_000_000: 2},
    diag_n=100_000,
    reduced_from=1_000_000,
    grow=(45_000, 56_000, 1000, 50_000),
)
QUICK = Plan(
    sizes=(500, 2_000), reps={500: 2, 2_000: 2}, diag_n=2_000, reduced_from=2_000, grow=(1_500, 2_500, 250, 2_000)
)


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- data


def clustered(n: int, seed: int = 0) -> Vectors:
    """n unit vectors: sub-topic centre + a topic-specific low-rank spread + isotropic noise."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((TOPICS, D), dtype=np.float32)
    centres = np.repeat(topics, SUBTOPICS, axis=0)
    centres += SUB_SPREAD * rng.standard_normal(centres.shape, dtype=np.float32)
    # Each topic varies along its own few directions, as real embeddings vary along few factors.
    bases = rng.standard_normal((TOPICS, LOCAL_RANK, D), dtype=np.float32) / np.float32(math.sqrt(LOCAL_RANK))
    weights = rng.gamma(0.7, size=len(centres))  # skewed cluster sizes
    weights /= weights.sum()
    x = np.empty((n, D), np.float32)
    for lo in range(0, n, CHUNK):
        x[lo : lo + CHUNK] = _chunk(rng, min(CHUNK, n - lo), centres, bases, weights)
    return x


def _chunk(
    rng: np.random.Generator, n: int, centres: Vectors, bases: Vectors, weights: npt.NDArray[np.float64]
) -> Vectors:
    sub = rng.choice(len(centres), n, p=weights)
    x = centres[sub] + NOISE * rng.standard_normal((n, D), dtype=np.float32)
    local = LOCAL_SPREAD * rng.standard_normal((n, LOCAL_RANK), dtype=np.float32)
    topic = sub // SUBTOPICS
    for t in np.unique(topic):
        rows = topic == t
        x[rows] += local[rows] @ bases[t]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass
class Truth:
    ids: Ids  # (Q, K)
    kth: npt.NDArray[np.float64]  # (Q,) exact similarity of the k-th neighbour
    top1: float  # mean cosine of the nearest neighbour (how tight the clusters are)
    top10: float


def ground_truth(x: Vectors, q: Vectors, k: int = K, pool: int = 64) -> Truth:
    """Exact top k in float64: float32 shortlists per chunk, re-scored in float64."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for lo in range(0, len(x), CHUNK):
        s = q @ x[lo : lo + CHUNK].T
        top = np.argpartition(s, -pool, axis=1)[:, -pool:] if s.shape[1] > pool else np.indices(s.shape)[1]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + lo], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :pool]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    exact = exact_sims(x, q, best_i)
    order = np.argsort(-exact, axis=1)[:, :k]
    sims = np.take_along_axis(exact, order, 1)
    return Truth(np.take_along_axis(best_i, order, 1), sims[:, -1], float(sims[:, 0].mean()), float(sims[:, -1].mean()))


def exact_sims(x: Vectors, q: Vectors, ids: Ids) -> npt.NDArray[np.float64]:
    """Float64 cosines of each query with the given rows (-inf where the id is -1)."""
    rows = x[np.maximum(ids, 0)].astype(np.float64)
    sims = np.einsum("qkd,qd->qk", rows, q.astype(np.float64))
    return np.where(ids >= 0, sims, -np.inf)


def recall(x: Vectors, q: Vectors, found: Ids, truth: Truth) -> float:
    """Share of the returned ids at least as similar as the true k-th neighbour (ties count as hits)."""
    hits = exact_sims(x, q, found) >= truth.kth[:, None] - TIE
    return float(hits.sum() / truth.ids.size)


# ---------------------------------------------------------------- searches


def numpy_knn(x: Vectors, q: Vectors, k: int = K) -> Ids:
    s = q @ x.T
    top = np.argpartition(s, -k, axis=1)[:, -k:]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def torch_knn(x: torch.Tensor, q: torch.Tensor, k: int = K) -> Ids:
    with torch.inference_mode():
        return torch.topk(q @ x.T, k, dim=1).indices.numpy()


def index_knn(index: VectorIndex | faiss.Index, q: Vectors, k: int = K) -> Ids:
    """Ids of the k nearest rows: VectorIndex and faiss indexes search alike ((sims, ids))."""
    return index.search(q, k)[1]


def faiss_global(name: str) -> ctypes.c_int | None:
    """A C++ global int of the loaded libfaiss that this build's Python bindings do not expose."""
    lib = Path(faiss.__file__).with_name("libfaiss.so")
    try:
        # dlopen of the path the extension module already loaded returns that same instance.
        return ctypes.c_int.in_dll(ctypes.CDLL(str(lib)), f"_ZN5faiss{len(name)}{name}E")
    except (OSError, ValueError):
        return None


@contextmanager
def faiss_blas_from(threshold: int) -> Iterator[None]:
    """Temporarily move faiss's cut-over between its per-query scan and its BLAS path."""
    knob = faiss_global("distance_compute_blas_threshold")
    old = knob.value if knob is not None else 0
    if knob is not None:
        knob.value = threshold
    try:
        yield
    finally:
        if knob is not None:
            knob.value = old


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(n, user_api="blas"):
        yield


Search = Callable[[Vectors], Ids]


def under(search: Search, *contexts: Callable[[], AbstractContextManager[None]]) -> Search:
    """The search run inside the given (fresh) contexts, restored after every call."""

    def run(q: Vectors) -> Ids:
        with ExitStack() as stack:
            for ctx in contexts:
                stack.enter_context(ctx())
            return search(q)

    return run


# ---------------------------------------------------------------- indexes


def ivf_nlist(n: int) -> int:
    """The list count VectorIndex.build gives an IVF index of n vectors."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def faiss_exact(x: Vectors, ids: Ids) -> faiss.Index:
    """faiss's exact inner-product index over the unit rows, keyed by id."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
    index.add_with_ids(normalise(x), ids)
    return index


def faiss_ivf(x: Vectors, ids: Ids, reduced: bool, seed: int = 0) -> faiss.IndexIVFFlat:
    """IVF-Flat with VectorIndex's nlist, k-means on every row; `reduced`: on 39 rows a list, 10 iterations."""
    v = normalise(x)
    nlist = ivf_nlist(len(v))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, nlist, faiss.METRIC_INNER_PRODUCT)
    if reduced:
        ivf.cp.niter = 10
        sample = np.random.default_rng(seed).choice(len(v), min(len(v), 39 * nlist), replace=False)
        ivf.train(v[np.sort(sample)])
    else:
        ivf.train(v)
    ivf.add_with_ids(v, ids)
    return ivf


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# ---------------------------------------------------------------- one size


@dataclass
class Row:
    n: int
    key: str  # numpy | torch | exact | exact-blas | ivf | diag
    method: str
    build_s: list[float] = field(default_factory=list)
    search_s: list[float] = field(default_factory=list)
    recall: float = float("nan")
    nprobe: int = 0
    reduced: bool = False

    @property
    def per_sync_s(self) -> float:
        return statistics.median(self.build_s) + statistics.median(self.search_s)


@dataclass
class Method:
    row: Row
    search: Search


def measure_size(x: Vectors, q: Vectors, n: int, reps: int, full_ivf: bool, plan: Plan) -> list[Row]:
    db, ids = x[:n], np.arange(n, dtype=np.int64)
    truth = ground_truth(db, q)
    out(f"  N={n:,}: top-1 cosine {truth.top1:.3f}, top-10 {truth.top10:.3f}")
    prep = [timed(lambda: normalise(db))[0] for _ in range(3)]
    # Each build replaces the last, so at most one extra copy lives at a time.
    index_build, index = builds(lambda: VectorIndex(D, exact_max=n).build(db, ids), 3)
    exact_build, exact = builds(lambda: faiss_exact(db, ids), 3)
    reduced = n >= plan.reduced_from and not full_ivf
    ivf_build, ivf = builds(lambda: faiss_ivf(db, ids, reduced), 3 if n <= 10_000 else 1)
    xt = torch.from_numpy(db)
    methods = [
        Method(Row(n, "numpy", "numpy matmul + argpartition", prep), lambda q: numpy_knn(db, q)),
        Method(Row(n, "torch", "torch matmul + topk", prep), lambda q: torch_knn(xt, torch.from_numpy(q))),
        Method(Row(n, "index", "VectorIndex exact (torch matmul + topk)", index_build), lambda q: index_knn(index, q)),
        Method(Row(n, "exact", "faiss exact (IDMap2 + FlatIP)", exact_build), lambda q: index_knn(exact, q)),
    ]
    if faiss_global("distance_compute_blas_threshold") is not None:
        methods.append(
            Method(
                Row(n, "exact-blas", "faiss exact, BLAS path forced", exact_build),
                under(lambda q: index_knn(exact, q), lambda: faiss_blas_from(0)),
            )
        )
    if n == plan.diag_n:
        methods += diagnostics(n, db, ids, exact, prep, exact_build)
    for p in NPROBES:
        label = f"IVF-Flat nlist {ivf.nlist}, nprobe {p}" + ("*" if reduced else "")
        methods.append(Method(Row(n, "ivf", label, ivf_build, nprobe=p, reduced=reduced), nprobe_search(ivf, p)))
    if not reduced:  # VectorIndex's own IVF: its nlist and nprobe
        seconds, approximate = timed(lambda: VectorIndex(D, exact_max=0).build(db, ids))
        label = "VectorIndex IVF (exact_max=0)"
        methods.append(Method(Row(n, "index-ivf", label, [seconds]), lambda q: index_knn(approximate, q)))
    warm = q[:WARM_Q]  # enough queries for the same code paths, a fifth of the cost at 1M
    for m in methods:  # thread pools, first touches of result buffers
        m.search(warm)
    for r in range(reps):
        for m in methods[r % len(methods) :] + methods[: r % len(methods)]:
            seconds, found = timed(partial(m.search, q))
            m.row.search_s.append(seconds)
            if r == reps - 1:
                m.row.recall = recall(db, q, found, truth)
    return [m.row for m in methods]


def builds(build: Callable[[], object], times: int) -> tuple[list[float], Any]:
    """(seconds of each build, the last index built)."""
    seconds, index = [], None
    for _ in range(times):
        index = None  # the previous index is freed before the next is built
        took, index = timed(build)
        seconds.append(took)
    return seconds, index


def diagnostics(
    n: int, db: Vectors, ids: Ids, exact: faiss.Index, prep: list[float], exact_build: list[float]
) -> list[Method]:
    """Thread-count variants: does a second thread help on a shared two-core machine?"""

    def exact_search(q: Vectors) -> Ids:
        return index_knn(exact, q)

    with faiss_threads(1):
        seconds, ivf = timed(lambda: faiss_ivf(db, ids, reduced=False))
    methods = [
        Method(
            Row(n, "diag", f"IVF-Flat nprobe {NPROBE}, built and searched with 1 omp thread", [seconds]),
            under(nprobe_search(ivf, NPROBE), lambda: faiss_threads(1)),
        ),
        Method(
            Row(n, "diag", "numpy, 1 BLAS thread", prep),
            under(lambda q: numpy_knn(db, q), lambda: blas_threads(1)),
        ),
        Method(
            Row(n, "diag", "faiss exact, 1 omp thread", exact_build),
            under(exact_search, lambda: faiss_threads(1)),
        ),
    ]
    if faiss_global("distance_compute_blas_threshold") is not None:
        methods.append(
            Method(
                Row(n, "diag", "faiss exact, BLAS path forced, 1 omp thread", exact_build),
                under(exact_search, lambda: faiss_blas_from(0), lambda: faiss_threads(1)),
            )
        )
    return methods


def nprobe_search(index: faiss.IndexIVFFlat, nprobe: int) -> Search:
    def run(q: Vectors) -> Ids:
        index.nprobe = nprobe
        return index_knn(index, q)

    return run


# ---------------------------------------------------------------- growing index


@dataclass
class AddStep:
    size: int
    add_s: float
    search_s: float
    approximate: bool
    exact_add_s: float
    exact_search_s: float


def grow(x: Vectors, q: Vectors, start: int, stop: int, step: int, switch_at: int) -> list[AddStep]:
    """VectorIndex.add in batches of `step` across its switch to IVF (exact_max=switch_at; broaden's
    own EXACT_MAX is too large to grow across here), beside an index that stays exact."""
    ids = np.arange(stop, dtype=np.int64)
    switching = VectorIndex(D, exact_max=switch_at).build(x[:start], ids[:start])
    exact = VectorIndex(D, exact_max=stop).build(x[:start], ids[:start])
    steps = []
    for lo in range(start, stop, step):
        batch, batch_ids = x[lo : lo + step], ids[lo : lo + step]
        add_s, _ = timed(partial(switching.add, batch, batch_ids))
        exact_add_s, _ = timed(partial(exact.add, batch, batch_ids))
        search_s = min(timed(lambda: switching.search(q, K))[0] for _ in range(3))
        exact_search_s = min(timed(lambda: exact.search(q, K))[0] for _ in range(3))
        steps.append(AddStep(lo + step, add_s, search_s, switching.approximate, exact_add_s, exact_search_s))
    return steps


# ---------------------------------------------------------------- machine


def code_version() -> str:
    git = ["git", "-C", str(ROOT)]
    try:
        sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except OSError:
        return "unknown (no git)"
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    # Other work is often in flight; what matters here is whether the measured index code differs.
    source = Path(inspect.getfile(VectorIndex)).resolve().relative_to(ROOT).as_posix()
    index = f"{source} changed" if source in changed else f"{source} as committed"
    return (sha.strip() or "unknown") + (f" + uncommitted changes in {len(changed)} files, {index}" if changed else "")


def blas_lines() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [f"- BLAS: threadpoolctl not installed; numpy built with {blas['name']} {blas.get('version', '')}"]
    lines = []
    for lib in threadpool_info():
        owner = "numpy" if "numpy" in lib["filepath"] else "faiss" if "faiss" in lib["filepath"] else "torch"
        lines.append(
            f"- {owner}: {lib['internal_api']} {lib.get('version') or ''} ({lib['user_api']}, "
            f"{lib['num_threads']} threads, arch {lib.get('architecture', '-')}, "
            f"threading {lib.get('threading_layer', '-')}) {Path(lib['filepath']).name}"
        )
    return lines


def machine_lines(load_start: float) -> list[str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    env = " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ENV_REPORTED)
    knob = faiss_global("distance_compute_blas_threshold")
    torch_blas = "MKL" if torch.backends.mkl.is_available() else "other"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; load average (1 min) at start / end: "
        f"{load_start:.2f} / {os.getloadavg()[0]:.2f}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__} "
        f"(SIMD {faiss.SIMDConfig.get_level_name() if hasattr(faiss, 'SIMDConfig') else '?'}, "
        f"{faiss.omp_get_max_threads()} omp threads), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, {torch_blas})",
        *blas_lines(),
        f"- env: {env}",
        f"- faiss distance_compute_blas_threshold = {knob.value if knob is not None else 'not readable'} "
        f"(exact search uses BLAS only when Q*d reaches it)",
        f"- code: git {code_version()}",
    ]


# ---------------------------------------------------------------- report


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def share_of_rescore(row: Row) -> str:
    lo, hi = (row.per_sync_s / (row.n * s) for s in reversed(RESCORE_S_PER_TASK))
    return f"{100 * lo:.0f}-{100 * hi:.0f}%" if hi >= 1 else f"{100 * lo:.1f}-{100 * hi:.1f}%"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| N | method | build s | search ms (median) | reps | recall@10 | build + search s | vs rescoring N tasks |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n:,} | {r.method} | {fmt_s(statistics.median(r.build_s))} | "
            f"{1000 * statistics.median(r.search_s):.1f} | {len(r.search_s)} | {r.recall:.3f} | "
            f"{fmt_s(r.per_sync_s)} | {share_of_rescore(r)} |"
        )
    return lines


def growth_table(steps: list[AddStep], switch_at: int) -> list[str]:
    lines = [
        f"| size after add | add ms (exact_max={switch_at:,}) | index | search ms (best of 3) "
        "| add ms (stays exact) | search ms (best of 3) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s.size:,} | {1000 * s.add_s:.1f} | {'IVF' if s.approximate else 'exact'} "
            f"| {1000 * s.search_s:.1f} | {1000 * s.exact_add_s:.1f} | {1000 * s.exact_search_s:.1f} |"
        )
    return lines


def summary(rows: list[Row]) -> list[str]:
    """Per N: exact against IVF per sync (fresh index, as broaden does) and search only (index kept)."""
    lines = []
    for n in sorted({r.n for r in rows}):
        at = [r for r in rows if r.n == n]
        index = next(r for r in at if r.key == "index")
        exact = next(r for r in at if r.key == "exact")
        blas = next(r for r in at if r.key == "numpy")
        ivf = next(r for r in at if r.key == "ivf" and r.nprobe == NPROBE)
        index_ms, exact_ms, blas_ms, ivf_ms = (1000 * statistics.median(r.search_s) for r in (index, exact, blas, ivf))
        lines.append(
            f"- N={n:,}: per sync VectorIndex exact {fmt_s(index.per_sync_s)} s, exact faiss "
            f"{fmt_s(exact.per_sync_s)} s, numpy {fmt_s(blas.per_sync_s)} s, IVF nprobe {NPROBE} "
            f"{fmt_s(ivf.per_sync_s)} s; search only VectorIndex exact {index_ms:.0f} ms, exact faiss "
            f"{exact_ms:.0f} ms vs IVF {ivf_ms:.0f} ms; faiss exact / numpy search time {exact_ms / blas_ms:.1f}x"
        )
    return lines


def extrapolated_build(rows: list[Row]) -> str:
    """VectorIndex.build (IVF) at the largest N where it was not built, from the largest measured
    build, scaling with N * nlist (k-means)."""
    built = [r for r in rows if r.key == "index-ivf"]
    missing = {r.n for r in rows} - {r.n for r in built}
    if not built or not missing:
        return ""
    big, n = max(built, key=lambda r: r.n), max(missing)
    factor = (n * ivf_nlist(n)) / (big.n * ivf_nlist(big.n))
    return (
        f"- VectorIndex.build (IVF) at {n:,}, extrapolated from {big.n:,} (k-means cost ~ N * nlist): "
        f"~{statistics.median(big.build_s) * factor:.0f} s"
    )


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few thousand vectors, two rounds: the same code in seconds")
    p.add_argument(
        "--full-ivf", action="store_true", help="build the 1M IVF on every row, as VectorIndex does (5-10 min)"
    )
    p.add_argument("--sizes", type=int, nargs="+", help="override the N values")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    load_start = os.getloadavg()[0]
    sizes = tuple(args.sizes or plan.sizes)
    start, stop, step, switch_at = plan.grow
    started = time.perf_counter()
    total = max(*sizes, stop)
    out(f"generating {total:,} + {Q} clustered vectors, d={D}")
    x = clustered(total + Q)
    q, x = x[-Q:].copy(), x[:-Q]
    rows: list[Row] = []
    for n in sizes:
        rows += measure_size(x, q, n, plan.reps.get(n, 3), args.full_ivf, plan)
    out(f"  growing a VectorIndex {start:,} -> {stop:,} in adds of {step:,}")
    steps = grow(x, q, start, stop, step, switch_at)
    out()
    out("## Machine")
    for line in machine_lines(load_start):
        out(line)
    out(
        f"- run: {time.perf_counter() - started:.0f} s, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )
    out()
    out(f"## Search, Q={Q}, k={K}, d={D} (* = IVF with reduced training)")
    for line in table(rows):
        out(line)
    out()
    for line in summary(rows) + [extrapolated_build(rows)]:
        out(line)
    out()
    out(f"## VectorIndex.add, {step:,} vectors at a time (broaden's EXACT_MAX is {EXACT_MAX:,})")
    for line in growth_table(steps, switch_at):
        out(line)


if __name__ == "__main__":
    main()
