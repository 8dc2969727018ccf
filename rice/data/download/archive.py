"""Safe archive extraction: only plain files and folders, each landing inside the root, all or nothing.

The dataset archives (MovingFashion, LPR750K) hold nothing but files and folders, so every other member type
(symlink, hard link, device, fifo) is refused outright instead of being judged by where it points: judging link
targets is where ``tarfile``'s own ``filter="data"`` was bypassed (CVE-2025-4517, fixed only in Python 3.11.13 /
3.12.11). We do not rely on that filter, so the same rules hold on every supported Python.

The order of work makes "nothing was extracted" true when anything goes wrong:
1. read every member header and refuse the archive if any member is unsafe (the error lists them all);
2. write the members ourselves into a fresh staging folder inside the root (``O_EXCL``, never following a link,
   each path checked against the real staging folder);
3. only when the whole archive was read and written, check every final path against the real root and move
   the staged tree into place; on any error the staging folder is deleted and the root is as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PureWindowsPath
from typing import IO

STAGING_PREFIX = ".rice-extract-"
_COPY_CHUNK = 1 << 20
# What a truncated or damaged tar / tar.gz / zip raises while being read.
_CORRUPT_ERRORS = (tarfile.TarError, EOFError, zlib.error, zipfile.BadZipFile, UnicodeDecodeError)


class UnsafeArchiveError(ValueError):
    """The archive holds members that are not plain files or folders, or that would land outside the root."""


class _Member:
    """One member to write: its checked relative path, whether it is a folder, and how to read its bytes."""

    def __init__(self, rel: str, is_dir: bool, mtime: float | None, source: object) -> None:
        self.rel, self.is_dir, self.mtime, self.source = rel, is_dir, mtime, source


def _name_problem(name: str) -> str | None:
    """Why a member name cannot be written under the root, or None."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or PureWindowsPath(name).drive or PureWindowsPath(name).root:
        return "absolute path"
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "'..' in path"
    if not parts:
        return "empty name"
    if "\x00" in norm:
        return "NUL in name"
    return None


def _relative(name: str) -> str:
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _tar_kind_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"symlink (to {member.linkname!r}); the dataset archives hold only files and folders"
    if member.islnk():
        return f"hard link (to {member.linkname!r}); the dataset archives hold only files and folders"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    if not (member.isreg() or member.isdir()):
        return f"unsupported member type {member.type!r}"
    return None


def _check_members(members: list[tuple[str, str | None, bool]]) -> list[str]:
    """``(name, kind problem, is_dir)`` triples -> every problem as ``"name: reason"``, duplicates included."""
    problems: list[str] = []
    files: set[str] = set()
    dirs: set[str] = set()
    for name, kind_problem, is_dir in members:
        reason = kind_problem or _name_problem(name)
        if reason == "empty name" and is_dir:  # "./", the archive's own top folder (`tar -C dir .`): harmless
            continue
        if reason is None:
            rel = _relative(name)
            parents = {"/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1)}
            if rel in files or (not is_dir and rel in dirs):
                reason = "duplicate member (a later copy would overwrite an earlier one)"
            elif parents & files:
                reason = "inside a path that is a file member"
            else:
                (dirs if is_dir else files).add(rel)
                dirs.update(parents)
        if reason is not None:
            problems.append(f"{name}: {reason}")
    return problems


def _tar_members(tar: tarfile.TarFile) -> tuple[list[_Member], list[str]]:
    infos = tar.getmembers()  # reads every header: a truncated archive fails here, before anything is written
    problems = _check_members([(m.name, _tar_kind_problem(m), m.isdir()) for m in infos])
    members = [_Member(_relative(m.name), m.isdir(), m.mtime, m) for m in infos]
    return members, problems


def _zip_kind_problem(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix file type, when the archive was made on Unix
    if kind == stat.S_IFLNK:
        return "symlink; the dataset archives hold only files and folders"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device, fifo or other special file"
    return None


def _zip_members(zf: zipfile.ZipFile) -> tuple[list[_Member], list[str]]:
    infos = zf.infolist()
    problems = _check_members([(i.filename, _zip_kind_problem(i), i.is_dir()) for i in infos])
    members = [_Member(_relative(i.filename), i.is_dir(), None, i) for i in infos]
    return members, problems


def _inside(base: str, path: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _write_file(staging: str, rel: str, data: IO[bytes], checked: set[str]) -> None:
    dest = os.path.join(staging, *rel.split("/"))
    parent = os.path.dirname(dest)
    if parent not in checked:
        os.makedirs(parent, exist_ok=True)
        # Staging is ours and we never create links in it, so this holds; checked anyway (once per folder).
        if not _inside(staging, os.path.realpath(parent)):
            raise UnsafeArchiveError(f"{rel}: resolves outside the staging folder")
        checked.add(parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(dest, flags, 0o666)  # the umask decides the final permissions, not the archive
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(data, out, _COPY_CHUNK)


def _stage(members: list[_Member], staging: str, open_member) -> None:  # noqa: ANN001
    checked: set[str] = {staging}
    for member in members:
        if member.is_dir:
            os.makedirs(os.path.join(staging, *member.rel.split("/")), exist_ok=True)
            continue
        with open_member(member.source) as data:
            _write_file(staging, member.rel, data, checked)
        if member.mtime is not None:
            os.utime(os.path.join(staging, *member.rel.split("/")), (member.mtime, member.mtime))


def _check_destinations(staging: Path, root: Path) -> list[str]:
    """Where each staged entry lands, resolved against the real root: a link already in the root that leads
    elsewhere, or a file where the archive has a folder, refuses the archive before anything moves. Only paths
    that already exist need resolving: a new folder is moved in whole, under a parent already checked."""
    real_root = os.path.realpath(root)
    problems: list[str] = []

    def visit(source: Path, target: Path) -> None:
        for entry in source.iterdir():
            dest = target / entry.name
            if not os.path.lexists(dest):
                continue
            rel = entry.relative_to(staging).as_posix()
            resolved = os.path.realpath(dest)
            if not _inside(real_root, resolved):
                problems.append(f"{rel}: {dest} resolves to {resolved}, outside the root")
            elif entry.is_dir():
                if not os.path.isdir(dest):
                    problems.append(f"{rel}: {dest} exists and is not a folder")
                else:
                    visit(entry, dest)
            elif os.path.isdir(dest):
                problems.append(f"{rel}: {dest} exists and is a folder")

    visit(staging, root)
    return problems


def _move_into_place(source: Path, target: Path) -> None:
    """Move the staged tree ``source`` onto ``target``: whole folders when new, files replaced one by one."""
    for entry in list(source.iterdir()):
        dest = target / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if dest.is_dir():
                _move_into_place(entry, dest)
            else:
                os.replace(entry, dest)
        else:
            os.replace(entry, dest)


@contextmanager
def _staging_folder(root: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def safe_extract(archive_path: str | Path, root: str | Path) -> int:
    """Extract a tar (any compression) or zip archive into ``root``, all or nothing; returns the member count.

    Raises:
        UnsafeArchiveError: a member is a link, device or fifo, is absolute, contains ``..``, is a duplicate,
            or would land outside the real root; nothing is extracted.
        ValueError: the file is not a tar or zip archive, or it is truncated or corrupt; nothing is extracted.
        OSError: writing failed (``ENOSPC``: the disk is full); nothing is extracted and the archive is kept.
    """
    archive_path, root = Path(archive_path), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        if tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path) as tar:
                return _extract(archive_path, root, *_tar_members(tar), tar.extractfile)
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as zf:
                return _extract(archive_path, root, *_zip_members(zf), zf.open)
    except _CORRUPT_ERRORS as err:
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ValueError(f"{archive_path} is truncated or corrupt ({detail}); nothing was extracted. Delete it and "
                         "run the download again") from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while extracting {archive_path} into {root}; nothing was "
                          "extracted and the archive is kept: free some space and run the command again") from None
        if isinstance(err, (tarfile.ReadError, zipfile.BadZipFile)) or err.errno is None:
            # gzip reports a cut stream as a plain OSError without an errno ("Not a gzipped file", "ended ...")
            raise ValueError(f"{archive_path} is truncated or corrupt ({err}); nothing was extracted. Delete it "
                             "and run the download again") from None
        raise
    raise ValueError(f"{archive_path} is neither a tar nor a zip archive; the download may be truncated or an "
                     "HTML error page: delete it and run the download again")


def _extract(archive_path: Path, root: Path, members: list[_Member], problems: list[str], open_member) -> int:  # noqa: ANN001
    if problems:
        raise _unsafe(archive_path, problems)
    with _staging_folder(root) as staging:
        _stage(members, os.path.realpath(staging), open_member)
        problems = _check_destinations(staging, root)
        if problems:
            raise _unsafe(archive_path, problems)
        _move_into_place(staging, root)
    return len(members)


def _unsafe(path: Path, problems: list[str]) -> UnsafeArchiveError:
    shown = "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else "")
    return UnsafeArchiveError(
        f"refusing to extract {path}: {len(problems)} unsafe member(s): {shown}. Nothing was extracted; the "
        "archive is corrupt or hostile: check its source."
    )

