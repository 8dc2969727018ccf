"""Decoder overhead: a training step with ``icl,pmd,pfr`` against the ``icl`` step, same model, same batch.

The PMD decoder runs on 1 + K pairs per image (K = 3 mined negatives) and PFR reads the positive pairs'
cross-attention maps; fused ``scaled_dot_product_attention`` serves every decoder call whose maps are not needed.
Target (issue 9, item 6): ``icl,pmd,pfr`` step <= 1.3x the ``icl`` step at batch 4 and 16 for ``rice_vit_b32``
(no pretrained weights). Both steps are timed in the same run, alternating, best of ``--repeats``.

    python benchmarks/decoder.py [--batches 4 16] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import torch

from rice.config import LossConfig, ModelConfig
from rice.models import build_model
from rice.train.task import RiceTask

TARGET = 1.3


def _step_time(task: RiceTask, batch: tuple[torch.Tensor, ...]) -> float:
    tic = time.perf_counter()
    task(*batch)["loss"].backward()
    task.zero_grad(set_to_none=True)
    return time.perf_counter() - tic


def measure(model_name: str, batch_size: int, frames: int, repeats: int) -> dict[str, float]:
    """Best step time (s) of each loss set on one shared model (decoder built once, unused by ``icl``)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=model_name, pretrained=False), with_decoder=True, with_reconstruction=True)
    model.train()
    size = model.preprocess.input_size
    batch = (
        torch.randn(batch_size, 3, size, size),
        torch.randn(batch_size, frames, 3, size, size),
        torch.ones(batch_size, frames, dtype=torch.bool),
    )
    tasks = {name: RiceTask(model, LossConfig(losses=losses)) for name, losses in
             (("icl", ["icl"]), ("icl,pmd,pfr", ["icl", "pmd", "pfr"]))}  # fmt: skip
    for task in tasks.values():  # warm-up: allocator, thread pools
        _step_time(task, batch)
    best = {name: float("inf") for name in tasks}
    for _ in range(repeats):
        for name, task in tasks.items():
            best[name] = min(best[name], _step_time(task, batch))
    return best


def run(smoke: bool = False, batches: tuple[int, ...] = (4, 16), repeats: int = 3) -> list[dict]:
    """Rows {name, ours, baseline, ratio, target, met}: ours = icl,pmd,pfr step (s), baseline = icl step (s)."""
    model_name, frames = ("rice_tiny", 2) if smoke else ("rice_vit_b32", 10)
    if smoke:
        batches, repeats = (2,), 1
    rows = []
    for batch_size in batches:
        best = measure(model_name, batch_size, frames, repeats)
        ratio = best["icl,pmd,pfr"] / best["icl"]
        rows.append({
            "name": f"decoder_overhead_b{batch_size}",
            "ours": best["icl,pmd,pfr"],
            "baseline": best["icl"],
            "ratio": ratio,
            "unit": "s",
            "note": f"{model_name}, {batch_size} clips x {frames} frames + {batch_size} images, step seconds",
            "target": f"<= {TARGET}x",
            "met": ratio <= TARGET,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="rice_tiny, batch 2: checks that the script runs")
    args = parser.parse_args()
    print(f"{'benchmark':<24} {'icl,pmd,pfr (s)':>16} {'icl (s)':>10} {'ratio':>7} {'target':>8}  met")
    for row in run(args.smoke, tuple(args.batches), args.repeats):
        print(f"{row['name']:<24} {row['ours']:>16.3f} {row['baseline']:>10.3f} {row['ratio']:>7.2f} "
              f"{row['target']:>8}  {'yes' if row['met'] else 'NO'}")


if __name__ == "__main__":
    main()
