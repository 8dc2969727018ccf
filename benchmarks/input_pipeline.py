"""Input pipeline: a rice_vit_b32 training step (built from scratch, CPU, fp32) fed by the real training
DataLoader (prepared JPEG frames, 2 workers, the engine's ``build_train_loader``) against the same steps on a batch
already in memory. Target: ratio <= 1.15. The workers run one intra-op thread each (worker_init_fn), so decoding
never oversubscribes the cores the step uses.

    python benchmarks/input_pipeline.py [--steps 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import row
from _media import copies_dataset, h264_clip
from _train import build_task, train_step

from rice import distributed
from rice.config import RunConfig
from rice.data.prepare import prepare_movingfashion
from rice.train.engine import build_train_loader


def run(smoke: bool = False, steps: int = 6, batch_size: int = 4, workers: int = 2) -> list[dict]:
    name, losses = ("rice_tiny", ["icl"]) if smoke else ("rice_vit_b32", ["icl"])
    steps, batch_size = (1, 2) if smoke else (steps, batch_size)
    with tempfile.TemporaryDirectory(prefix="rice-bench-pipeline-") as tmp:
        root = Path(tmp)
        # Every video a copy of one 12 s textured H.264 clip (rendering synthetic scenes at this size takes longer
        # than the benchmark): 12 prepared frames each, enough for 10-frame clips; frames stored at 256 px.
        size = 64 if smoke else 320
        clip = h264_clip(size, size, seconds=3.0 if smoke else 12.0, fps=8, gop=16)
        copies_dataset(root, batch_size * (steps + 2) + 1, clip, test=1)
        prepare_movingfashion(root, workers=workers, progress=False)
        cfg = RunConfig.model_validate({
            "model": {"name": name, "pretrained": False},
            "data": {"root": str(root), "workers": workers, "use_prepared_frames": True},
            "train": {"batch_size": batch_size},
        })  # fmt: skip
        task, optimizer = build_task(name, losses)
        loader = build_train_loader(cfg, task.model, distributed.world_info())
        batches = iter(loader)
        first = next(batches)
        train_step(task, optimizer, first)  # warm-up: allocator, first-call overheads, workers started

        tic = time.perf_counter()
        for _ in range(steps):
            train_step(task, optimizer, next(batches))
        loader_s = (time.perf_counter() - tic) / steps
        del batches  # stop the workers before the in-memory run

        tic = time.perf_counter()
        for _ in range(steps):
            train_step(task, optimizer, first)
        memory_s = (time.perf_counter() - tic) / steps
    clips = f"{batch_size} clips x {cfg.data.num_frames} frames + {batch_size} images"
    note = f"{name} {'+'.join(losses)}, {clips}, {workers} workers, {torch.get_num_threads()} torch threads"
    return [row("input pipeline: DataLoader step vs in-memory step", loader_s, memory_s, "<=", 1.15, note=note)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    r = run(steps=parser.parse_args().steps)[0]
    print(f"{r['name']}: {r['ours']:.3f} s/step vs {r['baseline']:.3f} s/step (ratio {r['ratio']:.3f})")
