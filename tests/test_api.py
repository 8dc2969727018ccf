import json

import av
import numpy as np
import torch
from PIL import Image

import rice
from rice.config import build_config
from rice.data import MovingFashionGallery, MovingFashionQueries, build_data_transform, collate_batch
from rice.models import build_model
from rice.train.checkpoint import save_checkpoint
from rice.train.optim import build_optimizer, build_scheduler


def _preprocess_by_hand(model, rgb: np.ndarray) -> torch.Tensor:
    """Eval preprocessing written out: square bilinear resize, centre crop, scale to [0, 1], mean/std."""
    pre = model.preprocess
    size = pre.resize_size or round(pre.input_size * 256 / 224)  # documented default: the 256/224 ratio
    resized = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    top = round((size - pre.input_size) / 2)
    crop = resized[top : top + pre.input_size, top : top + pre.input_size].astype(np.float32) / 255.0
    return (torch.from_numpy(crop).permute(2, 0, 1) - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(
        pre.std
    )[:, None, None]


@torch.no_grad()
def _by_hand_video(model, path, num_frames: int) -> torch.Tensor:
    """PyAV decodes every frame; the centre frame of each of num_frames equal segments is kept."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    n = len(frames)
    bounds = [i * n // num_frames for i in range(num_frames + 1)]
    picked = [frames[(a + b) // 2] for a, b in zip(bounds[:-1], bounds[1:])] if n > num_frames else frames
    clip = torch.stack([_preprocess_by_hand(model, f) for f in picked])[None]
    return model.encode_video(clip, torch.ones(1, len(picked), dtype=torch.bool))[0]


@torch.no_grad()
def _by_hand_image(model, path) -> torch.Tensor:
    return model.encode_image(_preprocess_by_hand(model, np.asarray(Image.open(path).convert("RGB")))[None])[0]


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
    # the method form of the design card, against the file decoded and preprocessed by hand
    torch.testing.assert_close(model.embed_video(str(video)), _by_hand_video(model, video, cfg.data.num_frames),
                               rtol=0, atol=2e-3)  # fmt: skip
    image = synthetic_root / record["img_path"]
    torch.testing.assert_close(model.embed_image(str(image)), _by_hand_image(model, image), rtol=0, atol=2e-3)

    queries = MovingFashionQueries(synthetic_root, num_frames=cfg.data.num_frames,
                                   transform=build_data_transform(cfg.data, model.preprocess, train=False))
    gallery = MovingFashionGallery(synthetic_root, transform=build_data_transform(cfg.data, model.preprocess, False))
    q = next(i for i in range(len(queries)) if queries[i]["query_id"] == video.stem)
    batch = collate_batch([queries[q]])
    g = next(i for i in range(len(gallery)) if gallery[i]["image_id"] == record["img_path"][5:].split(".")[0])
    with torch.no_grad():
        assert torch.allclose(model.encode_video(batch["frames"], batch["frame_mask"])[0], clip, atol=1e-5)
        assert torch.allclose(model.encode_image(gallery[g]["image"][None])[0], shop, atol=1e-5)
