"""``rice prepare``: turn downloaded datasets into the form that trains fast.

MovingFashion: every video is decoded once, frames are kept at ``fps`` (1 per second by default), shrunk to a
short side of ``short_side`` pixels and written as ``frames/<video_stem>/000001.jpg ...`` with a ``.done``
marker written last (docs/internals.md); then the official annotation files are written over the prepared
frames. LPR750K: the extracted layout is checked and each training videoinfo file gets a line-offset index.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .lpr import build_videoinfo_index, videoinfo_files
from .movingfashion import ProductRecord, image_id_of, load_split, video_id_of

DONE = ".done"
REPORT_NAME = "prepare_report.tsv"
QUERY_FRAMES = 10  # frames per query / training line in the official annotation files


@dataclass
class PrepareReport:
    root: Path
    videos: int = 0
    prepared: int = 0  # decoded in this run
    skipped: int = 0  # already finished by an earlier run (``.done``)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (video path, kind, detail)
    report_file: Path | None = None
    annotation_files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"MovingFashion: {self.videos} videos: {self.prepared} prepared now, {self.skipped} already "
                f"prepared, {len(self.problems)} missing or undecodable")
        if self.problems:
            kinds: dict[str, int] = {}
            for _, kind, _ in self.problems:
                kinds[kind] = kinds.get(kind, 0) + 1
            text += f" ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}; listed in {self.report_file})"
        return text


def _target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    if scale >= 1:  # never enlarge
        return width, height
    return max(2, round(width * scale)), max(2, round(height * scale))


def extract_frames(
    video: Path, folder: Path, fps: float = 1.0, short_side: int = 256, quality: int = 90, lossless: bool = False
) -> int:
    """Decode ``video`` once and write one JPEG per ``1/fps`` seconds into ``folder``; returns the count.

    ``lossless=True`` writes full-size PNG frames instead (the public code's input), ignoring ``short_side``.

    A frame is kept when its timestamp reaches the next tick (0, 1/fps, 2/fps, ...), the first frame always,
    like ffmpeg's ``fps`` filter. Only kept frames are converted and scaled (by swscale, in C).
    """
    import av  # PyAV: decoding every frame once in order is all we need (no seeking)

    folder.mkdir(parents=True, exist_ok=True)
    step = 1.0 / fps
    written = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        next_tick = 0.0
        for position, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else position / rate
            if written and t + 1e-6 < next_tick:
                continue
            while next_tick <= t + 1e-6:
                next_tick += step
            written += 1
            if lossless:
                frame.to_image().save(folder / f"{written:06d}.png", "PNG", compress_level=1)
                continue
            width, height = _target_size(frame.width, frame.height, short_side)
            image = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_image()
            image.save(folder / f"{written:06d}.jpg", "JPEG", quality=quality)
    return written


# Settings that markers written before they were recorded had.
_MARKER_DEFAULTS = {"quality": 90, "lossless": False}


def _prepared_frames(args: tuple[str, str, float, int, int, bool]) -> int | None:
    """The frame count of a video whose frames exist with these settings (its ``.done`` marker), else None."""
    root_s, rel, fps, short_side, quality, lossless = args
    done = Path(root_s) / "frames" / video_id_of(rel) / DONE
    settings = {"fps": fps, "short_side": short_side, "quality": quality, "lossless": lossless}
    if not done.is_file():
        return None
    try:
        marker = json.loads(done.read_text())
        # Frames made with other settings are redone (a marker from before quality was recorded counts as 90).
        if all(marker.get(k, _MARKER_DEFAULTS.get(k)) == v for k, v in settings.items()):
            return int(marker.get("frames", 0))
    except (ValueError, OSError, AttributeError, TypeError):
        pass  # an unreadable marker: redo the video
    return None


def _prepare_one(args: tuple[str, str, float, int, int, bool]) -> tuple[str, str, int, str]:
    """Worker: (video path, status, frames, detail); status is done / skipped / missing / empty / undecodable
    (``crashed`` comes from :func:`run_jobs` when the worker process itself dies)."""
    root_s, rel, fps, short_side, quality, lossless = args
    root = Path(root_s)
    video = root / rel
    folder = root / "frames" / video_id_of(rel)
    done = folder / DONE
    settings = {"fps": fps, "short_side": short_side, "quality": quality, "lossless": lossless}
    prepared = _prepared_frames(args)
    if prepared is not None:
        return rel, "skipped", prepared, ""
    if not video.is_file():
        return rel, "missing", 0, "file not in the archive"
    if video.stat().st_size == 0:
        return rel, "empty", 0, "0 bytes"
    if folder.exists():  # a partial folder from a killed run
        shutil.rmtree(folder)
    try:
        count = extract_frames(video, folder, fps, short_side, quality, lossless)
        if count == 0:
            raise ValueError("no decodable frames")
    except Exception as err:  # noqa: BLE001 - any decoder failure marks the video, never the run
        shutil.rmtree(folder, ignore_errors=True)
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return rel, "undecodable", 0, detail
    marker = {"frames": count, **settings, "source_bytes": video.stat().st_size}
    tmp = folder / (DONE + ".tmp")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, done)  # written last: a folder without it is redone on the next run
    return rel, "done", count, ""


# ------------------------------------------------------------------------------------------- the decoding pool
def _exit_with_parent(parent: int) -> None:
    """Worker initializer: die with the main process. A SIGKILLed ``rice prepare`` cannot shut its pool down, and
    fork()ed workers would keep decoding (each holds the queue's write end too, so it never sees EOF)."""
    if sys.platform.startswith("linux"):
        try:  # the kernel sends SIGKILL when the parent exits
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:  # everywhere else (and as a second line): notice the re-parenting
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="rice-parent-watch", daemon=True).start()


def _new_pool(workers: int) -> ProcessPoolExecutor:
    # fork is cheap and safe here: the workers only run PyAV and Pillow, never torch.
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                               initargs=(os.getpid(),))


def _run_alone(job: tuple[str, str, float, int, int]) -> tuple[str, str, int, str]:
    """Retry one video in a pool of its own: a second crash means the video crashes the decoder."""
    pool = _new_pool(1)
    try:
        return pool.submit(_prepare_one, job).result()
    except BrokenProcessPool:
        return (job[1], "crashed", 0, "the decoding process died on this video (killed by a signal or crashed) "
                "twice; check the file with ffprobe or re-download it")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_jobs(jobs: Sequence[tuple[str, str, float, int, int]], workers: int) -> Iterator[tuple[str, str, int, str]]:
    """Results of :func:`_prepare_one` over ``jobs`` in ``workers`` processes, surviving a worker's death.

    When a worker dies (a decoder segfault, the OOM killer, a signal), ``ProcessPoolExecutor`` fails every job in
    flight with ``BrokenProcessPool`` without saying which one killed it. Those jobs are retried one by one in a
    pool of their own (a job that kills that pool too is reported as ``crashed``), then a new pool takes the rest.
    """
    pending = deque(jobs)
    pool = _new_pool(workers)
    in_flight: dict[Future, tuple[str, str, float, int, int]] = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < 2 * workers:  # a short queue: a crash strands few jobs
                job = pending.popleft()
                in_flight[pool.submit(_prepare_one, job)] = job
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if not any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                for future in done:
                    in_flight.pop(future)
                    yield future.result()
                continue
            stranded = []
            for future, job in list(in_flight.items()):
                if future.done() and future.exception() is None:
                    yield future.result()
                else:
                    stranded.append(job)
            in_flight.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            for job in stranded:
                # Only videos still to do reach the pool (prepare_movingfashion answers the others itself), so a
                # stranded job found prepared on its retry was prepared in this run, by the worker that finished
                # it just before another one broke the pool: it is done, not skipped.
                rel, status, count, detail = _run_alone(job)
                yield rel, "done" if status == "skipped" else status, count, detail
            pool = _new_pool(workers)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _select_ten(paths: list[str]) -> list[str]:
    """The official rule: n > 10 frames -> sorted indices floor(i * n / 10), i = 0..9; else all of them."""
    n = len(paths)
    if n <= QUERY_FRAMES:
        return paths
    return [paths[(i * n) // QUERY_FRAMES] for i in range(QUERY_FRAMES)]


def _frame_paths(root: Path, rel: str) -> list[str] | None:
    folder = root / "frames" / video_id_of(rel)
    if not (folder / DONE).is_file():
        return None
    return [f"frames/{folder.name}/{p.name}" for p in sorted(folder.iterdir()) if p.suffix in (".jpg", ".png")]


def write_annotations(root: str | Path, train: Sequence[ProductRecord], test: Sequence[ProductRecord]) -> list[Path]:
    """Write the official annotation files over the prepared frames (shared/docs/datasets.md, minus two bugs).

    Differences from the official ``prepare_movingfashion.py``: frame paths point at ``frames/<stem>/NNNNNN.jpg``
    (the folder the loaders really read), and in ``video_to_gt.json`` / ``query_tenframes.json`` the ``gt`` field
    is a **list** of every product image id that lists the video (the official file keeps only the last one
    for the 13 shared test videos).
    """
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    frames_of: dict[str, list[str] | None] = {}

    def frames(rel: str) -> list[str] | None:
        if rel not in frames_of:
            frames_of[rel] = _frame_paths(root, rel)
        return frames_of[rel]

    index_lines, gallery_lines = [], []
    video_to_gt: dict[str, dict[str, Any]] = {}
    queries: dict[str, dict[str, Any]] = {}
    for rec in test:
        gallery_lines.append(rec.img_path)
        for rel in rec.video_paths:
            cid = video_id_of(rel)
            index_lines.append(f"{cid}\t{rel}\t{rec.img_path}\t{rec.source}")
            paths = frames(rel)
            if not paths:
                continue
            entry = video_to_gt.setdefault(cid, {"gt": [], "source": rec.source})
            if image_id_of(rec.img_path) not in entry["gt"]:
                entry["gt"].append(image_id_of(rec.img_path))
            queries[cid] = {"frames": _select_ten(paths), "gt": entry["gt"]}
    train_lines = []
    for rec in train:
        for rel in rec.video_paths:
            paths = frames(rel)
            if paths:
                train_lines.append(f"{video_id_of(rel)}\t{json.dumps(_select_ten(paths))}\t"
                                   f"{image_id_of(rec.img_path)}\t{rec.img_path}\t{rec.source}")
    outputs = {
        "videoid_videopath_imagepath_srcid.txt": "".join(f"{line}\n" for line in index_lines),
        "gallery_full.txt": "".join(f"{line}\n" for line in gallery_lines),
        "video_to_gt.json": json.dumps(video_to_gt, indent=1),
        "query_tenframes.json": json.dumps(queries, indent=1),
        "training_videoinfo_full.txt": "".join(f"{line}\n" for line in train_lines),
    }
    written = []
    for name, text in outputs.items():
        tmp = ann / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, ann / name)
        written.append(ann / name)
    return written


def prepare_movingfashion(
    root: str | Path,
    *,
    workers: int | None = None,
    fps: float = 1.0,
    short_side: int = 256,
    quality: int = 90,
    progress: bool = True,
    console: Console | None = None,
    lossless: bool = False,
) -> PrepareReport:
    """Extract JPEG frames of every MovingFashion video and write the annotation files.

    Idempotent and resumable: a video whose ``frames/<stem>/.done`` records the same fps, short side and quality
    is skipped; a folder without the marker (a killed run) or made with other settings is redone. A video that
    kills its decoding process is reported as ``crashed`` and the run goes on. Missing, empty, undecodable and
    crashed videos are listed in
    ``<root>/prepare_report.tsv`` (``video<TAB>kind<TAB>detail``) and counted in the summary; they never stop
    the run.

    Args:
        workers: processes decoding videos in parallel (default: the CPU count; 0 or 1 = in this process).
        fps: frames kept per second of video.
        short_side: frames are shrunk (never enlarged) to this shorter side.
        quality: JPEG quality.
        lossless: full-size PNG frames (the public code's input; many times the disk) instead of JPEGs.
    """
    root = Path(root).expanduser()
    if fps <= 0 or short_side < 16:
        raise ValueError(f"fps={fps} must be > 0 and short_side={short_side} must be >= 16")
    console = console or Console(stderr=True)
    train, test = load_split(root, "train"), load_split(root, "test")
    videos = list(dict.fromkeys(v for rec in (*train, *test) for v in rec.video_paths))
    report = PrepareReport(root, videos=len(videos), report_file=root / REPORT_NAME)
    jobs = [(str(root), rel, float(fps), int(short_side), int(quality), bool(lossless)) for rel in videos]
    workers = os.cpu_count() or 1 if workers is None else workers
    bar = Progress(TextColumn("preparing frames"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress)
    already = {job[1]: _prepared_frames(job) for job in jobs}
    todo = [job for job in jobs if already[job[1]] is None]
    skipped = [(job[1], "skipped", already[job[1]], "") for job in jobs if already[job[1]] is not None]
    results = itertools.chain(skipped, run_jobs(todo, workers) if workers > 1 else map(_prepare_one, todo))
    with bar:
        task = bar.add_task("videos", total=len(jobs))
        for rel, status, _count, detail in results:
            if status == "done":
                report.prepared += 1
            elif status == "skipped":
                report.skipped += 1
            else:
                report.problems.append((rel, status, detail))
                if status == "crashed":
                    shutil.rmtree(root / "frames" / video_id_of(rel), ignore_errors=True)
            bar.advance(task)
    lines = ["video\tkind\tdetail\n"] + [f"{rel}\t{kind}\t{detail}\n" for rel, kind, detail in report.problems]
    report.report_file.write_text("".join(lines))  # type: ignore[union-attr]
    report.annotation_files = write_annotations(root, train, test)
    console.print(report.summary())
    return report


# --------------------------------------------------------------------------------------------------------------
# LPR750K

LPR750K_DIRS: tuple[str, ...] = ("query", "gallery", "annotations", "training_image",
                                 *(f"training_video_{i:02d}" for i in range(8)))
LPR750K_ANNOTATIONS: tuple[str, ...] = ("query_tenframes.json", "gallery_main.txt")


@dataclass
class Lpr750kReport:
    root: Path
    missing: list[str] = field(default_factory=list)
    indexed: dict[str, int] = field(default_factory=dict)  # videoinfo file -> usable lines (clips on disk)
    bad_lines: dict[str, int] = field(default_factory=dict)
    missing_clips: dict[str, int] = field(default_factory=dict)  # videoinfo file -> lines whose clip is absent

    @property
    def missing_parts(self) -> list[str]:
        """The download parts (``rice download lpr750k --parts``) that the missing entries belong to."""
        parts = {m.split("/")[0] for m in self.missing if not m.startswith("annotations/")}
        if any(m.startswith("annotations") for m in self.missing):
            parts.add("annotations")
        return sorted(parts)

    @property
    def trainable(self) -> bool:
        """Training can run on what is here: annotations, shop images and at least one indexed clip."""
        return bool(self.indexed) and any(self.indexed.values()) and "training_image/" not in self.missing

    def summary(self) -> str:
        lines = [f"LPR750K at {self.root}: " + ("layout complete" if not self.missing else
                                                f"{len(self.missing)} missing: {', '.join(self.missing)}")]
        for name, count in self.indexed.items():
            bad, absent = self.bad_lines.get(name, 0), self.missing_clips.get(name, 0)
            line = f"  indexed {name}: {count} of {count + absent} clips present"
            line += f" ({bad} malformed lines skipped)" if bad else ""
            lines.append(line)
        if self.missing:
            lines.append(f"fetch the rest with: rice download lpr750k --root {self.root} "
                         f"--parts {','.join(self.missing_parts)}")
            if self.trainable:
                lines.append("training can run on the clips that are present; rerun `rice prepare lpr750k` after "
                             "fetching more parts")
        return "\n".join(lines)


def prepare_lpr750k(root: str | Path, *, console: Console | None = None) -> Lpr750kReport:
    """Check the extracted LPR750K layout and index every ``annotations/training_videoinfo_*.txt``.

    The index (``<file>.index.npy`` with the byte offset of every well-formed line whose clip folder is on disk,
    plus a ``.index.json`` stamp) lets `LPRTrainPairs` start in milliseconds instead of re-parsing hundreds of
    thousands of lines, and lets a partial download (some ``training_video_0X`` parts) train on what is there.
    """
    root = Path(root).expanduser()
    console = console or Console(stderr=True)
    report = Lpr750kReport(root)
    for name in LPR750K_DIRS:
        if not (root / name).is_dir():
            report.missing.append(f"{name}/")
    for name in LPR750K_ANNOTATIONS:
        if not (root / "annotations" / name).is_file():
            report.missing.append(f"annotations/{name}")
    if not list((root / "annotations").glob("test_videoid_to_gtimage_*.json")):
        report.missing.append("annotations/test_videoid_to_gtimage_*.json")
    files = videoinfo_files(root)
    if not files:
        report.missing.append("annotations/training_videoinfo_*.txt")
    for path in files:
        index = build_videoinfo_index(path, root)
        report.indexed[path.name] = index.count
        report.bad_lines[path.name] = index.bad_lines
        report.missing_clips[path.name] = index.missing_clips
    console.print(report.summary())
    return report
