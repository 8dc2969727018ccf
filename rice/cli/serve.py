"""`rice serve` and `rice report`: a search service over HTTP, and a run's training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rice.cli.common import console, fail


def report(
    run_dir: Annotated[Path, typer.Argument(help="a `rice train --out` folder (or its metrics.jsonl)")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default: RUN_DIR/training_curves.png)")] = None,
) -> None:
    """Draw a run's training curves (losses, learning rates, logit scale) from metrics.jsonl to a PNG."""
    from rice.reports import plot_training_curves

    try:
        path = plot_training_curves(run_dir, out)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        fail(str(err))
    console.print(f"training curves written to {path}")


def serve(
    index_dir: Annotated[Path, typer.Argument(help="an index folder from `rice index build`")],
    ckpt: Annotated[Optional[Path], typer.Option(help="checkpoint (default: the one recorded in the index)")] = None,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the service to the network")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port (0: let the OS pick one; the address is printed)")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="larger uploads get HTTP 413")] = 200.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    max_scan_jobs: Annotated[int, typer.Option(min=1, help="POST /scan jobs that run at once (each keeps the "
                                                          "model busy for the whole recording); later ones wait "
                                                          "in a queue")] = 1,
    timeout_header: Annotated[float, typer.Option(min=0.001, help="seconds a client has to send a request's "
                                                                  "headers (408, then closed)")] = 10.0,
    timeout_body: Annotated[float, typer.Option(min=0.001, help="seconds a client may pause while sending a "
                                                                "body (then closed)")] = 30.0,
    timeout_keep_alive: Annotated[int, typer.Option(min=1, help="seconds an idle connection is kept after an "
                                                                "answer")] = 5,
    limit_concurrency: Annotated[int, typer.Option(min=1, help="open connections beyond this get HTTP 503")] = 100,
    rerank: Annotated[int, typer.Option(min=0, help="re-score the top K of each uploaded query with the PMD decoder "
                                                    "(0: off), as `rice search --rerank K`")] = 0,
) -> None:
    """Serve an index over HTTP: /search (upload a clip or an image), /scan (a recording), /items/ID/image,
    /health and a web page."""
    from rice.serve.connections import ConnectionLimits
    from rice.serve.server import run_server
    from rice.serve.service import open_service

    try:
        service = open_service(index_dir, ckpt, device, rerank=rerank)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        fail(str(err))
    ready = lambda url: typer.echo(f"serving {len(service.index)} items on {url} (Ctrl-C stops)")  # noqa: E731
    limits = ConnectionLimits(timeout_header, timeout_body, timeout_keep_alive, limit_concurrency)
    run_server(service, host, port, max_upload_mb, on_ready=ready, log_level="info", max_scan_jobs=max_scan_jobs,
               limits=limits)



def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(serve)
