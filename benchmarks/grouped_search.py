"""LPR4M protocol search: one FAISS index per livestream vs one masked search over the whole gallery.

Both are timed in the same run on the same random embeddings and must return the same rankings; the script
prints the ratio. Defaults are a tenth of LPR4M (2,008 queries, 6,636 images, 110 livestreams, d=512);
``--scale 1`` runs the full size.

    python benchmarks/grouped_search.py [--scale 0.1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rice.retrieval.protocols import grouped_topk


def run(smoke: bool = False) -> list[dict]:
    """The suite's entry (benchmarks/run.py): LPR4M at full size, per-livestream search vs one masked search."""
    from _common import best_of, row

    scale, dim, groups = (0.01, 64, 20) if smoke else (1.0, 512, 110)
    rng = np.random.default_rng(0)
    num_q, num_g = int(20079 * scale), int(66358 * scale)
    queries = rng.normal(size=(num_q, dim)).astype(np.float32)
    gallery = rng.normal(size=(num_g, dim)).astype(np.float32)
    q_groups = [f"live{g}" for g in rng.integers(0, groups, num_q)]
    g_groups = [f"live{g}" for g in rng.integers(0, groups, num_g)]
    repeats = 1 if smoke else 3
    times = {
        method: best_of(lambda m=method: grouped_topk(queries, q_groups, gallery, g_groups, 10, method=m), repeats)
        for method in ("masked", "per_group")
    }
    note = f"{num_q} queries, {num_g} images, {groups} livestreams, d={dim}"
    return [row("grouped search: per livestream vs masked", times["per_group"], times["masked"], "<=", 1.0, note=note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--groups", type=int, default=110)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    num_q, num_g = int(20079 * args.scale), int(66358 * args.scale)
    queries = rng.normal(size=(num_q, args.dim)).astype(np.float32)
    gallery = rng.normal(size=(num_g, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    q_groups = [f"live{g}" for g in rng.integers(0, args.groups, num_q)]
    g_groups = [f"live{g}" for g in rng.integers(0, args.groups, num_g)]

    times = {}
    results = {}
    for method in ("masked", "per_group"):
        best = float("inf")
        for _ in range(args.repeats):
            tic = time.perf_counter()
            results[method] = grouped_topk(queries, q_groups, gallery, g_groups, 10, method=method)
            best = min(best, time.perf_counter() - tic)
        times[method] = best
    assert np.array_equal(results["masked"], results["per_group"]), "the two searches disagree"
    print(f"{num_q} queries, {num_g} images, {args.groups} groups, d={args.dim} (best of {args.repeats})")
    print(f"masked full search : {times['masked']:.3f} s (baseline)")
    print(f"per-group indexes  : {times['per_group']:.3f} s")
    print(f"speed-up           : {times['masked'] / times['per_group']:.1f}x")


if __name__ == "__main__":
    main()
