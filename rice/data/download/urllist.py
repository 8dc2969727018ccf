"""``rice download lpr4m --urls FILE...``: fetch the agreement-gated LPR4M URL lists.

Why our own small thread pool instead of img2dataset (the authors' suggestion): img2dataset pulls in a large
dependency tree (pyarrow, pandas, fsspec, webdataset, opencv, ...) and writes numbered shards, while the LPR
loaders need the original file names in per-clip folders. The job is simple: I/O-bound GETs, a resize, a
JPEG write. A bounded ``ThreadPoolExecutor`` (urllib releases the GIL while waiting, Pillow while resizing) does
it in about 150 lines with the layout we want, resume by file existence and a plain failure list.

Layout (relative to ``root``), chosen from the list's file name:

| list | folder | file |
|---|---|---|
| ``training_frame_url_*`` | ``training_video/<clip_id>/`` | ``<clip_id>-NNNN.jpg`` |
| ``test_frame_url_*`` | ``query/<clip_id>/`` | ``<clip_id>-NNNN.jpg`` |
| ``training_image_url_*`` | ``training_image/`` | ``<image_id>.jpg`` |
| ``test_image_url_*`` | ``gallery/<live_id>/`` (URL's parent folder is a live id), else ``gallery/`` | URL name |

``clip_id`` = the first seven ``-`` fields of a frame name (``<live_id UUID>-<start_ms>-<end_ms>``). A line may
also be ``URL<TAB>relative/path.jpg`` to set the destination explicitly.

A list is input from elsewhere, so each line is checked before anything is fetched: only ``http``/``https`` URLs
(a ``file://`` URL would copy local files into the dataset), and a destination that stays under the root (no
absolute path, drive or ``..``; checked again after resolving links already in the root). A line that fails is
reported with its line number and skipped; the others proceed.
"""

from __future__ import annotations

import functools
import io
import os
import re
import socket
import threading
import urllib.error
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .http import _request, make_opener

FAILURES_NAME = "lpr4m_failures.tsv"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_FRAME = re.compile(r"^([0-9a-fA-F-]{36}-\d+-\d+)-\d+\.(jpe?g|png|webp)$", re.I)
_DRIVE = re.compile(r"^[A-Za-z]:")  # a Windows drive (C:x, C:/x); UNC paths start with / once normalised
_MAX_BYTES = 50 << 20  # no real frame or shop image is this large: treat it as a broken URL


@dataclass
class UrlListReport:
    total: int = 0
    fetched: int = 0
    skipped: int = 0  # already on disk
    failed: int = 0
    failures_file: Path | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # "list.txt line N: why" for lines never fetched

    def summary(self) -> str:
        text = f"LPR4M: {self.fetched} fetched, {self.skipped} already on disk, {self.failed} failed of {self.total}"
        if self.rejected:
            text += (f"; {len(self.rejected)} line(s) rejected and skipped (first: {self.rejected[0]}): fix or "
                     "remove them in the list")
        if self.failed:
            top = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
            text += f" ({top}); failures listed in {self.failures_file} (run the command again to retry them)"
        return text


def _split_dir(list_name: str) -> str:
    name = list_name.lower()
    for key, folder in (("training_frame", "training_video"), ("test_frame", "query"),
                        ("training_image", "training_image"), ("test_image", "gallery")):
        if key in name:
            return folder
    return "images"


def destination(url: str, list_name: str) -> str:
    """The path (relative to the root) where the image at ``url`` from list ``list_name`` is stored."""
    path = PurePosixPath(unquote(urlsplit(url).path))
    name = path.name or "unnamed"
    stem = name.rsplit(".", 1)[0]
    folder = _split_dir(list_name)
    frame = _FRAME.match(name)
    if frame:
        return f"{folder}/{frame.group(1)}/{stem}.jpg"
    parent = path.parent.name
    if folder == "gallery" and _UUID.match(parent):
        return f"{folder}/{parent}/{stem}.jpg"
    return f"{folder}/{stem}.jpg"


@functools.lru_cache(maxsize=1 << 16)
def _folder_inside(real_root: str, folder: str) -> str | None:
    """Where ``folder`` (relative) really is when that is outside ``real_root``, else None. Cached: a list holds
    hundreds of millions of lines but about a million folders, and lines of one clip come together."""
    resolved = os.path.realpath(os.path.join(real_root, folder))
    return None if resolved.startswith(real_root.rstrip(os.sep) + os.sep) else resolved


def line_problem(url: str, rel: str, real_root: str) -> str | None:
    """Why the line ``url<TAB>rel`` must not be fetched into the root whose resolved path is ``real_root``
    (None when it is fine). Only the folder is resolved: the file itself is replaced, never followed."""
    # Plain string tests, not urlsplit/pathlib: this runs once per line of lists with 473 M lines.
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        return f"URL scheme {scheme or 'missing'!r} is not http or https"
    norm = rel.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        return f"destination {rel!r} is an absolute path; give a path relative to the root"
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts or not parts or "\x00" in norm:
        return f"destination {rel!r} leaves the root; give a path inside it without '..'"
    outside = _folder_inside(real_root, "/".join(parts[:-1])) if len(parts) > 1 else None
    if outside is not None:
        return f"destination {rel!r} is in {outside}, outside the root"
    return None


def _read_list(path: Path, root: Path, rejected: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """``(url, destination)`` of every good line; a bad line is appended to ``rejected`` with its number."""
    real_root = os.path.realpath(root)
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            url, _, rel = line.partition("\t")
            url, rel = url.strip(), rel.strip() or destination(url.strip(), path.name)
            problem = line_problem(url, rel, real_root)
            if problem is not None:
                if rejected is not None:
                    rejected.append(f"{path.name} line {number}: {problem}")
                continue
            yield url, "/".join(p for p in rel.replace("\\", "/").split("/") if p not in ("", "."))


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Shrink so the shorter side is ``short_side`` (keeping the aspect ratio); never enlarges."""
    w, h = image.size
    scale = short_side / min(w, h)
    if scale >= 1:
        return image
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


def _fetch_one(opener, url: str, dest: Path, short_side: int, quality: int, timeout: float) -> None:
    with opener.open(_request(url), timeout=timeout) as resp:
        data = resp.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise ValueError("too large")
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (short_side, short_side))  # JPEG: decode at reduced scale when much larger
        image = resize_short_side(img.convert("RGB"), short_side)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{threading.get_ident()}.tmp")
    image.save(tmp, "JPEG", quality=quality)
    os.replace(tmp, dest)  # a file on disk is always complete: that is what makes resume a plain existence check


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"http {err.code}"
    if isinstance(err, (socket.timeout, TimeoutError)) or (
        isinstance(err, urllib.error.URLError) and isinstance(err.reason, (socket.timeout, TimeoutError))
    ):
        return "timeout"
    if isinstance(err, (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError)):
        return "not an image"
    if isinstance(err, (urllib.error.URLError, ConnectionError)):
        return "connection error"
    return type(err).__name__


def download_url_lists(
    url_files: Sequence[str | Path],
    root: str | Path,
    *,
    workers: int = 16,
    short_side: int = 256,
    quality: int = 90,
    timeout: float = 30.0,
    progress: bool = True,
    console: Console | None = None,
) -> UrlListReport:
    """Fetch every URL of the LPR4M lists into ``root`` (layout in the module docstring), resized to
    ``short_side`` as JPEG. Files already on disk are skipped; failures (HTTP errors, timeouts, not an image)
    are written to ``<root>/lpr4m_failures.tsv`` (``url<TAB>reason``) and counted, never raised.

    At most ``workers`` requests run at once and at most ``4 * workers`` URLs are queued, so a list of
    hundreds of millions of lines streams through constant memory.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    lists = [Path(p) for p in url_files]
    for path in lists:
        if not path.is_file():
            raise FileNotFoundError(f"URL list {path} not found; the LPR4M lists come with the signed agreement")
    report = UrlListReport(failures_file=root / FAILURES_NAME)
    report.total = sum(1 for p in lists for _ in _read_list(p, root, report.rejected))
    for message in report.rejected[:20]:
        console.print(f"[yellow]{message}; skipped[/yellow]")
    if len(report.rejected) > 20:
        console.print(f"[yellow]... and {len(report.rejected) - 20} more rejected line(s)[/yellow]")
    opener = make_opener()
    lock = threading.Lock()
    failures = open(root / (FAILURES_NAME + ".tmp"), "w", encoding="utf-8")
    bar = Progress(TextColumn("LPR4M images"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress)
    task = bar.add_task("fetch", total=report.total)

    def job(url: str, rel: str) -> None:
        dest = root / rel
        try:
            _fetch_one(opener, url, dest, short_side, quality, timeout)
            with lock:
                report.fetched += 1
        except Exception as err:  # noqa: BLE001 - every failure is recorded, none is fatal
            reason = _reason(err)
            with lock:
                report.failed += 1
                report.reasons[reason] = report.reasons.get(reason, 0) + 1
                failures.write(f"{url}\t{reason}\n")

    with bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: set[Future[None]] = set()
        for path in lists:
            for url, rel in _read_list(path, root):
                if (root / rel).exists():
                    report.skipped += 1
                    bar.advance(task)
                    continue
                if len(pending) >= 4 * max(1, workers):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    bar.advance(task, len(done))
                pending.add(pool.submit(job, url, rel))
        for fut in pending:
            fut.result()
            bar.advance(task)
    failures.close()
    os.replace(root / (FAILURES_NAME + ".tmp"), root / FAILURES_NAME)
    console.print(report.summary())
    return report
