"""`rice index sync` against a full rebuild after a small catalogue change, embedding cost included (rice_tiny).

A catalogue of N generated shop images (default 10,000) is indexed; then 1% of it changes (a third deleted, a
third redrawn, a third new). Timed in the same run: the sync of the existing index, and a fresh build of the new
catalogue (embedding every image again), which is the baseline; both must answer the same.

    python benchmarks/sync.py [--n 10000] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rice.models import create_model
from rice.retrieval.jobs import build_index
from rice.retrieval.sources import read_items
from rice.retrieval.sync import sync_index


def draw(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)).save(path)


def run(smoke: bool = False, n: int | None = None, changed: float = 0.01) -> list[dict[str, Any]]:
    n = n or (300 if smoke else 10_000)
    torch.manual_seed(0)
    model = create_model("rice_tiny").eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shop = root / "shop"
        for g in range(10):
            (shop / f"g{g}").mkdir(parents=True)
        for i in range(n):
            draw(shop / f"g{i % 10}" / f"item{i:06d}.png", i)
        tic = time.perf_counter()
        build_index(root / "idx", model=model, inputs=[shop], group_by_folder=True)
        first_build = time.perf_counter() - tic
        step = max(1, int(1 / max(changed / 3, 1e-9)))
        for i in range(0, n, step):
            (shop / f"g{i % 10}" / f"item{i:06d}.png").unlink()  # deleted
            draw(shop / f"g{(i + 1) % 10}" / f"item{i + 1:06d}.png", 10**6 + i)  # redrawn
            draw(shop / f"g{i % 10}" / f"new{i:06d}.png", 2 * 10**6 + i)  # new
        tic = time.perf_counter()
        report = sync_index(root / "idx", read_items([shop], group_by_folder=True), model)
        synced = time.perf_counter() - tic
        tic = time.perf_counter()
        fresh = build_index(root / "fresh", model=model, inputs=[shop], group_by_folder=True)
        rebuilt = time.perf_counter() - tic
        from rice.retrieval.catalogue import Index

        queries = np.asarray(fresh.embeddings)[:: max(1, n // 50)]
        a = [[h.id for h in row] for row in Index.load(root / "idx").search(queries, k=10)]
        b = [[h.id for h in row] for row in fresh.search(queries, k=10)]
        assert a == b, "the synced index answers differently from a fresh build"
    print(f"{n} items (first build {first_build:.1f} s); change: {report.summary()}")
    print(f"sync {synced:.1f} s vs full rebuild {rebuilt:.1f} s: {rebuilt / synced:.1f}x faster")
    return [{"name": "index sync vs full rebuild", "ours": synced, "baseline": rebuilt, "ratio": synced / rebuilt,
             "target": "ratio <= 0.1", "met": synced / rebuilt <= 0.1, "unit": "s",
             "note": f"{n} items, {report.summary()}"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of the catalogue that changes")
    args = parser.parse_args()
    run(n=args.n, changed=args.changed)


if __name__ == "__main__":
    main()
