"""`rice search --rerank K`: re-score one query's top-K catalogue hits with the PMD decoder (`rerank.rerank_topk`).

Only the K candidate images are encoded to tokens (no token cache of the whole catalogue is kept), so it costs
K image forwards and K decoder pairs per query.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch

from rice.data.frames import load_image
from rice.data.model_input import eval_transform, query_frames
from rice.data.sampling import pad_clip
from rice.data.transforms import ClipTransform
from rice.retrieval.catalogue import SearchHit
from rice.retrieval.embed import default_num_frames
from rice.retrieval.rerank import rerank_topk


@torch.no_grad()
def rerank_hits(model: Any, query: str | os.PathLike[str], hits: list[SearchHit], index: Any = None) -> list[SearchHit]:
    """The hits re-sorted by the decoder's match score (the new ``score``, a cosine in [-1, 1]), ranks 1..K."""
    if getattr(model, "decoder", None) is None:
        raise ValueError("--rerank needs the PMD decoder: use a checkpoint trained with --losses icl,pmd[,pfr]")
    if not hits:
        return hits
    missing = [h.id for h in hits if h.path is None]
    if missing:
        raise ValueError(f"--rerank needs the shop images; items {missing[:3]} were indexed without a file")
    device = next(model.parameters()).device
    num_frames = default_num_frames(model)
    transform = eval_transform(model.preprocess)
    clip, mask = pad_clip(ClipTransform(transform)(query_frames(query, num_frames)), num_frames)
    _, query_tokens = model.encode_video_tokens(clip[None].to(device), mask[None].to(device))
    try:  # through the index: it opens only files under the folders it was built from
        files = [index.image_path(h.id) if index is not None else h.path for h in hits]
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    images = torch.stack([transform(load_image(f)) for f in files]).to(device)
    _, image_tokens = model.encode_image_tokens(images)
    candidates = torch.arange(len(hits))[None]
    order, scores = rerank_topk(model.decoder, query_tokens, mask[None].to(device), image_tokens, candidates)
    return [replace(hits[i], rank=rank + 1, score=float(s))
            for rank, (i, s) in enumerate(zip(order[0].tolist(), scores[0].tolist()))]
