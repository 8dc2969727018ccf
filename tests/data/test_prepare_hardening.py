"""rice prepare under real faults: a decoding worker killed by a signal, the main process SIGKILLed, frames made
with other settings, and a partial LPR750K download."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from rice.data.lpr import LPRTrainPairs
from rice.data.prepare import _prepare_one as _REAL_PREPARE_ONE
from rice.data.prepare import prepare_lpr750k, prepare_movingfashion
from rice.data.synthetic import write_mp4, write_synthetic_dataset

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find worker processes")


def quiet() -> Console:
    return Console(file=io.StringIO(), width=300)


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) child processes of ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _long_video(path: Path, frames: int = 400, size: int = 96) -> None:
    rng = np.random.default_rng(0)
    write_mp4(path, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8), fps=8)


@pytest.fixture
def mf_root(tmp_path: Path) -> Path:
    root = write_synthetic_dataset(tmp_path / "mf", num_products=4, videos_per_product=1, num_test_products=2,
                                   frames=16, size=32, fps=8)
    return root


def _crash_on(video_name: str, kills: Path):
    """``extract_frames`` that SIGKILLs its own process on ``video_name`` (as a decoder crash would do), after
    appending a line to ``kills``; every other video goes to the real one. Installed in the parent before the pool
    forks, so every decoding worker has it: the crash happens whatever the machine's load, no race with a watcher."""
    from rice.data import prepare

    real = prepare.extract_frames

    def extract(video, *args, **kwargs):
        if Path(video).name == video_name:
            with open(kills, "a") as f:
                f.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(video, *args, **kwargs)

    return extract


@linux_only
def test_worker_killed_by_a_signal_is_reported_and_the_run_goes_on(mf_root: Path, monkeypatch) -> None:
    """Every process that decodes videos/long.mp4 is SIGKILLed: the video is reported as crashed, every other video
    is prepared (also one that a worker finished just before the pool broke) and the annotation files are
    written."""
    long = mf_root / "videos" / "long.mp4"
    _long_video(long, frames=16, size=32)
    train = json.loads((mf_root / "train.json").read_text())
    next(iter(train.values()))["video_paths"].append("videos/long.mp4")
    (mf_root / "train.json").write_text(json.dumps(train))
    kills = mf_root / "kills.txt"
    monkeypatch.setattr("rice.data.prepare.extract_frames", _crash_on("long.mp4", kills))

    report = prepare_movingfashion(mf_root, workers=2, progress=False, console=quiet())
    assert len(kills.read_text().split()) == 2  # in the pool, then again when retried alone
    assert [(v, kind) for v, kind, _ in report.problems] == [("videos/long.mp4", "crashed")]
    assert (report.prepared, report.skipped) == (report.videos - 1, 0)
    assert not (mf_root / "frames" / "long").exists()
    assert "videos/long.mp4\tcrashed" in (mf_root / "prepare_report.tsv").read_text()
    lines = (mf_root / "annotations" / "training_videoinfo_full.txt").read_text().splitlines()
    assert len(lines) == 4  # the four good training videos
    # A second run finds every good video prepared; the crashing one is tried (and reported) again.
    again = prepare_movingfashion(mf_root, workers=2, progress=False, console=quiet())
    assert (again.prepared, again.skipped) == (0, report.videos - 1)
    assert [(v, kind) for v, kind, _ in again.problems] == [("videos/long.mp4", "crashed")]


# The pool pickles the function it runs by name, so the faulty `_prepare_one` is a module-level function; what it
# does comes from this dict, set before the pool forks (the workers inherit it).
_STRAND: dict[str, str] = {}


def _strand_then_crash(args):
    """``_prepare_one`` for a pool in which the worker of the ``good`` video finishes it (its marker written) and
    then hangs before handing the result back, while the worker of the ``crash`` video waits for that marker and
    SIGKILLs itself: the pool breaks with ``good`` done on disk but still in flight. No timing matters: each side
    waits for the other's effect (bounded, so a broken test fails instead of hanging), and the executor terminates
    the hanging worker when it finds the pool broken."""
    from rice.data import prepare

    if args[1] == _STRAND["crash"]:
        marker = Path(args[0]) / "frames" / prepare.video_id_of(_STRAND["good"]) / prepare.DONE
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(_STRAND["kills"], "a") as f:
            f.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    result = _REAL_PREPARE_ONE(args)
    if args[1] == _STRAND["good"] and result[1] == "done":
        time.sleep(120)  # hang with the result in hand (the retry, which finds the marker, passes through)
    return result


@linux_only
def test_a_stranded_job_that_its_worker_finished_counts_as_prepared(mf_root: Path, monkeypatch) -> None:
    """A job in flight when another worker breaks the pool is retried alone; when its worker had finished it, the
    retry finds its frames, and that is a video prepared in this run: neither skipped nor lost."""
    from rice.data.prepare import run_jobs

    good, crash = "videos/good.mp4", "videos/crash.mp4"
    for rel in (good, crash):
        _long_video(mf_root / rel, frames=16, size=32)
    kills = mf_root / "kills.txt"
    monkeypatch.setitem(_STRAND, "good", good)
    monkeypatch.setitem(_STRAND, "crash", crash)
    monkeypatch.setitem(_STRAND, "kills", str(kills))
    monkeypatch.setattr("rice.data.prepare._prepare_one", _strand_then_crash)
    jobs = [(str(mf_root), rel, 1.0, 256, 90, False) for rel in (crash, good)]
    statuses = {rel: status for rel, status, *_ in run_jobs(jobs, workers=2)}
    assert statuses == {crash: "crashed", good: "done"}
    assert len(kills.read_text().split()) == 2


def test_other_settings_redo_the_frames(mf_root: Path) -> None:
    first = prepare_movingfashion(mf_root, workers=0, fps=1.0, progress=False, console=quiet())
    folder = next((mf_root / "frames").iterdir())
    assert first.prepared == first.videos and len(list(folder.glob("*.jpg"))) == 2  # 16 frames at 8 fps = 2 s
    again = prepare_movingfashion(mf_root, workers=0, fps=1.0, progress=False, console=quiet())
    assert again.prepared == 0 and again.skipped == first.videos

    faster = prepare_movingfashion(mf_root, workers=0, fps=4.0, progress=False, console=quiet())
    assert faster.prepared == first.videos and len(list(folder.glob("*.jpg"))) == 8
    assert json.loads((folder / ".done").read_text())["fps"] == 4.0
    smaller = prepare_movingfashion(mf_root, workers=0, fps=4.0, short_side=16, progress=False, console=quiet())
    assert smaller.prepared == first.videos
    sizes = {p.stat().st_size for p in folder.glob("*.jpg")}
    worse = prepare_movingfashion(mf_root, workers=0, fps=4.0, short_side=16, quality=20, progress=False,
                                  console=quiet())
    assert worse.prepared == first.videos and sum(p.stat().st_size for p in folder.glob("*.jpg")) < sum(sizes)


@linux_only
def test_sigkill_of_rice_prepare_takes_its_workers_down(mf_root: Path) -> None:
    train = json.loads((mf_root / "train.json").read_text())
    for i, rec in enumerate(train.values()):  # long videos keep the workers busy when the main process dies
        _long_video(mf_root / rec["video_paths"][0], frames=240, size=64)
        if i == 1:
            break
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "rice", "prepare", "movingfashion", "--root", str(mf_root),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            workers = children_of(proc.pid)
            time.sleep(0.005)
        assert workers, "rice prepare started no worker processes"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if alive(pid)], "pool workers outlived the killed main process"
    finally:
        for pid in workers:  # leave nothing behind if the assertion failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _videoinfo_line(clip: str, part: str, image: str) -> str:
    frames = [f"{part}/{clip}/{clip}-{i:04d}.jpg" for i in range(1, 4)]
    return "\t".join([clip, repr(frames), "[]", image, f"training_image/{image}.jpg", "title", "3", "cat", "1", "asr"])


def test_partial_lpr750k_indexes_the_clips_present_and_exits_zero(tmp_path: Path) -> None:
    from PIL import Image

    from rice.cli import app

    root = tmp_path / "lpr"
    for name in ("query", "gallery", "annotations", "training_image", "training_video_00"):
        (root / name).mkdir(parents=True)
    for name in ("query_tenframes.json", "gallery_main.txt", "test_videoid_to_gtimage_1.json"):
        (root / "annotations" / name).write_text("{}" if name.endswith(".json") else "")
    lines = []
    for i in range(12):
        part = "training_video_00" if i % 3 == 0 else f"training_video_0{1 + i % 3}"  # 4 of 12 downloaded
        clip = f"7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-{i}-{i + 5}"
        lines.append(_videoinfo_line(clip, part, f"img{i}"))
        Image.new("RGB", (40, 40), (i * 20, 0, 0)).save(root / f"training_image/img{i}.jpg")
        if part == "training_video_00":
            (root / part / clip).mkdir()
            for k in range(1, 4):
                Image.new("RGB", (40, 40), (0, k * 50, 0)).save(root / part / clip / f"{clip}-{k:04d}.jpg")
    info = root / "annotations" / "training_videoinfo_641821.txt"
    info.write_text("\n".join(lines) + "\n")

    report = prepare_lpr750k(root, console=quiet())
    assert report.indexed == {info.name: 4} and report.missing_clips == {info.name: 8}
    assert report.missing_parts == ["training_video_01", "training_video_02", "training_video_03",
                                    "training_video_04", "training_video_05", "training_video_06",
                                    "training_video_07"]
    assert "4 of 12 clips present" in report.summary() and report.trainable
    pairs = LPRTrainPairs(root, "train", num_frames=2, seed=0)
    assert len(pairs) == 4 and all(not pairs[i]["skipped"] for i in range(4))
    assert {pairs[i]["video_id"].split("-")[5] for i in range(4)} == {"0", "3", "6", "9"}

    ok = CliRunner().invoke(app, ["prepare", "lpr750k", "--root", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "--parts training_video_01" in ok.output.replace("\n", "")
    strict = CliRunner().invoke(app, ["prepare", "lpr750k", "--root", str(root), "--strict"])
    assert strict.exit_code == 1
