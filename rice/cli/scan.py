"""`rice scan INDEX SOURCE`: a long recording or a live stream -> a timeline of the catalogue's products; and
`rice eval-scan TIMELINE TRUTH`, which scores a timeline against its truth (rice.scanning.metrics).

A thin wrapper over `rice.scanning.scan`: it loads the model and the index, draws the progress bar, writes the
outputs (--json, --jsonl, --vtt, --html) and turns SIGINT/SIGTERM into a clean stop (the open segment is closed,
every output flushed, exit 0).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from rice.cli.catalogue import index_checkpoint
from rice.cli.common import DEVICE_HELP, check_precision, console, fail, load_model
from rice.scanning.timeline import SCAN_RULE, scan_rule

# The decision rule's defaults are the library's SCAN_RULE (measured: docs/scan.md), shared with the service.
DEFAULT_MIN_SCORE = SCAN_RULE.min_score
DEFAULT_MIN_MARGIN = SCAN_RULE.min_margin
DEFAULT_SMOOTH = SCAN_RULE.smooth
DEFAULT_MIN_SECONDS = SCAN_RULE.min_seconds
DEFAULT_HOST_MARGIN = SCAN_RULE.host_margin
DEFAULT_HOST_WARMUP = SCAN_RULE.host_warmup


class _JsonLines:
    """--jsonl: one line per window and per closed segment, flushed as they happen."""

    def __init__(self, target: Optional[Path]) -> None:
        self.handle = None
        if target is not None:
            self.handle = sys.stdout if str(target) == "-" else open(target, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None and self.handle is not sys.stdout:
            self.handle.close()


def scan(
    index_dir: Annotated[Path, typer.Argument(help="an index folder (`rice index build`)")],
    source: Annotated[str, typer.Argument(help="a video file, an http(s)/rtmp/rtsp/HLS URL, or - for a stream "
                                                "(MPEG-TS or Matroska) on stdin")],
    ckpt: Annotated[Optional[Path], typer.Option(help="default: the checkpoint recorded in the index")] = None,
    window: Annotated[Optional[float], typer.Option(help="window length in seconds (default: the clip length the "
                                                         "model was trained on)")] = None,
    stride: Annotated[float, typer.Option(help="seconds between window starts")] = 1.0,
    top_k: Annotated[int, typer.Option(help="results kept per window")] = 5,
    group: Annotated[Optional[str], typer.Option(help="search only this group (shop, livestream)")] = None,
    rerank: Annotated[int, typer.Option(help="re-score each window's top K with the PMD decoder (0: off)")] = 0,
    min_score: Annotated[float, typer.Option(help="a window shows a product only when its top-1 cosine reaches "
                                                  "this")] = DEFAULT_MIN_SCORE,
    min_margin: Annotated[float, typer.Option(help="... and leads the runner-up by this much")] = DEFAULT_MIN_MARGIN,
    smooth: Annotated[int, typer.Option(help="majority vote over this many windows on either side")]
    = DEFAULT_SMOOTH,
    min_seconds: Annotated[float, typer.Option(help="shorter product segments are dropped")] = DEFAULT_MIN_SECONDS,
    host_gate: Annotated[bool, typer.Option(help="learn the stream's recurring content (the host) while scanning; a "
                                                 "window shows a product only when it matches the product better")]
    = True,
    host_margin: Annotated[float, typer.Option(help="with the host gate: by this much (top-1 cosine minus the "
                                                    "cosine to the host)")] = DEFAULT_HOST_MARGIN,
    host_warmup: Annotated[int, typer.Option(min=1, help="with the host gate: windows seen before the first "
                                                         "decision")] = DEFAULT_HOST_WARMUP,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the timeline as JSON here")] = None,
    jsonl_out: Annotated[Optional[Path], typer.Option("--jsonl", help="stream windows and segments as JSON lines "
                                                                      "(- for stdout)")] = None,
    vtt_out: Annotated[Optional[Path], typer.Option("--vtt", help="write the segments as WebVTT subtitles")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="write a timeline page here")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="a ground-truth file (`rice synth --livestream`): print the "
                                                       "scores of the timeline against it")] = None,
    live: Annotated[Optional[bool], typer.Option("--live/--no-live", help="drop frames to keep up with real time "
                                                                          "(default: for stdin, rtmp/rtsp and HLS)")]
    = None,
    retries: Annotated[int, typer.Option(help="reconnects after a network source drops")] = 5,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    precision: Annotated[str, typer.Option(help="auto: bf16 where the hardware multiplies it (a GPU; a CPU with AMX "
                                                "or AVX512-BF16: about 3.5x the frame rate), fp32 elsewhere; or "
                                                "fp32, bf16")] = "auto",
) -> None:
    """Find which catalogue products a recording or a live stream shows, and when."""
    from rice.data import MediaError
    from rice.models.precision import own_model_for_inference
    from rice.retrieval.catalogue import Index
    from rice.scanning import ScanProgress, WindowResult
    from rice.scanning import scan as scan_source

    # With --jsonl -, stdout carries the JSON lines: everything for people goes to stderr.
    console = Console(stderr=str(jsonl_out) == "-")
    check_precision(precision)
    expected = None
    if truth is not None:  # read before the scan: a bad truth file should not wait for hours of video
        from rice.scanning.metrics import parse_truth

        expected = _read(truth, parse_truth, "a truth file written by `rice synth --livestream`")
    if not index_dir.is_dir():
        fail(f"{index_dir}: not an index folder; build one with `rice index build CKPT --images DIR --out INDEX`")
    model = load_model(index_checkpoint(index_dir, ckpt), device)
    try:
        index = Index.load(index_dir, model=model, trust_model=ckpt is not None)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if not rerank:
        # The index's model check hashes the PMD decoder too, so it is loaded; only --rerank runs it (56 MiB for
        # rice_vit_b32 that a scan of hours would otherwise hold for nothing).
        model.decoder = None
    # The model is ours and runs only under the scan's autocast, which casts its matrix weights for every product
    # anyway: stored in bf16 they give the same outputs in half the memory (168 MiB less for rice_vit_b32).
    own_model_for_inference(model, precision)
    rule = scan_rule(min_score=min_score, min_margin=min_margin, smooth=smooth, min_seconds=min_seconds,
                     host_margin=host_margin, host_warmup=host_warmup, host_gate=host_gate)  # fmt: skip
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("scanning"), BarColumn(), TextColumn("{task.fields[where]}"), TimeElapsedColumn(),
                   console=console, transient=True)  # fmt: skip
    task = bar.add_task("scan", total=None, where="")

    def progress(p: ScanProgress) -> None:
        total = f" / {p.duration:.0f} s" if p.duration else " s"
        bar.update(task, completed=p.scanned, total=p.duration,
                   where=f"{p.scanned:.0f}{total}  {p.realtime_factor:.1f}x real time  {p.windows} windows"
                   + (f"  {p.dropped_frames} dropped" if p.dropped_frames else ""))  # fmt: skip

    try:
        run = scan_source(model, index, "-" if source == "-" else source, window=window, stride=stride, top_k=top_k,
                          group=group, rerank=rerank, rule=rule, live=live, retries=retries,
                          keep_windows=json_out is not None or html_out is not None, on_progress=progress,
                          precision=precision)  # fmt: skip
    except (MediaError, ValueError) as err:
        fail(str(err))
    previous = {sig: signal.signal(sig, lambda *_: run.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    lines = _JsonLines(jsonl_out)
    try:
        with bar:
            for event in run:
                if isinstance(event, WindowResult):
                    lines.write({"type": "window", **event.to_dict()})
                else:  # a segment that continues the previous one replaces it (Segment.continues)
                    lines.write({"type": "segment", **event.to_dict(),
                                 **({"replaces_previous": True} if event.continues else {})})  # fmt: skip
    except MediaError as err:
        fail(str(err))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lines.close()
    timeline = run.timeline
    if not timeline.stats.get("encoded_frames"):
        reason = "; ".join(g["reason"] for g in timeline.skipped) or "no decodable frames"
        fail(f"{source}: the stream held no decodable video ({reason}); check the source or the URL")
    _write_outputs(timeline, json_out, vtt_out, html_out, console)
    _print_table(timeline, console)
    if expected is not None:
        from rice.scanning.metrics import format_scan_scores, score_timeline

        console.print(format_scan_scores(score_timeline(timeline.to_json(), expected)), soft_wrap=True)


def _write_outputs(timeline: Any, json_out: Optional[Path], vtt_out: Optional[Path], html_out: Optional[Path],
                   console: Console) -> None:  # fmt: skip
    for target in (json_out, vtt_out, html_out):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
    if json_out is not None:
        json_out.write_text(json.dumps(timeline.to_json(), indent=1))
    if vtt_out is not None:
        vtt_out.write_text(timeline.to_vtt(), encoding="utf-8")
    if html_out is not None:
        timeline.to_html(html_out)
    written = [str(p) for p in (json_out, vtt_out, html_out) if p is not None]
    if written:
        console.print(f"written: {', '.join(written)}", soft_wrap=True)


def _print_table(timeline: Any, console: Console) -> None:
    from rich import box

    table = Table(title=f"{timeline.source}: {timeline.duration:.1f} s, {len(timeline.segments)} segment(s)",
                  box=box.SIMPLE_HEAD, pad_edge=False)  # no vertical rules: a path fits an 80-column terminal
    hours = max([timeline.duration, *(s.end for s in timeline.segments)]) >= 3600
    grouped = any(s.group for s in timeline.segments)  # a catalogue without groups: no empty column
    for column in ("start", "end", "id", "score", *(("group",) if grouped else ())):
        table.add_column(column, overflow="fold", no_wrap=column in ("start", "end", "score"))
    table.add_column("shop image", overflow="fold")
    for s in timeline.segments:
        group = (s.group,) if grouped else ()
        table.add_row(_clock(s.start, hours), _clock(s.end, hours), s.id, f"{s.score:.3f}", *group, _shown_path(s.path))
    console.print(table)
    stats = timeline.stats
    rtf = stats.get("realtime_factor")
    speed = f"{rtf:.1f}x real time" if isinstance(rtf, (int, float)) else "real time factor unknown"
    seconds = stats.get("seconds") or {}
    if "decode" in seconds and "encode" in seconds:  # which one to speed up: a smaller source, or a GPU
        speed += f"; decoding {seconds['decode']:.1f} s, encoding {seconds['encode']:.1f} s"
    console.print(f"{stats.get('windows', 0)} windows, {stats.get('encoded_frames', 0)} frames encoded, "
                  f"{stats.get('elapsed', 0):.1f} s ({speed}), {timeline.dropped_frames} dropped",
                  soft_wrap=True)  # fmt: skip
    for gap in timeline.skipped:
        console.print(f"[yellow]skipped {gap['start']:.1f}-{gap['end']:.1f} s: {gap['reason']}[/yellow]",
                      soft_wrap=True)  # fmt: skip


def _clock(seconds: float, hours: bool) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` for a source of an hour or more): the table's times, to a tenth of a second."""
    minutes, tenths = divmod(round(seconds * 10), 600)
    rest = f"{tenths // 10:02d}.{tenths % 10}"
    if not hours:
        return f"{minutes}:{rest}"
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{rest}"


def _shown_path(path: str | None) -> str:
    """A shop image's path for the table: relative to the working directory when it lies below it (the JSON keeps
    the full path), so the column stays narrow enough for a terminal."""
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path, check: Callable[[Any], object], what: str) -> dict:
    """The JSON of ``path``, checked by ``check``; any problem ends the command with one line naming the file."""
    try:
        data = json.loads(path.read_text())
        check(data)
    except FileNotFoundError:
        fail(f"{path} not found; pass {what}")
    except (OSError, UnicodeDecodeError) as err:
        fail(f"{path}: cannot read it ({err}); pass {what}")
    except json.JSONDecodeError as err:
        fail(f"{path} is not JSON ({err}); pass {what}")
    except ValueError as err:
        fail(f"{path}: {err}")
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
    app.command()(scan)
    app.command(name="eval-scan")(eval_scan)
