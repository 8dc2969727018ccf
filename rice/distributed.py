"""Everything that talks to torch.distributed lives here.

Each helper is the identity (or the single-process value) when no process group is initialised, so the rest
of the code is written once and runs the same on one CPU process and on many GPUs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class WorldInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_info() -> WorldInfo:
    if not is_initialized():
        return WorldInfo()
    return WorldInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def rank_or(fixed: int | None) -> int:
    """``fixed`` when given (a loss told its rank, as the tests' simulated ranks are), else this process's rank."""
    return fixed if fixed is not None else world_info().rank


def is_main_process() -> bool:
    return world_info().is_main


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def restart_count() -> int:
    """How many times torchrun (``--max-restarts``) has restarted this worker group; 0 on the first start."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0) or 0)


def init_from_env(device_type: str, timeout_minutes: float = 30.0) -> WorldInfo:
    """Join the process group torchrun describes in the environment (NCCL on GPU, gloo on CPU).

    ``timeout_minutes`` bounds every collective: a rank that waits longer for the others fails the run.
    """
    if not launched_by_torchrun() or is_initialized():
        return world_info()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    timeout = datetime.timedelta(minutes=timeout_minutes)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    # torchrun's agent keeps one TCP store across --max-restarts, so the previous workers' addresses are still
    # in it: without a fresh namespace a restarted rank may read a dead peer's address and gloo's connect fails.
    store = dist.PrefixStore(f"rice/attempt_{restart_count()}/", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return world_info()


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on every rank's rows
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) from every rank along dim 0, keeping the graph.

    The backward sums the gradients over ranks, so when every rank computes the same global loss, each rank's
    features receive ``world_size`` times their true gradient; DDP's gradient averaging divides it back. The
    2-rank parity tests (ICL and PMD) cover this.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if not is_initialized():
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor)
    return tensor / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one (a host read; call it rarely)."""
    if not is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_object(obj: object) -> list[object]:
    if not is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(parameters) -> None:
    """Average ``.grad`` over ranks in place, as DDP's reducer does (used where DDP does not wrap the model:
    gradient caching back-propagates outside a DDP forward). Parameters without a gradient on every rank count
    as zero; one flat all-reduce, so the cost is one collective per optimizer step."""
    if not is_initialized() or dist.get_world_size() == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, as DDP does when it wraps a module (for the
    gradient-cached step, which DDP does not wrap: each rank seeds its RNG differently, so the inits differ)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)
