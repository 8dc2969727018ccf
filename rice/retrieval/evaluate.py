"""Evaluation: embed gallery images and query clips, search, and report recall@k (total and per subset)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from rice import distributed
from rice.retrieval.metrics import recall_at_k
from rice.retrieval.protocols import first_hit_ranks, global_topk, grouped_topk

SOURCE_NAMES = {0: "hard", 1: "regular"}


@dataclass
class EmbeddingSet:
    """Everything the search needs, on the CPU as numpy (float32, L2-normalised)."""

    query_ids: list[str]
    query_embeddings: np.ndarray  # (Q, D)
    query_gt: list[list[str]]
    query_groups: list[str]
    query_sources: np.ndarray  # (Q,) int, -1 when unknown
    query_ok: np.ndarray  # (Q,) bool: False = unreadable clip (counts as a miss)
    gallery_ids: list[str]
    gallery_embeddings: np.ndarray  # (G, D)
    gallery_groups: list[str]
    skipped: list[str] = field(default_factory=list)
    gallery_tokens: torch.Tensor | None = None  # (G, L, W) encoder tokens, kept for PMD re-ranking

    def save_npz(self, path: str | Path) -> None:
        """Write ids and embeddings so the table can be recomputed (or indexed) elsewhere, no pickles needed."""
        np.savez(
            path,
            query_ids=np.array(self.query_ids, dtype=str),
            query_embeddings=self.query_embeddings.astype(np.float32),
            gallery_ids=np.array(self.gallery_ids, dtype=str),
            gallery_embeddings=self.gallery_embeddings.astype(np.float32),
            query_groups=np.array(self.query_groups, dtype=str),
            gallery_groups=np.array(self.gallery_groups, dtype=str),
            query_gt_json=np.array(json.dumps(self.query_gt)),
            query_sources=self.query_sources.astype(np.int64),
        )


def _loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    from rice.data import collate_batch  # data is the caller's concern; only the collate contract is shared
    from rice.data.workers import single_threaded_worker

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_batch,
        worker_init_fn=single_threaded_worker,
    )


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``eval.precision`` on ``device``; None = plain fp32.

    ``auto`` is bf16 on CUDA (tensor cores, fp32 range) and fp32 elsewhere: CPU autocast is slower than fp32 on most
    CPUs and changes the numbers for nothing.
    """
    device_type = torch.device(device).type
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" else "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"eval precision {precision!r}: choose from auto, fp32, bf16, fp16")
    return dtypes[precision]


def _shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Rank ``rank``'s contiguous slice: concatenating the slices in rank order gives back the dataset's order."""
    n = len(dataset)
    return Subset(dataset, range(rank * n // world_size, (rank + 1) * n // world_size))


@torch.no_grad()
def extract_embeddings(
    model: torch.nn.Module,
    queries: Dataset,
    gallery: Dataset,
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | str = "cpu",
    keep_gallery_tokens: bool = False,
    precision: str = "fp32",
    shard: bool = False,
) -> EmbeddingSet:
    """Embed every gallery image and query clip in batches, without gradients, in eval mode.

    ``precision`` (``eval.precision``): fp32, bf16 or fp16 autocast, or auto (bf16 on CUDA, fp32 on CPU); the
    embeddings come back as float32 either way. ``shard``: under torch.distributed, each rank embeds a contiguous
    share of queries and gallery and the shares are gathered, so every rank returns the whole set in dataset order
    (every rank must call this). ``keep_gallery_tokens`` also keeps the gallery's encoder tokens (same forward pass)
    for re-ranking.
    """
    model.eval()
    world = distributed.world_info()
    if shard and world.world_size > 1:
        queries = _shard(queries, world.rank, world.world_size)
        gallery = _shard(gallery, world.rank, world.world_size)
    dtype = autocast_dtype(precision, device)
    device_type = torch.device(device).type

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    skipped: list[str] = []
    g_ids, g_emb, g_groups, g_tokens = [], [], [], []
    for batch in _loader(gallery, batch_size, workers):
        skipped += batch["skipped"]
        ok = torch.as_tensor(batch["ok"], dtype=torch.bool)
        if not ok.any():
            continue
        images = batch["image"][ok].to(device, non_blocking=True)
        with autocast():
            if keep_gallery_tokens:
                emb, tokens = model.encode_image_tokens(images)
                g_tokens.append(tokens.float())
            else:
                emb = model.encode_image(images)
        keep = ok.nonzero().squeeze(1).tolist()
        g_emb.append(emb.float().cpu().numpy())
        g_ids += [batch["image_id"][i] for i in keep]
        g_groups += [batch["group"][i] for i in keep]
    q_ids, q_emb, q_gt, q_groups, q_src, q_ok = [], [], [], [], [], []
    for batch in _loader(queries, batch_size, workers):
        skipped += batch["skipped"]
        frames = batch["frames"].to(device, non_blocking=True)
        with autocast():
            emb = model.encode_video(frames, batch["frame_mask"].to(device))
        q_emb.append(emb.float().cpu().numpy())
        q_ids += batch["query_id"]
        q_gt += [list(g) for g in batch["gt_ids"]]
        q_groups += batch["group"]
        q_src += [int(s) for s in batch["source"]]
        q_ok += [bool(o) for o in batch["ok"]]
    dim = model.embed_dim
    result = EmbeddingSet(
        query_ids=q_ids,
        query_embeddings=np.concatenate(q_emb) if q_emb else np.zeros((0, dim), np.float32),
        query_gt=q_gt,
        query_groups=q_groups,
        query_sources=np.array(q_src, dtype=np.int64),
        query_ok=np.array(q_ok, dtype=bool),
        gallery_ids=g_ids,
        gallery_embeddings=np.concatenate(g_emb) if g_emb else np.zeros((0, dim), np.float32),
        gallery_groups=g_groups,
        skipped=skipped,
        gallery_tokens=torch.cat(g_tokens) if g_tokens else None,
    )
    return _gather(result, dim) if shard and world.world_size > 1 else result


def _gather(local: EmbeddingSet, dim: int) -> EmbeddingSet:
    """Every rank's share, concatenated in rank order (= dataset order); tokens travel on the CPU."""
    if local.gallery_tokens is not None:
        local.gallery_tokens = local.gallery_tokens.cpu()
    parts: list[EmbeddingSet] = distributed.all_gather_object(local)  # type: ignore[assignment]

    def cat(name: str) -> list:
        return [x for part in parts for x in getattr(part, name)]

    def stack(name: str, empty: np.ndarray) -> np.ndarray:
        arrays = [getattr(part, name) for part in parts if len(getattr(part, name))]
        return np.concatenate(arrays) if arrays else empty

    tokens = [part.gallery_tokens for part in parts if part.gallery_tokens is not None]
    return EmbeddingSet(
        query_ids=cat("query_ids"),
        query_embeddings=stack("query_embeddings", np.zeros((0, dim), np.float32)),
        query_gt=cat("query_gt"),
        query_groups=cat("query_groups"),
        query_sources=stack("query_sources", np.zeros(0, np.int64)),
        query_ok=stack("query_ok", np.zeros(0, bool)),
        gallery_ids=cat("gallery_ids"),
        gallery_embeddings=stack("gallery_embeddings", np.zeros((0, dim), np.float32)),
        gallery_groups=cat("gallery_groups"),
        skipped=cat("skipped"),
        gallery_tokens=torch.cat(tokens) if tokens else None,
    )


def rank_gallery(emb: EmbeddingSet, k: int) -> np.ndarray:
    """Top-k gallery indices (Q, k) per query, -1 padded: one global gallery, or each query's own group's gallery."""
    if any(emb.query_groups):
        return grouped_topk(emb.query_embeddings, emb.query_groups, emb.gallery_embeddings, emb.gallery_groups, k)
    return global_topk(emb.query_embeddings, emb.gallery_embeddings, k)


def score_rankings(emb: EmbeddingSet, top_indices: np.ndarray, ks: list[int]) -> dict[str, Any]:
    """Recall@k over all queries (unreadable ones are misses), plus the hard/regular subsets when known."""
    ranks = first_hit_ranks(top_indices, emb.gallery_ids, emb.query_gt)
    ranks = np.where(emb.query_ok, ranks, -1)
    result: dict[str, Any] = {**recall_at_k(ranks, ks), "num_queries": int(len(ranks))}
    subsets = {}
    for source, name in SOURCE_NAMES.items():
        selected = emb.query_sources == source
        if selected.any():
            subsets[name] = {**recall_at_k(ranks[selected], ks), "num_queries": int(selected.sum())}
    if subsets:
        result["subsets"] = subsets
    result["unreadable_queries"] = int((~emb.query_ok).sum())
    result["gallery_size"] = len(emb.gallery_ids)
    return result


def evaluate_embeddings(emb: EmbeddingSet, ks: list[int]) -> dict[str, Any]:
    top = rank_gallery(emb, max(ks))
    return score_rankings(emb, top, ks)
