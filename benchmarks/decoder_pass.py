"""The decoder part of a RICE step (PMD + PFR, forward and backward from fixed encoder tokens): one batched pass
(``loss.pmd_pass: batched``: per-image and per-clip states once, the positives in one decoder call, the mined
negatives in another) against the memory-bounded chunked pass (``chunked``, ``pmd_chunk_size`` 32: the previous
default's decoder calls, the PMD negatives recomputed in the backward chunk by chunk).

Target (issue 24, "On CPU"): the batched decoder step at batch 16 no slower than the chunked one, rice_vit_b32
shapes (50 tokens of width 768 per frame, 10 frames, 8 heads, no pretrained weights), both timed in the same run,
alternating, best of ``--repeats``.

    python benchmarks/decoder_pass.py [--batch 16] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import row

from rice.config import LossConfig, ModelConfig
from rice.models import build_model
from rice.train.task import RiceTask


def _outputs(model, batch: int, frames: int, generator: torch.Generator) -> tuple[dict, torch.Tensor]:
    """Encoder outputs as the training forward returns them (leaves, so only the decoder's work is timed)."""
    tokens, width, dim = model.encoder.num_tokens, model.encoder.width, model.embed_dim
    mask = torch.ones(batch, frames, dtype=torch.bool)
    mask[::3, frames // 2 :] = False  # a third of the clips tail-dropped
    out = {
        "image_features": F.normalize(torch.randn(batch, dim, generator=generator), dim=-1),
        "video_features": F.normalize(torch.randn(batch, dim, generator=generator), dim=-1),
        "logit_scale": model.logit_scale,
        "image_tokens": torch.randn(batch, tokens, width, generator=generator).requires_grad_(),
        "video_tokens": torch.randn(batch, frames, tokens, width, generator=generator).requires_grad_(),
        "frame_mask": mask,
    }
    return out, mask


def _step(task: RiceTask, out: dict, mask: torch.Tensor) -> float:
    tic = time.perf_counter()
    losses = task.losses_from_outputs(dict(out), mask)
    (losses["pmd_loss"] + losses["pfr_loss"]).backward()
    task.zero_grad(set_to_none=True)
    out["image_tokens"].grad = out["video_tokens"].grad = None
    return time.perf_counter() - tic


def measure(model_name: str, batch: int, frames: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=model_name, pretrained=False), with_decoder=True, with_reconstruction=True)
    model.train()
    tasks = {name: RiceTask(model, LossConfig(losses=["icl", "pmd", "pfr"], pmd_pass=name, pmd_chunk_size=32))
             for name in ("batched", "chunked")}  # fmt: skip
    out, mask = _outputs(model, batch, frames, torch.Generator().manual_seed(1))
    for task in tasks.values():  # warm-up: allocator, thread pools
        _step(task, out, mask)
    best = dict.fromkeys(tasks, float("inf"))
    for _ in range(repeats):
        for name, task in tasks.items():
            best[name] = min(best[name], _step(task, out, mask))
    return best


def run(smoke: bool = False, batch: int = 16, repeats: int = 3) -> list[dict]:
    model_name, frames = ("rice_tiny", 2) if smoke else ("rice_vit_b32", 10)
    if smoke:
        batch, repeats = 4, 1
    best = measure(model_name, batch, frames, repeats)
    return [row(f"decoder_pass_b{batch}", best["batched"], best["chunked"], "<=", 1.0,
                note=f"{model_name} shapes, {batch} clips x {frames} frames: PMD+PFR forward+backward seconds, "
                "batched vs chunked (32 pairs a call)")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="rice_tiny, batch 4: checks that the script runs")
    args = parser.parse_args()
    for r in run(args.smoke, args.batch, args.repeats):
        print(f"{r['name']}: batched {r['ours']:.3f} s, chunked {r['baseline']:.3f} s, ratio {r['ratio']:.2f} "
              f"(target {r['target']}: {'met' if r['met'] else 'NOT met'}) - {r['note']}")


if __name__ == "__main__":
    main()
