"""LPR4M per-group protocol and global top-k against brute-force numpy references (exact match)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rice.retrieval.metrics import recall_at_k
from rice.retrieval.protocols import first_hit_ranks, global_topk, grouped_topk, queries_without_gallery


def make_problem(seed: int, group_sizes: list[int], queries_per_group: int, dim: int = 16):
    rng = np.random.default_rng(seed)
    gallery_groups = [f"live{g}" for g, n in enumerate(group_sizes) for _ in range(n)]
    perm = rng.permutation(len(gallery_groups))  # interleave groups: gallery order must not matter
    gallery_groups = [gallery_groups[i] for i in perm]
    gallery = rng.standard_normal((len(gallery_groups), dim)).astype(np.float32)  # continuous: no ties
    # A few ids are shared by two gallery items (a product photographed twice).
    gallery_ids = [f"img{i}" for i in range(len(gallery_groups))]
    for i in range(0, len(gallery_ids) - 1, 7):
        gallery_ids[i + 1] = gallery_ids[i]
    query_groups = [f"live{g}" for g in range(len(group_sizes)) for _ in range(queries_per_group)]
    query_groups += ["live_without_gallery"] * 2
    queries = rng.standard_normal((len(query_groups), dim)).astype(np.float32)
    gts = []
    for group in query_groups:
        members = [gallery_ids[i] for i, g in enumerate(gallery_groups) if g == group]
        n_pos = int(rng.integers(1, 4))
        gts.append(list(rng.choice(members, size=min(n_pos, len(members)), replace=False)) if members
                   else ["img_unknown"])
    return queries, query_groups, gallery, gallery_groups, gallery_ids, gts


def brute_force_ranks(queries, query_groups, gallery, gallery_groups, gallery_ids, gts, k):
    """A naive loop: score in float64 within the query's group, sort, walk the ranked list."""
    ranks, topk = [], []
    for q, group in enumerate(query_groups):
        members = [i for i, g in enumerate(gallery_groups) if g == group]
        scores = [float(np.dot(queries[q].astype(np.float64), gallery[i].astype(np.float64))) for i in members]
        ranked = [members[j] for j in np.argsort(-np.array(scores), kind="stable")][:k]
        topk.append(ranked + [-1] * (k - len(ranked)))
        rank = -1
        for r, i in enumerate(ranked):
            if gallery_ids[i] in gts[q]:
                rank = r
                break
        ranks.append(rank)
    return np.array(topk), np.array(ranks)


@pytest.mark.parametrize("method", ["per_group", "masked"])
def test_grouped_matches_brute_force_exactly(method: str) -> None:
    k = 10
    queries, qg, gallery, gg, gids, gts = make_problem(0, [1, 3, 10, 25, 60], queries_per_group=8)
    ref_topk, ref_ranks = brute_force_ranks(queries, qg, gallery, gg, gids, gts, k)
    topk = grouped_topk(queries, qg, gallery, gg, k, method=method)
    np.testing.assert_array_equal(topk, ref_topk)
    ranks = first_hit_ranks(topk, gids, gts)
    np.testing.assert_array_equal(ranks, ref_ranks)
    # recall through the lead's metric equals the brute-force count
    recall = recall_at_k(ranks, [1, 3, 5, 10])
    for kk in (1, 3, 5, 10):
        assert recall[f"R@{kk}"] == pytest.approx(100.0 * np.mean((ref_ranks >= 0) & (ref_ranks < kk)))
    # queries of a group without gallery: all -1, miss, reported
    missing = queries_without_gallery(qg, gg)
    assert list(missing) == [len(qg) - 2, len(qg) - 1]
    assert (topk[missing] == -1).all() and (ranks[missing] == -1).all()
    # groups with fewer than k items are padded with -1
    assert (topk[:8, 1:] == -1).all() and (topk[8:16, 3:] == -1).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
       k=st.integers(1, 12))
def test_grouped_property_matches_reference(seed: int, sizes: list[int], k: int) -> None:
    queries, qg, gallery, gg, gids, gts = make_problem(seed, sizes, queries_per_group=3)
    ref_topk, ref_ranks = brute_force_ranks(queries, qg, gallery, gg, gids, gts, k)
    topk = grouped_topk(queries, qg, gallery, gg, k)
    np.testing.assert_array_equal(topk, ref_topk)
    np.testing.assert_array_equal(first_hit_ranks(topk, gids, gts), ref_ranks)


def test_gallery_permutation_invariance() -> None:
    queries, qg, gallery, gg, gids, gts = make_problem(3, [5, 40, 12], queries_per_group=6)
    ranks = first_hit_ranks(grouped_topk(queries, qg, gallery, gg, 10), gids, gts)
    perm = np.random.default_rng(1).permutation(len(gg))
    ranks_p = first_hit_ranks(grouped_topk(queries, qg, gallery[perm], [gg[i] for i in perm], 10),
                              [gids[i] for i in perm], gts)
    np.testing.assert_array_equal(ranks, ranks_p)


def test_global_topk_matches_argsort_and_pads() -> None:
    rng = np.random.default_rng(5)
    queries, gallery = rng.standard_normal((20, 8)).astype(np.float32), rng.standard_normal((7, 8)).astype(np.float32)
    topk = global_topk(queries, gallery, 10)
    ref = np.argsort(-(queries.astype(np.float64) @ gallery.T.astype(np.float64)), axis=1, kind="stable")
    np.testing.assert_array_equal(topk[:, :7], ref)
    assert (topk[:, 7:] == -1).all()


def test_identical_query_and_gallery_gives_r1_100() -> None:
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((30, 12)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups = [f"g{i % 4}" for i in range(30)]
    ids = [f"id{i}" for i in range(30)]
    ranks = first_hit_ranks(grouped_topk(emb, groups, emb, groups, 5), ids, [[i] for i in ids])
    assert recall_at_k(ranks, [1])["R@1"] == 100.0


def test_first_hit_ranks_accepts_id_strings_and_validates() -> None:
    top = np.array([["a", "b", ""], ["c", "d", "e"]], dtype=object)
    np.testing.assert_array_equal(first_hit_ranks(top, None, [["b"], ["x"]]), [1, -1])
    with pytest.raises(ValueError, match="gallery_ids"):
        first_hit_ranks(np.zeros((1, 2), dtype=np.int64), None, [["a"]])
    with pytest.raises(ValueError, match="lengths must match"):
        grouped_topk(np.zeros((2, 4)), ["a"], np.zeros((1, 4)), ["a"], 3)


@pytest.mark.parametrize("seed", range(5))
def test_first_hit_ranks_of_indices_equals_the_per_query_loop_over_ids(seed: int) -> None:
    # The index path is vectorised; the id-string path is the plain loop: both must give the same ranks, with
    # padding, duplicate gallery ids, several ground-truth ids, ids absent from the gallery and queries without any.
    rng = np.random.default_rng(seed)
    gallery_ids = [f"p{rng.integers(0, 15)}" for _ in range(60)]
    topk = rng.integers(-1, 60, size=(50, 7))
    gts = [[f"p{x}" for x in rng.integers(0, 20, size=rng.integers(0, 4))] for _ in range(50)]
    as_ids = np.array([[gallery_ids[i] if i >= 0 else "" for i in row] for row in topk], dtype=object)
    expected = first_hit_ranks(as_ids, None, gts)
    assert (expected >= 0).sum() > 5 and (expected == -1).sum() > 5  # both outcomes are exercised
    np.testing.assert_array_equal(first_hit_ranks(topk, gallery_ids, gts), expected)
