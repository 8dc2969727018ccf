"""OpenAI CLIP visual-tower weights <-> timm VisionTransformer keys.

The OpenAI module names (``conv1``, ``transformer.resblocks.N.attn.in_proj_weight``, ``ln_post``, ``proj``) are
also the names inside the public RICE checkpoints (under ``image_encoder.model.``), so both loaders use this map.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

_BLOCK_MAP = {
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight",
    "attn.out_proj.bias": "attn.proj.bias",
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
}
_TOP_MAP = {
    "conv1.weight": "patch_embed.proj.weight",
    "ln_pre.weight": "norm_pre.weight",
    "ln_pre.bias": "norm_pre.bias",
    "ln_post.weight": "norm.weight",
    "ln_post.bias": "norm.bias",
}
_BLOCK_KEY = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")


def openai_visual_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an OpenAI ``visual.*`` state dict (prefix already removed) to timm ViT names.

    ``proj`` (768x512, used as ``x @ proj``) becomes ``head.weight`` transposed. Raises on any key it does not
    know, so no tensor is silently dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.float()
        if key == "class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif key == "positional_embedding":
            out["pos_embed"] = value.unsqueeze(0)
        elif key == "proj":
            out["head.weight"] = value.t().contiguous()
        elif key in _TOP_MAP:
            out[_TOP_MAP[key]] = value
        elif (match := _BLOCK_KEY.match(key)) and match.group(2) in _BLOCK_MAP:
            out[f"blocks.{match.group(1)}.{_BLOCK_MAP[match.group(2)]}"] = value
        else:
            raise KeyError(f"unexpected CLIP visual key {key!r}")
    return out


def _is_torchscript(file: Path) -> bool:
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_pretrained_state_dict(file: Path, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Read a local weight file for a timm ViT: an OpenAI CLIP file (JIT or state dict) or a timm checkpoint."""
    try:
        if _is_torchscript(file):
            # OpenAI's ViT-B-32.pt is a TorchScript archive; torch.jit.load reads it without running pickled code.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.load is deprecated, but it is the file's format
                state = torch.jit.load(str(file), map_location="cpu").state_dict()
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{file}: not a readable checkpoint ({err}); pass a timm or OpenAI CLIP weight file") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{file}: expected a state dict, found {type(state).__name__}")
    if any(k.startswith("visual.") for k in state):
        visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        return openai_visual_to_timm(visual)
    if "conv1.weight" in state:
        return openai_visual_to_timm(state)
    return {k: v.float() for k, v in state.items()}
