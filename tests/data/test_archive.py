"""safe_extract against a hostile-archive corpus generated here: every case must leave both the folder around the
root and the root itself exactly as they were (nothing written outside, nothing half-extracted inside)."""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from rice.data.download import UnsafeArchiveError, safe_extract
from rice.data.download import archive as archive_module


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _file(tar, "fine/first.txt", b"harmless member before the attack")
        build(tar)
    return buf.getvalue()


def _symlink_chain(tar: tarfile.TarFile) -> None:
    # The pre-check of the old code passed this (each link alone stays inside); the filter stopped it half-way.
    _link(tar, "l1", ".")
    _link(tar, "l1/l2", "..")
    _file(tar, "l1/l2/x", b"escaped")


def _cve_2025_4517(tar: tarfile.TarFile) -> None:
    # The published pattern: directory names so long that the resolved path passes PATH_MAX, where
    # os.path.realpath in the data filter stops resolving, then a symlink that climbs out through them.
    component = "d" * 247
    steps = "abcdefghijklmnop"
    path = ""
    for step in steps:
        _dir(tar, os.path.join(path, component))
        _link(tar, os.path.join(path, step), component)
        path = os.path.join(path, component)
    link_path = os.path.join("/".join(steps), "l" * 254)
    _link(tar, link_path, "../" * len(steps))
    _link(tar, "escape", link_path + "/..")
    _file(tar, "escape/written-outside", b"escaped")
    _link(tar, "escape/outside-link", "../written-outside")


def _hardlink_to_symlink(tar: tarfile.TarFile) -> None:
    _link(tar, "s", "../outside-target")
    _link(tar, "h", "s", tarfile.LNKTYPE)
    _file(tar, "h", b"written through the link")


def _duplicates(tar: tarfile.TarFile) -> None:
    _file(tar, "a.txt", b"first")
    _file(tar, "a.txt", b"second overwrites the first")


def _file_then_folder(tar: tarfile.TarFile) -> None:
    _file(tar, "b", b"a file")
    _file(tar, "b/c", b"inside a file?")


TAR_CASES: dict[str, Callable[[tarfile.TarFile], None]] = {
    "dotdot": lambda t: _file(t, "../evil", b"evil"),
    "dotdot-deep": lambda t: _file(t, "a/b/../../../evil", b"evil"),
    "backslash-dotdot": lambda t: _file(t, "..\\evil", b"evil"),
    "absolute": lambda t: _file(t, "/tmp/rice-test-absolute-evil", b"evil"),
    "drive": lambda t: _file(t, "C:/evil", b"evil"),
    "symlink-outside": lambda t: _link(t, "sub/link", "../../outside"),
    "symlink-inside": lambda t: (_file(t, "a/b.txt"), _link(t, "a/c", "b.txt")),
    "symlink-chain": _symlink_chain,
    "cve-2025-4517": _cve_2025_4517,
    "hardlink-outside": lambda t: _link(t, "hl", "../etc/passwd", tarfile.LNKTYPE),
    "hardlink-to-symlink": _hardlink_to_symlink,
    "duplicate": _duplicates,
    "file-then-folder": _file_then_folder,
    "char-device": lambda t: _link(t, "dev", "", tarfile.CHRTYPE),
    "block-device": lambda t: _link(t, "blk", "", tarfile.BLKTYPE),
    "fifo": lambda t: _link(t, "fifo", "", tarfile.FIFOTYPE),
}


def _snapshot(base: Path) -> dict[str, bytes | str]:
    """Every path under ``base`` (links not followed) with its content, link target or "dir"."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(base))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp_path/root`` with an existing dataset file, and the folder around it holding a file to protect."""
    root = tmp_path / "arena" / "root"
    (root / "query").mkdir(parents=True)
    (root / "query" / "old.jpg").write_bytes(b"existing data")
    (tmp_path / "arena" / "outside-target").write_bytes(b"must not change")
    return tmp_path / "arena", root


def _assert_untouched(arena_dir: Path, before: dict[str, bytes | str]) -> None:
    assert _snapshot(arena_dir) == before
    assert not Path("/tmp/rice-test-absolute-evil").exists()


@pytest.mark.parametrize("case", sorted(TAR_CASES))
@pytest.mark.parametrize("compression", ["", "gz"])
def test_hostile_tar_is_refused_and_nothing_is_written(arena: tuple[Path, Path], case: str, compression: str) -> None:
    arena_dir, root = arena
    data = _tar(TAR_CASES[case])
    archive = arena_dir.parent / f"{case}.tar{'.' + compression if compression else ''}"
    archive.write_bytes(gzip.compress(data) if compression else data)
    before = _snapshot(arena_dir)
    with pytest.raises(UnsafeArchiveError, match="refusing to extract .*Nothing was extracted"):
        safe_extract(archive, root)
    _assert_untouched(arena_dir, before)


@pytest.mark.parametrize("compression", ["", "gz"])
@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_truncated_archive_is_refused_and_nothing_is_written(arena: tuple[Path, Path], compression: str,
                                                            cut: float) -> None:
    arena_dir, root = arena
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(6):
            _file(tar, f"query/c{i}/frame.jpg", os.urandom(3000))
    # Cut inside the members' bytes (the end-of-archive padding is not data).
    content = buf.getvalue()[: 6 * (512 + 3072)]
    data = gzip.compress(buf.getvalue())[: int(len(gzip.compress(content)) * cut)] if compression else content
    archive = arena_dir.parent / "cut.tar"
    archive.write_bytes(data if compression else data[: int(len(data) * cut)])
    before = _snapshot(arena_dir)
    with pytest.raises(ValueError, match="truncated or corrupt|neither a tar nor a zip"):
        safe_extract(archive, root)
    _assert_untouched(arena_dir, before)


def test_symlink_already_in_root_leading_outside_is_not_followed(arena: tuple[Path, Path]) -> None:
    arena_dir, root = arena
    (arena_dir / "elsewhere").mkdir()
    (root / "gallery").symlink_to(arena_dir / "elsewhere")
    archive = arena_dir.parent / "ok.tar"
    archive.write_bytes(_tar(lambda t: _file(t, "gallery/g.jpg", b"g")))
    before = _snapshot(arena_dir)
    with pytest.raises(UnsafeArchiveError, match="outside the root"):
        safe_extract(archive, root)
    _assert_untouched(arena_dir, before)


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fine/first.txt", b"harmless")
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


ZIP_CASES: dict[str, list[tuple[str, bytes, int]]] = {
    "dotdot": [("../evil", b"evil", 0o100644)],
    "absolute": [("/tmp/rice-test-absolute-evil", b"evil", 0o100644)],
    "symlink": [("link", b"../outside-target", stat.S_IFLNK | 0o777)],
    "fifo": [("fifo", b"", stat.S_IFIFO | 0o644)],
    "duplicate": [("a.txt", b"first", 0o100644), ("a.txt", b"second", 0o100644)],
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", sorted(ZIP_CASES))
def test_hostile_zip_is_refused_and_nothing_is_written(arena: tuple[Path, Path], case: str) -> None:
    arena_dir, root = arena
    archive = arena_dir.parent / f"{case}.zip"
    archive.write_bytes(_zip(ZIP_CASES[case]))
    before = _snapshot(arena_dir)
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        safe_extract(archive, root)
    _assert_untouched(arena_dir, before)


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_good_archive_merges_into_the_root(arena: tuple[Path, Path], kind: str) -> None:
    arena_dir, root = arena
    files = {"query/c1/0001.jpg": b"q1", "query/old.jpg": b"replaced", "annotations/a.txt": b"a"}
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        payload = buf.getvalue()
    else:  # "./" first, as `tar -C dir .` writes it
        payload = _tar(lambda t: [_dir(t, "./"), *(_file(t, "./" + n, d) for n, d in files.items())])
        payload = gzip.compress(payload) if kind == "tar.gz" else payload
    archive = arena_dir.parent / f"good.{kind}"
    archive.write_bytes(payload)
    count = safe_extract(archive, root)
    assert count == len(files) + (0 if kind == "zip" else 2)
    for name, data in files.items():
        assert (root / name).read_bytes() == data
    assert not [p for p in root.iterdir() if p.name.startswith(archive_module.STAGING_PREFIX)]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((root / "annotations/a.txt").stat().st_mode) == 0o666 & ~umask


def test_disk_full_while_writing_leaves_nothing_and_says_so(arena: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    arena_dir, root = arena
    archive = arena_dir.parent / "big.tar"
    archive.write_bytes(_tar(lambda t: [_file(t, f"query/c{i}.jpg", b"y" * 5000) for i in range(4)]))
    written = []
    real_copy = archive_module.shutil.copyfileobj

    def copy_until_full(src, dst, length=0):  # noqa: ANN001, ANN202 - a disk that fills after two files
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(dst)
        return real_copy(src, dst, length)

    monkeypatch.setattr(archive_module.shutil, "copyfileobj", copy_until_full)
    before = _snapshot(arena_dir)
    with pytest.raises(OSError, match="disk full while extracting .*archive is kept") as info:
        safe_extract(archive, root)
    assert info.value.errno == errno.ENOSPC and len(written) == 2
    _assert_untouched(arena_dir, before)
    assert archive.exists()
