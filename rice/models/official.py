"""Load the public RICE code's checkpoints (``rice_final.pth`` and MMF ``*.ckpt``) into a ``RiceModel``.

See ``docs/official-checkpoint.md`` (shared docs) for the layouts. Four variants, told apart by their keys:

- ``a``  LPR ICL (``contrastive`` head): encoder + ``logit_scale`` + ``contrastive_norm.norm_s``;
- ``a'`` MovingFashion ICL (``pretraining`` head, tasks [vic]): encoder + an untrained decoder without heads;
- ``b``  ICL+PMD: encoder + decoder + ``heads.vim``;
- ``c``  ICL+PMD+PFR: (b) + ``heads.rec`` (PFR head-merging convs).

Every tensor of the file is mapped onto a parameter of our model, or is on a short, documented list of tensors the
public code never uses in its forward pass (the decoder's bypassed ``embeddings``; in ``a'`` the whole untrained
decoder; in ``a`` ``norm_s``, which only multiplies every embedding by one scalar and so changes no ranking). Any
other key, any parameter of ours left without a value, or any shape mismatch raises with the full list.

Eval preprocessing of the public code (PIL bilinear resize to 256x256, centre crop 224, CLIP mean/std) is what
``rice_vit_b32``'s ``preprocess`` describes and ``rice.data.build_transform(224, False, ..., resize_size=256)``
does; the embeddings (masked mean of unnormalised frame embeddings, then L2) are ``RiceModel``'s contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from rice.models.clip_weights import openai_visual_to_timm
from rice.models.decoder import build_decoder
from rice.models.registry import create_model
from rice.models.rice_model import RiceModel

ENCODER_PREFIX = "image_encoder.model."
DECODER_PREFIX = "transformer.transformer."
VARIANT_LOSSES = {"a": ["icl"], "a'": ["icl"], "b": ["icl", "pmd"], "c": ["icl", "pmd", "pfr"]}
DECODER_HEADS = 8  # CrossConfig's default, never overridden by the public yamls
NUM_ENCODER_KEYS = 152

# public decoder key (after ``transformer.transformer.``) -> ours (after ``decoder.``)
_DECODER_LAYER = re.compile(r"^transformer\.layers\.([01])\.(.+)$")
_DECODER_TOP = {
    "pooler.layer_norm.weight": "pooler.layer_norm.weight",
    "pooler.layer_norm.bias": "pooler.layer_norm.bias",
    "pooler.dense.weight": "pooler.dense.weight",
}
_HEADS = {
    "transformer.heads.vim.weight": "decoder.match_head.weight",
    "transformer.heads.rec.0.weight": "decoder.head_merge.convs.0.weight",
    "transformer.heads.rec.0.bias": "decoder.head_merge.convs.0.bias",
    "transformer.heads.rec.2.weight": "decoder.head_merge.convs.2.weight",
    "transformer.heads.rec.2.bias": "decoder.head_merge.convs.2.bias",
}
_BLOCKS = ("self_block", "cross_block")  # layers.0 = self-attention block, layers.1 = cross-attention block


@dataclass
class OfficialCheckpointInfo:
    """What was found in an official checkpoint besides the weights we load."""

    variant: str  # "a", "a'", "b" or "c"
    layout: str  # "bare", "module", "mmf" or "mmf+module"
    norm_s: float | None = None  # variant (a): scales every embedding (and every score by norm_s^2); no rank change
    unused_keys: list[str] = field(default_factory=list)  # tensors the public forward never reads


def unwrap_official(obj: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside any of the four layouts, with ``module.`` prefixes removed, and the layout's name."""
    layout = "bare"
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj, layout = obj["model"], "mmf"
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("not a RICE checkpoint: expected a state dict of tensors (or an MMF dict with 'model')")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        layout = "module" if layout == "bare" else "mmf+module"
    return state, layout


def detect_variant(state: Mapping[str, torch.Tensor]) -> str:
    """Tell a / a' / b / c apart from the keys (prefixes already removed)."""
    if not any(k.startswith(ENCODER_PREFIX) for k in state):
        sample = sorted(state)[:3]
        raise ValueError(f"not a public RICE checkpoint: no '{ENCODER_PREFIX}*' keys (first keys: {sample})")
    if "transformer.contrastive_norm.norm_s" in state:
        return "a"
    if "transformer.heads.rec.0.weight" in state:
        return "c"
    if "transformer.heads.vim.weight" in state:
        return "b"
    if any(k.startswith(DECODER_PREFIX) for k in state):
        return "a'"
    raise ValueError("public RICE checkpoint of unknown variant: no contrastive_norm, decoder or heads keys")


def map_official_state(
    state: Mapping[str, torch.Tensor], variant: str
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Rename the public keys onto ``RiceModel`` (``rice_vit_b32`` + decoder) keys.

    Returns:
        (mapped state dict, unused keys (documented as never read by the public forward), unknown keys).
    """
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(ENCODER_PREFIX):
            try:
                ((timm_key, timm_value),) = openai_visual_to_timm({key[len(ENCODER_PREFIX) :]: value}).items()
            except KeyError:
                unknown.append(key)
                continue
            # the projection is the encoder's own bias-free ``proj`` (CLIP's ``visual.proj``), not timm's head
            mapped["encoder.proj.weight" if timm_key == "head.weight" else f"encoder.backbone.{timm_key}"] = timm_value
        elif key == "transformer.logit_scale":
            mapped["logit_scale"] = value.float().reshape(())
        elif key == "transformer.contrastive_norm.norm_s" and variant == "a":
            unused.append(key)  # a scale on every embedding: kept in OfficialCheckpointInfo.norm_s
        elif key.startswith(DECODER_PREFIX + "embeddings."):
            unused.append(key)  # the public CrossModel bypasses its embeddings in forward
        elif variant == "a'" and key.startswith(DECODER_PREFIX):
            unused.append(key)  # ICL-only run: the decoder was built but never trained or used (no heads)
        elif key.startswith(DECODER_PREFIX) and (ours := _decoder_key(key[len(DECODER_PREFIX) :])):
            mapped[ours] = value.float()
        elif key in _HEADS and variant in ("b", "c"):
            mapped[_HEADS[key]] = value.float()
        else:
            unknown.append(key)
    return mapped, unused, unknown


def _decoder_key(key: str) -> str | None:
    if key in _DECODER_TOP:
        return f"decoder.{_DECODER_TOP[key]}"
    match = _DECODER_LAYER.match(key)
    if match is None:
        return None
    return f"decoder.{_BLOCKS[int(match.group(1))]}.{match.group(2)}"


def build_official_model(variant: str, device: str | torch.device = "cpu") -> RiceModel:
    """An empty ``rice_vit_b32`` (no hub download) with the variant's decoder: none for a / a', PMD for b, PMD +
    head-merging convs for c."""
    if variant not in VARIANT_LOSSES:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANT_LOSSES)}")
    with torch.device(device):
        model = create_model("rice_vit_b32", pretrained=False)
        if variant in ("b", "c"):
            model.decoder = build_decoder(model.encoder, heads=DECODER_HEADS, reconstruction=variant == "c")
    return model


def check_official_mapping(model: torch.nn.Module, mapped: Mapping[str, torch.Tensor], unknown: list[str]) -> None:
    """Strict check: raise listing unknown file keys, our keys left without a value, and shape mismatches."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected)) + sorted(unknown)
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k])}" for k, v in mapped.items()
                  if k in expected and v.shape != expected[k]]  # fmt: skip
    if missing or unexpected or mismatched:
        raise ValueError(
            "official checkpoint does not map strictly onto rice_vit_b32: "
            f"unmapped file keys {unexpected}; model keys without a value {missing}; shape mismatches {mismatched}"
        )


def read_official(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``: these files come from the internet and must not run pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path}: cannot read it as a weights-only checkpoint ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:100] if str(err).strip() else ''}). Official RICE "
            "files are plain state dicts; a file that needs arbitrary pickled objects is refused on purpose."
        ) from err


def load_official_state(obj: Any) -> tuple[RiceModel, OfficialCheckpointInfo]:
    """Build and load the model from an already-read official checkpoint object (any of the four layouts)."""
    state, layout = unwrap_official(obj)
    variant = detect_variant(state)
    n_encoder = sum(k.startswith(ENCODER_PREFIX) for k in state)
    if n_encoder != NUM_ENCODER_KEYS:
        raise ValueError(f"expected {NUM_ENCODER_KEYS} CLIP ViT-B/32 encoder keys, found {n_encoder}")
    mapped, unused, unknown = map_official_state(state, variant)
    model = build_official_model(variant)
    check_official_mapping(model, mapped, unknown)
    model.load_state_dict(mapped, strict=True)
    norm_s = state.get("transformer.contrastive_norm.norm_s")
    info = OfficialCheckpointInfo(variant, layout, None if norm_s is None else float(norm_s.reshape(-1)[0]), unused)
    return model.eval(), info


def load_official(path: str | Path) -> RiceModel:
    """Load a public RICE checkpoint as an eval-mode ``RiceModel`` (``model.official_info`` tells what it was)."""
    return official_model(read_official(path))


def official_model(obj: Any) -> RiceModel:
    """`load_official` on an already-read checkpoint object, with ``official_info`` and ``config`` set."""
    model, info = load_official_state(obj)
    model.official_info = info
    model.config = official_run_config(info.variant)
    return model


def official_run_config(variant: str) -> Any:
    """The RunConfig that rebuilds this variant natively (rice_vit_b32, the variant's losses, 8 decoder heads)."""
    from rice.config import LossConfig, ModelConfig, RunConfig

    return RunConfig(
        model=ModelConfig(name="rice_vit_b32", pretrained=False, decoder_heads=DECODER_HEADS),
        loss=LossConfig(losses=VARIANT_LOSSES[variant]),
    )


def convert_official_checkpoint(src: str | Path, dst: str | Path) -> OfficialCheckpointInfo:
    """Write a native ``rice`` checkpoint (format "rice-checkpoint", model, config, step 0) from an official one."""
    import rice
    from rice.models.checkpoint_file import atomic_save  # lazy: checkpoint files are not the models package's concern

    model, info = load_official_state(read_official(src))
    atomic_save(
        {
            "format": "rice-checkpoint",
            "rice_version": rice.__version__,
            "model": model.state_dict(),
            "step": 0,
            "epoch": 0,
            "config": official_run_config(info.variant).to_dict(),
            "source": {"file": str(src), "variant": info.variant, "layout": info.layout, "norm_s": info.norm_s},
        },
        dst,
    )
    return info
