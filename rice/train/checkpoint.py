"""Training state around the checkpoint files: RNG streams, which checkpoint to resume, the run directory.

File I/O itself lives in `rice.models.checkpoint_file` (shared with `rice.load` and evaluation); its names are
re-exported here for existing imports.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rice.models.checkpoint_file import atomic_copy as atomic_copy
from rice.models.checkpoint_file import atomic_save as atomic_save
from rice.models.checkpoint_file import atomic_write_text
from rice.models.checkpoint_file import is_native_checkpoint as is_native_checkpoint
from rice.models.checkpoint_file import read_checkpoint as read_checkpoint
from rice.models.checkpoint_file import save_checkpoint as save_checkpoint


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumePoint:
    """A checkpoint chosen for resuming, already read; ``note`` says why it is not the one asked for."""

    path: Path
    state: dict[str, Any]
    note: str | None = None


def _step_files(out_dir: Path) -> list[Path]:
    """``step_N.pt`` files, newest step first."""
    matches = ((re.fullmatch(r"step_(\d+)\.pt", p.name), p) for p in out_dir.glob("step_*.pt"))
    numbered = [(int(m.group(1)), p) for m, p in matches if m]
    return [p for _, p in sorted(numbered, reverse=True)]


def find_resume(resume: str | None, out_dir: str | Path) -> ResumePoint | None:
    """Which checkpoint ``--resume`` means, read and checked.

    ``latest``: ``<out>/last.pt``, or when that is unreadable (a crash while copying it, a truncated file) the
    newest intact ``step_N.pt``; None when the folder holds no checkpoint (start fresh). A path must be readable.
    """
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"--resume {path}: no such checkpoint; pass a .pt file or `latest`")
        return ResumePoint(path, _read_training_state(path))
    out_dir = Path(out_dir)
    candidates = [p for p in [out_dir / "last.pt", *_step_files(out_dir)] if p.is_file()]
    broken: list[str] = []
    for path in candidates:
        try:
            state = _read_training_state(path)
        except ValueError as err:
            broken.append(f"{path.name} ({str(err).split('(', 1)[-1].split(')')[0]})")
            continue
        note = f"{', '.join(broken)} unreadable; resuming from {path.name} instead" if broken else None
        return ResumePoint(path, state, note)
    if broken:
        raise ValueError(f"{out_dir}: no intact checkpoint to resume ({'; '.join(broken)}); pass --overwrite to "
                         "start again")  # fmt: skip
    return None


def _read_training_state(path: Path) -> dict[str, Any]:
    state = read_checkpoint(path)
    if not is_native_checkpoint(state) or "optimizer" not in state:
        raise ValueError(f"{path}: not a training checkpoint (no optimizer state); resume from a file written by "
                         "`rice train`, or start a new run from it with --pretrained-file")  # fmt: skip
    return state


# Files a run writes into its folder; any of them means the folder already holds a run.
_RUN_FILES = ("last.pt", "metrics.jsonl", "config.yaml", "eval.json", "best.pt", "best.json")


def existing_run_files(out_dir: str | Path) -> list[str]:
    out_dir = Path(out_dir)
    names = [name for name in _RUN_FILES if (out_dir / name).exists()]
    return names + [p.name for p in reversed(_step_files(out_dir))] if out_dir.is_dir() else []


def check_run_dir(out_dir: str | Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one: it would replace its checkpoints and mix the logs."""
    found = existing_run_files(out_dir)
    if found and resume is None and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(
            f"{out_dir} already holds a run ({shown}); pass --resume latest to continue it, --overwrite to replace "
            "it, or another --out"
        )


def clear_run_dir(out_dir: str | Path) -> None:
    """Delete what an earlier run wrote (``--overwrite``); other files in the folder are left alone."""
    out_dir = Path(out_dir)
    for name in existing_run_files(out_dir):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` from ``metrics.jsonl`` so a resumed run does not log some steps twice."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:
            continue  # a line cut short by the crash
    atomic_write_text(path, "".join(line + "\n" for line in kept))
