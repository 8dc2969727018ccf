"""What every command module shares: the console, one-line failures, flag help, device and model loading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
DEVICE_HELP = "auto, cpu or cuda"


def flag_help(dotted: str) -> str:
    """A flag's help is its config field's description, its default and its config key: one definition per
    hyperparameter, read from the table generated from rice/config.py (importing pydantic here would double the
    start-up time of every command, `--help` included)."""
    from rice.cli.flag_help import HELP

    return HELP[dotted]


def fail(message: str) -> None:
    """One line on stderr (never wrapped), exit code 2."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=2)


def check_precision(precision: str | None) -> None:
    """An inference ``--precision`` (`rice scan`, `rice embed`, `rice index build`): one line, exit 2, for a value
    `rice.models.precision` does not know, before any model is loaded; None (the flag left out) passes."""
    from rice.models.precision import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        fail(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")


def check_writable(path: Path, flag: str) -> None:
    """Fail now, not after a long evaluation, when ``path`` cannot be written."""
    parent = path.parent
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"{flag} {path}: cannot write there ({err.strerror or err}); pass a file path in a writable folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"{flag} {path}: permission denied; pass a file path in a writable folder")


def print_results(results: dict, title: str) -> None:
    ks = [key for key in results if key.startswith("R@")]
    table = Table(title=title)
    table.add_column("queries")
    table.add_column("n", justify="right")
    for key in ks:
        table.add_column(key, justify="right")
    table.add_row("all", str(results["num_queries"]), *[f"{results[k]:.2f}" for k in ks])
    for name, sub in results.get("subsets", {}).items():
        table.add_row(name, str(sub["num_queries"]), *[f"{sub[k]:.2f}" for k in ks])
    console.print(table)


def resolve_device(device: str) -> str:
    """``auto``: CUDA when there is one, else the CPU."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_model(checkpoint: Path | str, device: str) -> Any:
    """`rice.load` with a one-line failure naming the checkpoint."""
    from rice.models.loading import load

    try:
        return load(checkpoint, device=resolve_device(device))
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        fail(f"{checkpoint}: {err}" if str(checkpoint) not in str(err) else str(err))
