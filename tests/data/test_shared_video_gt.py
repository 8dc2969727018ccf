"""`data.shared_video_gt`: MovingFashion test videos listed by two products. `official` (the public evaluation) keeps
only the last product's image as the ground truth; `any` (rice's default) counts either image as a hit.

The reference is the public prepare script's rule, written here as a naive loop over test.json: each product
overwrites its video's entry (``gt`` and ``source``), so the last product in the file wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rice.config import build_config
from rice.data import MovingFashionGallery, MovingFashionQueries, build_transform
from rice.data.factory import build_eval_datasets
from rice.data.movingfashion import image_id_of, video_id_of
from rice.retrieval.evaluate import EmbeddingSet, evaluate_embeddings


def _share_videos(root: Path) -> dict:
    """Products 0 and 1 list the same video (product 1's video is dropped); products 2 and 3 too."""
    test = json.loads((root / "test.json").read_text())
    ids = list(test)
    for first, second in ((ids[0], ids[1]), (ids[2], ids[3])):
        test[second]["video_paths"] = list(test[first]["video_paths"])
        test[second]["source"] = 1 - test[first]["source"]  # the two products differ in source too
    (root / "test.json").write_text(json.dumps(test))
    return test


def _public_video_to_gt(test: dict) -> dict[str, dict]:
    video2gt: dict[str, dict] = {}
    for record in test.values():
        cid = Path(record["video_paths"][0]).name.split(".")[0]
        video2gt.setdefault(cid, {})
        video2gt[cid]["gt"] = Path(record["img_path"]).name.split(".")[0]
        video2gt[cid]["source"] = record["source"]
    return video2gt


def test_official_ground_truth_is_the_public_scripts(tiny_dataset: Path):
    test = _share_videos(tiny_dataset)
    reference = _public_video_to_gt(test)
    still = build_transform(32, train=False, resize_size=36)
    official = MovingFashionQueries(tiny_dataset, num_frames=4, transform=still, shared_video_gt="official")
    assert len(official) == len(reference) == 4
    for video_path, gt_ids, source in official.queries:
        assert gt_ids == [reference[video_id_of(video_path)]["gt"]]
        assert source == reference[video_id_of(video_path)]["source"]
    both = MovingFashionQueries(tiny_dataset, num_frames=4, transform=still)
    assert sorted(len(gt) for _, gt, _ in both.queries) == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="shared_video_gt"):
        MovingFashionQueries(tiny_dataset, num_frames=4, transform=still, shared_video_gt="first")


def test_a_hit_on_the_first_products_image_counts_only_with_any(tiny_dataset: Path):
    """Scored by rice's evaluation: every query's nearest shop image is the FIRST product listing its video."""
    test = _share_videos(tiny_dataset)
    first_product_image = {}
    for record in test.values():
        first_product_image.setdefault(video_id_of(record["video_paths"][0]), image_id_of(record["img_path"]))
    gallery = [image_id_of(p) for p in MovingFashionGallery(tiny_dataset).images]
    recalls = {}
    for mode in ("any", "official"):
        cfg = build_config(overrides=[f"data.root={tiny_dataset}", f"data.shared_video_gt={mode}"])
        queries, _ = build_eval_datasets(cfg.data, _Preprocess())
        ids = [video_id_of(v) for v, _, _ in queries.queries]
        q = np.eye(len(gallery), dtype=np.float32)[[gallery.index(first_product_image[i]) for i in ids]]
        emb = EmbeddingSet(ids, q, [gt for _, gt, _ in queries.queries], [""] * len(ids),
                           np.array([s for _, _, s in queries.queries]), np.ones(len(ids), bool), gallery,
                           np.eye(len(gallery), dtype=np.float32), [""] * len(gallery))  # fmt: skip
        recalls[mode] = evaluate_embeddings(emb, [1])["R@1"]
    # by hand: 4 queries; the 2 unshared ones hit; the 2 shared ones hit only when the first image counts
    assert recalls["any"] == pytest.approx(100.0 * 4 / 4)
    assert recalls["official"] == pytest.approx(100.0 * 2 / 4)


class _Preprocess:
    input_size, resize_size, mean, std = 32, 36, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
