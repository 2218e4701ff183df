import numpy as np
import pytest

from backend.ranking.strategies import (
    STRATEGIES,
    BroadenedPoolSampling,
    KNNPoolSampling,
    LatentSpaceBroadening,
    Pool,
    diversify,
    interleave,
    round_robin,
    uncertainty,
)


def clustered_pool(rng, n_clusters=8, per=25, dim=16, spread=0.05):
    centres = rng.normal(size=(n_clusters, dim))
    emb = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(n_clusters * per, dim))
    n = len(emb)
    p = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    return Pool(probs=[p], multiple=[False], embeddings=emb.astype(np.float32), labelled=np.zeros(n, bool))


def test_uncertainty_measures():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]], np.float32)
    pool = Pool(probs=[p], multiple=[False], embeddings=np.eye(3, dtype=np.float32), labelled=np.zeros(3, bool))
    assert np.allclose(uncertainty(pool, "margin"), [0.0, 1.0, 0.4])
    assert np.argmax(uncertainty(pool, "entropy")) == 1
    multi = Pool(
        probs=[np.array([[0.5, 1.0], [0.0, 1.0]], np.float32)],
        multiple=[True],
        embeddings=np.eye(2, dtype=np.float32),
        labelled=np.zeros(2, bool),
    )
    assert np.allclose(uncertainty(multi), [0.5, 0.0])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_ranks_each_unlabelled_task_once(name):
    rng = np.random.default_rng(0)
    pool = clustered_pool(rng)
    pool.labelled[[0, 30, 60]] = True
    pool.seeds = np.array([0, 30])
    order = STRATEGIES[name]().rank(pool, np.random.default_rng(1))
    assert sorted(order.tolist()) == pool.unlabelled.tolist()
    again = STRATEGIES[name]().rank(pool, np.random.default_rng(1))
    assert order.tolist() == again.tolist()  # seeded: reproducible


def test_lsb_pulls_a_seeds_neighbours_up_and_takes_seeds_in_turn():
    rng = np.random.default_rng(2)
    pool = clustered_pool(rng)
    pool.labelled[[0, 100]] = True
    pool.seeds = np.array([0, 100])  # clusters 0 (rows 0-24) and 4 (rows 100-124)
    order = LatentSpaceBroadening(k=10, share=0.5).rank(pool, rng)
    top = order[:10]
    assert sum(r < 25 for r in top) >= 2 and sum(100 <= r < 125 for r in top) >= 2
    # alone, LSB serves nothing but the two neighbourhoods first
    alone = LatentSpaceBroadening(k=10, with_uncertainty=False).rank(pool, rng)[:20]
    assert all(r < 25 or 100 <= r < 125 for r in alone)
    assert alone[0] < 25 and alone[1] >= 100  # round robin across seeds


def test_lookalike_threshold_keeps_only_close_neighbours():
    rng = np.random.default_rng(3)
    pool = clustered_pool(rng, per=5)  # only 4 unlabelled lookalikes per cluster
    pool.labelled[0] = True
    pool.seeds = np.array([0])
    (plain,) = LatentSpaceBroadening(k=10).broadened(pool)
    (lookalikes,) = LatentSpaceBroadening(k=10, threshold=0.9).broadened(pool)
    assert len(plain) == 10 and sorted(lookalikes.tolist()) == [1, 2, 3, 4]


def test_seals_candidates_come_from_labelled_neighbourhoods():
    rng = np.random.default_rng(4)
    pool = clustered_pool(rng)
    pool.labelled[[0]] = True
    order = KNNPoolSampling(k=5).rank(pool, rng)
    assert all(r < 25 for r in order[:5])


def test_broadened_pool_leads_with_seed_neighbours_then_labelled_neighbourhoods():
    rng = np.random.default_rng(6)
    pool = clustered_pool(rng, spread=0.6)  # 8 clusters of 25, no two members near-duplicates
    pool.labelled[[0, 100]] = True
    pool.seeds = np.array([0])
    order = BroadenedPoolSampling(k=10, k_pool=5, share=0.5).rank(pool, rng)
    head = order[:15]  # the seed's 10 neighbours and the 5 of the other labelled task
    assert order[0] < 25
    assert sum(r < 25 for r in head) == 10 and sum(100 <= r < 125 for r in head) == 5
    assert sorted(order.tolist()) == pool.unlabelled.tolist()
    # A threshold no neighbour reaches leaves only the labelled tasks' own neighbourhoods in the head.
    order = BroadenedPoolSampling(k=10, k_pool=5, threshold=1.01, share=0.5).rank(pool, rng)
    assert sum(r < 25 for r in order[:10]) == 5 and sum(100 <= r < 125 for r in order[:10]) == 5


def test_broadened_pool_orders_the_seeds_neighbours_by_uncertainty_or_by_likelihood():
    rng = np.random.default_rng(7)
    pool = clustered_pool(rng, spread=0.6)
    policy = np.full((len(pool.labelled), 2), [0.5, 0.5], np.float32)  # everyone maximally uncertain
    policy[1:25, 1] = np.linspace(0.05, 0.95, 24)  # the seed's cluster: rising odds of the hunted label
    policy[1:25, 0] = 1 - policy[1:25, 1]
    pool.probs, pool.multiple = [policy], [False]
    pool.labelled[0], pool.seeds = True, np.array([0])
    seeded = pool.neighbourhood(pool.seeds, 10)
    least_decided = np.min(np.abs(policy[seeded, 1] - 0.5))  # ties among equals are broken at random
    pool.targets = [(0, 1)]
    # The default: the least decided of the seeds' neighbours first, even while a label is hunted.
    top = BroadenedPoolSampling(k=10, k_pool=1, share=1.0).rank(pool, rng)[: len(seeded)]
    assert set(top) == set(seeded) and abs(policy[top[0], 1] - 0.5) == least_decided
    # seed_order="likely": the likeliest positives first (by uncertainty when nothing is hunted).
    likely = BroadenedPoolSampling(k=10, k_pool=1, share=1.0, seed_order="likely")
    top = likely.rank(pool, rng)[: len(seeded)]
    assert set(top) == set(seeded)
    assert policy[top, 1].tolist() == sorted(policy[seeded, 1], reverse=True)
    pool.targets = []
    first = likely.rank(pool, rng)[0]
    assert first in seeded and abs(policy[first, 1] - 0.5) == least_decided


def test_lsb_pool_can_search_the_seeds_neighbours_in_the_frozen_features_too():
    rng = np.random.default_rng(8)
    pool = clustered_pool(rng, spread=0.6)
    # The frozen space groups differently: the seed (row 0) sits among rows 50-74 there.
    frozen = clustered_pool(np.random.default_rng(9), spread=0.6).embeddings.copy()
    frozen[0] = frozen[50]
    pool.frozen = frozen
    pool.labelled[0], pool.seeds = True, np.array([0])
    fused = BroadenedPoolSampling(k=10, k_pool=1, share=1.0).rank(pool, rng)[:10]
    assert all(r < 25 for r in fused) and len(pool.neighbourhood(pool.seeds, 10, frozen=True)) == 10
    both = BroadenedPoolSampling(k=10, k_pool=1, share=1.0, space="both").rank(pool, rng)[:20]
    assert sum(r < 25 for r in both) == 10 and sum(50 <= r < 75 for r in both) == 10
    pool.frozen = None  # no frozen features given: the fused space alone
    assert (
        sum(r < 25 for r in BroadenedPoolSampling(k=10, k_pool=1, share=1.0, space="both").rank(pool, rng)[:10]) == 10
    )


def test_the_seed_order_setting_reaches_lsb_pool():
    from backend.config import Settings
    from backend.ranking.pool import make_strategy

    assert make_strategy("lsb-pool", Settings()).seed_order == "uncertain"
    assert make_strategy("lsb-pool", Settings(lsb_seed_order="likely")).seed_order == "likely"
    assert make_strategy("lsb-pool", Settings(lsb_space="both")).space == "both"
    assert make_strategy("seals", Settings(lsb_seed_order="likely")).name == "seals"  # others ignore it


@pytest.mark.parametrize("name", ["margin", "entropy", "lsb+uncertainty", "lsb-pool"])
def test_top_of_queue_is_not_a_pile_of_near_duplicates(name):
    rng = np.random.default_rng(5)
    # 50 copies of one item, all maximally uncertain, and 50 distinct, less uncertain items
    dup = np.tile(rng.normal(size=(1, 16)), (50, 1)) + 1e-4 * rng.normal(size=(50, 16))
    emb = np.concatenate([dup, rng.normal(size=(50, 16))]).astype(np.float32)
    p = np.concatenate([np.full((50, 2), 0.5), np.tile([[0.7, 0.3]], (50, 1))]).astype(np.float32)
    pool = Pool(probs=[p], multiple=[False], embeddings=emb, labelled=np.zeros(100, bool))
    pool.labelled[[0, 50]] = True
    pool.seeds = np.array([0])
    top = STRATEGIES[name]().rank(pool, rng)[:20]
    assert sum(r < 50 for r in top) == 1


def test_helpers():
    assert interleave(np.array([1, 2, 3]), np.array([9, 8, 1]), 0.5).tolist() == [1, 9, 2, 8, 3]
    assert interleave(np.array([], np.int64), np.array([4, 5]), 0.5).tolist() == [4, 5]
    assert round_robin([np.array([1, 2, 3]), np.array([7]), np.array([2, 9])]).tolist() == [1, 7, 2, 9, 3]
    emb = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    assert diversify(np.array([0, 1, 2]), emb).tolist() == [0, 2, 1]
