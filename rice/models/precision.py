"""Numeric precision for inference: where bf16 pays off, and matrix weights stored in it.

On a GPU bf16 runs on the tensor cores. On a CPU it depends on the chip: one with bf16 matrix units (Intel AMX,
AVX512-BF16) runs rice_vit_b32's frame encoder about 3.5x faster under bf16 autocast than in fp32 (16 frames at
224 px, one thread: 0.34 s against 1.20 s on these machines' Xeons, docs/scan.md), while on one without them oneDNN
emulates bf16 and autocast only slows it down.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16), where bf16 autocast pays off.

    Elsewhere oneDNN emulates bf16 and autocast would slow a CPU run down instead of speeding it up."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):  # private helpers: absent on other builds, which then stay in fp32
        return False


def inference_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of an inference ``precision`` on ``device``; None = plain fp32.

    ``auto`` is bf16 where the hardware multiplies it natively (CUDA; a CPU with AMX or AVX512-BF16) and fp32
    elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if precision == "auto":
        native = device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16())
        precision = "bf16" if native else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def store_matrix_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Store the weights and biases of ``module``'s Linear and Conv layers in ``dtype``, for a module that only
    runs under autocast to ``dtype``; returns the bytes freed.

    Autocast casts exactly these tensors to its dtype for every product, so the outputs are bit-equal to those of
    the fp32 module under the same autocast, and half of the weight memory goes (168 MiB of rice_vit_b32's 335).
    Everything else (norms, embeddings, projections held as bare parameters) keeps its dtype: autocast runs the
    norms in fp32. Outside autocast the module then fails on mixed dtypes, so use it only on a model of one's
    own (`rice scan` casts the model it loaded; `rice.scan` leaves a caller's model alone)."""
    stored_size = torch.empty((), dtype=dtype).element_size()
    freed = 0
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            for param in layer.parameters(recurse=False):
                if param.dtype != dtype and param.is_floating_point():
                    freed += param.numel() * (param.element_size() - stored_size)
                    param.data = param.data.to(dtype)
    return freed


def own_model_for_inference(model: nn.Module, precision: str) -> torch.dtype | None:
    """Resolve ``precision`` on the model's device and, for bf16, store its matrix weights in bf16
    (`store_matrix_weights`); returns the autocast dtype (None: fp32). Only for a model that runs under that
    autocast alone: `rice scan` on the model it loaded."""
    dtype = inference_dtype(precision, next(model.parameters()).device)
    if dtype is not None:
        store_matrix_weights(model, dtype)
    return dtype
