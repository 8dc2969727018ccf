"""Loader throughput per CPU core: training pairs (10 prepared frames + 1 shop image, rice_vit_b32's 224 px crops
from a 256 px resize) built by one process with one torch thread, in images per CPU-second, for the three item
formats of ``rice.data.pixel_items``:

- ``float`` (the default): PIL decode, resize, crop, flip, normalise in the worker;
- ``uint8`` (``data.normalize_on: device``): the same without the normalisation (done on the device);
- ``jpeg`` (``data.decode_device: cuda``): what the GPU decoding path leaves to the CPU: reading each file's bytes
  (10 frames and the shop image) with a header check and drawing its crop; nothing is decoded.

CPU seconds (``time.process_time``), not wall time, so other load on a shared machine inflates the figures less;
the best of ``repeats`` passes. From the rates, the cores one GPU needs to feed a step rate of R clips/s with that
format: ``R * 11 / (images/s per core)``, for the step rates of docs/performance.md (H200: 576 clips/s today,
1,150 the issue 24 target). Frames are what `rice prepare` writes from 1280x720 H.264 (455x256 JPEG, quality 90);
shop images are 600x800 JPEGs (on the worker paths PIL's draft mode decodes them at half scale).

    python benchmarks/loader_per_core.py [--items 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from _common import best_cpu_of, info_row
from _media import copies_dataset, h264_clip
from PIL import Image

from rice.config import DataConfig
from rice.data import CLIP_MEAN, CLIP_STD, build_train_dataset
from rice.data.movingfashion import load_split
from rice.data.prepare import prepare_movingfashion

IMAGES_PER_CLIP = 11  # 10 frames + the shop image
STEP_RATES = {"H200 today (576 clips/s)": 576.0, "issue 24 target (1,150 clips/s)": 1150.0}
FORMATS = {"float": {}, "uint8": {"normalize_on": "device"}, "jpeg": {"decode_device": "cuda"}}


def _shop_images(root: Path, size: tuple[int, int]) -> None:
    """Camera-sized shop images: a smooth texture (a flat picture decodes unrealistically fast)."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, size=(size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    texture = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    for split in ("train", "test"):
        for record in load_split(root, split):
            texture.save(root / record.img_path, quality=92)


def run(smoke: bool = False, items: int = 48, repeats: int = 3) -> list[dict]:
    items, repeats = (4, 1) if smoke else (items, repeats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a DataLoader worker (rice.data.workers)
    try:
        with tempfile.TemporaryDirectory(prefix="rice-bench-loader-") as tmp:
            root = Path(tmp)
            clip = h264_clip(64, 64, seconds=3.0, fps=8, gop=16) if smoke else h264_clip(1280, 720, 12.0, 25, 50)
            copies_dataset(root, items + 1, clip, test=1)
            prepare_movingfashion(root, workers=2, progress=False)
            _shop_images(root, (96, 128) if smoke else (600, 800))
            size = 32 if smoke else 224
            preprocess = SimpleNamespace(input_size=size, mean=CLIP_MEAN, std=CLIP_STD,
                                         resize_size=None if smoke else 256, interpolation="bilinear")  # fmt: skip
            rates = {}
            for name, fields in FORMATS.items():
                cfg = DataConfig(root=str(root), num_frames=10, tail_drop_prob=0.0, **fields)
                dataset = build_train_dataset(cfg, preprocess, seed=0)
                count = min(items, len(dataset))
                seconds = best_cpu_of(lambda d=dataset, n=count: [d[i] for i in range(n)], repeats)
                rates[name] = count * IMAGES_PER_CLIP / seconds
                if name == "jpeg":  # the frames alone: what the CPU does per frame on the GPU decoding path
                    videos = [dataset.pairs[i][0] for i in range(count)]
                    seconds = best_cpu_of(lambda d=dataset, v=videos: [d._read_encoded_clip(x, None) for x in v],
                                          repeats)  # fmt: skip
                    rates["jpeg frames"] = count * 10 / seconds
    finally:
        torch.set_num_threads(threads)
    shapes = "smoke sizes" if smoke else "10 frames 455x256 + 1 shop image 600x800 -> 224 px"
    rows = []
    for name in ("uint8", "jpeg"):
        cores = ", ".join(f"{label}: {rate * IMAGES_PER_CLIP / rates[name]:.1f} cores (float path "
                          f"{rate * IMAGES_PER_CLIP / rates['float']:.1f})" for label, rate in STEP_RATES.items())
        rows.append(info_row(f"loader per core: {name} items vs float items", rates[name], rates["float"],
                             "img/s/core", f"{shapes}; {cores}"))
    rows.append(info_row("loader per core: jpeg path, the frames alone (bytes, header check, crop draw)",
                         rates["jpeg frames"], rates["float"], "img/s/core", f"{shapes}; vs the float items"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for r in run(items=args.items, repeats=args.repeats):
        print(f"{r['name']}: {r['ours']:.0f} vs {r['baseline']:.0f} images/s per core (x{r['ratio']:.2f}); "
              f"{r['note']}")
