"""Retrieval protocols: one global gallery (MovingFashion) and one gallery per livestream group (LPR4M).

LPR4M protocol (method.md): each query clip is ranked only against the shop images of its own livestream; a
query may have several ground-truth images (a hit is any of them in the top k); the denominator is every query,
so a query without frames or without a gallery for its livestream counts as a miss.

Per-group search vs one masked search: a per-group FAISS ``IndexFlatIP`` does ``sum_g Q_g * G_g`` dot products,
a masked full search does ``Q * G`` (about ``num_groups`` times more: 110x on LPR4M). Measured on 2 CPU cores
with LPR4M-shaped random data (20,079 queries, 66,358 images, 110 groups, d=512): see docs/datasets.md;
the per-group search is the default and the masked path is kept only as a cross-check (``method="masked"``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from rice.retrieval.index import build_index, search

log = logging.getLogger(__name__)


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    return x


def global_topk(query_emb: np.ndarray, gallery_emb: np.ndarray, k: int) -> np.ndarray:
    """Top-k gallery indices by inner product over one gallery.

    Args:
        query_emb: (Q, D) embeddings (L2-normalised for cosine).
        gallery_emb: (G, D).
        k: ranks kept; when G < k the row is padded with -1.

    Returns:
        (Q, k) int64 gallery indices, best first.
    """
    query_emb, gallery_emb = _as_f32(query_emb, "query_emb"), _as_f32(gallery_emb, "gallery_emb")
    if query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(f"embedding sizes differ: queries {query_emb.shape[1]}, gallery {gallery_emb.shape[1]}")
    out = np.full((len(query_emb), k), -1, dtype=np.int64)
    if len(gallery_emb) == 0 or len(query_emb) == 0:
        return out
    _, ids = search(build_index(gallery_emb), query_emb, k)
    out[:, : ids.shape[1]] = ids
    return out


def queries_without_gallery(query_groups: Sequence[str], gallery_groups: Sequence[str]) -> np.ndarray:
    """Indices of the queries whose group has no gallery image (each is a miss under the LPR4M protocol)."""
    present = set(gallery_groups)
    return np.array([i for i, g in enumerate(query_groups) if g not in present], dtype=np.int64)


def grouped_topk(
    query_emb: np.ndarray,
    query_groups: Sequence[str],
    gallery_emb: np.ndarray,
    gallery_groups: Sequence[str],
    k: int,
    method: Literal["per_group", "masked"] = "per_group",
) -> np.ndarray:
    """Top-k gallery indices where each query is ranked only against the gallery items of its own group.

    Args:
        query_emb: (Q, D); query_groups: Q group keys (the livestream id).
        gallery_emb: (G, D); gallery_groups: G group keys.
        k: ranks kept; a group with fewer than k items pads its rows with -1, and a query whose group has
            no gallery gets a row of -1 (a miss; a warning names how many).
        method: ``"per_group"`` (one FAISS IndexFlatIP per group, the fast default) or ``"masked"`` (one
            chunked full product with other groups masked out; a cross-check, ~num_groups x slower).

    Returns:
        (Q, k) int64 indices into the full gallery, best first.
    """
    query_emb, gallery_emb = _as_f32(query_emb, "query_emb"), _as_f32(gallery_emb, "gallery_emb")
    if len(query_groups) != len(query_emb) or len(gallery_groups) != len(gallery_emb):
        raise ValueError(f"{len(query_groups)} query groups for {len(query_emb)} queries and "
                         f"{len(gallery_groups)} gallery groups for {len(gallery_emb)} images: lengths must match")
    if method not in ("per_group", "masked"):
        raise ValueError(f"unknown method {method!r}; choose from ['per_group', 'masked']")
    out = np.full((len(query_emb), k), -1, dtype=np.int64)
    missing = queries_without_gallery(query_groups, gallery_groups)
    if len(missing):
        log.warning("%d of %d queries have no gallery for their group; they count as misses",
                    len(missing), len(query_emb))
    # Integer group codes shared by queries and gallery.
    codes: dict[str, int] = {}
    g_codes = np.array([codes.setdefault(g, len(codes)) for g in gallery_groups], dtype=np.int64)
    q_codes = np.array([codes.get(g, -1) for g in query_groups], dtype=np.int64)
    if method == "masked":
        return _masked_topk(query_emb, q_codes, gallery_emb, g_codes, k, out)
    order = np.argsort(g_codes, kind="stable")
    bounds = np.searchsorted(g_codes[order], np.arange(len(codes) + 1))
    for code in np.unique(q_codes[q_codes >= 0]):
        members = order[bounds[code]:bounds[code + 1]]  # gallery indices of this group, in gallery order
        queries = np.flatnonzero(q_codes == code)
        _, top = member_topk(gallery_emb, members, query_emb[queries], k)
        out[queries] = top
    return out


def member_topk(
    gallery_emb: np.ndarray, members: np.ndarray, query_emb: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the queries among the gallery rows ``members`` only: THE per-group search.

    Used by the LPR4M protocol (`grouped_topk`) and by the catalogue index's ``search(..., group=G)``, so the
    evaluation and the product answer per-shop queries with the same code. Only the members' rows are read
    (``gallery_emb`` may be a memory map of a catalogue much larger than the group).

    Args:
        gallery_emb: (G, D); members: (M,) row indices into it; query_emb: (Q, D).

    Returns:
        (Q, k) float32 scores (-inf padding) and (Q, k) int64 gallery row indices (-1 padding), best first; ties
        keep the members' order.
    """
    scores = np.full((len(query_emb), k), -np.inf, dtype=np.float32)
    rows = np.full((len(query_emb), k), -1, dtype=np.int64)
    members = np.asarray(members, dtype=np.int64)
    if len(members) == 0 or len(query_emb) == 0:
        return scores, rows
    found, local = search(build_index(np.asarray(gallery_emb[members])), _as_f32(query_emb, "query_emb"), k)
    valid = local >= 0
    rows[:, : local.shape[1]] = np.where(valid, members[np.maximum(local, 0)], -1)
    scores[:, : local.shape[1]] = np.where(valid, found, -np.inf)
    return scores, rows


def _masked_topk(query_emb: np.ndarray, q_codes: np.ndarray, gallery_emb: np.ndarray, g_codes: np.ndarray,
                 k: int, out: np.ndarray, chunk: int = 1024) -> np.ndarray:
    sizes = np.bincount(g_codes, minlength=int(q_codes.max(initial=-1)) + 1)
    for start in range(0, len(query_emb), chunk):
        q = slice(start, start + chunk)
        scores = query_emb[q] @ gallery_emb.T  # (chunk, G)
        scores[q_codes[q][:, None] != g_codes[None, :]] = -np.inf
        kk = min(k, scores.shape[1])
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(scores, top, axis=1)
        ranked = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        for row, qi in enumerate(range(start, min(start + chunk, len(query_emb)))):
            valid = int(sizes[q_codes[qi]]) if q_codes[qi] >= 0 else 0
            out[qi, : min(valid, kk)] = ranked[row, : min(valid, kk)]
    return out


def first_hit_ranks(
    topk: np.ndarray,
    gallery_ids: Sequence[str] | None,
    gt_ids_per_query: Sequence[Iterable[str]],
) -> np.ndarray:
    """0-based rank of the first ground-truth hit per query, -1 when none is in the top k.

    Args:
        topk: (Q, k) gallery indices (-1 = padding) as returned by `grouped_topk` / `global_topk`, or a (Q, k)
            array of gallery id strings (then ``gallery_ids`` may be None; ``""``/None = padding).
        gallery_ids: the id of each gallery item (duplicates allowed: several items may share an id).
        gt_ids_per_query: the ground-truth ids of each query (any of them counts as a hit).

    Returns:
        (Q,) int64; feed it to ``recall_at_k``.
    """
    topk = np.asarray(topk)
    if topk.ndim != 2 or len(topk) != len(gt_ids_per_query):
        raise ValueError(f"topk must be (Q, k) with Q = {len(gt_ids_per_query)} queries, got shape {topk.shape}")
    if topk.dtype.kind in "iu":
        if gallery_ids is None:
            raise ValueError("gallery_ids is required when topk holds gallery indices")
        return _first_hit_ranks_of_indices(topk, gallery_ids, gt_ids_per_query)
    ranks = np.full(len(topk), -1, dtype=np.int64)
    for q, (row, gts) in enumerate(zip(topk, gt_ids_per_query)):
        wanted = set(gts)
        if not wanted:
            continue
        for rank, item in enumerate(row):
            if item in wanted:
                ranks[q] = rank
                break
    return ranks


def _first_hit_ranks_of_indices(
    topk: np.ndarray, gallery_ids: Sequence[str], gt_ids_per_query: Sequence[Iterable[str]]
) -> np.ndarray:
    """`first_hit_ranks` for gallery indices, vectorised: ids become integer codes, hits one array comparison
    per (query, ground-truth id) pair (a Python loop over 20,079 x 10 LPR4M ranks took a quarter of the protocol)."""
    codes: dict[str, int] = {}
    gallery_codes = np.array([codes.setdefault(g, len(codes)) for g in gallery_ids] + [-1], dtype=np.int64)
    ranked = gallery_codes[np.where(topk >= 0, topk, -1)]  # index -1 -> the trailing -1 code: padding never hits
    pairs = [(q, codes[g]) for q, gts in enumerate(gt_ids_per_query) for g in set(gts) if g in codes]
    hit = np.zeros(topk.shape, dtype=bool)
    if pairs:
        rows, wanted = np.array(pairs, dtype=np.int64).T
        np.logical_or.at(hit, rows, ranked[rows] == wanted[:, None])
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)
