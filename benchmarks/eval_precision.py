"""R@k with fp32 vs bf16 autocast embeddings (``eval.precision``) on a trained tiny model, on the CPU.

rice_tiny is trained on synthetic data for a few minutes (the demo's recipe, smaller), then its test split is
evaluated twice, only ``eval.precision`` differing. Reported: bf16 R@1 against fp32 R@1 and every R@k difference
(bf16 - fp32, in points). No target: bf16 is the GPU default and this shows what it costs in recall.

    python benchmarks/eval_precision.py [--products 48] [--steps 120]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import info_row

from rice.config import build_config
from rice.data import write_synthetic_dataset
from rice.models import build_model
from rice.retrieval.evaluate_model import evaluate_model
from rice.train.checkpoint import read_checkpoint
from rice.train.engine import fit


def run(smoke: bool = False, products: int = 48, steps: int = 120) -> list[dict]:
    products, steps = (4, 1) if smoke else (products, steps)
    with tempfile.TemporaryDirectory(prefix="rice-bench-precision-") as tmp:
        root = write_synthetic_dataset(Path(tmp) / "data", num_products=products, videos_per_product=2, frames=16,
                                       size=64, seed=0)  # fmt: skip
        cfg = build_config(base={
            "model": {"name": "rice_tiny", "pretrained": False},
            "data": {"root": str(root), "workers": 0 if smoke else 2},
            "train": {"batch_size": 2 if smoke else 16, "max_steps": steps, "out": str(Path(tmp) / "run"),
                      "device": "cpu", "amp": "none", "log_every": 10, "save_every": 100000},
            "eval": {"batch_size": 32},
        })  # fmt: skip
        last = fit(cfg)
        model = build_model(cfg.model)
        model.load_state_dict(read_checkpoint(last)["model"])
        results = {}
        for precision in ("fp32", "bf16"):
            eval_cfg = cfg.eval.model_copy(update={"precision": precision})
            results[precision], _ = evaluate_model(model, cfg.data, eval_cfg, device="cpu")
    ks = [key for key in results["fp32"] if key.startswith("R@")]
    deltas = ", ".join(f"{k} {results['bf16'][k] - results['fp32'][k]:+.2f}" for k in ks)
    fp32 = ", ".join(f"{k} {results['fp32'][k]:.2f}" for k in ks)
    note = f"rice_tiny trained {steps} steps; fp32 {fp32}; bf16 - fp32: {deltas} points"
    return [info_row("eval: R@1 bf16 autocast vs fp32 (CPU)", results["bf16"]["R@1"], results["fp32"]["R@1"], "%",
                     note)]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=48)
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    print(run(products=args.products, steps=args.steps)[0])
