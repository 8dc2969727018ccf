"""The `rice` command line: thin wrappers that build a RunConfig or open an index and call library functions.

One module per command group, each with a ``register(app)``; they import typer and rich only at the top, and the
library inside the commands, so `rice --help` does not pay for torch, timm or FAISS.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rice.cli import data, index, models, scan, search, serve, training

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Video-to-shop product retrieval: RICE and its baselines.",
    rich_markup_mode=None,  # plain help: Rich's help formatter imports Markdown and Pygments (+0.25 s per call)
)


def _version(value: bool) -> None:
    if value:
        import rice

        typer.echo(f"rice {rice.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Video-to-shop product retrieval: RICE and its baselines."""


# the order of `rice --help`
for group in (training, data, models, serve, search, index, scan):
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
