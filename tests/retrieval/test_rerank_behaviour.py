"""`eval --rerank K` reorders the dual encoder's top-K exactly as an independent per-pair scoring says.

The independent side: brute-force numpy top-K over the embeddings, encoder tokens of each item taken one at a time,
and each (clip, candidate) pair scored by the reference forward of the decoder's weights (tests/reference_decoder.py).
"""

import numpy as np
import torch

from rice.config import DataConfig, EvalConfig, ModelConfig
from rice.data import build_eval_datasets
from rice.models import build_model
from rice.retrieval.evaluate import extract_embeddings, rank_gallery
from rice.retrieval.evaluate_model import evaluate_model, rerank_rankings
from tests.data.test_lpr import lpr_root  # noqa: F401 (the LPR fixture: livestreams with 2-4 shop images)
from tests.reference_decoder import reference_scores

K = 5


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="rice_tiny", pretrained=False), with_decoder=True).eval()


@torch.no_grad()
def independent_rerank(model, data_cfg: DataConfig, k: int):
    """(order (Q, k) gallery indices, -1 padded; gt ids; gallery ids) from brute force and per-pair scoring."""
    queries, gallery = build_eval_datasets(data_cfg, model.preprocess)
    items = [gallery[i] for i in range(len(gallery))]
    items = [item for item in items if item["ok"]]
    gallery_ids = [item["image_id"] for item in items]
    gallery_groups = [item["group"] for item in items]
    image_tokens = [model.encode_image_tokens(item["image"][None])[1] for item in items]
    image_emb = torch.cat([model.encode_image(item["image"][None]) for item in items]).numpy()
    state, heads = model.decoder.state_dict(), model.decoder.heads
    norm_kv = model.decoder.cross_block.norm_context  # the public block (default) normalises the queries only
    orders, gts, ok = [], [], []
    for q in range(len(queries)):
        item = queries[q]
        frames, mask = item["frames"][None], item["frame_mask"][None]
        clip = model.encode_video(frames, mask)[0].numpy()
        _, clip_tokens = model.encode_video_tokens(frames, mask)
        candidates = [j for j, group in enumerate(gallery_groups) if group == item["group"]]
        cosine = image_emb[candidates] @ clip
        top = [candidates[i] for i in np.argsort(-cosine, kind="stable")[:k]]
        if item["ok"]:  # an unreadable clip (no frames) is a miss whatever its order
            pmd = {
                j: reference_scores(state, image_tokens[j], clip_tokens, mask, heads, normalize_context=norm_kv)[0]
                for j in top
            }
            top = sorted(top, key=lambda j: -pmd[j].item())
        ranked = top
        orders.append(ranked + [-1] * (k - len(ranked)))
        gts.append(set(item["gt_ids"]))
        ok.append(bool(item["ok"]))
    return np.array(orders), gts, gallery_ids, np.array(ok)


def _recall_at_1(order: np.ndarray, gts, gallery_ids, ok) -> float:
    hits = [bool(good) and row[0] >= 0 and gallery_ids[row[0]] in gt for row, gt, good in zip(order, gts, ok)]
    return 100.0 * sum(hits) / len(hits)


def test_rerank_reorders_the_top_k_as_independent_pair_scores_say_and_changes_r1(synthetic_root):
    model = _model(seed=0)
    data_cfg = DataConfig(root=str(synthetic_root), num_frames=3, workers=0)
    eval_cfg = EvalConfig(batch_size=5, ks=[1, 5, 10], rerank=K)
    expected, gts, gallery_ids, ok = independent_rerank(model, data_cfg, K)

    queries, gallery = build_eval_datasets(data_cfg, model.preprocess)
    emb = extract_embeddings(model, queries, gallery, batch_size=5, keep_gallery_tokens=True)
    assert emb.gallery_ids == gallery_ids
    top = rank_gallery(emb, 10)
    reranked = rerank_rankings(model, queries, emb, top, eval_cfg)
    np.testing.assert_array_equal(reranked[:, :K], expected)
    np.testing.assert_array_equal(reranked[:, K:], top[:, K:])  # ranks beyond K keep their order

    results, _ = evaluate_model(model, data_cfg, eval_cfg)
    assert results["reranked"]["R@1"] == _recall_at_1(expected, gts, gallery_ids, ok)
    assert results["reranked"]["R@1"] != results["R@1"], "this case must change R@1 for the test to mean anything"
    assert results["reranked"]["R@5"] == results["R@5"] and results["reranked"]["R@10"] == results["R@10"]


def test_rerank_on_livestreams_with_fewer_images_than_k(lpr_root):  # noqa: F811
    """Every LPR livestream here has fewer shop images than K: rows keep their -1 padding at the end, hold each
    candidate once, and are ordered by the pair scores."""
    model = _model(seed=1)
    data_cfg = DataConfig(dataset="lpr", root=str(lpr_root), num_frames=3, workers=0)
    eval_cfg = EvalConfig(batch_size=4, ks=[1, 3, 5, 10], rerank=K)
    expected, gts, gallery_ids, ok = independent_rerank(model, data_cfg, K)
    queries, gallery = build_eval_datasets(data_cfg, model.preprocess)
    emb = extract_embeddings(model, queries, gallery, batch_size=4, keep_gallery_tokens=True)
    assert emb.gallery_ids == gallery_ids
    top = rank_gallery(emb, K)
    assert (top == -1).any(axis=1).all(), "every group must be smaller than K"
    reranked = rerank_rankings(model, queries, emb, top, eval_cfg)
    assert ok.sum() >= 5 and not ok.all()  # the fixture also holds a clip without frames
    for row, before, want, good in zip(reranked, top, expected, ok):
        valid = before[before >= 0]
        assert sorted(row[row >= 0]) == sorted(valid)  # the same candidates, each once
        assert (row[len(valid) :] == -1).all()  # padding stays at the end
        if good:
            np.testing.assert_array_equal(row, want)
    results, _ = evaluate_model(model, data_cfg, eval_cfg)
    assert results["reranked"]["R@1"] == _recall_at_1(expected, gts, gallery_ids, ok)
    assert results["reranked"]["R@5"] == results["R@5"]
