"""Official RICE checkpoints: every layout and variant of docs/official-checkpoint.md, built from its key tables
with random tensors of the real ViT-B/32 sizes, loads strictly and reproduces an independent CLIP visual forward."""

import math

import pytest
import torch
import torch.nn.functional as F

from rice.models.official import (
    build_official_model,
    check_official_mapping,
    convert_official_checkpoint,
    detect_variant,
    load_official,
    load_official_state,
    map_official_state,
    unwrap_official,
)

W, MLP, EMB = 768, 3072, 512
# (C) sanity figures of the doc: keys and parameters per variant
EXPECTED = {"a": (154, 87_849_218), "a'": (184, 102_657_025), "b": (185, 102_657_793), "c": (189, 102_657_834)}


def _block_shapes(prefix):
    return {
        f"{prefix}attn.in_proj_weight": (3 * W, W), f"{prefix}attn.in_proj_bias": (3 * W,),
        f"{prefix}attn.out_proj.weight": (W, W), f"{prefix}attn.out_proj.bias": (W,),
        f"{prefix}ln_1.weight": (W,), f"{prefix}ln_1.bias": (W,),
        f"{prefix}mlp.c_fc.weight": (MLP, W), f"{prefix}mlp.c_fc.bias": (MLP,),
        f"{prefix}mlp.c_proj.weight": (W, MLP), f"{prefix}mlp.c_proj.bias": (W,),
        f"{prefix}ln_2.weight": (W,), f"{prefix}ln_2.bias": (W,),
    }  # fmt: skip


def _table_shapes(variant):
    """Key -> shape, read off the tables (A) and (B) of official-checkpoint.md."""
    enc = "image_encoder.model."
    shapes = {
        f"{enc}class_embedding": (W,), f"{enc}positional_embedding": (50, W), f"{enc}proj": (W, EMB),
        f"{enc}conv1.weight": (W, 3, 32, 32), f"{enc}ln_pre.weight": (W,), f"{enc}ln_pre.bias": (W,),
        f"{enc}ln_post.weight": (W,), f"{enc}ln_post.bias": (W,), "transformer.logit_scale": (),
    }  # fmt: skip
    for i in range(12):
        shapes.update(_block_shapes(f"{enc}transformer.resblocks.{i}."))
    if variant == "a":
        shapes["transformer.contrastive_norm.norm_s"] = (1,)
        return shapes
    dec = "transformer.transformer."
    shapes.update({
        f"{dec}embeddings.class_embedding": (W,), f"{dec}embeddings.position_embedding.weight": (50, W),
        f"{dec}embeddings.layer_norm.weight": (W,), f"{dec}embeddings.layer_norm.bias": (W,),
        f"{dec}pooler.layer_norm.weight": (W,), f"{dec}pooler.layer_norm.bias": (W,),
        f"{dec}pooler.dense.weight": (W, W),
    })  # fmt: skip
    for i in (0, 1):
        shapes.update(_block_shapes(f"{dec}transformer.layers.{i}."))
    if variant in ("b", "c"):
        shapes["transformer.heads.vim.weight"] = (1, W)
    if variant == "c":
        rec = "transformer.heads.rec."
        shapes.update({f"{rec}0.weight": (4, 8, 1, 1), f"{rec}0.bias": (4,)})
        shapes.update({f"{rec}2.weight": (1, 4, 1, 1), f"{rec}2.bias": (1,)})
    return shapes


@pytest.fixture(scope="module")
def full_state():
    """Variant (c), the superset of every other variant's keys but norm_s; sane random values."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in _table_shapes("c").items():
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "layer_norm.weight")):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key == "transformer.logit_scale":
            state[key] = torch.tensor(4.0)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=g)
    state["transformer.contrastive_norm.norm_s"] = torch.tensor([3.5])
    return state


def _variant_state(full, variant):
    return {k: full[k] for k in _table_shapes(variant)}


def _layout(state, layout):
    if layout in ("module", "mmf+module"):
        state = {f"module.{k}": v for k, v in state.items()}
    if layout.startswith("mmf"):
        return {"model": state, "optimizer": {}, "num_updates": 4000, "current_iteration": 4000, "config": {}}
    return state


def _clip_visual_reference(sd, images):
    """OpenAI CLIP ``VisionTransformer.forward`` written from the raw state dict with plain torch ops."""
    p = "image_encoder.model."
    x = F.conv2d(images, sd[p + "conv1.weight"], stride=32).flatten(2).transpose(1, 2)  # (N, 49, W)
    cls = sd[p + "class_embedding"].expand(x.shape[0], 1, W)
    x = torch.cat([cls, x], 1) + sd[p + "positional_embedding"]
    x = F.layer_norm(x, (W,), sd[p + "ln_pre.weight"], sd[p + "ln_pre.bias"], 1e-5)
    heads, hd = 12, 64
    for i in range(12):
        b = f"{p}transformer.resblocks.{i}."
        h = F.layer_norm(x, (W,), sd[b + "ln_1.weight"], sd[b + "ln_1.bias"], 1e-5)
        q, k, v = (h @ sd[b + "attn.in_proj_weight"].t() + sd[b + "attn.in_proj_bias"]).split(W, dim=-1)
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, hd).permute(0, 2, 1, 3) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v
        a = a.permute(0, 2, 1, 3).reshape(x.shape)
        x = x + a @ sd[b + "attn.out_proj.weight"].t() + sd[b + "attn.out_proj.bias"]
        h = F.layer_norm(x, (W,), sd[b + "ln_2.weight"], sd[b + "ln_2.bias"], 1e-5)
        h = h @ sd[b + "mlp.c_fc.weight"].t() + sd[b + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + h @ sd[b + "mlp.c_proj.weight"].t() + sd[b + "mlp.c_proj.bias"]
    return F.layer_norm(x[:, 0], (W,), sd[p + "ln_post.weight"], sd[p + "ln_post.bias"], 1e-5) @ sd[p + "proj"]


@pytest.mark.parametrize("layout", ["bare", "module", "mmf", "mmf+module"])
def test_every_layout_and_variant_maps_strictly(full_state, layout):
    for variant, (n_keys, n_params) in EXPECTED.items():
        table = _variant_state(full_state, variant)
        assert (len(table), sum(v.numel() for v in table.values())) == (n_keys, n_params)  # the doc's figures
        state, found_layout = unwrap_official(_layout(table, layout))
        assert found_layout == layout and detect_variant(state) == variant
        mapped, unused, unknown = map_official_state(state, variant)
        assert not unknown
        assert len(mapped) + len(unused) == n_keys  # every tensor is mapped or on the documented unused list
        check_official_mapping(build_official_model(variant, device="meta"), mapped, unknown)


def test_strict_check_lists_unmapped_and_missing_keys(full_state):
    state = _variant_state(full_state, "b")
    state["transformer.heads.extra.weight"] = torch.zeros(3)
    del state["transformer.transformer.pooler.dense.weight"]
    mapped, _, unknown = map_official_state(state, "b")
    with pytest.raises(ValueError) as err:
        check_official_mapping(build_official_model("b", device="meta"), mapped, unknown)
    assert "transformer.heads.extra.weight" in str(err.value) and "decoder.pooler.dense.weight" in str(err.value)
    with pytest.raises(ValueError, match="not a public RICE checkpoint"):
        detect_variant({"foo.weight": torch.zeros(1)})


def test_official_file_loads_and_matches_clip_forward(full_state, tmp_path):
    state = _variant_state(full_state, "c")
    path = tmp_path / "rice_final.pth"
    torch.save(_layout(state, "module"), path)  # the released layout: bare state dict, DDP ``module.`` keys
    model = load_official(path)
    assert model.official_info.variant == "c" and model.official_info.layout == "module"
    assert model.decoder is not None and model.decoder.head_merge is not None
    torch.testing.assert_close(model.decoder.match_head.weight, state["transformer.heads.vim.weight"])
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.encode_image(images)
        reference = F.normalize(_clip_visual_reference(state, images), dim=-1)
        assert F.cosine_similarity(ours, reference).min() > 0.9999
        # clip: masked mean of the unnormalised frame embeddings, then L2 (padded frames ignored)
        frames = torch.cat([images[None], torch.zeros(1, 1, 3, 224, 224)], dim=1)  # (1, 3, ...) last one padded
        clip = model.encode_video(frames, torch.tensor([[True, True, False]]))
        expected = F.normalize(_clip_visual_reference(state, images).mean(0, keepdim=True), dim=-1)
        assert F.cosine_similarity(clip, expected).item() > 0.9999

    out = tmp_path / "native.pt"
    info = convert_official_checkpoint(path, out)
    native = torch.load(out, map_location="cpu", weights_only=True)
    assert info.variant == "c" and native["format"] == "rice-checkpoint" and native["step"] == 0
    assert native["config"]["loss"]["losses"] == ["icl", "pmd", "pfr"]
    for key, value in model.state_dict().items():
        assert torch.equal(native["model"][key], value), key

    # rice.load takes both the public file and the converted native checkpoint, and they embed identically.
    import rice

    with torch.no_grad():
        from_public = rice.load(path).encode_image(images)
        from_native = rice.load(out).encode_image(images)
    torch.testing.assert_close(from_public, ours)
    torch.testing.assert_close(from_native, ours)


def test_contrastive_variant_in_mmf_layout(full_state):
    model, info = load_official_state(_layout(_variant_state(full_state, "a"), "mmf+module"))
    assert (info.variant, info.layout, info.norm_s, model.decoder) == ("a", "mmf+module", 3.5, None)
    assert info.unused_keys == ["transformer.contrastive_norm.norm_s"]


class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_torchscript(state: dict) -> torch.jit.ScriptModule:
    """A TorchScript archive whose state dict has the given keys, like OpenAI's ViT-B-32.pt."""
    root = _Holder()
    for key, value in state.items():
        *path, leaf = key.split(".")
        module = root
        for name in path:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_parameter(leaf, torch.nn.Parameter(value.clone(), requires_grad=False))
    return torch.jit.script(root)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_openai_clip_file_as_pretrained_file(full_state, tmp_path, fmt):
    """`--pretrained-file ViT-B-32.pt`: the OpenAI CLIP file (JIT archive, fp16 weights) or a plain state dict."""
    from rice.config import ModelConfig
    from rice.models import build_model, create_model

    prefix = "image_encoder.model."
    visual = {"visual." + k[len(prefix):]: v for k, v in full_state.items() if k.startswith(prefix)}
    visual["logit_scale"] = torch.tensor(4.6)  # the text tower's keys sit beside visual.* and are ignored
    path = tmp_path / "ViT-B-32.pt"
    if fmt == "torchscript":
        visual = {k: v.half() for k, v in visual.items()}
        _as_torchscript(visual).save(str(path))
    else:
        torch.save(visual, path)
    if fmt == "torchscript":  # not OpenAI's file (its sha256 differs): read only when trusted
        cfg = ModelConfig(name="rice_vit_b32", pretrained_file=str(path), trust_torchscript=True)
        model = build_model(cfg).eval()
    else:
        model = create_model("rice_vit_b32", pretrained_file=str(path)).eval()
    reference_state = {prefix + k[len("visual."):]: v.float() for k, v in visual.items() if k.startswith("visual.")}
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.encode_image(images)
        reference = F.normalize(_clip_visual_reference(reference_state, images), dim=-1)
    assert F.cosine_similarity(ours, reference).min() > 0.9999
