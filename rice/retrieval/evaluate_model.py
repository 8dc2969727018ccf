"""`rice eval` as a library call: checkpoint -> model + eval data (from its config) -> recall table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rice.config import DataConfig, EvalConfig
from rice.data import build_eval_datasets
from rice.models import RiceModel
from rice.models.loading import load
from rice.retrieval.evaluate import EmbeddingSet, evaluate_embeddings, extract_embeddings, rank_gallery, score_rankings


def evaluate_model(
    model: RiceModel,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    split: str = "test",
    device: str | torch.device = "cpu",
    shard: bool = False,
) -> tuple[dict[str, Any], EmbeddingSet]:
    """Embed the split's queries and gallery with ``model`` and score them; deterministic for a given model.

    ``shard``: under torch.distributed every rank calls this, embeds its share and gets the gathered results."""
    queries, gallery = build_eval_datasets(data_cfg, model.preprocess, split, eval_cfg)
    emb = extract_embeddings(
        model, queries, gallery, eval_cfg.batch_size, data_cfg.workers, device,
        keep_gallery_tokens=eval_cfg.rerank > 0, precision=eval_cfg.precision, shard=shard,
    )  # fmt: skip
    results = evaluate_embeddings(emb, eval_cfg.ks)
    if eval_cfg.rerank > 0:
        top = rank_gallery(emb, max(eval_cfg.rerank, max(eval_cfg.ks)))
        reranked = rerank_rankings(model, queries, emb, top, eval_cfg, data_cfg.workers)
        results["reranked"] = score_rankings(emb, reranked, eval_cfg.ks)
    return results, emb


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_overrides: dict[str, Any] | None = None,
    eval_overrides: dict[str, Any] | None = None,
    split: str = "test",
    device: str = "auto",
) -> tuple[dict[str, Any], EmbeddingSet]:
    """Rebuild model and data from the checkpoint's config (with overrides such as ``root`` or ``dataset``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load(checkpoint, device=device)
    data_cfg = model.config.data.model_copy(update={k: v for k, v in (data_overrides or {}).items() if v is not None})
    data_cfg = DataConfig.model_validate(data_cfg.model_dump())
    eval_cfg = model.config.eval.model_copy(update={k: v for k, v in (eval_overrides or {}).items() if v is not None})
    eval_cfg = EvalConfig.model_validate(eval_cfg.model_dump())
    return evaluate_model(model, data_cfg, eval_cfg, split=split, device=device)


@torch.no_grad()
def rerank_rankings(
    model: RiceModel,
    queries,
    emb: EmbeddingSet,
    top: np.ndarray,
    eval_cfg: EvalConfig,
    workers: int = 0,
) -> np.ndarray:
    """Re-order each query's dual-encoder top-K by the PMD match score; ranks beyond K keep their order.

    Rows padded with -1 (a livestream with fewer than K images) are filled with their first candidate for
    scoring and de-duplicated afterwards, so padding never enters the ranking.
    """
    from rice.data import collate_batch
    from rice.retrieval.rerank import rerank

    k = eval_cfg.rerank
    head = top[:, :k]
    valid = head >= 0
    safe = np.where(valid, head, np.maximum(head[:, :1], 0))
    cos = np.einsum("qd,qkd->qk", emb.query_embeddings, emb.gallery_embeddings[safe])

    if emb.gallery_tokens is None:
        raise ValueError("re-ranking needs the gallery tokens: extract_embeddings(..., keep_gallery_tokens=True)")
    loader = DataLoader(queries, eval_cfg.batch_size, shuffle=False, num_workers=workers, collate_fn=collate_batch)
    query_batches = ((batch["frames"], batch["frame_mask"]) for batch in loader)
    order, _ = rerank(
        model, query_batches, emb.gallery_tokens, torch.from_numpy(safe), torch.from_numpy(cos),
        fusion=eval_cfg.rerank_fusion,
    )  # fmt: skip
    out = top.copy()
    for row, candidates in enumerate(order.numpy()):
        unique = list(dict.fromkeys(int(c) for c in candidates)) if valid[row].any() else []
        out[row, :k] = unique + [-1] * (k - len(unique))
    return out
