"""OpenAI CLIP visual-tower weights <-> timm VisionTransformer keys.

The OpenAI module names (``conv1``, ``transformer.resblocks.N.attn.in_proj_weight``, ``ln_post``, ``proj``) are
also the names inside the public RICE checkpoints (under ``image_encoder.model.``), so both loaders use this map.
"""

from __future__ import annotations

import hashlib
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


# sha256 of OpenAI's ``ViT-B-32.pt`` (the download URL embeds it: openaipublic.azureedge.net/clip/models/<sha256>/
# ViT-B-32.pt). It is the only TorchScript archive read without ``trust_torchscript``.
OPENAI_VIT_B32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"


def _is_torchscript(file: Path) -> bool:
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _untrusted_torchscript(file: Path) -> ValueError:
    return ValueError(
        f"{file} is a TorchScript archive, and loading one runs the code inside it; only OpenAI's ViT-B-32.pt "
        f"(sha256 {OPENAI_VIT_B32_SHA256[:12]}...) is read without asking. If you trust the file, pass "
        "--trust-torchscript (model.trust_torchscript=true), or convert it once to a plain state dict: python -c "
        f"\"import torch; torch.save(torch.jit.load('{file}').state_dict(), '{file.with_suffix('')}_state_dict.pt')\" "
        "and pass that file"
    )


def read_pretrained_state_dict(
    file: Path, backbone: nn.Module, trust_torchscript: bool = False
) -> dict[str, torch.Tensor]:
    """Read a local weight file for a timm ViT: an OpenAI CLIP file (JIT or state dict) or a timm checkpoint.

    A TorchScript archive can carry methods (``__setstate__``) that ``torch.jit.load`` runs, so one is read only
    when its sha256 is OpenAI's ViT-B-32.pt or ``trust_torchscript`` is set; state dicts are read with
    ``weights_only=True`` (no code).

    Raises:
        ValueError: an untrusted TorchScript archive, or a file that is not a readable checkpoint.
    """
    try:
        if _is_torchscript(file):
            if not trust_torchscript and _sha256(file) != OPENAI_VIT_B32_SHA256:
                raise _untrusted_torchscript(file)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.load is deprecated, but it is the file's format
                state = torch.jit.load(str(file), map_location="cpu").state_dict()
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except ValueError:
        raise
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


def trusted_torchscript_as_state_dict(file: str | Path, out_dir: str | Path) -> Path:
    """Read a TorchScript archive the user trusts (``--trust-torchscript``) into a plain state-dict file under
    ``out_dir``, which every loader then reads code-free; any other file is returned unchanged."""
    file = Path(file)
    if not file.is_file() or not _is_torchscript(file):
        return file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        state = torch.jit.load(str(file), map_location="cpu").state_dict()
    out = Path(out_dir) / f"{file.stem}_state_dict.pt"
    torch.save(dict(state), out)
    return out
