import json

import torch

import rice
from rice.config import build_config
from rice.data import MovingFashionGallery, MovingFashionQueries, build_data_transform, collate_batch
from rice.models import build_model
from rice.train.checkpoint import save_checkpoint
from rice.train.optim import build_optimizer, build_scheduler


def _checkpoint(tmp_path, root):
    cfg = build_config(model__name="rice_tiny", data__root=str(root))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg.optim, 5),
                    scaler=None, step=0, epoch=0, config=cfg)  # fmt: skip
    return path, cfg


def test_embed_files_match_the_evaluation_datasets(tmp_path, synthetic_root):
    path, cfg = _checkpoint(tmp_path, synthetic_root)
    model = rice.load(path)
    assert not model.training and model.config.model.name == "rice_tiny"

    test = json.loads((synthetic_root / "test.json").read_text())
    record = next(iter(test.values()))
    video = synthetic_root / record["video_paths"][0]
    clip = rice.embed_video(model, video)
    shop = rice.embed_image(model, synthetic_root / record["img_path"])
    assert clip.shape == (model.embed_dim,) and abs(float(clip.norm()) - 1) < 1e-5
    assert torch.equal(model.embed_video(str(video)), clip)  # the method form of the design card

    queries = MovingFashionQueries(synthetic_root, num_frames=cfg.data.num_frames,
                                   transform=build_data_transform(cfg.data, model.preprocess, train=False))
    gallery = MovingFashionGallery(synthetic_root, transform=build_data_transform(cfg.data, model.preprocess, False))
    q = next(i for i in range(len(queries)) if queries[i]["query_id"] == video.stem)
    batch = collate_batch([queries[q]])
    g = next(i for i in range(len(gallery)) if gallery[i]["image_id"] == record["img_path"][5:].split(".")[0])
    with torch.no_grad():
        assert torch.allclose(model.encode_video(batch["frames"], batch["frame_mask"])[0], clip, atol=1e-5)
        assert torch.allclose(model.encode_image(gallery[g]["image"][None])[0], shop, atol=1e-5)
