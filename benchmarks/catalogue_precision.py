"""Catalogue embedding at `--precision auto` against the default (fp32 on a CPU): `Index.build` of shop images with
rice_vit_b32 (random init), the same images both ways, in the same run, best of ``--repeats``.

``auto`` is bf16 autocast where the hardware multiplies bf16 (a CPU with AMX or AVX512-BF16, a GPU) and fp32
elsewhere, where the two rows are the same. Reported beside the time: the smallest cosine between an image's two
vectors (what bf16 does to retrieval is `eval_precision`'s R@k on a trained model). No target: a speed-up where the
CPU has the units (docs/search.md, "Precision").

    python benchmarks/catalogue_precision.py [--images 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import best_of, info_row

from rice.models.precision import inference_dtype


def run(smoke: bool = False, images: int = 96, repeats: int = 2) -> list[dict]:
    from PIL import Image

    from rice.config import ModelConfig
    from rice.models import build_model
    from rice.retrieval.catalogue import Index

    name, images, repeats = ("rice_tiny", 8, 1) if smoke else ("rice_vit_b32", images, repeats)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, pretrained=False)).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="rice-bench-precision-") as tmp:
        paths = []
        for i in range(images):  # 600x450 JPEGs of smooth random colour fields, like product photos in size
            field = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
            path = Path(tmp) / f"item{i:04d}.jpg"
            Image.fromarray(field).resize((600, 450), Image.BICUBIC).save(path, quality=90)
            paths.append(path)
        built: dict[str, Index] = {}

        def build(precision: str | None) -> None:
            built[str(precision)] = Index.build(model, paths, batch_size=32, precision=precision)

        build(None)  # warm-up: allocator, oneDNN's kernels
        build("auto")
        default_s = best_of(lambda: build(None), repeats)
        auto_s = best_of(lambda: build("auto"), repeats)
    fp32, auto = np.asarray(built["None"].embeddings), np.asarray(built["auto"].embeddings)
    cosine = float((fp32 * auto).sum(1).min())
    resolved = "bf16" if inference_dtype("auto", "cpu") is not None else "fp32"
    note = (f"{name}, {images} 600x450 JPEGs, batch 32, {torch.get_num_threads()} threads; auto = {resolved} here; "
            f"min cosine between the two vectors of an image {cosine:.5f}")  # fmt: skip
    return [info_row("catalogue precision: index build at auto vs the default (fp32 on a CPU)", auto_s, default_s, "s",
                     note)]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    for r in run(args.smoke, args.images, args.repeats):
        print(f"{r['name']}: {r['ours']:.2f} s vs {r['baseline']:.2f} s (ratio {r['ratio']:.2f})  [{r['note']}]")
