"""`rice train` end to end from prepared frames against the same step on a synthetic batch (issue 24: with the GPU
decoding path, at least 80% of the synthetic-batch step rate on the 16-core device machine).

A MovingFashion-layout dataset of copies of one 456x256 H.264 clip is prepared with `rice prepare`'s code (JPEG
frames), then `rice train` runs as a user runs it (a subprocess, the bundled defaults, no pretrained weights) for
``--steps`` optimizer steps and its metrics.jsonl gives clips/s per logging window; the first window (warm-up:
workers starting, allocator, first-call overheads) is left out and the median of the rest is the figure. The
baseline is the same model, losses, batch and precision stepping on one random batch already on the device
(`benchmarks/_train.py`, the step gpu.py times), in this process. Each epoch restarts the loader's workers, as in a
real run; the dataset holds ``--epoch-steps`` batches so that a window rarely spans an epoch boundary.

    python benchmarks/train_e2e.py --device cuda --batch 512 --decode-device cuda   # issue 24's figure, on a card
    python benchmarks/train_e2e.py --device cuda --batch 512 --decode-device cpu    # the CPU decoding path
    python benchmarks/train_e2e.py --smoke                                          # CPU, rice_tiny: the script runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import row, skipped_row
from _media import copies_dataset, h264_clip
from _train import build_task, random_batch, train_step

TARGET = 0.8  # end-to-end clips/s over synthetic-batch clips/s


def synthetic_rate(model: str, losses: list[str], batch: int, frames: int, size: int, device: str,
                   amp: torch.dtype | None, steps: int) -> float:  # fmt: skip
    """Clips/s of the training step on one random batch already on the device."""
    task, optimizer = build_task(model, losses, device)
    data = {k: v.to(device) for k, v in random_batch(batch, frames, size).items()}
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    train_step(task, optimizer, data, device, amp)  # warm-up
    sync()
    tic = time.perf_counter()
    for _ in range(steps):
        train_step(task, optimizer, data, device, amp)
    sync()
    return batch * steps / (time.perf_counter() - tic)


def end_to_end_rate(root: Path, out: Path, model: str, losses: list[str], batch: int, steps: int, device: str,
                    precision: str, workers: int, decode_device: str,
                    log_every: int) -> tuple[float, list[float]]:  # fmt: skip
    """Median clips/s of `rice train`'s logging windows after the first, and all the windows' figures."""
    command = [sys.executable, "-m", "rice", "train", "--dataset", "movingfashion", "--root", str(root),
               "--out", str(out), "--model", model, "--no-pretrained", "--losses", ",".join(losses),
               "--batch-size", str(batch), "--max-steps", str(steps), "--device", device, "--precision", precision,
               "--workers", str(workers), "--set", "data.use_prepared_frames=true",
               "--set", f"data.decode_device={decode_device}", "--set", f"train.log_every={log_every}",
               "--set", f"train.save_every={steps}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"rice train failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [float(r["clips_per_s"]) for r in records if "clips_per_s" in r]
    if len(rates) < 2:
        raise SystemExit(f"{out / 'metrics.jsonl'}: {len(rates)} logging window(s); raise --steps")
    return statistics.median(rates[1:]), rates


def run(smoke: bool = False, device: str = "cuda", batch: int = 512, steps: int = 30, epoch_steps: int = 8,
        losses: tuple[str, ...] = ("icl", "pmd", "pfr"), decode_device: str = "cuda", workers: int = 12,
        model: str = "rice_vit_b32") -> list[dict]:  # fmt: skip
    if smoke:  # rice_tiny on the CPU, 2 clips a batch, 4 steps: the plumbing, not a figure
        model, batch, steps, epoch_steps, losses, workers, log_every = "rice_tiny", 2, 4, 2, ("icl",), 1, 1
        device = "cpu"
    elif torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return [skipped_row("train_e2e", "no CUDA device here: run it on a card, or pass --device cpu")]
    else:
        log_every = max(1, steps // 6)
    cuda = torch.device(device).type == "cuda"
    precision = "bf16" if cuda else "fp32"
    amp = torch.bfloat16 if cuda else None
    with tempfile.TemporaryDirectory(prefix="rice-bench-e2e-") as tmp:
        from rice.data.prepare import prepare_movingfashion

        root = Path(tmp) / "data"
        clip = h264_clip(96, 64, seconds=3.0, fps=8, gop=16) if smoke else h264_clip(456, 256, 12.0, fps=8, gop=16)
        copies_dataset(root, batch * epoch_steps + 1, clip, test=1)
        prepare_movingfashion(root, workers=max(1, workers), progress=False)
        e2e, rates = end_to_end_rate(root, Path(tmp) / "run", model, list(losses), batch, steps, device, precision,
                                     workers, decode_device, log_every)  # fmt: skip
    from rice.config import DataConfig
    from rice.models import model_info

    frames, size = DataConfig().num_frames, model_info(model).input_size  # the registry knows it without a build
    synthetic = synthetic_rate(model, list(losses), batch, frames, size, device, amp, max(3, steps // 3))
    where = torch.cuda.get_device_name(device) if cuda else "cpu"
    note = (f"{model} {'+'.join(losses)} on {where}, batch {batch}, {frames} frames, {precision}, {workers} workers, "
            f"decode_device {decode_device}; rice train's windows (clips/s): {', '.join(f'{r:.1f}' for r in rates)}")
    return [row("rice train end to end vs synthetic-batch step", e2e, synthetic, ">=", TARGET, unit="clips/s",
                note=note)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the figure), or cpu with a small --batch")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epoch-steps", type=int, default=8, help="batches in the dataset (one epoch)")
    parser.add_argument("--losses", default="icl,pmd,pfr")
    parser.add_argument("--decode-device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--model", default="rice_vit_b32")
    parser.add_argument("--smoke", action="store_true", help="CPU, rice_tiny, seconds: checks the script runs")
    args = parser.parse_args()
    rows = run(args.smoke, args.device, args.batch, args.steps, args.epoch_steps, tuple(args.losses.split(",")),
               args.decode_device, args.workers, args.model)  # fmt: skip
    for r in rows:
        print(f"{r['name']}: {r['ours']:.1f} clips/s vs {r['baseline']:.1f} clips/s (ratio {r['ratio']:.2f}, target "
              f">= {TARGET}: {'yes' if r['met'] else 'NO'})  [{r['note']}]")  # fmt: skip


if __name__ == "__main__":
    main()
