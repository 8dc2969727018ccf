"""Choosing an IVF index's search setting by measurement (`rice index tune IDX --queries N`).

Recall@k against exact search and queries/s are measured over a grid of ``nprobe`` (lists probed) and, for
compressed lists (SQ8, PQ), ``refine`` (candidates re-scored with the full vectors per result). The queries are
held out: by default N items of the index itself, each searched with itself left out of both the exact and the
approximate answer (so an item never finds itself); or query vectors the caller gives. The cheapest setting that
reaches the target recall is stored in index.json (``settings.nprobe`` / ``settings.refine``, and the whole table
under ``tune``), so `rice search` and `rice serve` use it from then on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from rice.retrieval.index_core import IndexBase as Index

REFINE_GRID = (1, 2, 4, 8, 16, 32)
PLATEAU = 0.002  # recall gained by doubling nprobe below which more probes are not tried


def exact_topk(index: Index, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
               rows_at_once: int = 65_536) -> np.ndarray:
    """Slots of the exact top-k over every live item (``exclude[q]``: a slot query q must not find), by a scan of
    the vectors a chunk at a time."""
    live = _live_mask(index)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_slots = np.full((len(queries), k), -1, dtype=np.int64)
    for start, vectors in _chunks(index, rows_at_once):
        scores = queries @ vectors.T
        scores[:, ~live[start : start + len(vectors)]] = -np.inf
        if exclude is not None:
            inside = (exclude >= start) & (exclude < start + len(vectors))
            scores[np.flatnonzero(inside), exclude[inside] - start] = -np.inf
        slots = np.arange(start, start + len(vectors), dtype=np.int64)
        merged_scores = np.hstack([best_scores, scores])
        merged_slots = np.hstack([best_slots, np.broadcast_to(slots, scores.shape)])
        top = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, 1)
        best_slots = np.take_along_axis(merged_slots, top, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_slots, order, 1)


def _live_mask(index: Index) -> np.ndarray:
    live = getattr(index, "_live", None)
    return live if live is not None else np.ones(len(index), dtype=bool)


def _chunks(index: Index, rows: int):  # noqa: ANN202
    if hasattr(index.embeddings, "chunks"):
        yield from index.embeddings.chunks(rows)
        return
    for start in range(0, len(index.embeddings), rows):
        yield start, np.asarray(index.embeddings[start : start + rows], dtype=np.float32)


def tune(index: Index, queries: int | np.ndarray = 200, k: int = 10, target: float = 0.95,
         nprobes: list[int] | None = None, refines: list[int] | None = None, seed: int = 0,
         save: bool = True) -> dict[str, Any]:
    """Measure recall@k and queries/s over nprobe x refine, store the fastest setting reaching ``target``.

    Returns the ``tune`` record (also written to index.json when ``save`` and the index came from a folder).
    """
    if index.settings.index_type not in ("ivf", "ivfsq8", "ivfpq"):
        raise ValueError(f"{index.settings.index_type} has no nprobe to tune; only IVF indexes are tuned")
    if isinstance(queries, int):
        live = np.flatnonzero(_live_mask(index))
        if queries < 1 or queries > len(live):
            raise ValueError(f"--queries {queries}: choose between 1 and the {len(live)} items of the index")
        slots = np.sort(np.random.default_rng(seed).choice(live, queries, replace=False))
        vectors = np.ascontiguousarray(index.embeddings[slots], dtype=np.float32)
        held_out = "leave-one-out: each query is an item of the index, left out of its own answers"
    else:
        vectors = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        slots = None
        held_out = "query vectors given by the caller"
    truth_slots = exact_topk(index, vectors, k, exclude=slots)
    truth = [{index._hit(1, int(s), 0.0).id for s in row if s >= 0} for row in truth_slots]
    nlist = index.settings.nlist
    nprobes = sorted(set(nprobes or [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p <= nlist]
                         + [nlist]))
    compressed = index.settings.index_type != "ivf"
    refines = sorted(set(refines or (REFINE_GRID if compressed else (1,))))
    fetch = k + 1 if slots is not None else k  # the query item itself comes back first: drop it
    own = [None] * len(vectors) if slots is None else [index._hit(1, int(s), 0.0).id for s in slots]
    table: list[dict[str, Any]] = []
    for refine in refines:
        previous = -1.0
        for nprobe in nprobes:  # recall grows with nprobe: stop at the first that reaches the target ...
            tic = time.perf_counter()
            hits = index.search(vectors, k=fetch, nprobe=nprobe, refine=refine)
            seconds = time.perf_counter() - tic
            found = [[h.id for h in row if h.id != mine][:k] for row, mine in zip(hits, own)]
            recall = float(np.mean([len(set(f) & t) / max(1, len(t)) for f, t in zip(found, truth)]))
            table.append({"nprobe": nprobe, "refine": refine, "recall": round(recall, 4),
                          "queries_per_s": round(len(vectors) / seconds, 1)})
            if recall >= target or recall - previous < PLATEAU:
                break  # ... or once more lists stop helping: the codes, not the probes, limit this refine depth
            previous = recall
    good = [row for row in table if row["recall"] >= target]
    chosen = max(good, key=lambda r: r["queries_per_s"]) if good else max(table, key=lambda r: (r["recall"],
                                                                                                r["queries_per_s"]))
    record = {"queries": len(vectors), "k": k, "target": target, "held_out": held_out, "chosen": chosen,
              "met": bool(good), "table": table, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    index.settings = replace(index.settings, nprobe=int(chosen["nprobe"]), refine=int(chosen["refine"]))
    index.tuned = record
    if save and index.loaded_from is not None:
        index.save(index.loaded_from)
    return record
