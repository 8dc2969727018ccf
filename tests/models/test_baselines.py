"""Baselines and every registered tiny model: the encoder contract, gradients through ICL+PMD+PFR, padding."""

import pytest
import torch

from rice.config import LossConfig, ModelConfig
from rice.models import build_model, create_model, list_models
from rice.models.baselines import TimeSformerModel
from rice.train.task import RiceTask

TINY = [name for name in list_models() if name.endswith("_tiny")]


def test_baselines_are_registered():
    assert {"swin_b", "timesformer", "fashionnet", "swin_b_tiny", "timesformer_tiny", "fashionnet_tiny"} <= set(
        list_models()
    )


@pytest.mark.parametrize("name", TINY)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, pretrained=False), with_decoder=True, with_reconstruction=True)
    task = RiceTask(model, LossConfig(losses=["icl", "pmd", "pfr"], pmd_negatives=2, pmd_chunk_size=3))
    enc = model.encoder
    s = enc.preprocess.input_size
    images, frames = torch.randn(3, 3, s, s), torch.randn(3, 4, 3, s, s)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = task(images, frames, mask)
    assert set(out) == {"loss", "icl_loss", "pmd_loss", "pfr_loss"}
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    emb = enc(images)
    assert emb.embedding.shape == (3, enc.embed_dim)
    assert emb.tokens.shape == (3, enc.num_tokens, enc.width)


@pytest.mark.parametrize("name", TINY)
def test_padded_frames_change_nothing(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    s = model.encoder.preprocess.input_size
    frames = torch.randn(2, 6, 3, s, s)
    padded = torch.cat([frames, torch.randn(2, 4, 3, s, s)], dim=1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :6] = True
    with torch.no_grad():
        a = model.encode_video(frames, torch.ones(2, 6, dtype=torch.bool))
        b = model.encode_video(padded, mask)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_timesformer_starts_as_its_image_model():
    torch.manual_seed(0)
    model = create_model("timesformer_tiny").eval()
    assert isinstance(model, TimeSformerModel)
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        still_clip = model.encode_video(image[:, None].expand(1, 3, 3, 32, 32))
        torch.testing.assert_close(still_clip, model.encode_image(image), rtol=1e-4, atol=1e-5)
        vit = model.encoder.backbone
        reference = model.encoder.proj(vit.forward_features(image)[:, 0])  # plain timm ViT forward (final norm)
        torch.testing.assert_close(model.encoder(image).embedding, reference, rtol=1e-4, atol=1e-5)
