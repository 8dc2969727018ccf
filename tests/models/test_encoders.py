"""The stronger encoders (issue 23): SigLIP 2, DFN, EVA02 and DINOv2 through timm.

Nothing is downloaded: full-size builds happen on the meta device (shapes only), and the runs that compute are the
same variant functions with timm's size overrides (``img_size``, ``depth``, ``embed_dim``, ``num_heads``), so the
real architecture code (attention pool, rotary blocks, registers, LayerScale) runs on CPU in well under a second.
"""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch
from timm.data import resolve_model_data_config

import rice
from rice.config import LossConfig, build_config
from rice.models import build_model, create_model
from rice.models.checkpoint_file import save_checkpoint
from rice.models.encoders import preprocess_record
from rice.models.registry import _MODELS, register_model
from rice.train.task import RiceTask

# variant -> (timm pretrained tag, tokens at 224 px: patches + CLS/mean token + registers)
NEW_ENCODERS = {
    "rice_siglip2_b16": ("vit_base_patch16_siglip_224.v2_webli", 197),
    "rice_dfn_b16": ("vit_base_patch16_clip_224.dfn2b", 197),
    "rice_eva02_b16": ("eva02_base_patch16_clip_224.merged2b", 197),
    "rice_dinov2_b14": ("vit_base_patch14_reg4_dinov2.lvd142m", 261),
}
# A small build of each: two blocks of width 64, 2x2 patches (so /14 runs at 28 px).
SMALL = {"depth": 2, "embed_dim": 64, "num_heads": 4}


def _small(name: str, **kwargs) -> rice.models.RiceModel:
    size = 28 if name.endswith("b14") else 32
    return create_model(name, pretrained=False, img_size=size, **SMALL, **kwargs)


@pytest.mark.parametrize("name", sorted(NEW_ENCODERS))
def test_pretrained_tag_exists_in_this_timm(name):
    tag, _ = NEW_ENCODERS[name]
    assert tag in timm.list_pretrained(tag)  # the exact arch.tag, so pretrained=True fetches these weights


@pytest.mark.parametrize("name", sorted(NEW_ENCODERS))
def test_full_size_token_grid_and_preprocessing_on_meta(name):
    tag, tokens = NEW_ENCODERS[name]
    with torch.device("meta"):
        model = create_model(name, pretrained=False)
        out = model.encoder(torch.empty(2, 3, 224, 224))
    assert out.tokens.shape == (2, tokens, model.encoder.width) and model.encoder.num_tokens == tokens
    assert out.embedding.shape == (2, model.embed_dim)
    # independent reference: timm's own resolver of the pretrained config of the tagged weights
    ref = resolve_model_data_config(timm.create_model(tag, pretrained=False, img_size=224, device="meta"))
    pre = model.preprocess
    # the size is the built one: DINOv2's config says 518 (its training size), rice builds it at 224
    assert pre.input_size == model.encoder.backbone.patch_embed.img_size[0] == 224
    assert (pre.mean, pre.std, pre.interpolation) == (tuple(ref["mean"]), tuple(ref["std"]), ref["interpolation"])
    assert pre.resize_size == math.floor(224 / ref["crop_pct"])


def test_each_model_keeps_its_own_normalisation():
    with torch.device("meta"):
        pres = {name: create_model(name, pretrained=False).preprocess for name in NEW_ENCODERS}
    assert pres["rice_siglip2_b16"].mean == (0.5, 0.5, 0.5)
    assert pres["rice_dinov2_b14"].mean == (0.485, 0.456, 0.406)  # ImageNet
    assert pres["rice_dfn_b16"].mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # CLIP
    assert pres["rice_eva02_b16"].resize_size == 248 and pres["rice_dfn_b16"].resize_size == 224  # crop_pct .9 / 1


@pytest.mark.parametrize("name", sorted(NEW_ENCODERS))
def test_forward_backward_with_icl_pmd_pfr(name):
    """A training step's losses on a tiny input: every loss finite, gradients reach the encoder's first block,
    the decoder (sized from the encoder: width 64 here) and PFR's head-merging convs."""
    torch.manual_seed(0)
    model = _small(name)
    cfg = build_config(model__name="rice_tiny", model__decoder_heads=4)  # only its decoder settings are used
    from rice.models.decoder import build_decoder

    model.decoder = build_decoder(model.encoder, heads=4, reconstruction=True, attn_drop=cfg.model.decoder_attn_drop)
    assert model.decoder.width == model.encoder.width == 64
    task = RiceTask(model, LossConfig(losses=["icl", "pmd", "pfr"], pmd_negatives=2))
    size = model.preprocess.input_size
    images, frames = torch.randn(3, 3, size, size), torch.randn(3, 2, 3, size, size)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    out = task(images, frames, mask)
    assert all(torch.isfinite(out[key]) for key in ("icl_loss", "pmd_loss", "pfr_loss"))
    out["loss"].backward()
    first_block = model.encoder.backbone.blocks[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first_block.parameters())
    assert model.decoder.head_merge is not None
    assert all(p.grad is not None for p in model.decoder.head_merge.parameters())
    assert model.decoder.match_head.weight.grad.abs().sum() > 0
    # every parameter takes part (no unused one for DDP to stall on: the engine does not look for unused ones)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_dinov2_layer_scale_folds_exactly_into_the_decoder_init():
    """DINOv2's blocks scale each branch by a learned gamma; the copies given to the decoder fold it into the
    output projections, so a folded block computes what the original does."""
    torch.manual_seed(0)
    model = _small("rice_dinov2_b14", init_values=0.3)
    for block in model.encoder.backbone.blocks:  # gamma away from its init value, different per channel
        torch.nn.init.uniform_(block.ls1.gamma, 0.1, 2.0)
        torch.nn.init.uniform_(block.ls2.gamma, 0.1, 2.0)
    folded = model.encoder.last_blocks(2)
    x = torch.randn(2, model.encoder.num_tokens, 64)
    for original, copy in zip(list(model.encoder.backbone.blocks)[-2:], folded):
        assert isinstance(copy.ls1, torch.nn.Identity) and copy is not original
        torch.testing.assert_close(copy(x), original(x), rtol=1e-5, atol=1e-5)


def test_decoder_init_from_vit_blocks_and_random_for_eva():
    assert _small("rice_dfn_b16").encoder.last_blocks(2) is not None
    assert _small("rice_siglip2_b16").encoder.last_blocks(2) is not None
    assert _small("rice_eva02_b16").encoder.last_blocks(2) is None  # rotary SwiGLU blocks: no layout to copy


def test_siglip_token_zero_is_the_mean_of_its_patch_tokens():
    model = _small("rice_siglip2_b16")
    tokens = model.encoder(torch.randn(2, 3, 32, 32)).tokens
    assert tokens.shape[1] == 4 + 1
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(1))


# ---------------------------------------------------------------- preprocessing through checkpoints and exports
@pytest.fixture(params=["rice_siglip2_b16", "rice_dinov2_b14"])
def small_variant(request):
    """A small copy of a new variant registered by name, as user code would, so the config names it and
    `rice.load` rebuilds it; removed again after the test."""
    base = request.param
    name = f"{base}_test_small"

    def variant(pretrained: bool = False, pretrained_file=None, logit_scale_init: float = 4.0):
        return _small(base, logit_scale_init=logit_scale_init)

    variant.__name__ = name
    register_model(variant)
    yield name
    del _MODELS[name]


def test_checkpoint_round_trips_through_export_and_load_with_its_preprocessing(small_variant, tmp_path):
    pytest.importorskip("safetensors")
    from rice.models.export_writer import export_model

    cfg = build_config(model__name=small_variant, model__pretrained=False, loss__losses=["icl", "pmd", "pfr"])
    torch.manual_seed(0)
    model = build_model(cfg.model, with_decoder=True, with_reconstruction=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, step=1, epoch=0,
                    config=cfg)  # fmt: skip
    export = export_model(ckpt, tmp_path / "export")
    meta = json.loads((export / "config.json").read_text())
    assert meta["preprocess"] == preprocess_record(model.preprocess)  # the export carries the model's own
    pre = model.preprocess
    assert f"centre crop {pre.input_size}, mean {list(pre.mean)}" in (export / "README.md").read_text()

    size = model.preprocess.input_size
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model.eval().encode_image(images)
    for source in (ckpt, export):
        loaded = rice.load(source)
        assert loaded.preprocess == model.preprocess
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode_image(images), expected)

    # what is stored is what the loaded model reports (a later timm cannot change it) ...
    state = torch.load(ckpt, weights_only=False)
    state["preprocess"]["std"] = [0.5, 0.25, 0.125]
    torch.save(state, ckpt)
    assert rice.load(ckpt).preprocess.std == (0.5, 0.25, 0.125)
    meta["preprocess"]["mean"] = [0.25, 0.5, 0.75]
    meta["preprocess"]["interpolation"] = "bilinear"
    (export / "config.json").write_text(json.dumps(meta))
    loaded = rice.load(export)
    assert loaded.preprocess.mean == (0.25, 0.5, 0.75) and loaded.preprocess.interpolation == "bilinear"
    # ... and a stored record that does not fit the model is refused in one line naming the file
    meta["preprocess"]["input_size"] = size * 2
    (export / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json: bad stored preprocessing \(input_size"):
        rice.load(export)


# ----------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("dataset", ["movingfashion", "lpr750k"])
@pytest.mark.parametrize("name", sorted(NEW_ENCODERS))
def test_encoder_recipe_is_the_replica_with_the_encoder_and_scaled_rates(dataset, name):
    """rice/configs/<dataset>_rice_<encoder>.yaml: the ViT-B/32 recipe of the dataset with only the model, the two
    learning rates (x sqrt(50 / tokens)) and the precision changed; fails when the base recipe moves on alone."""
    base = build_config(f"{dataset}_rice")
    recipe = build_config(f"{dataset}_{name}")  # e.g. movingfashion_rice_dfn_b16
    factor = math.sqrt(50 / NEW_ENCODERS[name][1])
    assert recipe.model.name == name and recipe.model.pretrained
    assert recipe.optim.lr == pytest.approx(round(base.optim.lr * factor, 8), abs=5e-9)
    assert recipe.optim.head_lr == pytest.approx(round(base.optim.head_lr * factor, 6), abs=5e-7)
    assert recipe.train.amp == "native"
    same = lambda cfg: cfg.to_dict() | {  # noqa: E731 - the fields a new-encoder recipe may change, blanked
        "model": {**cfg.to_dict()["model"], "name": None},
        "optim": {**cfg.to_dict()["optim"], "lr": None, "head_lr": None},
        "train": {**cfg.to_dict()["train"], "amp": None},
    }
    assert same(recipe) == same(base)


def test_docs_models_table_is_the_catalogue():
    """docs/models.md's encoder table shows what `rice models` shows (params, GFLOPs) and the token counts."""
    from pathlib import Path

    from rice.models import model_info

    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    for name in ["rice_vit_b32", *NEW_ENCODERS]:
        info = model_info(name)
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        tokens = 50 if name == "rice_vit_b32" else NEW_ENCODERS[name][1]
        assert cells[2:6] == [f"{info.params / 1e6:.2f}", f"{info.gflops:.2f}", str(tokens), str(info.embed_dim)]


def test_local_weight_file_loads_through_timms_checkpoint_filter(tmp_path):
    """Offline weights: a hub-style model.safetensors of DINOv2 saved at another size than rice builds loads with
    its position embedding resampled by timm's own filter, as a hub download would; every block weight arrives."""
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("vit_base_patch14_reg4_dinov2", pretrained=False, img_size=56, **SMALL)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    model = create_model("rice_dinov2_b14", pretrained=False, pretrained_file=str(tmp_path / "model.safetensors"),
                         img_size=28, **SMALL)  # fmt: skip
    loaded = model.encoder.backbone.state_dict()
    assert loaded["pos_embed"].shape[1] == 4 and state["pos_embed"].shape[1] == 16  # 4x4 grid -> 2x2
    for key in ("blocks.1.attn.qkv.weight", "blocks.0.ls1.gamma", "reg_token", "cls_token", "norm.weight"):
        torch.testing.assert_close(loaded[key], state[key])
    with pytest.raises(FileNotFoundError, match="--pretrained-file"):
        create_model("rice_dinov2_b14", pretrained=False, pretrained_file=str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("name", sorted(NEW_ENCODERS))
def test_embedding_is_timms_own_forward(name):
    """The encoder's embedding equals timm's full forward of the same backbone (its pooling, final norm, rotary
    positions and head), so rice's token path changes nothing about what the weights compute."""
    import copy

    from rice.models.encoders import TimmViTEncoder, timm_preprocess

    tag, _ = NEW_ENCODERS[name]
    size = 28 if name.endswith("b14") else 32
    torch.manual_seed(0)
    backbone = timm.create_model(tag.split(".")[0], pretrained=False, img_size=size, **SMALL,
                                 num_classes=16 if "clip" in tag else 0).eval()  # fmt: skip
    if isinstance(backbone.head, torch.nn.Linear):
        torch.nn.init.normal_(backbone.head.bias)  # a non-zero head bias must be carried into proj
    encoder = TimmViTEncoder(copy.deepcopy(backbone), timm_preprocess(backbone), proj_bias=True).eval()
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images).embedding, backbone(images), rtol=1e-5, atol=1e-5)
