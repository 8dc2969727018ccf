"""``data.normalize_on: device``: workers send uint8 crops, the device stage normalises them after the copy, and the
step sees exactly the tensors of the worker-side float path (rice/data/device_stage.py, rice/data/prefetch.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rice.config import DataConfig
from rice.data import CLIP_MEAN, CLIP_STD, MovingFashionPairs, build_train_dataset, build_transform, collate_batch
from rice.data.device_stage import DeviceStage
from rice.data.lpr import LPRTrainPairs
from rice.data.prefetch import DevicePrefetcher
from tests.data.prepared_media import prepared_copy
from tests.data.test_lpr import lpr_root  # noqa: F401 - the LPR fixture root

T = 14  # more than the mp4s' 12 and the prepared folders' 7 frames: every clip has padded frames


@pytest.fixture(scope="module")
def prepared_root(tiny_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_copy(tiny_dataset_master, tmp_path_factory.mktemp("stage") / "root")


TRANSFORMS = {
    "eval": dict(train=False),
    "train": dict(train=True),
    "train_augmented": dict(train=True, per_frame_crops=True, color_jitter=0.4, crop_scale=(0.3, 1.0)),
    "train_bicubic": dict(train=True, interpolation="bicubic"),
}


def _batches(root: Path, pixels: str, transform_kw: dict, prepared: bool) -> dict:
    transform = build_transform(32, resize_size=36, **transform_kw)
    pairs = MovingFashionPairs(root, num_frames=T, transform=transform, seed=0, tail_drop_prob=0.5,
                               train=transform.train, use_prepared_frames=prepared, pixels=pixels)  # fmt: skip
    return collate_batch([pairs[i] for i in range(len(pairs))])


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared_jpeg", "mp4"])
@pytest.mark.parametrize("kind", list(TRANSFORMS))
def test_device_normalisation_equals_the_worker_path(prepared_root: Path, kind: str, prepared: bool) -> None:
    """Same crops, flips, jitter and padding; normalised on the 'device' (the CPU here) the tensors are identical:
    the stage runs the worker's float operations in the same order, and padded frames are zeros afterwards."""
    reference = _batches(prepared_root, "float", TRANSFORMS[kind], prepared)
    batch = _batches(prepared_root, "uint8", TRANSFORMS[kind], prepared)
    assert batch["frames"].dtype == torch.uint8 and batch["image"].dtype == torch.uint8
    assert batch["frames"].shape == reference["frames"].shape and batch["image"].shape == reference["image"].shape
    assert torch.equal(batch["frame_mask"], reference["frame_mask"])
    padded = ~reference["frame_mask"]
    assert padded.any(), "the fixture must give padded frames (T above every clip's length)"
    # Today's padding holds normalised zeros (pad_clip after normalize): the device path must give the same.
    assert (reference["frames"][padded] == 0).all()
    transform = build_transform(32, resize_size=36, **TRANSFORMS[kind])
    stage = DeviceStage(transform, "uint8", "cpu")
    staged = stage(stage.host_fields(batch))
    assert staged["frames"].dtype == torch.float32
    assert torch.equal(staged["frames"], reference["frames"])
    assert torch.equal(staged["image"], reference["image"])


def test_lpr_pairs_carry_the_same_uint8_crops(lpr_root: Path) -> None:  # noqa: F811 - the imported fixture
    transform = build_transform(32, train=True, resize_size=36, color_jitter=0.3)
    kw = dict(num_frames=4, transform=transform, seed=0)
    reference = collate_batch([LPRTrainPairs(lpr_root, **kw)[i] for i in range(6)])
    batch = collate_batch([LPRTrainPairs(lpr_root, pixels="uint8", **kw)[i] for i in range(6)])
    stage = DeviceStage(transform, "uint8", "cpu")
    staged = stage(stage.host_fields(batch))
    assert torch.equal(staged["frames"], reference["frames"]) and torch.equal(staged["image"], reference["image"])


def test_config_chooses_the_item_pixels(prepared_root: Path) -> None:
    preprocess = SimpleNamespace(input_size=32, mean=CLIP_MEAN, std=CLIP_STD, resize_size=36)
    base = dict(root=str(prepared_root), num_frames=T)
    assert build_train_dataset(DataConfig(**base), preprocess, seed=0).pixels == "float"
    uint8 = build_train_dataset(DataConfig(**base, normalize_on="device"), preprocess, seed=0)
    assert uint8.pixels == "uint8" and uint8[0]["frames"].dtype == torch.uint8
    jpeg = build_train_dataset(DataConfig(**base, decode_device="cuda"), preprocess, seed=0)
    assert jpeg.pixels == "jpeg" and "frames" not in jpeg[0] and jpeg[0]["frames_jpeg"][0].dtype == torch.uint8
    assert "image" not in jpeg[0] and jpeg[0]["image_params"].shape == (7,)
    with pytest.raises(ValueError, match="normalize_on"):
        DataConfig(**base, normalize_on="gpu")
    with pytest.raises(ValueError, match="pixels 'half' are unknown"):
        MovingFashionPairs(prepared_root, pixels="half")


def test_prefetcher_hands_out_the_staged_batches_in_order(prepared_root: Path) -> None:
    """On the CPU the prefetcher is a pass-through: the loader's batches, in order, copied and staged."""
    transform = build_transform(32, train=True, resize_size=36)
    pairs = MovingFashionPairs(prepared_root, num_frames=T, transform=transform, seed=0, pixels="uint8")
    floats = MovingFashionPairs(prepared_root, num_frames=T, transform=transform, seed=0)
    loader = torch.utils.data.DataLoader(pairs, batch_size=2, collate_fn=collate_batch)
    expected = list(torch.utils.data.DataLoader(floats, batch_size=2, collate_fn=collate_batch))
    got = list(DevicePrefetcher(loader, "cpu", DeviceStage.for_dataset(pairs, "cpu")))
    assert len(got) == len(expected) == len(loader)
    for batch, reference in zip(got, expected, strict=True):
        assert batch["video_id"] == reference["video_id"]
        assert torch.equal(batch["frames"], reference["frames"]) and torch.equal(batch["image"], reference["image"])
        assert torch.equal(batch["frame_index"], reference["frame_index"])
    assert DeviceStage.for_dataset(floats, "cpu") is None  # float items: only the copy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prefetcher_equals_the_cpu_stage(prepared_root: Path) -> None:
    """On CUDA: the side-stream copy and the stage give the CPU's tensors (division on the GPU may round the last
    bit differently: 1e-6), for every batch, while the main stream keeps working on the previous one."""
    transform = build_transform(32, train=True, resize_size=36, color_jitter=0.2)
    pairs = MovingFashionPairs(prepared_root, num_frames=T, transform=transform, seed=0, pixels="uint8")
    floats = MovingFashionPairs(prepared_root, num_frames=T, transform=transform, seed=0)
    loader = torch.utils.data.DataLoader(pairs, batch_size=2, collate_fn=collate_batch, pin_memory=True)
    expected = list(torch.utils.data.DataLoader(floats, batch_size=2, collate_fn=collate_batch))
    device = torch.device("cuda")
    busy = torch.randn(2048, 2048, device=device)
    for batch, reference in zip(DevicePrefetcher(loader, device, DeviceStage.for_dataset(pairs, device)), expected,
                                strict=True):  # fmt: skip
        busy = busy @ busy / busy.norm()  # work on the main stream that the next copy overlaps
        assert batch["frames"].device.type == "cuda"
        torch.testing.assert_close(batch["frames"].cpu(), reference["frames"], rtol=0, atol=1e-6)
        torch.testing.assert_close(batch["image"].cpu(), reference["image"], rtol=0, atol=1e-6)
