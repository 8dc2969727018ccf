"""`rice eval` as a library call: checkpoint -> model + eval data (from its config) -> recall table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rice.api import load
from rice.config import DataConfig, EvalConfig
from rice.data import build_eval_datasets
from rice.models import RiceModel
from rice.retrieval.evaluate import EmbeddingSet, evaluate_embeddings, extract_embeddings, rank_gallery, score_rankings


def evaluate_model(
    model: RiceModel,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    split: str = "test",
    device: str | torch.device = "cpu",
) -> tuple[dict[str, Any], EmbeddingSet]:
    """Embed the split's queries and gallery with ``model`` and score them; deterministic for a given model."""
    queries, gallery = build_eval_datasets(data_cfg, model.preprocess, split=split)
    emb = extract_embeddings(model, queries, gallery, eval_cfg.batch_size, data_cfg.workers, device)
    results = evaluate_embeddings(emb, eval_cfg.ks)
    if eval_cfg.rerank > 0:
        from rice.retrieval.rerank import rerank_rankings  # needs the PMD decoder

        top = rank_gallery(emb, max(eval_cfg.rerank, max(eval_cfg.ks)))
        reranked = rerank_rankings(
            model, queries, gallery, emb, top, k=eval_cfg.rerank, fusion=eval_cfg.rerank_fusion,
            batch_size=eval_cfg.batch_size, device=device,
        )  # fmt: skip
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
