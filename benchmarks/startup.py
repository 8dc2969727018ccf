"""Start-up: `rice --help`, `rice download --help` and `rice models` against a bare `python -c pass`.

Each command runs in a fresh interpreter, best of N. The figure is the child's CPU time (user + sys): start-up is
single-threaded, so on an idle machine it equals the wall time, and unlike the wall time it does not grow when
other jobs share the cores (the best wall time is given in the note). Target: ours - baseline <= 0.3 s.

Also `rice.load` of a rice_vit_b32 checkpoint (the model's weights, written here) against building the model and
loading its state dict as `rice.load` did before (`build_for_weights` skips the random initialisation the weights
overwrite), in this process, best of N: what every `rice search`, `rice scan` and `rice serve` start-up pays.

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import best_of, row

COMMANDS = {
    "rice --help": ["-m", "rice", "--help"],
    "rice download --help": ["-m", "rice", "download", "--help"],
    "rice models": ["-m", "rice", "models"],
}


def _best(args: list[str], repeats: int) -> tuple[float, float]:
    """Best CPU seconds (user + sys) and best wall seconds of ``python *args`` over ``repeats`` runs."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        before = os.times()
        tic = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - tic
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)
    return best_cpu, best_wall


def run(smoke: bool = False, repeats: int = 7) -> list[dict]:
    repeats = 1 if smoke else repeats
    bare_cpu, bare_wall = _best(["-c", "pass"], repeats)
    rows = []
    for name, args in COMMANDS.items():
        cpu, wall = _best(args, repeats)
        note = f"CPU time vs python -c pass; wall {wall:.3f} s vs {bare_wall:.3f} s"
        rows.append(row(f"startup: {name}", cpu, bare_cpu, "<=", 0.3, measure="diff", note=note))
    rows.append(model_load("rice_tiny" if smoke else "rice_vit_b32", repeats))
    return rows


def model_load(name: str, repeats: int) -> dict:
    """rice.load of a checkpoint vs build_model + load_state_dict of the same weights."""
    import torch

    from rice.config import build_config
    from rice.models import build_model
    from rice.models.checkpoint_file import CHECKPOINT_FORMAT, atomic_save
    from rice.models.loading import load

    cfg = build_config(base={"model": {"name": name, "pretrained": False}})
    model = build_model(cfg.model)
    with tempfile.TemporaryDirectory(prefix="rice-bench-load-") as tmp:
        path = Path(tmp) / "last.pt"
        atomic_save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "config": cfg.to_dict()}, path)
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)["model"]
        load(path)  # warm-up: imports, first-call overheads
        ours = best_of(lambda: load(path), repeats)
        before = best_of(lambda: build_model(cfg.model).load_state_dict(state), repeats)
    return row(f"startup: rice.load of a {name} checkpoint", ours, before, "<=", 0.5,
               note="vs build_model + load_state_dict (random initialisation first, as before)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    for r in run(repeats=parser.parse_args().repeats):
        gap = f"ratio {r['ratio']:.2f}" if r["target"].startswith("ratio") else f"+{r['ours'] - r['baseline']:.3f} s"
        print(f"{r['name']}: {r['ours']:.3f} s vs {r['baseline']:.3f} s ({gap}; target {r['target']}: "
              f"{'yes' if r['met'] else 'NO'})")  # fmt: skip
