"""The batch of an optimizer step, and gradient caching: exact large-batch contrastive training on few GPUs.

The recipes state ``train.global_batch_size`` (the pairs one optimizer step contrasts, over all ranks); the
per-rank batch follows from the world size. When that batch does not fit in memory, ``train.grad_cache``
computes the same step in chunks (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", 2021):

1. embed every chunk without a graph (each chunk's RNG state is recorded first);
2. compute the losses on the whole batch from those embeddings made leaf tensors, and back-propagate to them
   (the PMD decoder and the logit scale, which act on the embeddings, get their gradients here);
3. embed each chunk again with a graph, its RNG state replayed so dropout draws the same masks, and
   back-propagate the cached embedding gradients through it.

The losses see the whole batch, so ICL has all its negatives and PMD mines its hard negatives from the whole
(gathered) batch; the parameter gradients are those of one pass over the batch. Two exceptions, both of layers
that look across the batch: BatchNorm normalises each chunk with the chunk's statistics (as ``grad_accum``
does), and its running statistics are updated once per chunk, by the pass with a graph only.
``grad_accum`` instead splits the batch into independent micro-batches, each contrasting only its own pairs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rice import distributed
from rice.config import TrainConfig


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's pairs are spread: ranks x micro-steps x loader batch (x chunks with grad cache)."""

    global_batch: int  # pairs per optimizer step over all ranks
    per_rank: int  # pairs per optimizer step on one rank
    loader_batch: int  # pairs per DataLoader batch (one micro-step)
    grad_accum: int  # micro-steps per optimizer step
    chunk: int | None  # pairs per forward with grad_cache, else None
    warning: str | None = None  # said once at start (plain grad_accum shrinks the negatives)


def plan_batches(cfg: TrainConfig, world_size: int) -> BatchPlan:
    """The per-rank and per-micro-step batch of ``cfg`` on ``world_size`` ranks; ValueError in one line if the
    global batch does not divide."""
    if cfg.grad_cache and cfg.grad_accum > 1:
        raise ValueError("train.grad_cache and train.grad_accum > 1 both split the batch; set train.grad_accum=1 "
                         "(grad_cache already keeps every negative)")  # fmt: skip
    if cfg.global_batch_size is None:
        per_rank = cfg.batch_size * cfg.grad_accum
        global_batch = per_rank * world_size
    else:
        global_batch = cfg.global_batch_size
        if global_batch % world_size:
            raise ValueError(f"train.global_batch_size {global_batch} does not divide over {world_size} ranks; "
                             "launch a process count that divides it, or change train.global_batch_size")  # fmt: skip
        per_rank = global_batch // world_size
        if per_rank % cfg.grad_accum:
            raise ValueError(f"the per-rank batch {per_rank} (train.global_batch_size {global_batch} / {world_size} "
                             f"ranks) does not divide into train.grad_accum={cfg.grad_accum} micro-steps; "
                             "change train.grad_accum or use train.grad_cache=true")  # fmt: skip
    loader_batch = per_rank // cfg.grad_accum
    warning = None
    if cfg.grad_accum > 1:
        warning = (f"train.grad_accum={cfg.grad_accum}: each micro-step contrasts only {loader_batch * world_size} "
                   f"pairs, not the {global_batch} of the step (fewer negatives for ICL and PMD); "
                   "train.grad_cache=true keeps them all at the same memory")  # fmt: skip
    chunk = min(cfg.grad_cache_chunk, per_rank) if cfg.grad_cache else None
    return BatchPlan(global_batch, per_rank, loader_batch, cfg.grad_accum, chunk, warning)


class RngSnapshot:
    """The CPU generator and the current CUDA device's generator, to replay a chunk's dropout."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None
        self.device = device

    def restore(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state, self.device)


# Outputs of RiceModel.forward that depend on the chunk's inputs and carry gradient back to the encoder.
_EMBEDDINGS = ("image_features", "video_features", "image_tokens", "video_tokens")


def grad_cache_step(
    task,
    images: torch.Tensor,
    frames: torch.Tensor,
    frame_mask: torch.Tensor,
    product_ids: torch.Tensor | None,
    chunk: int,
    autocast: contextlib.AbstractContextManager | None = None,
    scale_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    frame_index: torch.Tensor | None = None,
    frame_counts: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Accumulate into ``.grad`` the gradient of ``task``'s losses on the whole batch, embedding ``chunk`` pairs
    at a time; returns (the detached losses, the cached outputs).

    ``task`` is the `rice.train.task.RiceTask` itself, never a DDP wrapper: under torch.distributed the caller averages
    the gradients over ranks afterwards (`rice.distributed.average_gradients`), as DDP would.
    ``autocast`` is entered around every forward (mixed precision); ``scale_loss`` scales the loss before
    the backward (fp16: ``GradScaler.scale``). ``frame_index`` and ``frame_counts`` (the batch's, from
    ``collate_batch``): each chunk's real frames are then a slice of ``frame_index`` found with host integers, so no
    chunk runs ``nonzero`` on its mask (a wait for the device); without them each chunk finds its own.
    """
    model = task.model
    autocast = autocast or contextlib.nullcontext()
    device = images.device
    spans = [slice(start, min(start + chunk, images.shape[0])) for start in range(0, images.shape[0], chunk)]
    chunk_index = _chunk_frame_indices(spans, frame_mask.shape[1], frame_index, frame_counts)

    # 1. embed every chunk without a graph; the buffers (BatchNorm running statistics) are put back afterwards
    #    so that only the pass with a graph updates them.
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    snapshots, pieces = [], []
    with torch.no_grad():
        for span, index in zip(spans, chunk_index):
            snapshots.append(RngSnapshot(device))
            with autocast:
                pieces.append(model(images[span], frames[span], frame_mask[span], return_tokens=task.needs_tokens,
                                    frame_index=index))
    for buffer, saved in buffers:
        buffer.copy_(saved)

    # 2. the losses on the whole batch, back-propagated to the embeddings (and to the decoder and logit scale).
    cached = {key: torch.cat([p[key] for p in pieces]).requires_grad_() for key in _EMBEDDINGS if key in pieces[0]}
    out = {**cached, "logit_scale": model.logit_scale}
    if task.needs_tokens:
        out["frame_mask"] = frame_mask
    with autocast:
        losses = task.losses_from_outputs(out, frame_mask, product_ids)
    loss = losses["loss"] if scale_loss is None else scale_loss(losses["loss"])
    loss.backward()
    after_loss = RngSnapshot(device)

    # 3. each chunk again, with a graph and its recorded RNG state, back-propagating the cached gradients.
    for span, snapshot, index in zip(spans, snapshots, chunk_index):
        snapshot.restore()
        with autocast:
            piece = model(images[span], frames[span], frame_mask[span], return_tokens=task.needs_tokens,
                          frame_index=index)
        pairs = [(piece[key], cached[key].grad[span]) for key in cached if cached[key].grad is not None]
        torch.autograd.backward([p for p, _ in pairs], [g.to(p.dtype) for p, g in pairs])
    after_loss.restore()  # the RNG moves on as after one pass, not two
    return {key: value.detach() for key, value in losses.items()}, {k: v.detach() for k, v in cached.items()}


def _chunk_frame_indices(
    spans: list[slice], frames_per_clip: int, frame_index: torch.Tensor | None, frame_counts: Sequence[int] | None
) -> list[torch.Tensor | None]:
    """Each chunk's real frames' positions in its own flattened frames, sliced out of the batch's ``frame_index``
    (real frames first, in order) with host integers; None per chunk (the model finds them) without them."""
    if frame_index is None or frame_counts is None:
        return [None] * len(spans)
    offsets = [0, *itertools.accumulate(int(c) for c in frame_counts)]
    return [frame_index[offsets[s.start] : offsets[s.stop]] - s.start * frames_per_clip for s in spans]


def average_gradients_over_ranks(task) -> None:
    """What DDP's reducer does after a backward, for the gradient-cached step (no DDP forward wraps it)."""
    distributed.average_gradients(task.parameters())
