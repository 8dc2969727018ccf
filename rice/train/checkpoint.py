"""Checkpoints: atomic writes, full training state, the resolved config inside."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

import rice


def rng_state() -> dict[str, Any]:
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


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    def copy(handle: BinaryIO) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, handle, length=16 * 2**20)

    _atomic_write(dst, copy)


def save_checkpoint(path: str | Path, *, model, optimizer, scheduler, scaler, step: int, epoch: int, config) -> None:
    atomic_save(
        {
            "format": "rice-checkpoint",
            "rice_version": rice.__version__,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "epoch": epoch,
            "rng": rng_state(),
            "config": config.to_dict(),
        },
        path,
    )


def is_native_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == "rice-checkpoint"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a native checkpoint. RNG states hold numpy arrays, so this trusted-format path allows them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass a .pt file written by `rice train`")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        detail = str(err).strip().splitlines()[0][:100] if str(err).strip() else ""
        raise ValueError(
            f"{path}: cannot read it as a weights-only checkpoint ({type(err).__name__}: {detail}); pass a "
            "checkpoint written by `rice train` / `rice convert`, or a public rice_final.pth (a plain state dict)"
        ) from err


def _numpy_globals() -> list[Any]:
    names = [np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or np.core
    names.append(core.multiarray._reconstruct)
    names += [type(np.dtype(t)) for t in ("uint32", "float64", "int64")]
    return names


_SAFE_GLOBALS = _numpy_globals()


def resolve_resume(resume: str | None, out_dir: str | Path) -> Path | None:
    """``latest`` -> ``<out>/last.pt`` when it exists (else start fresh); a path must exist."""
    if resume is None:
        return None
    if resume == "latest":
        candidate = Path(out_dir) / "last.pt"
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint; pass a .pt file or `latest`")
    return path
