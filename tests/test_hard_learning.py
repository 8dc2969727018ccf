"""The reduced learning check of `rice demo --difficulty hard`: on hard synthetic data (moving backgrounds,
lighting swings, occlusions; the test clips are new clips of the training products) rice_tiny trained with the
hard recipe (colour jitter and a crop per frame, a clean shop image) ranks the right shop image far better than
the same untrained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rice.data import write_synthetic_dataset
from rice.models import build_model
from rice.models.loading import load
from rice.retrieval.evaluate_model import evaluate_model
from rice.train.demo import chance_recall, demo_config
from rice.train.engine import fit


def ranks_of_the_right_image(emb) -> np.ndarray:  # noqa: ANN001 - an EmbeddingSet
    """1-based rank of each query's shop image by cosine, recomputed from the embeddings in numpy."""
    scores = emb.query_embeddings.astype(np.float64) @ emb.gallery_embeddings.astype(np.float64).T
    gallery = np.asarray(emb.gallery_ids)
    right = np.array([[g in gt for g in gallery] for gt in emb.query_gt])
    best_right = np.where(right, scores, -np.inf).max(1)
    return 1 + (scores > best_right[:, None]).sum(1)


# The suite's 600 s timeout is a hang guard; these 400 training steps took longer than that on 2 cores shared
# with a loaded machine (load 8), so this test gets a wider guard rather than a figure that depends on the load.
@pytest.mark.timeout(1800)
def test_rice_tiny_learns_products_on_hard_synthetic_data(tmp_path):
    root = write_synthetic_dataset(tmp_path / "data", num_products=16, videos_per_product=2, frames=8, size=32,
                                   seed=1, difficulty="hard")
    cfg = demo_config(tmp_path, root, steps=400, hard=True)
    cfg = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"workers": 0, "num_frames": 4}),
        # the recipe's batch of 16 (2 steps an epoch); fp32 on every CPU, where the demo takes bf16 on a CPU with
        # bf16 units: a speed choice, and the figures below stay the same on any machine
        "train": cfg.train.model_copy(update={"log_every": 1000, "amp": "none"}),
    })  # fmt: skip
    assert cfg.data.color_jitter > 0 and cfg.data.clip_crops == "frame" and cfg.data.crop_scale  # the hard recipe
    assert cfg.data.shop_augment == "crop_flip"  # ... and a clean shop image
    assert cfg.eval.num_frames == 10 and cfg.data.num_frames == 4  # trained on 4 frames, scored on 10
    torch.manual_seed(cfg.train.seed)  # the untrained model is the trained one's starting point
    untrained, untrained_emb = evaluate_model(build_model(cfg.model), cfg.data, cfg.eval)
    trained, trained_emb = evaluate_model(load(fit(cfg)), cfg.data, cfg.eval)
    assert trained["num_queries"] == 16
    before, after = ranks_of_the_right_image(untrained_emb), ranks_of_the_right_image(trained_emb)
    assert 100.0 * float((after == 1).mean()) == trained["R@1"]  # the numpy ranks agree with rice's recall
    # 16 queries make R@1 coarse (one query is 6.25 points), so the check is on every query's rank as well.
    # Seeded, measured: mean rank 4.75 trained vs 7.38 untrained (8.5 is chance for 16 images); R@1 25.0 vs 12.5,
    # R@5 75.0 vs 37.5 (4.19 trained before scale crops were resampled once and the stem went channels-last).
    chance = chance_recall(untrained_emb, [1, 5])
    assert after.mean() <= 0.65 * before.mean(), (after, before)
    assert trained["R@1"] >= 2 * chance["R@1"] and trained["R@5"] >= untrained["R@5"] + 25.0, (trained, untrained)
