"""Safe archive extraction: refuse absolute paths, ``..`` components and links that leave the root.

Python's ``tarfile`` ``filter="data"`` already blocks these, but its errors arrive one at a time and mid-way
through an extraction. We check every member first, so a hostile or corrupt archive extracts *nothing* and the
error lists all offending members; the data filter then runs as a second line of defence.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath


class UnsafeArchiveError(ValueError):
    """The archive holds members that would be written outside the extraction root (or device files)."""


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _path_problem(name: str, root: str) -> str | None:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "'..' in path"
    if not _inside(root, os.path.normpath(os.path.join(root, norm))):
        return "path leaves the extraction root"
    return None


def tar_problems(archive: tarfile.TarFile, root: str | Path) -> list[str]:
    """Every unsafe member of ``archive`` as ``"name: reason"`` (empty when extraction into ``root`` is safe)."""
    root_s = os.path.realpath(root)
    problems = []
    for member in archive.getmembers():
        reason = _path_problem(member.name, root_s)
        if reason is None and (member.issym() or member.islnk()):
            link = member.linkname.replace("\\", "/")
            if link.startswith("/") or PureWindowsPath(member.linkname).drive:
                reason = f"link to absolute path {member.linkname!r}"
            else:
                # A symlink resolves against its own folder, a hard link against the archive root.
                base = posixpath.dirname(member.name) if member.issym() else ""
                target = os.path.normpath(os.path.join(root_s, base, link))
                if not _inside(root_s, target):
                    reason = f"link {member.linkname!r} points outside the extraction root"
        if reason is None and (member.ischr() or member.isblk() or member.isfifo()):
            reason = "device or fifo member"
        if reason is not None:
            problems.append(f"{member.name}: {reason}")
    return problems


def safe_extract(archive_path: str | Path, root: str | Path) -> int:
    """Extract a tar (any compression) or zip archive into ``root``; returns the number of members.

    Raises:
        UnsafeArchiveError: some member is absolute, contains ``..``, or links outside ``root``; nothing
            is extracted.
        ValueError: the file is neither a tar nor a zip archive (e.g. a truncated download).
    """
    archive_path, root = Path(archive_path), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if tarfile.is_tarfile(archive_path):
        with tarfile.open(archive_path) as tar:
            problems = tar_problems(tar, root)
            if problems:
                raise _unsafe(archive_path, problems)
            try:
                tar.extractall(root, filter="data")
            except tarfile.FilterError as err:  # pragma: no cover - our checks catch these first
                raise _unsafe(archive_path, [str(err)]) from None
            return len(tar.getmembers())
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            root_s = os.path.realpath(root)
            problems = [f"{n}: {r}" for n in zf.namelist() if (r := _path_problem(n, root_s))]
            # zip symlinks are stored as regular files by zipfile.extract, so only paths need checking
            if problems:
                raise _unsafe(archive_path, problems)
            zf.extractall(root)
            return len(zf.namelist())
    raise ValueError(f"{archive_path} is neither a tar nor a zip archive; the download may be truncated or an "
                     "HTML error page: delete it and run the download again")


def _unsafe(path: Path, problems: list[str]) -> UnsafeArchiveError:
    shown = "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else "")
    return UnsafeArchiveError(
        f"refusing to extract {path}: {len(problems)} unsafe member(s): {shown}. Nothing was extracted; the "
        "archive is corrupt or hostile: check its source."
    )
