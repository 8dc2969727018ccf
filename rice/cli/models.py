"""`rice models`, `rice convert` and `rice export`: the model registry, public checkpoints and sharing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rice.cli.common import console, fail


def models() -> None:
    """List the registered models: parameters, GFLOPs per image (a multiply-add counts 2), input size, embedding
    size (read from the registry, no build; docs/models.md says how to choose)."""
    from rice.models.registry import list_models, model_info

    table = Table(title="registered models")
    for column in ("name", "params (M)", "input", "embed dim", "GFLOPs/image"):
        table.add_column(column)
    for name in list_models():
        info = model_info(name)
        if info is None:  # registered by user code: nothing known without building it
            table.add_row(name, "?", "?", "?", "?")
            continue
        gflops = f"{info.gflops:.2f}" if info.gflops >= 0.1 else f"{info.gflops:.4f}"
        table.add_row(name, f"{info.params / 1e6:.2f}", str(info.input_size), str(info.embed_dim), gflops)
    console.print(table)


def convert(
    source: Annotated[Path, typer.Argument(help="a public RICE rice_final.pth (any official layout)")],
    dest: Annotated[Path, typer.Argument(help="native rice checkpoint to write")],
) -> None:
    """Convert a public RICE checkpoint into a native rice checkpoint."""
    from rice.models.official import convert_official_checkpoint

    try:
        convert_official_checkpoint(source, dest)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = str(err).strip("'\"")
        fail(message if str(source) in message else f"{source}: {message}; pass a public RICE rice_final.pth")
    console.print(f"wrote {dest}")



def export_(
    checkpoint: Annotated[
        Path, typer.Argument(help="a checkpoint or run directory from `rice train`, or a public rice_final.pth")
    ],
    out_dir: Annotated[Path, typer.Argument(help="folder for model.safetensors, config.json and README.md")],
    results: Annotated[
        Optional[Path], typer.Option(help="`rice eval --json` output for the model card (default: eval.json beside)")
    ] = None,
) -> None:
    """Export a model to share: safetensors weights, config.json and a model card (load with rice.load(DIR))."""
    from rice.models.export_writer import export_model

    try:
        evaluation = json.loads(results.read_text()) if results else None
        export_model(checkpoint, out_dir, evaluation)
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        fail(str(err))
    console.print(f"exported to {out_dir}")


# --- dataset commands (download, prepare) ---
_DATASET_CHOICES = ("movingfashion", "lpr750k", "lpr4m")



def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(convert)
    app.command("export")(export_)
