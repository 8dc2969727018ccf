"""Re-ranking: batched/chunked result equals a brute-force per-pair loop; fusion; top-K membership kept."""

import torch

from rice.config import ModelConfig
from rice.models import build_model
from rice.retrieval.rerank import gallery_tokens, rerank, rerank_topk


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="rice_tiny", pretrained=False), with_decoder=True).eval()


def test_rerank_matches_brute_force_loop():
    model = _model()
    g = torch.Generator().manual_seed(1)
    s = model.encoder.preprocess.input_size
    gallery = torch.randn(7, 3, s, s, generator=g)
    frames = torch.randn(5, 3, 3, s, s, generator=g)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        cos = model.encode_video(frames, mask) @ model.encode_image(gallery).t()
    top_scores, top_idx = cos.topk(4, dim=1)
    cache = gallery_tokens(model, [gallery[:3], gallery[3:]])
    batches = [(frames[:2], mask[:2]), (frames[2:], mask[2:])]
    pmd = torch.zeros(5, 4)
    with torch.no_grad():
        for q in range(5):  # brute force: one query, its real frames only, one candidate at a time
            t = int(mask[q].sum())
            _, vt = model.encode_video_tokens(frames[q : q + 1, :t], mask[q : q + 1, :t])
            for c, j in enumerate(top_idx[q].tolist()):
                it = model.encode_image_tokens(gallery[j : j + 1])[1]
                pmd[q, c] = model.decoder(it, vt, mask[q : q + 1, :t]).scores[0]
    for fusion in (0.0, 0.3):
        idx, scores = rerank(model, batches, cache, top_idx, top_scores, fusion=fusion, chunk_size=3)
        fused = fusion * top_scores + (1 - fusion) * pmd / 10.0
        order = fused.argsort(dim=1, descending=True)
        assert torch.equal(idx, top_idx.gather(1, order))
        torch.testing.assert_close(scores, fused.gather(1, order), rtol=1e-4, atol=1e-5)


def test_rerank_topk_independent_of_chunk_size():
    model = _model()
    g = torch.Generator().manual_seed(2)
    qt, gt = torch.randn(3, 2, 65, 96, generator=g), torch.randn(6, 65, 96, generator=g)
    mask = torch.ones(3, 2, dtype=torch.bool)
    top = torch.tensor([[0, 1, 2], [5, 4, 3], [1, 3, 5]])
    a = rerank_topk(model.decoder, qt, mask, gt, top, chunk_size=1)
    b = rerank_topk(model.decoder, qt, mask, gt, top, chunk_size=4)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    half = rerank_topk(model.decoder, qt, mask, gt.half(), top, chunk_size=100)  # a float16 cache: close scores
    torch.testing.assert_close(half[1].sort(dim=1).values, a[1].sort(dim=1).values, rtol=1e-2, atol=1e-2)
