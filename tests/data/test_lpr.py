"""LPR750K/LPR4M datasets over fixture files written in the official formats: load, train two steps, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rice.config import DataConfig, EvalConfig, LossConfig
from rice.data import build_train_dataset, collate_batch
from rice.data.lpr import LPRGallery, LPRQueries, LPRTrainPairs, build_videoinfo_index, gallery_image_id, live_id_of
from rice.models import create_model
from rice.retrieval.evaluate_model import evaluate_model
from rice.retrieval.protocols import first_hit_ranks, grouped_topk
from rice.train.task import RiceTask

LIVES = ["7b601b02-2c63-11ee-bb6d-b8cef60c2fd0", "0c1d2e3f-4a5b-11ee-8c9d-0e1f2a3b4c5d",
         "a1b2c3d4-e5f6-11ee-a7b8-c9d0e1f2a3b4"]


def _img(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (96, 72)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8) + np.array(color, dtype=np.uint8)
    arr[::7] = 255 - arr[::7]
    Image.fromarray(arr).save(path, "JPEG", quality=90)


@pytest.fixture(scope="module")
def lpr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 livestreams (2, 3 and 1 clips), one shop image per clip plus one distractor per livestream."""
    root = tmp_path_factory.mktemp("lpr")
    rng = np.random.default_rng(0)
    videoinfo, queries, gt, gallery = [], {}, {}, []
    for li, live in enumerate(LIVES):
        for ci in range(3 - li if li < 2 else 1):
            clip = f"{live}-16679161{li}{ci}000-16679162{li}{ci}000"
            image_id = f"fff8b4{li}{ci}-2eeb-11ee-b7bb-77cb20e634dc"
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            frames = []
            for k in range(1, 13):
                rel = f"training_video_0{li}/{clip}/{clip}-{k:04d}.jpg"
                _img(root / rel, color)
                frames.append(rel)
            _img(root / f"training_image/{image_id}.jpg", color)
            videoinfo.append("\t".join([clip, repr(frames), "[]", image_id, f"training_image/{image_id}.jpg",
                                        "Women's knit cardigan", "3", "Women's wear", "550021", "asr text"]))
            qframes = []
            for k in (3, 5, 7):
                rel = f"{clip}/{clip}-{k:04d}.jpg"
                _img(root / "query" / rel, color)
                qframes.append(rel)
            queries[clip] = {"frames": qframes, "gt": [image_id]}
            gt[clip] = [image_id]
            gallery.append(f"{live}/{image_id}-0.jpg")
            _img(root / f"gallery/{live}/{image_id}-0.jpg", color)
        distractor = f"d15d15d1-0000-11ee-0000-00000000000{li}"
        gallery.append(f"{live}/{distractor}-0.jpg")
        _img(root / f"gallery/{live}/{distractor}-0.jpg", (li * 40, 200, 30))
    # a GT clip with no frames in the query file and a gallery line whose file is missing
    gt[f"{LIVES[0]}-1-2"] = ["fff8b400-2eeb-11ee-b7bb-77cb20e634dc"]
    gallery.append(f"{LIVES[1]}/eeeeeeee-0000-11ee-0000-000000000000-0.jpg")
    ann = root / "annotations"
    ann.mkdir()
    (ann / "training_videoinfo_641821.txt").write_text("\n".join(videoinfo) + "\n")
    (ann / "query_tenframes.json").write_text(json.dumps(queries, indent=1))
    (ann / "test_videoid_to_gtimage_20079.json").write_text(json.dumps(gt))
    (ann / "gallery_main.txt").write_text("\n".join(gallery) + "\n")
    build_videoinfo_index(ann / "training_videoinfo_641821.txt")
    return root


def test_ids() -> None:
    assert gallery_image_id("fff8b484-2eeb-11ee-b7bb-77cb20e634dc-0.jpg") == "fff8b484-2eeb-11ee-b7bb-77cb20e634dc"
    assert gallery_image_id("fff8b484-2eeb-11ee-b7bb-77cb20e634dc.jpg") == "fff8b484-2eeb-11ee-b7bb-77cb20e634dc"
    assert live_id_of(f"{LIVES[0]}-1667916122888-1667916252390") == LIVES[0]


def test_items_follow_the_contract(lpr_root: Path) -> None:
    pairs = LPRTrainPairs(lpr_root, num_frames=4, seed=0)  # opening speed: benchmarks/lpr_open.py
    assert len(pairs) == 6
    item = pairs[0]
    assert item["frames"].shape == (4, 3, 224, 224) and item["frame_mask"].all()
    assert item["image"].shape == (3, 224, 224) and item["skipped"] == []
    assert item["video_id"].startswith(LIVES[0]) and item["image_id"].startswith("fff8b400")
    queries = LPRQueries(lpr_root, num_frames=4)
    assert len(queries) == 7 and queries.describe()["without_frames"] == 1
    q = queries[0]
    assert q["group"] == LIVES[0] and q["ok"] and q["frame_mask"].tolist() == [True, True, True, False]
    assert not queries[6]["ok"] and queries[6]["skipped"]
    gallery = LPRGallery(lpr_root)
    assert len(gallery) == 10 and gallery.describe()["groups"] == 3
    assert gallery[0]["group"] == LIVES[0] and gallery[0]["image_id"] == "fff8b400-2eeb-11ee-b7bb-77cb20e634dc"
    assert not gallery[9]["ok"] and gallery[9]["image"].abs().sum() == 0


def test_train_two_steps_and_evaluate(lpr_root: Path) -> None:
    torch.manual_seed(0)
    model = create_model("rice_tiny")
    data_cfg = DataConfig(dataset="lpr", root=str(lpr_root), num_frames=4, workers=0)
    train = build_train_dataset(data_cfg, model.preprocess, seed=0)
    assert isinstance(train, LPRTrainPairs)
    task = RiceTask(model, LossConfig(losses=["icl"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=3, shuffle=True, collate_fn=collate_batch)
    steps = 0
    for batch in loader:
        out = task(batch["image"], batch["frames"], batch["frame_mask"])
        assert torch.isfinite(out["loss"])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        steps += 1
        if steps == 2:
            break
    assert steps == 2

    results, emb = evaluate_model(model, data_cfg, EvalConfig(batch_size=4, ks=[1, 3, 5, 10]))
    assert results["num_queries"] == 7 and results["unreadable_queries"] == 1
    assert len(emb.gallery_ids) == 9  # the missing gallery file is left out (and reported in skipped)
    assert any("eeeeeeee" in s for s in emb.skipped)
    # recompute from the saved embeddings by brute force: per-livestream ranking, any GT counts
    ranks = []
    for qi in range(len(emb.query_ids)):
        members = [i for i, g in enumerate(emb.gallery_groups) if g == emb.query_groups[qi]]
        scores = emb.gallery_embeddings[members] @ emb.query_embeddings[qi]
        ranked = [emb.gallery_ids[members[j]] for j in np.argsort(-scores, kind="stable")]
        hit = next((r for r, gid in enumerate(ranked) if gid in emb.query_gt[qi]), -1)
        ranks.append(hit if emb.query_ok[qi] else -1)
    ranks = np.array(ranks)
    for k in (1, 3, 5, 10):
        assert results[f"R@{k}"] == pytest.approx(100.0 * np.mean((ranks >= 0) & (ranks < k)))
    assert results["R@10"] == pytest.approx(100.0 * 6 / 7)  # every readable query finds its GT in a group of <= 4
    top = grouped_topk(emb.query_embeddings, emb.query_groups, emb.gallery_embeddings, emb.gallery_groups, 10)
    assert (first_hit_ranks(top, emb.gallery_ids, emb.query_gt)[emb.query_ok] >= 0).all()


def test_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rice download lpr750k"):
        LPRTrainPairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="rice download lpr750k"):
        LPRQueries(tmp_path)


def test_lpr_through_the_cli_with_saved_embeddings(lpr_root: Path, tmp_path: Path) -> None:
    """`rice train --dataset lpr` then `rice eval --save-embeddings`: the table recomputes from the saved file."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from rice.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", "lpr", "--root", str(lpr_root), "--model", "rice_tiny",
                                 "--max-steps", "2", "--batch-size", "2", "--out", str(run), "--workers", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(run / "last.pt"), "--json", str(tmp_path / "r.json"),
                                 "--save-embeddings", str(tmp_path / "emb.npz")])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "r.json").read_text())
    saved = np.load(tmp_path / "emb.npz")
    gt = json.loads(str(saved["query_gt_json"]))
    hits1 = 0
    for q, emb in enumerate(saved["query_embeddings"]):
        same_group = np.flatnonzero(saved["gallery_groups"] == saved["query_groups"][q])
        if len(same_group) and np.linalg.norm(emb) > 0:
            best = same_group[np.argmax(saved["gallery_embeddings"][same_group] @ emb)]
            hits1 += saved["gallery_ids"][best] in gt[q]
    assert table["R@1"] == 100.0 * hits1 / len(gt)


def test_shop_augment_reaches_lpr_pairs(lpr_root: Path) -> None:
    """``data.shop_augment: none`` gives the LPR shop image the eval transform: equal to `LPRGallery`-style
    preprocessing of the same file, while the frames keep their jitter."""
    from types import SimpleNamespace

    from rice.config import DataConfig
    from rice.data import CLIP_MEAN, CLIP_STD, build_transform
    from rice.data.frames import load_image

    preprocess = SimpleNamespace(input_size=32, mean=CLIP_MEAN, std=CLIP_STD, resize_size=36)
    cfg = DataConfig(dataset="lpr", root=str(lpr_root), num_frames=2, color_jitter=0.4, shop_augment="none")
    pairs = build_train_dataset(cfg, preprocess, seed=0)
    assert pairs.transform.color_jitter == 0.4 and pairs.image_transform.train is False
    image_path = lpr_root / pairs.record(0).image_path
    expected = build_transform(32, train=False, resize_size=36)(load_image(image_path, 36))
    torch.testing.assert_close(pairs[0]["image"], expected)
