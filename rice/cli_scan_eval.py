"""`rice eval-scan TIMELINE TRUTH`: a thin wrapper over rice.scanning.metrics.score_timeline.

Registered on the main app by `register(app)` at the end of rice/cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from rice.cli_search import _fail

console = Console()


def _read(path: Path, check: Callable[[Any], object], what: str) -> dict:
    """The JSON of ``path``, checked by ``check``; any problem ends the command with one line naming the file."""
    try:
        data = json.loads(path.read_text())
        check(data)
    except FileNotFoundError:
        _fail(f"{path} not found; pass {what}")
    except (OSError, UnicodeDecodeError) as err:
        _fail(f"{path}: cannot read it ({err}); pass {what}")
    except json.JSONDecodeError as err:
        _fail(f"{path} is not JSON ({err}); pass {what}")
    except ValueError as err:
        _fail(f"{path}: {err}")
    return data


def eval_scan(
    timeline: Annotated[Path, typer.Argument(help="a timeline from `rice scan --json`")],
    truth: Annotated[Path, typer.Argument(help="its truth: recording_XX.truth.json of `rice synth --livestream`")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the scores as JSON here")] = None,
) -> None:
    """Score a scan timeline against the truth: time and segment accuracy, host time labelled, boundary error."""
    from rice.scanning.metrics import format_scan_scores, parse_timeline, parse_truth, score_timeline

    predicted = _read(timeline, parse_timeline, "the JSON timeline that `rice scan --json` writes")
    actual = _read(truth, parse_truth, "the truth JSON that `rice synth --livestream` writes next to a recording")
    scores = score_timeline(predicted, actual)
    console.print(f"{timeline} against {truth}", soft_wrap=True)
    console.print(format_scan_scores(scores), soft_wrap=True, highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"timeline": str(timeline), "truth": str(truth), **scores}, indent=1) + "\n")
        console.print(f"scores written to {json_out}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(name="eval-scan")(eval_scan)
