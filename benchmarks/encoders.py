"""Step time and peak memory of a RICE training step (ICL + PMD + PFR, forward, backward, AdamW) per encoder.

    python benchmarks/encoders.py                          # batch 16, 10 frames, on the CPU, every ViT-B encoder
    python benchmarks/encoders.py --device cuda --batch 96 # the recipes' global batch on one card
    python benchmarks/encoders.py --grad-cache-chunk 4     # train.grad_cache's step: bounded memory on a CPU
    python benchmarks/encoders.py --smoke                  # tiny: checks the script runs, figures mean nothing

Each encoder runs in its own process, so its peak memory (max RSS on the CPU, torch's peak allocation on a GPU)
is its own. Weights are random (pretrained=False: nothing is downloaded); the cost does not depend on them.
Not part of run.py's suite: it is slow on the CPU (minutes per model), and docs/performance.md records its figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ENCODERS = ["rice_vit_b32", "rice_dfn_b16", "rice_eva02_b16", "rice_siglip2_b16", "rice_dinov2_b14"]


def measure(name: str, batch: int, frames: int, steps: int, device: str, chunk: int | None = None) -> dict:
    import torch
    from _train import build_task, random_batch, train_step

    task, optimizer = build_task(name, ["icl", "pmd", "pfr"], device)
    size = task.model.preprocess.input_size
    data = random_batch(batch, frames, size)
    amp = torch.bfloat16 if device.startswith("cuda") else None
    train_step(task, optimizer, data, device, amp, chunk).item()  # warm-up (allocator, oneDNN/cuDNN plans)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(task, optimizer, data, device, amp, chunk).item()  # .item(): the step has finished
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip  (Linux: KiB)
    return {"model": name, "tokens": task.model.encoder.num_tokens, "input": size, "batch": batch, "frames": frames,
            "device": device, "grad_cache_chunk": chunk, "step_s": min(times), "peak_gib": peak / 2**30}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=ENCODERS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grad-cache-chunk", type=int, default=None,
                        help="train.grad_cache's step: embed the batch this many pairs at a time (bounded memory)")
    parser.add_argument("--smoke", action="store_true", help="rice_tiny, batch 2, 2 frames, 1 step")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure this model, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.frames, args.steps, args.device, args.grad_cache_chunk)))
        return
    models, batch, frames, steps = (["rice_tiny"], 2, 2, 1) if args.smoke else (args.models, args.batch,
                                                                                 args.frames, args.steps)  # fmt: skip
    print(f"{'model':18} {'tokens':>6} {'input':>5} {'step (s)':>9} {'peak (GiB)':>10}")
    for name in models:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(batch), "--frames",
                               str(frames), "--steps", str(steps), "--device", args.device,
                               *(["--grad-cache-chunk", str(args.grad_cache_chunk)] if args.grad_cache_chunk else [])],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:  # one model that does not fit (the kernel's OOM killer) must not end the table
            why = "killed: out of memory?" if done.returncode in (-9, 137) else done.stderr.strip()[-200:]
            print(f"{name:18} {'-':>6} {'-':>5} {'-':>9} {'-':>10}  ({why})", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:18} {row['tokens']:>6} {row['input']:>5} {row['step_s']:>9.2f} {row['peak_gib']:>10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
