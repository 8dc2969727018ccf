"""The ViT patch embedding as reshape + matrix product (issue 24, item 2) against timm's own strided convolution.

The reference is always timm's ``PatchEmbed.forward`` / ``forward_features`` (the Conv2d path), computed on the
same module and weights; fp32, 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import PatchEmbed

import rice
from rice.models import create_model
from rice.models.patch_embed import is_patchify, patch_tokens

TOL = {"rtol": 1e-5, "atol": 1e-5}
SMALL = {"depth": 2, "embed_dim": 64, "num_heads": 4}
# the timm towers: variant -> (timm architecture, a small input it divides into patches)
TIMM_TOWERS = {
    "rice_siglip2_b16": ("vit_base_patch16_siglip_224", 32),
    "rice_dfn_b16": ("vit_base_patch16_clip_224", 32),
    "rice_eva02_b16": ("eva02_base_patch16_clip_224", 32),
    "rice_dinov2_b14": ("vit_base_patch14_reg4_dinov2", 28),  # /14: 28 px = a 2x2 grid (224 px = 16x16)
}


def _grads(module: nn.Module, images: torch.Tensor, forward, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of sum(forward(images) * probe) for the patch weight, its bias and the input."""
    module.zero_grad()
    images = images.clone().requires_grad_(True)
    (forward(images) * probe).sum().backward()
    pe = module if isinstance(module, PatchEmbed) else module.patch_embed
    out = {"weight": pe.proj.weight.grad.clone(), "input": images.grad}
    if pe.proj.bias is not None:
        out["bias"] = pe.proj.bias.grad.clone()
    return out


# ------------------------------------------------------------------------------ the layer against timm's
LAYERS = {
    "flatten (every rice tower)": dict(img_size=32, patch_size=16),
    "no bias (CLIP, DFN)": dict(img_size=32, patch_size=16, bias=False),
    "patch 14 at 28 px": dict(img_size=28, patch_size=14),
    "patch 32 at 64 px": dict(img_size=64, patch_size=32),
    "non-square": dict(img_size=(32, 48), patch_size=16),
    "norm after the proj": dict(img_size=32, patch_size=16, norm_layer=nn.LayerNorm),
    "NHWC (dynamic img size)": dict(img_size=32, patch_size=16, output_fmt="NHWC", strict_img_size=False),
    "NCHW, not flattened": dict(img_size=32, patch_size=16, flatten=False),
    "NCL": dict(img_size=32, patch_size=16, output_fmt="NCL"),
    "dynamic padding": dict(img_size=32, patch_size=16, strict_img_size=False, dynamic_img_pad=True),
    "img size not a multiple of the patch": dict(img_size=30, patch_size=14),  # the conv drops 2 px
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_tokens_and_gradients_equal_the_convolution(kind):
    torch.manual_seed(0)
    kwargs = LAYERS[kind]
    pe = PatchEmbed(in_chans=3, embed_dim=24, **kwargs)
    if isinstance(pe.norm, nn.LayerNorm):
        nn.init.normal_(pe.norm.weight)
        nn.init.normal_(pe.norm.bias)
    if pe.proj.bias is not None:
        nn.init.normal_(pe.proj.bias)
    assert is_patchify(pe)
    h, w = pe.img_size
    if kwargs.get("dynamic_img_pad"):
        h, w = h + 5, w - 3  # padded up to 48 x 32 by both paths
    images = torch.randn(3, 3, h, w)
    expected = pe(images)
    got = patch_tokens(pe, images)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **TOL)
    probe = torch.randn_like(expected)
    want = _grads(pe, images, pe, probe)
    have = _grads(pe, images, lambda x: patch_tokens(pe, x), probe)
    assert want.keys() == have.keys()
    for name in want:
        torch.testing.assert_close(have[name], want[name], **TOL, msg=f"gradient of {name}")


def test_a_convolution_that_is_not_a_patchify_runs_as_it_is():
    """Overlapping or padded projections are left to the module itself."""
    torch.manual_seed(0)
    pe = PatchEmbed(img_size=32, patch_size=16, in_chans=3, embed_dim=8)
    images = torch.randn(2, 3, 32, 32)
    for conv in (nn.Conv2d(3, 8, 16, stride=8), nn.Conv2d(3, 8, 16, stride=16, padding=1),
                 nn.Conv2d(3, 8, 16, stride=16, dilation=2), nn.Conv2d(3, 6, 16, stride=16, groups=3)):  # fmt: skip
        other = copy.deepcopy(pe)
        other.proj = conv
        assert not is_patchify(other)
        torch.testing.assert_close(patch_tokens(other, images), other(images))
    assert not is_patchify(nn.Conv2d(3, 8, 16, stride=16))  # not timm's PatchEmbed


def test_wrong_input_size_is_one_line():
    pe = PatchEmbed(img_size=32, patch_size=16, in_chans=3, embed_dim=8)
    with pytest.raises(ValueError, match=r"input images are 48x32 but the model is built for 32x32"):
        patch_tokens(pe, torch.randn(1, 3, 48, 32))
    loose = PatchEmbed(img_size=32, patch_size=16, in_chans=3, embed_dim=8, strict_img_size=False)
    with pytest.raises(ValueError, match=r"not a multiple of the patch size 16x16"):
        patch_tokens(loose, torch.randn(1, 3, 40, 32))


# ------------------------------------------------------------------------------ every affected rice encoder
def _check_encoder_against_timm(model: rice.models.RiceModel, images: torch.Tensor) -> None:
    """The encoder (patch tokens by matrix product) against timm's forward_features (the conv) of the same
    backbone: the normed patch tokens, the embedding, and the gradients of the patch weight and bias."""
    encoder = model.encoder.eval()
    vit = encoder.backbone
    skip = int(encoder.mean_token)  # SigLIP: rice prepends the patch-token mean

    def ours(x):
        out = encoder(x)
        return torch.cat([vit.norm(out.tokens[:, skip:]).flatten(1), out.embedding], dim=1)

    def timms(x):
        feats = vit.forward_features(x)  # patch_embed(x) through the Conv2d, then the same blocks and norm
        return torch.cat([feats.flatten(1), encoder.proj(vit.forward_head(feats, pre_logits=True))], dim=1)

    with torch.no_grad():
        torch.testing.assert_close(ours(images), timms(images), **TOL)
    probe = torch.randn_like(timms(images))
    want = _grads(vit, images, timms, probe)
    have = _grads(vit, images, ours, probe)
    for name in want:
        # Through 12 blocks the two forwards' last-bit differences (the layer alone holds at 1e-5: see above) reach
        # the gradients as ~1e-6 of their scale, so the tolerance is 1e-5 of each gradient's largest entry; a
        # wrong patch order or weight layout is off by the gradient's own scale.
        scale = want[name].abs().max().item()
        torch.testing.assert_close(have[name], want[name], rtol=1e-5, atol=1e-5 * scale, msg=f"gradient of {name}")


@pytest.mark.parametrize("name", sorted(TIMM_TOWERS))
def test_timm_towers_equal_the_convolution(name):
    _, size = TIMM_TOWERS[name]
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, img_size=size, **SMALL)
    pe = model.encoder.backbone.patch_embed
    assert is_patchify(pe) and size % pe.patch_size[0] == 0
    if pe.proj.bias is not None:
        nn.init.normal_(pe.proj.bias)  # timm starts it at zero: make a bias mistake visible
    _check_encoder_against_timm(model, torch.randn(2, 3, size, size))


def test_rice_vit_b32_equals_the_convolution():
    """The real rice_vit_b32 (random init, 224 px): the stride-32 conv's weight viewed as (768, 3072)."""
    torch.manual_seed(0)
    model = create_model("rice_vit_b32", pretrained=False)
    pe = model.encoder.backbone.patch_embed
    assert is_patchify(pe) and pe.proj.weight.shape == (768, 3, 32, 32) and pe.proj.bias is None
    _check_encoder_against_timm(model, torch.randn(1, 3, 224, 224))


def test_rice_tiny_has_no_patchify():
    """rice_tiny's stem is overlapping 3x3 convolutions with padding: it is left alone (no patch_embed)."""
    model = create_model("rice_tiny", pretrained=False)
    assert not any(is_patchify(m) for m in model.modules())
    assert not any(isinstance(m, PatchEmbed) for m in model.modules())


# ------------------------------------------------------------------------------ checkpoints load unchanged
@pytest.mark.parametrize("name", sorted(TIMM_TOWERS))
def test_parameters_are_timms_and_checkpoints_load_unchanged(name, tmp_path):
    """The backbone's state dict is timm's own (same keys and shapes, the proj a (W, 3, P, P) conv weight), as it
    was before the matrix product: a timm state dict loads strictly and gives timm's conv outputs, and a saved
    model state dict loads strictly into a fresh build with the same outputs."""
    arch, size = TIMM_TOWERS[name]
    torch.manual_seed(0)
    source = timm.create_model(arch, pretrained=False, img_size=size, **SMALL, num_classes=0).eval()
    model = create_model(name, pretrained=False, img_size=size, **SMALL).eval()
    ours, theirs = model.encoder.backbone.state_dict(), source.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert ours["patch_embed.proj.weight"].shape == (64, 3, *source.patch_embed.patch_size)
    model.encoder.backbone.load_state_dict(theirs, strict=True)
    images = torch.randn(2, 3, size, size)
    skip = int(model.encoder.mean_token)
    with torch.no_grad():
        tokens = model.encoder.backbone.norm(model.encoder(images).tokens[:, skip:])
        torch.testing.assert_close(tokens, source.forward_features(images), **TOL)
        expected = model.encode_image(images)

    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = create_model(name, pretrained=False, img_size=size, **SMALL).eval()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(images), expected)


def test_benchmark_script_runs_at_smoke_size():
    """benchmarks/patch_embed.py (not in run.py's suite) still runs; its figures at this size mean nothing."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "patch_embed.py"
    done = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "matmul" in done.stdout and "conv" in done.stdout
