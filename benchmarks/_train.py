"""One training step as the engine runs it (RiceTask forward, backward, AdamW step), for the benchmarks."""

from __future__ import annotations

import contextlib

import torch

from rice.config import LossConfig, ModelConfig, OptimConfig
from rice.models import build_model
from rice.train.grad_cache import grad_cache_step
from rice.train.optim import build_optimizer
from rice.train.task import RiceTask


def build_task(
    name: str, losses: list[str], device: str | torch.device = "cpu"
) -> tuple[RiceTask, torch.optim.Optimizer]:
    """A model built from scratch (no pretrained weights: benchmarks never fetch), its task and optimizer."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, pretrained=False), with_decoder="pmd" in losses,
                        with_reconstruction="pfr" in losses).to(device)  # fmt: skip
    task = RiceTask(model, LossConfig(losses=losses)).to(device).train()
    return task, build_optimizer(model, OptimConfig())


def train_step(task, optimizer, batch: dict, device: str | torch.device = "cpu", amp: torch.dtype | None = None,
               grad_cache_chunk: int | None = None):
    """Forward, backward and optimizer step on one collated batch; returns the loss tensor (no host sync).
    ``grad_cache_chunk``: the step of ``train.grad_cache`` (the batch embedded that many pairs at a time)."""
    device = torch.device(device)
    images = batch["image"].to(device, non_blocking=True)
    frames = batch["frames"].to(device, non_blocking=True)
    mask = batch["frame_mask"].to(device, non_blocking=True)
    # the real frames' positions from the CPU mask, as collate_batch gives the training loop: no nonzero on the device
    index = batch.get("frame_index")
    if index is None:
        index = batch["frame_mask"].reshape(-1).nonzero().squeeze(1)
    index = index.to(device, non_blocking=True)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    if grad_cache_chunk is not None:
        losses, _ = grad_cache_step(task, images, frames, mask, None, grad_cache_chunk, autocast)
        loss = losses["loss"]
    else:
        with autocast:
            loss = task(images, frames, mask, frame_index=index)["loss"]
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def random_batch(batch_size: int, num_frames: int, size: int) -> dict:
    return {
        "image": torch.randn(batch_size, 3, size, size),
        "frames": torch.randn(batch_size, num_frames, 3, size, size),
        "frame_mask": torch.ones(batch_size, num_frames, dtype=torch.bool),
    }
