"""`rice scan` as a user runs it: real processes, a pipe on stdin, a local HTTP server that drops the connection,
SIGTERM, bad sources."""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rice(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rice", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, **kwargs)  # fmt: skip


def test_a_recording_on_stdin_gives_the_same_timeline_as_the_file(scan_setup, tmp_path):
    common = ["--window", "2", "--stride", "1", "--min-score", "0", "--device", "cpu"]
    from_file = rice("scan", str(scan_setup.index_dir), str(scan_setup.stream), *common, "--json",
                     str(tmp_path / "file.json"), "--jsonl", str(tmp_path / "file.jsonl"), "--vtt",
                     str(tmp_path / "file.vtt"))  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr[-2000:]
    with open(scan_setup.stream, "rb") as pipe:
        from_stdin = rice("scan", str(scan_setup.index_dir), "-", *common, "--no-live", "--json",
                          str(tmp_path / "stdin.json"), stdin=pipe)  # fmt: skip
    assert from_stdin.returncode == 0, from_stdin.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("file", "stdin"))
    assert a["windows"] == b["windows"] and a["segments"] == b["segments"] and a["windows"]
    # the JSON lines: every window and every segment, in order, as the JSON file has them
    lines = [json.loads(line) for line in (tmp_path / "file.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in x.items() if k != "type"} for x in lines if x["type"] == "window"] == a["windows"]
    segments: list[dict] = []  # a line with replaces_previous takes the place of the segment before it
    for x in lines:
        if x["type"] == "segment":
            record = {k: v for k, v in x.items() if k not in ("type", "replaces_previous")}
            if x.get("replaces_previous"):
                segments[-1] = record
            else:
                segments.append(record)
    assert segments == a["segments"]
    assert (tmp_path / "file.vtt").read_text().count(" --> ") == len(a["segments"])


class _DroppingServer(http.server.BaseHTTPRequestHandler):
    """Serves a TS recording as a live stream: the first request gets the first part and the connection is cut;
    the next gets the rest (the live edge); later ones are refused."""

    parts: list[bytes] = []
    served: list[int] = []

    def do_GET(self) -> None:  # noqa: N802
        n = len(self.served)
        self.served.append(n)
        if n >= len(self.parts):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.parts[n])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def test_a_network_source_cut_mid_stream_is_reconnected_and_the_gap_reported(scan_setup, tmp_path):
    data = scan_setup.stream.read_bytes()
    cut = (len(data) // 2) // 188 * 188
    _DroppingServer.parts, _DroppingServer.served = [data[:cut], data[cut:]], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DroppingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
        result = rice("scan", str(scan_setup.index_dir), url, "--window", "2", "--stride", "1", "--retries", "2",
                      "--json", str(tmp_path / "live.json"), "--device", "cpu")  # fmt: skip
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-2000:]
    timeline = json.loads((tmp_path / "live.json").read_text())
    assert len(_DroppingServer.served) >= 3  # first part, the reconnect, then the refused tries
    lost = [g for g in timeline["skipped"] if "connection lost" in g["reason"]]
    assert lost, timeline["skipped"]
    before = [w for w in timeline["windows"] if w["end"] <= lost[0]["start"] + 1e-6]
    after = [w for w in timeline["windows"] if w["start"] >= lost[0]["end"] - 1e-6]
    assert before and after  # scanning went on after the reconnect
    assert timeline["stats"]["reconnects"] >= 1


def test_sigterm_closes_the_open_segment_flushes_the_outputs_and_exits_0(scan_setup, tmp_path):
    """A live stream on stdin that keeps coming (the recording again and again); SIGTERM once windows flow."""
    out = tmp_path / "live.json"
    proc = subprocess.Popen([sys.executable, "-m", "rice", "scan", str(scan_setup.index_dir), "-", "--window", "2",
                             "--min-score", "0", "--json", str(out), "--jsonl", str(tmp_path / "live.jsonl"),
                             "--device", "cpu"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    data = scan_setup.stream.read_bytes()
    stop = threading.Event()

    def feed() -> None:
        try:
            while not stop.is_set():  # one TS stream: its packets repeat with the timestamps starting over
                proc.stdin.write(data)
                proc.stdin.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ValueError, OSError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    lines = tmp_path / "live.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if lines.exists() and lines.read_text().count('"window"') >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        stop.set()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    timeline = json.loads(out.read_text())
    assert timeline["windows"] and timeline["source"] == "-"
    written = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [x for x in written if x["type"] == "window"][-1]["start"] == timeline["windows"][-1]["start"]
    # the segment open at the signal is in the outputs, closed at the last window
    if timeline["segments"]:
        assert timeline["segments"][-1]["end"] <= timeline["windows"][-1]["end"] + 1e-6


@pytest.mark.parametrize("kind", ["not_a_video", "empty_stdin", "missing"])
def test_bad_sources_are_one_line_and_exit_2(scan_setup, tmp_path, kind):
    if kind == "not_a_video":
        source = tmp_path / "notes.mp4"
        source.write_text("these are not frames\n" * 100)
        result = rice("scan", str(scan_setup.index_dir), str(source), "--device", "cpu")
    elif kind == "missing":
        source = tmp_path / "nothing.mp4"
        result = rice("scan", str(scan_setup.index_dir), str(source), "--device", "cpu")
    else:
        source = "standard input"
        result = rice("scan", str(scan_setup.index_dir), "-", "--device", "cpu", stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(source) in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_an_index_without_a_model_digest_is_scanned_only_with_ckpt(scan_setup, tmp_path):
    """A digest-less index cannot be checked against its model: refused in one line, unless --ckpt names it."""
    import shutil

    folder = tmp_path / "index"
    shutil.copytree(scan_setup.index_dir, folder)
    meta = json.loads((folder / "index.json").read_text())
    meta["model"]["digest"] = None
    (folder / "index.json").write_text(json.dumps(meta))
    common = ["--window", "2", "--device", "cpu", "--json", str(tmp_path / "t.json")]
    refused = rice("scan", str(folder), str(scan_setup.recording), *common)
    assert refused.returncode == 2 and "records no model digest" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    chosen = rice("scan", str(folder), str(scan_setup.recording), *common, "--ckpt", str(scan_setup.checkpoint))
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert json.loads((tmp_path / "t.json").read_text())["windows"]


@pytest.mark.parametrize("kind", ["huge_frames", "claims_50M_frames"])
def test_a_hostile_recording_is_refused_in_one_line_before_decoding(scan_setup, tmp_path, kind):
    """The shared decoding bounds hold in rice scan: a file and the same bytes on stdin."""
    from tests.hostile_media import huge_frame_mp4, many_frames_mp4

    make = huge_frame_mp4 if kind == "huge_frames" else many_frames_mp4
    hostile = make(tmp_path / f"{kind}.mp4")
    by_file = rice("scan", str(scan_setup.index_dir), str(hostile), "--device", "cpu")
    with open(hostile, "rb") as pipe:
        by_stdin = rice("scan", str(scan_setup.index_dir), "-", "--no-live", "--device", "cpu", stdin=pipe)
    for result in (by_file, by_stdin):
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "over the limit" in by_file.stderr or "frames" in by_file.stderr
    if kind == "huge_frames":  # on stdin there is no header to read first: the stream's declared size is checked
        assert "8192x8192" in by_file.stderr and "8192x8192" in by_stdin.stderr


def test_truth_prints_the_scores_of_the_timeline_against_it(scan_setup, tmp_path):
    """`rice scan --truth` scores what it found: the same figures as `rice eval-scan` on the written timeline."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"source": "recording.mp4", "duration": 14.0,
                                 "segments": [{"start": s, "end": e, "id": i} for s, e, i in scan_setup.truth]}))
    result = rice("scan", str(scan_setup.index_dir), str(scan_setup.recording), "--window", "2", "--device", "cpu",
                  "--truth", str(truth), "--json", str(tmp_path / "timeline.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    scored = rice("eval-scan", str(tmp_path / "timeline.json"), str(truth))
    assert scored.returncode == 0, scored.stderr[-2000:]
    line = next(x for x in scored.stdout.splitlines() if x.startswith("segment accuracy"))
    assert " ".join(line.split()) in " ".join(result.stdout.split())
    assert "2 true" in result.stdout


def test_rerank_from_the_cli_keeps_the_decoder_and_a_plain_scan_drops_it(scan_setup, tmp_path):
    """A checkpoint with the PMD decoder: `rice scan --rerank` re-scores the windows with it (the scores differ from
    the plain scan's cosines), and a scan without --rerank, which drops the decoder after the index's model check,
    still passes that check and gives the cosines."""
    import torch

    from rice.config import build_config
    from rice.models import build_model
    from rice.retrieval.catalogue import Index
    from rice.train.checkpoint import save_checkpoint
    from rice.train.optim import build_optimizer, build_scheduler

    cfg = build_config(model__name="rice_tiny", model__pretrained=False, loss__losses=["icl", "pmd"])
    torch.manual_seed(0)
    model = build_model(cfg.model, with_decoder=True).eval()
    optimizer = build_optimizer(model, cfg.optim)
    checkpoint = tmp_path / "pmd.pt"
    save_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg.optim, 5),
                    scaler=None, step=0, epoch=0, config=cfg)  # fmt: skip
    images = [Path(item.path) for item in Index.load(scan_setup.index_dir).items][:6]
    from rice.models.loading import load

    Index.build(load(checkpoint), images, checkpoint=checkpoint).save(tmp_path / "index")
    scores = {}
    for name, extra in (("plain", []), ("rerank", ["--rerank", "3"])):
        out = tmp_path / f"{name}.json"
        result = rice("scan", str(tmp_path / "index"), str(scan_setup.recording), "--window", "2", "--device", "cpu",
                      "--top-k", "3", "--json", str(out), *extra)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        timeline = json.loads(out.read_text())
        assert timeline["settings"]["rerank"] == (3 if extra else 0)
        scores[name] = [r["score"] for w in timeline["windows"] for r in w["results"]]
    assert len(scores["plain"]) == len(scores["rerank"]) > 0
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores["plain"])  # cosines
    assert scores["plain"] != scores["rerank"]


def test_the_segment_table_fits_80_columns_with_short_times_and_paths_below_the_working_directory(tmp_path,
                                                                                                   monkeypatch):
    """One line a segment on an 80-column terminal for the demo's paths: m:ss.s times (h:mm:ss.s for a source of
    an hour or more), the shop image relative to the working directory when it lies below it (else as given), no
    group column unless a segment has a group."""
    from rich.console import Console

    from rice.cli.scan import _print_table
    from rice.scanning.timeline import Segment, Timeline

    def rows(timeline: Timeline) -> list[list[str]]:
        console = Console(record=True, width=80)
        _print_table(timeline, console)
        lines = console.export_text().splitlines()
        assert any("97.3x real time" in line for line in lines) == ("realtime_factor" in timeline.stats)
        return [line.split() for line in lines]

    monkeypatch.chdir(tmp_path)
    image = str(tmp_path / "rice-demo" / "data" / "imgs" / "100007_in_pp.jpg")
    clip = Timeline(source="recording_00.mp4", duration=70.9, stats={"realtime_factor": 97.34, "elapsed": 0.73,
                    "seconds": {"decode": 0.61, "encode": 0.08}},
                    segments=[Segment(62.54, 64.5, "100007_in_pp", 0.9261, path=image)])  # fmt: skip
    got = rows(clip)
    assert any("(97.3x real time; decoding 0.6 s, encoding 0.1 s)" in " ".join(line) for line in got), got
    assert ["0:01:02.5"] not in got and ["start", "end", "id", "score", "shop", "image"] in got  # no group column
    assert ["1:02.5", "1:04.5", "100007_in_pp", "0.926", "rice-demo/data/imgs/100007_in_pp.jpg"] in got
    stream = Timeline(source="live.ts", duration=3730.0, segments=[
        Segment(64.5, 3723.45, "b", 0.949, group="shoes", path="/elsewhere/1.jpg")])  # fmt: skip
    got = rows(stream)
    assert ["start", "end", "id", "score", "group", "shop", "image"] in got
    assert ["0:01:04.5", "1:02:03.4", "b", "0.949", "shoes", "/elsewhere/1.jpg"] in got
