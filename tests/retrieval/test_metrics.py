import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rice.retrieval.evaluate import EmbeddingSet, evaluate_embeddings, rank_gallery
from rice.retrieval.metrics import first_hit_rank, recall_at_k
from rice.retrieval.protocols import first_hit_ranks


def brute_force_recall(scores: np.ndarray, gallery_ids, gt, ks):
    """Full argsort per query; ties broken by gallery order (stable), any positive counts as a hit."""
    out = {}
    for k in ks:
        hits = 0
        for q in range(scores.shape[0]):
            order = np.argsort(-scores[q], kind="stable")[:k]
            hits += any(gallery_ids[i] in gt[q] for i in order)
        out[f"R@{k}"] = 100.0 * hits / scores.shape[0]
    return out


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embedding_set(q, g, gt, gallery_ids):
    return EmbeddingSet(
        query_ids=[f"q{i}" for i in range(len(q))], query_embeddings=q.astype(np.float32), query_gt=gt,
        query_groups=[""] * len(q), query_sources=np.full(len(q), -1), query_ok=np.ones(len(q), bool),
        gallery_ids=gallery_ids, gallery_embeddings=g.astype(np.float32), gallery_groups=[""] * len(g),
    )  # fmt: skip


def _half_grid(rng, n: int) -> np.ndarray:
    """Unit vectors with four entries of +-0.5 among 6 dims: every inner product is a multiple of 0.25, exact in
    float32 for numpy and FAISS alike, so ties are real ties on both sides."""
    out = np.zeros((n, 6), dtype=np.float32)
    for row in out:
        dims = rng.choice(6, size=4, replace=False)
        row[dims] = rng.choice([-0.5, 0.5], size=4)
    return out


def tie_bounds(scores: np.ndarray, positive: np.ndarray, k: int) -> tuple[bool, bool]:
    """(worst, best) hit@k of one query over every order of the tied scores.

    Items scoring above the k-th score are in the top k whatever the order; the items tied with it share the
    remaining slots. Best order: a tied positive takes a slot. Worst: the tied non-positives take them first.
    """
    kth = np.sort(scores)[::-1][k - 1]
    above, tied = scores > kth, scores == kth
    slots = k - int(above.sum())
    sure = bool((positive & above).any())
    best = sure or bool((positive & tied).any())
    worst = sure or int((~positive & tied).sum()) < slots
    return worst, best


def test_recall_with_exact_ties_lies_within_the_tie_bounds_query_by_query():
    rng = np.random.default_rng(0)
    gallery, queries = _half_grid(rng, 40), _half_grid(rng, 25)
    gallery[5] = gallery[3]  # exact duplicates: a guaranteed tie
    gallery_ids = [f"img{i // 2}" for i in range(40)]  # two gallery rows per image id
    gt = [[f"img{j}" for j in rng.choice(20, size=rng.integers(1, 4), replace=False)] for _ in range(25)]
    ks = [1, 3, 5, 10]
    emb = _embedding_set(queries, gallery, gt, gallery_ids)
    ours = evaluate_embeddings(emb, ks)
    ranks = first_hit_ranks(rank_gallery(emb, max(ks)), gallery_ids, gt)  # the per-query ranks behind `ours`
    scores = queries.astype(np.float64) @ gallery.T.astype(np.float64)  # exact: multiples of 0.25
    straddling = 0
    for k in ks:
        hits = 0
        for q in range(25):
            positive = np.array([gid in gt[q] for gid in gallery_ids])
            worst, best = tie_bounds(scores[q], positive, k)
            hit = 0 <= ranks[q] < k
            assert worst <= hit <= best, (q, k, worst, hit, best)
            straddling += worst != best
            hits += hit
        assert ours[f"R@{k}"] == 100.0 * hits / 25  # exact, from the same ranks
    assert straddling >= 3, "the data must put ties across the cut-off for the bounds to matter"


def test_recall_exact_without_ties():
    rng = np.random.default_rng(1)
    gallery, queries = _unit(rng.normal(size=(30, 8))), _unit(rng.normal(size=(50, 8)))
    gallery_ids = [f"g{i}" for i in range(30)]
    gt = [[f"g{j}" for j in rng.choice(30, size=rng.integers(1, 3), replace=False)] for _ in range(50)]
    ks = [1, 3, 5, 10]
    ours = evaluate_embeddings(_embedding_set(queries, gallery, gt, gallery_ids), ks)
    ref = brute_force_recall(queries @ gallery.T, gallery_ids, gt, ks)
    for k in ks:
        assert ours[f"R@{k}"] == ref[f"R@{k}"]


def test_unreadable_queries_are_misses():
    emb = _embedding_set(np.eye(3), np.eye(3), [["g0"], ["g1"], ["g2"]], ["g0", "g1", "g2"])
    emb.query_ok[1] = False
    result = evaluate_embeddings(emb, [1])
    assert result["R@1"] == 100.0 * 2 / 3 and result["unreadable_queries"] == 1 and result["num_queries"] == 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=-1, max_value=20), min_size=1, max_size=50))
def test_recall_is_monotone_and_bounded(ranks):
    values = recall_at_k(np.array(ranks), [1, 2, 5, 10, 21])
    seq = list(values.values())
    assert all(0.0 <= v <= 100.0 for v in seq)
    assert all(a <= b for a, b in zip(seq, seq[1:]))
    assert values["R@21"] == 100.0 * int(np.sum(np.array(ranks) >= 0)) / len(ranks)


def test_identical_query_and_gallery_give_perfect_recall_and_permutation_invariance():
    rng = np.random.default_rng(2)
    g = _unit(rng.normal(size=(20, 5)))
    ids = [f"g{i}" for i in range(20)]
    gt = [[i] for i in ids]
    assert evaluate_embeddings(_embedding_set(g, g, gt, ids), [1])["R@1"] == 100.0
    q = _unit(rng.normal(size=(15, 5)))
    gt_q = [[f"g{rng.integers(20)}"] for _ in range(15)]
    perm = rng.permutation(20)
    a = evaluate_embeddings(_embedding_set(q, g, gt_q, ids), [1, 5])
    b = evaluate_embeddings(_embedding_set(q, g[perm], gt_q, [ids[i] for i in perm]), [1, 5])
    assert a == b


def test_first_hit_rank():
    assert first_hit_rank(["a", "b", "c"], {"c", "b"}) == 1
    assert first_hit_rank(["a"], {"z"}) == -1
