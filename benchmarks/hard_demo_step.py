"""The hard demo's training step on the CPU, part by part, against what it replaced (rice/train/demo.py, HARD_RECIPE):

- loading a training item (4 prepared JPEG frames and a shop image, per-frame scale crops and colour jitter) with
  the decoded images kept in memory (``data.decoded_cache_mb``) vs decoding them every time. Target: ratio <= 0.7;
- rice_tiny's convolution stem, forward and backward on the step's 16 shop images and 64 frames, with channels-last
  activations (what `ConvStemEncoder.forward` does) vs contiguous NCHW ones. Target: ratio <= 0.95.

    python benchmarks/hard_demo_step.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import best_of, row

from rice.config import DataConfig
from rice.data import write_synthetic_dataset
from rice.data.factory import build_train_dataset
from rice.data.prepare import prepare_movingfashion
from rice.models.rice_model import rice_tiny
from rice.train.demo import HARD_RECIPE


def _loading(root: Path, cache_mb: float, epochs: int, warm_epochs: int) -> float:
    """Seconds per training item over ``epochs`` epochs after ``warm_epochs`` ones (the demo's ~100 epochs read
    every frame many times; 4 random frames of 16 per clip take a few epochs to fill the cache)."""
    cfg = DataConfig(root=str(root), **{**HARD_RECIPE["data"], "decoded_cache_mb": cache_mb})
    dataset = build_train_dataset(cfg, rice_tiny().encoder.preprocess, seed=0)
    for epoch in range(warm_epochs):
        dataset.set_epoch(epoch)
        for idx in range(len(dataset)):
            dataset[idx]
    tic = time.perf_counter()
    for epoch in range(warm_epochs, warm_epochs + epochs):
        dataset.set_epoch(epoch)
        for idx in range(len(dataset)):
            dataset[idx]
    return (time.perf_counter() - tic) / (epochs * len(dataset))


def _stem_step(stem: torch.nn.Module, images: torch.Tensor, channels_last: bool) -> None:
    x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    stem(x).float().mean().backward()


def run(smoke: bool = False) -> list[dict]:
    products, epochs, warm, repeats = (3, 1, 1, 1) if smoke else (24, 3, 10, 6)
    with tempfile.TemporaryDirectory(prefix="rice-bench-hard-") as tmp:
        root = write_synthetic_dataset(Path(tmp) / "data", num_products=products, videos_per_product=2, frames=16,
                                       size=64, seed=0, difficulty="hard")  # fmt: skip
        prepare_movingfashion(root, fps=8.0, short_side=64, progress=False)
        cached, plain = [], []
        for _ in range(1 if smoke else 2):  # interleaved, so drifting load on a shared machine hits both alike
            plain.append(_loading(root, 0, epochs, warm))
            cached.append(_loading(root, 256, epochs, warm))
    note = f"{products} products x 2 clips, {epochs} epochs after {warm}"
    rows = [row("hard demo: load a training item, decoded images cached vs decoded each time", min(cached),
                min(plain), "<=", 0.7, note=note)]  # fmt: skip

    torch.manual_seed(0)
    stem = rice_tiny().encoder.stem.train()
    images = torch.randn(16 + 16 * 4, 3, 64, 64)  # the step's shop images and frames, encoded in one batch
    for fmt in (True, False):
        _stem_step(stem, images, fmt)  # warm-up: oneDNN picks its kernels on the first call per format
    nhwc, nchw = [], []
    for _ in range(repeats):
        nchw.append(best_of(lambda: _stem_step(stem, images, False), 2))
        nhwc.append(best_of(lambda: _stem_step(stem, images, True), 2))
    rows.append(row("rice_tiny stem forward+backward: channels-last vs NCHW", min(nhwc), min(nchw), "<=", 0.95,
                    note=f"80 images of 64 px, {torch.get_num_threads()} torch threads"))  # fmt: skip
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']}: {r['ours'] * 1e3:.2f} ms vs {r['baseline'] * 1e3:.2f} ms (ratio {r['ratio']:.3f}, "
              f"target {r['target']}: {'met' if r['met'] else 'NOT met'})")
