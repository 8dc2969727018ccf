"""A ViT's patch embedding as one matrix product instead of a strided convolution.

A convolution whose kernel equals its stride (no padding, dilation or groups) is a patchify: every output token is
the dot product of one non-overlapping P x P patch with each filter. Cut the image into patches (a reshape and one
copy), flatten each to C*P*P values in the order the weight is laid out (channel, row, column), and the whole layer
is one (B*N, C*P*P) x (C*P*P, width) product. On a GPU that is a plain GEMM (issue 24: the conv path of the
stride-32 embedding ran well below the card's matrix rate); the arithmetic is the same, and the parameters stay
timm's ``patch_embed.proj`` Conv2d (weight (width, C, P, P)), so every checkpoint loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Format, PatchEmbed, nchw_to


def is_patchify(patch_embed: nn.Module) -> bool:
    """Whether ``patch_embed`` is timm's ``PatchEmbed`` over a non-overlapping convolution (kernel = stride = the
    patch size, no padding, no dilation, one group), the only case the matrix product reproduces exactly."""
    proj = getattr(patch_embed, "proj", None)
    return (
        isinstance(patch_embed, PatchEmbed)
        and type(proj) is nn.Conv2d
        and tuple(proj.kernel_size) == tuple(proj.stride) == tuple(patch_embed.patch_size)
        and proj.padding in ((0, 0), "valid")
        and tuple(proj.dilation) == (1, 1)
        and proj.groups == 1
    )


def patch_tokens(patch_embed: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What ``patch_embed(images)`` returns (timm's size checks, dynamic padding, flatten or output format, norm),
    computed as reshape + matrix product when the projection is a patchify; any other module runs as it is."""
    if not is_patchify(patch_embed):
        return patch_embed(images)
    pe = patch_embed
    batch, channels, height, width = images.shape
    ph, pw = pe.patch_size
    if pe.img_size is not None:
        if pe.strict_img_size and (height, width) != tuple(pe.img_size):
            raise ValueError(
                f"input images are {height}x{width} but the model is built for {pe.img_size[0]}x{pe.img_size[1]}; "
                f"resize them to the model's input size"
            )
        if not pe.strict_img_size and not pe.dynamic_img_pad and (height % ph or width % pw):
            raise ValueError(
                f"input images are {height}x{width}, not a multiple of the patch size {ph}x{pw}; resize or crop them"
            )
    if pe.dynamic_img_pad:
        images = F.pad(images, (0, (pw - width % pw) % pw, 0, (ph - height % ph) % ph))
        height, width = images.shape[-2:]
    gh, gw = height // ph, width // pw
    # A strided convolution ignores a remainder row or column of pixels; so does this crop (a no-op when divisible).
    images = images[..., : gh * ph, : gw * pw]
    # (B, C, gh, P, gw, P) -> (B, gh, gw, C, P, P): patches in row-major grid order (the conv's flatten(2) order),
    # each flattened channel-major as the weight (width, C, P, P) is.
    patches = images.reshape(batch, channels, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, gh * gw, channels * ph * pw)
    proj = pe.proj
    x = F.linear(patches, proj.weight.reshape(proj.out_channels, -1), proj.bias)  # (B, N, width) = NLC
    if not pe.flatten:
        x = x.reshape(batch, gh, gw, proj.out_channels)  # NHWC
        if pe.output_fmt != Format.NHWC:
            x = x.permute(0, 3, 1, 2)  # NCHW, as the conv returns it
            if pe.output_fmt != Format.NCHW:
                x = nchw_to(x, pe.output_fmt)
    return pe.norm(x)
