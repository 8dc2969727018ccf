"""`train.compile`: regional compilation of the model, its persistent cache, CUDA graphs and frame buckets.

Regional, not whole-module: each transformer block is compiled on its own (`nn.Module.compile`, in place, so
parameter names and checkpoint keys do not change). The blocks of a tower share their code and their shapes, so
Dynamo traces one block and every other block reuses that graph (its parameters are graph inputs): compiling
ViT-B/32 traces one block instead of twelve, and each block's backward is its own compiled function, so DDP can
all-reduce a block's gradients while the blocks before it are still back-propagating. The steps between the
blocks (patch embedding, pooling, the losses) stay eager: they are cheap and hold the data-dependent parts.

A batch's encoder input is its images plus its clips' real frames, whose count changes from batch to batch with
tail drop; each new count would be a new shape for the compiled blocks (a recompile, then dynamic shapes, and a
new CUDA graph per count). `train.frame_buckets` pads that count up to one of a few fixed sizes
(`rice.data.collate_batch`); the padded frames are run and their outputs zeroed (`RiceModel._encode`).
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

# The containers whose members are the repeated blocks: timm's ViT, Eva and Swin stages, our ConvStemEncoder and
# the TimeSformer baseline all keep their transformer blocks in a module list or sequential called ``blocks``.
BLOCK_CONTAINER = "blocks"
# The decoder's blocks, and the methods the decoder calls on a block besides ``__call__`` (the cross block runs
# on keys and values projected once per clip); `nn.Module.compile` only covers ``__call__``.
DECODER_BLOCKS = ("self_block", "cross_block")
DECODER_BLOCK_METHODS = ("forward_kv",)
# train.frame_buckets=None (auto) with train.compile on: this many sizes, so at most 1/8 of a batch's frames
# are padding that is run for nothing.
AUTO_FRAME_BUCKETS = 8


@dataclass(frozen=True)
class CompiledRegions:
    """What `compile_regions` compiled: counts of blocks, and whether the encoder had none (compiled whole)."""

    encoder_blocks: int
    decoder_blocks: int
    whole_encoder: bool
    mode: str | None

    def describe(self) -> str:
        encoder = f"{self.encoder_blocks} encoder blocks"
        if self.whole_encoder:
            encoder = "the whole encoder (it has no repeated blocks)"
        decoder = f", {self.decoder_blocks} decoder blocks" if self.decoder_blocks else ""
        return f"compiled {encoder}{decoder}" + (f", mode {self.mode}" if self.mode else "")


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """The members of every ``blocks`` container (`nn.Sequential` or `nn.ModuleList`) under ``module``, in order.

    A container inside a listed block is not searched (its block is compiled as a whole). A Swin has one
    ``blocks`` per stage: the blocks of a stage share one graph, each stage has its own shapes."""
    found: list[nn.Module] = []
    taken: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix + ".") for prefix in taken):
            continue
        if name.rsplit(".", 1)[-1] == BLOCK_CONTAINER and isinstance(child, nn.Sequential | nn.ModuleList):
            found.extend(child)
            taken.append(name)
    return found


def compile_regions(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> CompiledRegions:
    """`train.compile`: compile ``model``'s encoder blocks and decoder blocks in place.

    The encoder: each member of its ``blocks`` containers (`repeated_blocks`); an encoder without any (the
    FashionNet VGG baseline) is compiled as a whole, as before regional compilation. The decoder, when the model
    has one: its ``self_block`` and ``cross_block``, including the methods the decoder calls on them directly
    (`DECODER_BLOCK_METHODS`). ``mode="reduce-overhead"`` runs each compiled region as a CUDA graph
    (`train.cuda_graphs`). Parameter names, ``state_dict`` keys and checkpoints are unchanged.
    """
    options: dict[str, object] = {"backend": backend}
    if mode is not None:
        options["mode"] = mode
    blocks = repeated_blocks(model.encoder)
    for block in blocks:
        block.compile(**options)
    if not blocks:
        model.encoder.compile(**options)
    decoder_blocks = 0
    decoder = getattr(model, "decoder", None)
    for name in DECODER_BLOCKS if decoder is not None else ():
        block = getattr(decoder, name, None)
        if not isinstance(block, nn.Module):
            continue
        block.compile(**options)
        for method in DECODER_BLOCK_METHODS:
            function = getattr(type(block), method, None)
            if function is not None:
                # Bound per instance as a method, so a deep copy of the model rebinds it to the copied block.
                setattr(block, method, types.MethodType(torch.compile(function, **options), block))
        decoder_blocks += 1
    return CompiledRegions(len(blocks), decoder_blocks, whole_encoder=not blocks, mode=mode)


def compile_encoder(model: nn.Module, backend: str = "inductor") -> CompiledRegions:
    """The name `train.compile` had when it compiled the encoder whole (benchmarks call it): `compile_regions`."""
    return compile_regions(model, backend)


def use_compile_cache(directory: str | Path) -> Path:
    """`train.compile_cache`: keep inductor's compiled graphs (FX graph cache) and the compiled forward/backward
    pairs (AOT autograd cache) in ``directory``, so that a restarted run loads its kernels instead of compiling
    them again. Must run before the first compilation of the process; only inductor has these caches."""
    path = Path(directory).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"train.compile_cache {str(path)!r} cannot be created ({err.strerror}); "
                         "pass a writable directory") from None  # fmt: skip
    # Inductor reads the variable whenever it looks a cache up (Triton's kernel cache lives under it too).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._functorch.config
    import torch._inductor.config

    torch._inductor.config.fx_graph_cache = True  # on by default in torch 2.14; a run may have turned it off
    torch._functorch.config.enable_autograd_cache = True
    return path


def has_batch_statistics(module: nn.Module) -> bool:
    """Whether ``module`` normalises over the batch (BatchNorm): then padded frames would change its outputs."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def resolve_frame_buckets(buckets: int | None, compile_on: bool, encoder: nn.Module) -> int:
    """`train.frame_buckets` for this encoder: None (auto) is `AUTO_FRAME_BUCKETS` when compiling, else 0 (off).

    An encoder with BatchNorm (rice_tiny's convolutional stem) gets no buckets: the padded frames would enter
    its batch statistics. Asking for buckets there explicitly is an error."""
    batch_statistics = has_batch_statistics(encoder)
    if buckets is None:
        return AUTO_FRAME_BUCKETS if compile_on and not batch_statistics else 0
    if buckets and batch_statistics:
        raise ValueError(
            f"train.frame_buckets={buckets}: the encoder ({type(encoder).__name__}) has BatchNorm, whose batch "
            "statistics the padded frames would change; set train.frame_buckets=0"
        )
    return buckets


def check_compile_settings(compile_on: bool, backend: str, cuda_graphs: bool, device: torch.device,
                           grad_cache: bool) -> str | None:  # fmt: skip
    """The mode `compile_regions` gets, or a one-line ValueError for a `train.cuda_graphs` that cannot work."""
    if not cuda_graphs:
        return None
    if device.type != "cuda":
        raise ValueError(f"train.cuda_graphs=true needs a CUDA device (this run is on {device.type}); "
                         "set train.cuda_graphs=false")  # fmt: skip
    if not compile_on or backend != "inductor":
        raise ValueError("train.cuda_graphs=true replays the regions that inductor compiles: set train.compile=true "
                         "and train.compile_backend=inductor")  # fmt: skip
    if grad_cache:
        raise ValueError("train.cuda_graphs=true needs one fixed batch shape per step; train.grad_cache runs chunks "
                         "of other shapes: turn one of them off")  # fmt: skip
    return "reduce-overhead"
