"""Checkpoint files: atomic writes and weights-only reads. The one place that touches ``.pt`` files.

It sits below training (``rice.train``), loading (``rice.load``) and evaluation, which all need it, and imports
none of them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

CHECKPOINT_FORMAT = "rice-checkpoint"


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written file.

    The temporary file is created with mode 0666 filtered by the umask (``os.open``), like any file the user
    writes; ``tempfile.mkstemp`` would make every checkpoint 0600, unreadable by a team on shared storage.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (see `_atomic_write`)."""
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file atomically: ``dst`` is either its old content or the whole of ``src``."""

    def copy(handle: BinaryIO) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, handle, length=16 * 2**20)

    _atomic_write(dst, copy)


def save_checkpoint(path: str | Path, *, model, optimizer, scheduler, scaler, step: int, epoch: int, config,
                    extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write the full training state plus the resolved config; ``extra`` adds keys (RNG and sampler state)."""
    import rice  # for the version only; imported here because rice/__init__ imports this module's users

    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "rice_version": rice.__version__,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "epoch": epoch,
            "config": config.to_dict(),
            "preprocess": _preprocess_record(model),  # what the model is fed travels with it (issue 23)
            **(extra or {}),
        },
        path,
    )


def _preprocess_record(model) -> dict[str, Any] | None:
    from rice.models.encoders import preprocess_record

    module = getattr(model, "module", model)  # DDP wraps the model
    return preprocess_record(module.preprocess) if hasattr(module, "preprocess") else None


def is_native_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


RUN_CHECKPOINT = "last.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``path`` names: a run directory of ``rice train`` stands for its ``last.pt``.

    ``last.pt`` is the final (or latest) state of the run; ``best.pt`` is chosen on the split that validation
    scored, so it is only ever read when named, never picked for the user.
    """
    path = Path(path)
    if path.is_dir():
        if (path / RUN_CHECKPOINT).is_file():
            return path / RUN_CHECKPOINT
        raise FileNotFoundError(
            f"{path} is a folder without {RUN_CHECKPOINT}; pass a run directory of `rice train`, a .pt file or a "
            "folder written by `rice export`"
        )
    return path


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``. RNG states hold numpy arrays, so those types are allowed.

    ``path`` may be a run directory (its ``last.pt``, see `resolve_checkpoint`). ``mmap``: map the file instead of
    reading it, so only the tensors used are ever read, and from the page cache: loading a model for inference
    from a training checkpoint then never holds its optimizer state (twice the weights again, for AdamW) in memory.
    Files in torch's legacy (non-zip) format cannot be mapped and are read whole.
    """
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass a .pt file written by `rice train`")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
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
