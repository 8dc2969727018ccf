"""The model's recorded interpolation is the filter of every resize the pipeline makes for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rice.data.transforms import ImageTransform, build_transform, shop_image_transform


def _picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8))


def _reference(image: Image.Image, size: int, resize: int, resample: int, mean, std) -> torch.Tensor:
    """The eval transform written out: square resize with the filter, centre crop, scale, normalise."""
    resized = np.asarray(image.resize((resize, resize), resample)).astype(np.float32) / 255.0
    top = int(round((resize - size) / 2.0))
    crop = resized[top : top + size, top : top + size]
    return torch.from_numpy((crop - np.array(mean)) / np.array(std)).permute(2, 0, 1).float()


@pytest.mark.parametrize(("name", "resample"), [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_eval_transform_resamples_with_the_named_filter(name, resample):
    transform = build_transform(16, False, resize_size=20, interpolation=name)
    expected = _reference(_picture(), 16, 20, resample, transform.mean, transform.std)
    torch.testing.assert_close(transform(_picture()), expected, atol=1e-5, rtol=0)


def test_the_filters_differ_and_the_shop_transform_keeps_the_frames_filter():
    bilinear = build_transform(16, False, resize_size=20)(_picture())
    bicubic = build_transform(16, False, resize_size=20, interpolation="bicubic")(_picture())
    assert (bilinear - bicubic).abs().max() > 1e-2  # the test above would not see a filter that is ignored
    frames = build_transform(16, True, resize_size=20, interpolation="bicubic", color_jitter=0.2)
    assert shop_image_transform(frames, "crop_flip").interpolation == "bicubic"
    with pytest.raises(ValueError, match="interpolation"):
        ImageTransform(16, False, interpolation="sinc")


def test_embedding_a_file_uses_the_models_interpolation(tmp_path):
    """rice.embed_image, the catalogue's transform and the model's own preprocess all follow the record."""
    import dataclasses

    from rice.config import ModelConfig
    from rice.data.model_input import eval_transform
    from rice.models import build_model
    from rice.retrieval.embed import embed_image

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="rice_tiny", pretrained=False)).eval()
    model.encoder.preprocess = dataclasses.replace(model.preprocess, interpolation="bicubic")
    path = tmp_path / "shop.png"
    _picture(1).save(path)
    pre = model.preprocess
    expected_input = _reference(_picture(1), pre.input_size, pre.resize_size or round(pre.input_size * 256 / 224),
                                Image.BICUBIC, pre.mean, pre.std)  # fmt: skip
    with torch.no_grad():
        expected = model.encode_image(expected_input[None])[0]
    torch.testing.assert_close(embed_image(model, path), expected, atol=1e-5, rtol=0)
    assert eval_transform(model.preprocess).interpolation == "bicubic"
    assert pre(_picture(1)).shape == expected_input.shape


def test_training_and_evaluation_transforms_take_the_models_interpolation():
    from rice.config import DataConfig
    from rice.data.factory import build_data_transform
    from rice.models.encoders import Preprocess

    pre = Preprocess(input_size=32, resize_size=36, interpolation="bicubic")
    for train in (True, False):
        assert build_data_transform(DataConfig(), pre, train=train).interpolation == "bicubic"
    assert build_data_transform(DataConfig(), Preprocess(input_size=32), train=True).interpolation == "bilinear"
