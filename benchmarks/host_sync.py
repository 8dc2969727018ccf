"""Training-step time with a host read of every logged value per micro-step vs reads every ``log_every`` steps.

The first loop does what the training loop used to: ``.item()`` on each loss component, on ``isfinite(loss)``
and on the logit scale after every micro-step. The second is the loop's way now (`rice.train.metrics`): the
values are summed on the device and read once every ``--log-every`` steps. Both run the same model, losses and
AdamW steps on the same in-memory batch. On a CPU a read costs little, so the ratio is a proxy near 1; on a GPU
each read waits for the queue to drain, and ``--device cuda`` also counts the syncs of each loop with
``torch.cuda.set_sync_debug_mode``.

    python benchmarks/host_sync.py --steps 6 --batch-size 4 --losses icl            # CPU proxy, a few minutes
    python benchmarks/host_sync.py --device cuda --steps 50 --batch-size 32          # GPU: also counts syncs
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from rice.config import LossConfig, ModelConfig, OptimConfig
from rice.models import build_model
from rice.train.metrics import MetricWindow
from rice.train.optim import build_optimizer
from rice.train.task import RiceTask


def make_task(losses: list[str], device: torch.device) -> RiceTask:
    model = build_model(ModelConfig(name="rice_tiny", pretrained=False), with_decoder="pmd" in losses,
                        with_reconstruction="pfr" in losses)  # fmt: skip
    return RiceTask(model, LossConfig(losses=losses)).to(device).train()


def time_loop(task: RiceTask, batch: tuple, steps: int, grad_accum: int, log_every: int, per_step_reads: bool) -> float:
    """Seconds per optimizer step."""
    optimizer = build_optimizer(task.model, OptimConfig(lr=1e-4, head_lr=1e-4))
    window = MetricWindow(0)
    sync = torch.cuda.synchronize if batch[0].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for _ in range(grad_accum):
            losses = task(*batch)
            loss = losses["loss"] / grad_accum
            if per_step_reads:  # the old loop: every value crosses to the host after every micro-step
                if not torch.isfinite(loss):
                    raise FloatingPointError("non-finite loss")
                _ = {key: value.detach().float().item() for key, value in losses.items()}
            loss.backward()
            window.add_micro_step(losses, grad_accum, batch[0].shape[0])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.end_step()
        if per_step_reads:
            task.model.logit_scale.item()
        elif step % log_every == 0 or step == steps:
            window.read(step, task.model.logit_scale)
    sync()
    return (time.perf_counter() - start) / steps


def count_syncs(task: RiceTask, batch: tuple, steps: int, grad_accum: int, log_every: int, per_step: bool) -> int:
    """Synchronising calls in a run, as warned by ``torch.cuda.set_sync_debug_mode`` (CUDA only)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            time_loop(task, batch, steps, grad_accum, log_every, per_step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(steps: int = 10, batch_size: int = 4, frames: int = 4, grad_accum: int = 2, log_every: int = 10,
            losses: str = "icl,pmd,pfr", device: str = "cpu", repeats: int = 2) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    task = make_task(losses.split(","), dev)
    size = task.model.preprocess.input_size
    batch = (torch.randn(batch_size, 3, size, size, device=dev),
             torch.randn(batch_size, frames, 3, size, size, device=dev),
             torch.ones(batch_size, frames, dtype=torch.bool, device=dev))  # fmt: skip
    common = (task, batch, steps, grad_accum, log_every)
    time_loop(task, batch, 3, grad_accum, log_every, False)  # warm-up
    timings = {flag: [] for flag in (True, False)}
    for _ in range(repeats):  # interleaved, so load changes on a shared machine hit both loops alike
        for flag in (True, False):
            timings[flag].append(time_loop(*common, flag))
    out = {"per_step": min(timings[True]), "deferred": min(timings[False])}
    if dev.type == "cuda":
        out["syncs"] = {flag: count_syncs(*common, flag) for flag in (True, False)}
    return out


def run(smoke: bool = False) -> list[dict]:
    """The suite's entry: CPU proxy (a read costs little on a CPU, so no target; the GPU run counts the syncs)."""
    from _common import info_row

    steps, batch_size, repeats = (2, 2, 1) if smoke else (10, 4, 2)
    m = measure(steps=steps, batch_size=batch_size, repeats=repeats)
    return [info_row("training loop: reads every 10 steps vs every micro-step (CPU proxy)", m["deferred"],
                     m["per_step"], "s", f"rice_tiny icl,pmd,pfr, batch {batch_size}x4 frames, grad_accum 2")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--losses", default="icl,pmd,pfr")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each loop; the best is kept")
    args = parser.parse_args()
    m = measure(args.steps, args.batch_size, args.frames, args.grad_accum, args.log_every, args.losses, args.device,
                args.repeats)  # fmt: skip
    per_step, deferred = m["per_step"], m["deferred"]
    print(f"{args.device}, rice_tiny {args.losses}, batch {args.batch_size}x{args.frames} frames, grad_accum "
          f"{args.grad_accum}, {args.steps} steps, best of {args.repeats}")  # fmt: skip
    print(f"reads every micro-step: {1000 * per_step:.1f} ms/step; reads every {args.log_every} steps: "
          f"{1000 * deferred:.1f} ms/step; ratio {per_step / deferred:.2f}x")  # fmt: skip
    if "syncs" in m:
        print(f"host syncs in {args.steps} steps: {m['syncs'][True]} with per-step reads, {m['syncs'][False]} without")


if __name__ == "__main__":
    main()
