"""``rice download movingfashion`` and ``rice download lpr750k``: fetch, verify, extract, record.

Each remote file goes through the same steps (:func:`sync_files`):
1. skip it when the manifest says it was fetched and extracted and the archive (if kept) is unchanged;
2. otherwise fetch it through ``<name>.part`` (resuming), check size and sha256 (the known one, or the one the
   manifest recorded at the first complete download), rename, record;
3. extract it safely into the root and record that, then delete the archive unless ``keep_archives``.
A failure in one file is recorded and the next file proceeds; the report names the failures and the
command that retries exactly them. An archive that does not extract (truncated, corrupt, unsafe) is deleted with
its manifest record, so the next run fetches it again; one that fails for a full disk is kept for the rerun.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .archive import STAGING_PREFIX, UnsafeArchiveError, safe_extract
from .http import DownloadError, RetryPolicy, checksum_matches, fetch_file, make_opener, probe, sha256_file
from .manifest import Manifest

GB = 1_000_000_000
MOVINGFASHION_URL = "https://bit.ly/4bTZGeS"
# Only the first and last hex digits of the archive's sha256 are public (datasets.md).
MOVINGFASHION_SHA256 = "20ae89a6*f5f4"
MOVINGFASHION_ARCHIVE = "movingfashion_archive"  # tar or zip; the format is detected on extraction
LPR750K_BASE_URL = "https://csip.fzu.edu.cn/lpr4m/"
LPR750K_PARTS: tuple[str, ...] = (
    "query", "gallery", "annotations", "training_image", *(f"training_video_{i:02d}" for i in range(8)),
)

Status = Literal["fetched", "skipped", "failed", "would-fetch", "present"]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset source. ``sha256`` may be partial (``"prefix*suffix"``)."""

    name: str  # file name on disk and manifest key
    url: str
    approx_size: int | None = None  # only for the free-disk check when the server gives no length
    sha256: str | None = None
    extract: bool = True
    part: str = ""  # the user-facing part name for the retry command


@dataclass
class FileResult:
    name: str
    status: Status
    detail: str = ""
    size: int | None = None
    part: str = ""


@dataclass
class DownloadReport:
    dataset: str
    root: Path
    results: list[FileResult] = field(default_factory=list)
    retry_command: str | None = None
    dry_run: bool = False

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def fetched(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "fetched"]

    @property
    def nothing_to_do(self) -> bool:
        return all(r.status in ("skipped", "present") for r in self.results)

    def summary(self) -> str:
        if self.dry_run:
            todo = [r for r in self.results if r.status == "would-fetch"]
            known = sum(r.size or 0 for r in todo)
            return (f"dry run: {len(todo)} of {len(self.results)} file(s) of {self.dataset} would be fetched "
                    f"({_fmt_size(known)} that the server reports) into {self.root}")
        if self.nothing_to_do:
            return f"nothing to do: all {len(self.results)} file(s) of {self.dataset} are already in {self.root}"
        lines = [f"{self.dataset}: {len(self.fetched)} fetched, "
                 f"{sum(r.status == 'skipped' for r in self.results)} already present, {len(self.failed)} failed"]
        for r in self.failed:
            lines.append(f"  FAILED {r.name}: {r.detail}")
        if self.failed and self.retry_command:
            lines.append(f"retry with: {self.retry_command}")
        return "\n".join(lines)


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


class _Bars:
    """Rich progress: one bar per file plus a total, with rate and ETA (a no-op when disabled)."""

    def __init__(self, enabled: bool, console: Console, total: int | None) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
        )
        self.total_task: TaskID = self.progress.add_task("total", total=total)

    def __enter__(self) -> _Bars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def file(self, name: str, size: int | None) -> tuple[Callable[[int], None], Callable[[], None]]:
        task = self.progress.add_task(name, total=size)
        state = {"done": 0}

        def advance(n: int) -> None:
            state["done"] += n
            self.progress.advance(task, n)
            self.progress.advance(self.total_task, n)

        def restart() -> None:  # a retry starts the file's bar over (the .part may have been dropped)
            self.progress.advance(self.total_task, -state["done"])
            self.progress.reset(task, total=size)
            state["done"] = 0

        return advance, restart


def _trusted_sha256(f: RemoteFile, rec: dict | None) -> str | None:
    """The digest a download must match: the one recorded at the first download once that file was extracted
    (a truncated archive would otherwise become the reference and fail every rerun), else the published one."""
    rec = rec or {}
    if rec.get("sha256") and (rec.get("extracted") or not f.extract):
        return rec["sha256"]
    return f.sha256


def _verify_existing(f: RemoteFile, path: Path, manifest: Manifest, verify: bool) -> str | None:
    """None when the complete file at ``path`` is good; otherwise why it must be fetched again."""
    rec = manifest.get(f.name)
    if rec and rec.get("sha256") and manifest.unchanged(f.name, path) and not verify:
        return None  # our own complete download, untouched since (it may still await extraction)
    reference = _trusted_sha256(f, rec)
    if reference is None:
        return None
    actual = sha256_file(path)
    if checksum_matches(actual, reference):
        st = path.stat()
        manifest.update(f.name, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=actual)
        return None
    return f"sha256 {actual[:12]}... does not match the recorded {reference[:12]}...: corrupted"


_UNREACHABLE = -1  # the probe failed: the fetch will fail too, so the file does not count for disk space


def _plan_size(f: RemoteFile, opener, policy: RetryPolicy) -> int | None:
    try:
        return probe(f.url, timeout=policy.timeout, opener=opener)
    except DownloadError:
        return _UNREACHABLE


def sync_files(
    files: Sequence[RemoteFile],
    root: str | Path,
    *,
    dataset: str,
    retry_command: Callable[[list[str]], str],
    policy: RetryPolicy = RetryPolicy(),
    dry_run: bool = False,
    keep_archives: bool = False,
    verify: bool = False,
    check_space: bool = True,
    progress: bool = True,
    console: Console | None = None,
    after_extract: Callable[[Path], None] | None = None,
) -> DownloadReport:
    """Bring every file of ``files`` into ``root`` (see the module docstring); never raises for one file.

    Raises:
        OSError: the free space under ``root`` is smaller than what the remaining files need.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    manifest = Manifest(root)
    opener = make_opener()
    report = DownloadReport(dataset, root, dry_run=dry_run)

    # A staging folder left by a killed extraction holds a partial copy of an archive: drop it (the archive's
    # manifest entry still says "not extracted", so it is extracted again below).
    for stale in root.glob(STAGING_PREFIX + "*"):
        console.print(f"[yellow]removing {stale.name}, left by an interrupted extraction[/yellow]")
        shutil.rmtree(stale, ignore_errors=True)

    # 1. Decide what is already done (cheap checks only; archives are verified just before use).
    todo: list[RemoteFile] = []
    for f in files:
        rec = manifest.get(f.name) or {}
        archive = root / f.name
        done = rec.get("extracted") if f.extract else rec.get("sha256")
        if done and (not archive.exists() or (manifest.unchanged(f.name, archive) and not verify)):
            result = FileResult(f.name, "skipped", "already fetched and verified", rec.get("size"), f.part)
            report.results.append(result)
        else:
            todo.append(f)

    # 2. Ask the server for sizes (dry run and free-disk check).
    probed = {f.name: _plan_size(f, opener, policy) for f in todo} if (todo and (dry_run or check_space)) else {}
    unreachable = {name for name, size in probed.items() if size == _UNREACHABLE}
    sizes = {name: (None if name in unreachable else size) for name, size in probed.items()}
    if dry_run:
        for f in todo:
            part = root / (f.name + ".part")
            have = part.stat().st_size if part.exists() else 0
            said = "unreachable now" if f.name in unreachable else _fmt_size(sizes.get(f.name))
            what = f"{f.url} ({said})" + (f", resume from {_fmt_size(have)}" if have else "")
            console.print(f"would fetch {f.name}: {what}")
            report.results.append(FileResult(f.name, "would-fetch", what, sizes.get(f.name), f.part))
        console.print(report.summary())
        return report
    if check_space and todo:
        _check_free_space(root, [f for f in todo if f.name not in unreachable], sizes, keep_archives)

    # 3. Fetch, verify, extract each remaining file; one failure never stops the others.
    total = sum(sizes.get(f.name) or 0 for f in todo) or None
    with _Bars(progress, console, total) as bars:
        for f in todo:
            report.results.append(_sync_one(f, root, manifest, opener, policy, bars, sizes.get(f.name),
                                            keep_archives, verify, console, after_extract))
    if report.failed:
        report.retry_command = retry_command([r.part or r.name for r in report.failed])
    console.print(report.summary())
    return report


def _check_free_space(root: Path, todo: list[RemoteFile], sizes: dict[str, int | None], keep: bool) -> None:
    download = extracted = largest = 0
    for f in todo:
        size = sizes.get(f.name) or f.approx_size or 0
        part = root / (f.name + ".part")
        remaining = max(0, size - (part.stat().st_size if part.exists() else 0))
        download += remaining
        largest = max(largest, remaining)
        extracted += size if f.extract else 0
    # Archives are deleted after extraction unless kept, so the peak is the data plus the largest archive.
    need = download + extracted if keep else extracted + largest
    free = shutil.disk_usage(root).free
    if need > free:
        raise OSError(
            f"not enough free space under {root}: the remaining files need about {_fmt_size(need)}, "
            f"{_fmt_size(free)} is free. Free some space, choose another --root, or fetch fewer --parts "
            "(--no-space-check skips this check)."
        )


def _extract_or_forget(f: RemoteFile, archive: Path, root: Path, manifest: Manifest) -> int:
    """Extract ``archive``; when it is not a sound archive, delete it and its record so the next run fetches it
    again. A full disk keeps both: the archive is fine and the rerun extracts it without a new download."""
    try:
        return safe_extract(archive, root)
    except ValueError:  # truncated, corrupt or unsafe (UnsafeArchiveError is a ValueError)
        archive.unlink(missing_ok=True)
        manifest.forget(f.name)
        raise


def _sync_one(f: RemoteFile, root: Path, manifest: Manifest, opener, policy: RetryPolicy, bars: _Bars,
              size: int | None, keep: bool, verify: bool, console: Console,
              after_extract: Callable[[Path], None] | None) -> FileResult:
    archive = root / f.name
    rec = manifest.get(f.name) or {}
    try:
        fetched = False
        if archive.exists() and not rec and size is not None and archive.stat().st_size < size:
            # A partial file from another tool (the official script runs `wget -c`): resume it.
            archive.rename(root / (f.name + ".part"))
        problem = _verify_existing(f, archive, manifest, verify) if archive.exists() else "missing"
        if problem is not None:
            if archive.exists():
                console.print(f"[yellow]{f.name}: {problem}; fetching it again[/yellow]")
                archive.unlink()
            advance, restart = bars.file(f.name, size)
            # The manifest's sha256 (first complete download) wins over the published one once recorded.
            result = fetch_file(f.url, archive, sha256=_trusted_sha256(f, rec), expected_size=None,
                                policy=policy, opener=opener, on_progress=advance, on_restart=restart)
            st = archive.stat()
            manifest.update(f.name, url=f.url, size=result.size, sha256=result.sha256, mtime_ns=st.st_mtime_ns,
                            extracted=False, fetched_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
            fetched = True
        if f.extract:
            members = _extract_or_forget(f, archive, root, manifest)
            if after_extract is not None:
                after_extract(root)
            manifest.update(f.name, extracted=True, members=members)
            if not keep:
                archive.unlink()
        final = manifest.get(f.name) or {}
        what = "fetched" + (" and extracted" if f.extract else "")
        console.print(f"[green]{f.name}: {what if fetched else 'verified' + (' and extracted' if f.extract else '')}"
                      f" ({_fmt_size(final.get('size'))}, sha256 {str(final.get('sha256'))[:12]}...)[/green]")
        return FileResult(f.name, "fetched", what, final.get("size"), f.part)
    except (DownloadError, UnsafeArchiveError, ValueError, OSError) as err:
        console.print(f"[red]{f.name}: {err}[/red]")
        return FileResult(f.name, "failed", str(err), size, f.part)


# --------------------------------------------------------------------------------------------------------------
# The two public datasets


def movingfashion_files(url: str | None = None, sha256: str | None = None) -> list[RemoteFile]:
    """The MovingFashion archive. With ``url`` (a mirror) the published checksum is not assumed: pass ``sha256``."""
    known = sha256 if sha256 is not None else (MOVINGFASHION_SHA256 if url is None else None)
    return [RemoteFile(MOVINGFASHION_ARCHIVE, url or MOVINGFASHION_URL, approx_size=26 * GB, sha256=known or None)]


def _flatten_single_folder(root: Path) -> None:
    """The archive may wrap everything in one top folder (``MovingFashion/``): move its entries up to ``root``."""
    if (root / "train.json").exists():
        return
    candidates = [p for p in root.iterdir() if p.is_dir() and (p / "train.json").exists()]
    if len(candidates) != 1:
        return
    inner = candidates[0]
    for entry in inner.iterdir():
        target = root / entry.name
        if target.exists():
            if target.is_dir() and entry.is_dir():  # merge (e.g. a partly extracted earlier run)
                for sub in entry.iterdir():
                    if not (target / sub.name).exists():
                        sub.rename(target / sub.name)
                continue
            continue
        entry.rename(target)
    shutil.rmtree(inner, ignore_errors=True)


def download_movingfashion(
    root: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    dry_run: bool = False,
    keep_archives: bool = False,
    verify: bool = False,
    check_space: bool = True,
    progress: bool = True,
    console: Console | None = None,
) -> DownloadReport:
    """Fetch and extract the MovingFashion archive (about 24-26 GB) into ``root``.

    Args:
        url: a mirror of the archive (default: the SEAM Match-RCNN link ``https://bit.ly/4bTZGeS``).
        sha256: expected sha256 (full hex or ``"prefix*suffix"``); default: the published partial digest for
            the default URL, none for a mirror.
    """
    root = Path(root).expanduser()

    def retry(_: list[str]) -> str:
        extra = f" --url {url}" if url else ""
        return f"rice download movingfashion --root {root}{extra}"

    return sync_files(movingfashion_files(url, sha256), root, dataset="MovingFashion", retry_command=retry,
                      policy=policy, dry_run=dry_run, keep_archives=keep_archives, verify=verify,
                      check_space=check_space, progress=progress, console=console,
                      after_extract=_flatten_single_folder)


def lpr750k_files(parts: Sequence[str] | None = None, base_url: str | None = None) -> list[RemoteFile]:
    """The LPR750K tar files for ``parts`` (default: all 12), served from ``base_url`` (a mirror) if given."""
    chosen = list(parts) if parts else list(LPR750K_PARTS)
    unknown = [p for p in chosen if p not in LPR750K_PARTS]
    if unknown:
        raise ValueError(f"unknown LPR750K part(s) {unknown}; choose from {list(LPR750K_PARTS)}")
    base = (base_url or LPR750K_BASE_URL).rstrip("/") + "/"
    # No per-file sizes are published: the free-disk check falls back to an even share of the ~370 GB.
    return [RemoteFile(f"{p}.tar", base + f"{p}.tar", approx_size=370 * GB // 12, part=p) for p in chosen]


def download_lpr750k(
    root: str | Path,
    *,
    parts: Sequence[str] | None = None,
    base_url: str | None = None,
    policy: RetryPolicy = RetryPolicy(),
    dry_run: bool = False,
    keep_archives: bool = False,
    verify: bool = False,
    check_space: bool = True,
    progress: bool = True,
    console: Console | None = None,
) -> DownloadReport:
    """Fetch and extract the LPR750K tar files (about 370 GB in 12 parts) into ``root``.

    Args:
        parts: a subset of :data:`LPR750K_PARTS` (e.g. ``["query", "gallery", "annotations"]`` for testing).
        base_url: a mirror serving the same file names (default ``https://csip.fzu.edu.cn/lpr4m/``).
    """
    root = Path(root).expanduser()
    files = lpr750k_files(parts, base_url)

    def retry(failed: list[str]) -> str:
        extra = f" --base-url {base_url}" if base_url else ""
        return f"rice download lpr750k --root {root} --parts {','.join(failed)}{extra}"

    return sync_files(files, root, dataset="LPR750K", retry_command=retry, policy=policy, dry_run=dry_run,
                      keep_archives=keep_archives, verify=verify, check_space=check_space, progress=progress,
                      console=console)
