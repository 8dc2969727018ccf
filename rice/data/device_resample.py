"""PIL's antialiased resize as two matrix products, so a crop's resampling can run on any torch device.

`rice.data.transforms.ImageTransform.to_array` resizes with PIL (a square resize then a crop, or one resize of a
fractional box for scale crops) and flips. PIL resamples an 8-bit image separably: it computes, for every output
column, normalised filter weights over a window of input columns, rounds them to fixed point (22 fractional bits),
takes the weighted sum, rounds it to uint8; then the same down the rows. Written as matrices, a crop is a choice
of output rows of the resize's matrix, a flip reverses them, and a box moves the window: one (S, W) matrix for the
columns and one (S, H) for the rows of each frame. The weights here follow PIL's arithmetic step by step (Pillow's
``Resample.c``) and the sums run in float64, where products of uint8 values and 22-bit integer weights are exact
whatever the summation order, so the result matches PIL's bit for bit except where the float64 weight
normalisation of a window rounds its last bit differently from PIL's sequential C sum (rare, one unit).

Which pass runs first matters (the intermediate is rounded to uint8). Classic Pillow always runs the columns first;
Pillow 13 runs the rows first in some reductions, by a rule that is not part of its API. The device stage takes
the rows first when they shrink more than the columns and do shrink: on 300 random sizes (bicubic) that matched
Pillow 13.0's output bit for bit in 284, the others differ by a few units. A resize that changes one axis only
(prepared frames of 256 px squashed to a 256 px square, the usual case) is exact either way.
"""

from __future__ import annotations

import math

import torch

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point weights for 8-bit images


def _box(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x <= 0.5)).to(x.dtype)


def _bilinear(x: torch.Tensor) -> torch.Tensor:
    return (1.0 - x.abs()).clamp(min=0.0)


_F054, _F046 = float(torch.tensor(0.54, dtype=torch.float32)), float(torch.tensor(0.46, dtype=torch.float32))


def _hamming(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    safe = torch.where(x == 0, torch.ones_like(x), x)
    # Pillow writes 0.54f and 0.46f: single-precision constants.
    value = torch.sin(safe * math.pi) / (safe * math.pi) * (_F054 + _F046 * torch.cos(safe * math.pi))
    return torch.where(x == 0, torch.ones_like(x), torch.where(x >= 1.0, torch.zeros_like(x), value))


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    a = -0.5
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _sinc(x: torch.Tensor) -> torch.Tensor:
    safe = torch.where(x == 0, torch.ones_like(x), x) * math.pi
    return torch.where(x == 0, torch.ones_like(x), torch.sin(safe) / safe)


def _lanczos(x: torch.Tensor) -> torch.Tensor:
    return torch.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3.0), torch.zeros_like(x))


# name -> (filter, support): Pillow's filters (``nearest`` is not a filter and stays on the CPU path).
FILTERS = {"box": (_box, 0.5), "bilinear": (_bilinear, 1.0), "hamming": (_hamming, 1.0),
           "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos, 3.0)}  # fmt: skip


def resample_weights(
    filter_name: str, in_size: int, in0: torch.Tensor, in1: torch.Tensor, out_size: torch.Tensor | int,
    out_index: torch.Tensor,
) -> torch.Tensor:
    """Fixed-point weights (as float64 integers) of chosen output pixels of a 1-D PIL resample.

    Args:
        filter_name: a `FILTERS` name.
        in_size: input length (pixels).
        in0, in1: (n,) float64, the box's start and end on the input axis (0 and ``in_size`` for a plain resize).
        out_size: output length of the resample the box maps to (an int, or (n,) per item).
        out_index: (n, k) int64, which output pixels to return (a crop's rows, reversed for a flip).

    Returns:
        (n, k, in_size) float64: row j of item i holds the weights of output pixel ``out_index[i, j]``; multiply an
        input by them, add ``2**21``, shift right by 22 and clamp to [0, 255] to get PIL's pixel.
    """
    filt, filter_support = FILTERS[filter_name]
    in0, in1 = in0.to(torch.float32).to(torch.float64), in1.to(torch.float32).to(torch.float64)  # PIL: float box[4]
    if not isinstance(out_size, torch.Tensor):
        out_size = torch.full_like(in0, float(out_size))
    scale = ((in1 - in0) / out_size.to(torch.float64))[:, None, None]  # (n, 1, 1)
    filterscale = scale.clamp(min=1.0)
    support = filter_support * filterscale
    center = in0[:, None, None] + (out_index[..., None].to(torch.float64) + 0.5) * scale  # (n, k, 1)
    # C's (int) cast truncates toward zero; the bounds are then clipped to the input.
    xmin = torch.trunc(center - support + 0.5).clamp(min=0.0)
    xmax = torch.trunc(center + support + 0.5).clamp(max=float(in_size))
    x = torch.arange(in_size, dtype=torch.float64, device=in0.device)  # (in,)
    inside = (x >= xmin) & (x < xmax)
    weights = torch.where(inside, filt((x - center + 0.5) * (1.0 / filterscale)), torch.zeros((), dtype=torch.float64,
                                                                                        device=in0.device))
    total = weights.sum(dim=-1, keepdim=True)
    weights = torch.where(total != 0, weights / torch.where(total != 0, total, torch.ones_like(total)), weights)
    # Pillow's normalize_coeffs_8bpc: round half away from zero.
    scaled = weights * float(1 << PRECISION_BITS)
    return torch.where(scaled < 0, torch.trunc(scaled - 0.5), torch.trunc(scaled + 0.5))


def _round_fixed(sums: torch.Tensor) -> torch.Tensor:
    """PIL's clip8: add half, shift right by the fixed-point bits (a floor), clamp to uint8's range."""
    return torch.floor((sums + float(1 << (PRECISION_BITS - 1))) / float(1 << PRECISION_BITS)).clamp_(0.0, 255.0)


def resample(
    images: torch.Tensor, row_weights: torch.Tensor, col_weights: torch.Tensor, rows_before_cols: bool = False
) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> uint8 (n, 3, S, S'): one pass, rounded to uint8, then the other, as PIL does.

    ``row_weights`` (n, S, H) and ``col_weights`` (n, S', W) from `resample_weights`. PIL skips a pass whose weights
    would be the identity; the identity's fixed-point weights give the same pixels, so no pass is skipped here.
    """
    x = images.to(torch.float64)
    cols, rows = col_weights.transpose(1, 2)[:, None], row_weights[:, None]
    if rows_before_cols:
        return _round_fixed(torch.matmul(_round_fixed(torch.matmul(rows, x)), cols)).to(torch.uint8)
    return _round_fixed(torch.matmul(rows, _round_fixed(torch.matmul(x, cols)))).to(torch.uint8)
