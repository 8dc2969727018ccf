"""Issue 11 item 3: `rice eval`'s per-livestream protocol and a grouped catalogue index searched with the query's
group give the same rankings and the same recall table on generated LPR data (one implementation: member_topk)."""

from __future__ import annotations

import numpy as np
import torch

from rice.config import DataConfig, EvalConfig
from rice.models import create_model
from rice.retrieval.catalogue import Index
from rice.retrieval.evaluate import rank_gallery
from rice.retrieval.evaluate_model import evaluate_model
from rice.retrieval.metrics import recall_at_k
from rice.retrieval.protocols import first_hit_ranks
from tests.data.test_lpr import lpr_root  # noqa: F401  (the generated LPR fixture)


def test_eval_protocol_equals_grouped_index_search(lpr_root):  # noqa: F811
    torch.manual_seed(0)
    model = create_model("rice_tiny")
    ks = [1, 3, 5, 10]
    results, emb = evaluate_model(model, DataConfig(dataset="lpr", root=str(lpr_root), num_frames=4, workers=0),
                                  EvalConfig(batch_size=4, ks=ks))
    index = Index.from_embeddings(
        emb.gallery_embeddings, [f"{g}/{i}" for g, i in zip(emb.gallery_groups, emb.gallery_ids)],
        groups=emb.gallery_groups, metadata=[{"image_id": i} for i in emb.gallery_ids],
    )  # fmt: skip
    ranked_ids = []
    for query, group in zip(emb.query_embeddings, emb.query_groups):
        hits = index.search(query[None], k=10, group=group)[0] if group in index.groups else []
        ranked_ids.append([h.metadata["image_id"] for h in hits] + [""] * (10 - len(hits)))
    top = rank_gallery(emb, 10)
    protocol_ids = [[emb.gallery_ids[i] if i >= 0 else "" for i in row] for row in top]
    assert ranked_ids == protocol_ids
    ranks = np.where(emb.query_ok, first_hit_ranks(np.array(ranked_ids, dtype=object), None, emb.query_gt), -1)
    table = recall_at_k(ranks, ks)
    assert all(table[f"R@{k}"] == results[f"R@{k}"] for k in ks)
