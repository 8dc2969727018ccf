"""Validation during training (``train.eval_every N``): score a held-out split on rank 0, keep ``best.pt`` by R@1.

The split is ``val`` when the dataset has one, else the eval split ``test``. Each evaluation appends a row
``{"step", "eval_split", "eval/R@1", ...}`` to metrics.jsonl (and TensorBoard when on). When R@1 beats the best
so far, the weights are written to ``best.pt`` (atomically, a full checkpoint `rice eval` and `rice.load` read)
and the score to ``best.json``; a resumed run reads ``best.json`` so it only replaces ``best.pt`` with better.

Evaluation must not change the training: it runs without gradients, puts the model back in train mode, and
restores every RNG stream afterwards (its DataLoaders draw their seeds from the global generator), so a run with
``eval_every`` trains exactly as one without it and exact resume still holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rice.config import RunConfig
from rice.models.checkpoint_file import atomic_write_text, save_checkpoint
from rice.train.checkpoint import rng_state, set_rng_state


def validation_split(cfg: RunConfig, preprocess) -> str:
    """``val`` when the dataset has such an eval split, else ``test`` (building the datasets reads indexes only)."""
    from rice.data import build_eval_datasets

    try:
        build_eval_datasets(cfg.data, preprocess, "val", cfg.eval)
    except (ValueError, FileNotFoundError):  # the dataset formats refuse a split they do not have
        return "test"
    return "val"


def read_best(out_dir: Path) -> dict[str, Any] | None:
    """``{"step", "R@1"}`` of the run's ``best.pt``, or None when it has none (or the file is unreadable)."""
    try:
        best = json.loads((out_dir / "best.json").read_text())
        return best if isinstance(best, dict) and isinstance(best.get("R@1"), (int, float)) else None
    except (OSError, ValueError):
        return None


class Validator:
    """Scores ``split`` every ``every`` steps with the training model and keeps the best checkpoint."""

    def __init__(self, cfg: RunConfig, out_dir: Path, device: torch.device, preprocess) -> None:
        self.cfg, self.out_dir, self.device = cfg, out_dir, device
        self.every = cfg.train.eval_every
        self.split = validation_split(cfg, preprocess)
        self.best = read_best(out_dir)

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def run(self, step: int, epoch: int, saver, log) -> dict[str, Any]:
        """Evaluate now (rank 0 only), log the row, update ``best.pt``; returns the logged row."""
        from rice.retrieval.evaluate_model import evaluate_model  # builds eval datasets; only needed when validating

        model = saver.model
        log.print(f"eval at step {step}: scoring the {self.split} split ...")
        tic = time.perf_counter()
        streams = rng_state()
        was_training = model.training
        try:
            results, emb = evaluate_model(model, self.cfg.data, self.cfg.eval, split=self.split, device=self.device)
        finally:
            model.train(was_training)
            set_rng_state(streams)
        recalls = {key: value for key, value in results.items() if key.startswith("R@")}
        row: dict[str, Any] = {"step": step, "eval_split": self.split}
        row.update({f"eval/{key}": round(float(value), 4) for key, value in recalls.items()})
        log.log(row)
        score = float(results["R@1"])
        improved = self.best is None or score > self.best["R@1"]
        if improved:
            save_checkpoint(
                self.out_dir / "best.pt", model=model, optimizer=saver.optimizer, scheduler=saver.scheduler,
                scaler=saver.scaler, step=step, epoch=epoch, config=self.cfg,
                extra={"best": {"step": step, "R@1": score, "split": self.split}},
            )  # fmt: skip
            self.best = {"step": step, "R@1": score, "split": self.split}
            atomic_write_text(self.out_dir / "best.json", json.dumps(self.best) + "\n")
        shown = "  ".join(f"{key} {value:.2f}" for key, value in recalls.items())
        note = "new best, best.pt saved" if improved else f"best R@1 {self.best['R@1']:.2f} at step {self.best['step']}"
        log.print(f"eval at step {step} ({self.split}, {len(emb.query_ids)} queries, "
                  f"{time.perf_counter() - tic:.1f}s): {shown}  ({note})")  # fmt: skip
        return row
