import numpy as np

from backend.ranking.index import VectorIndex


def clustered(rng, n, dim=32, clusters=40):
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def brute(x, q, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1)[:, :k]


def test_exact_search_matches_brute_force_and_keeps_ids():
    rng = np.random.default_rng(0)
    x = clustered(rng, 2000)
    ids = np.arange(2000) * 7 + 3
    index = VectorIndex(32).build(x, ids)
    sims, found = index.search(x[:50], 10)
    assert (found == ids[brute(x, x[:50], 10)]).all()
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5) and (np.diff(sims, axis=1) <= 1e-6).all()


def test_add_remove_and_padding():
    rng = np.random.default_rng(1)
    x = clustered(rng, 10)
    index = VectorIndex(32)
    index.add(x[:6], np.arange(6))
    index.add(x[4:], np.arange(4, 10))  # 4 and 5 replaced, not duplicated
    assert len(index) == 10
    index.remove([0, 1])
    sims, found = index.search(x[:1], 12)
    assert 0 not in found and (found[0, 8:] == -1).all() and np.isneginf(sims[0, 8:]).all()
    assert VectorIndex(32).search(x[:2], 3)[1].tolist() == [[-1, -1, -1], [-1, -1, -1]]


def test_grows_into_ivf_past_exact_max_with_high_recall():
    rng = np.random.default_rng(2)
    x = clustered(rng, 6000)
    index = VectorIndex(32, exact_max=4000)
    index.add(x[:3000], np.arange(3000))
    assert not index.approximate
    index.add(x[3000:], np.arange(3000, 6000))
    assert index.approximate and len(index) == 6000
    _, found = index.search(x[:100], 10)
    truth = brute(x, x[:100], 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall > 0.95
