"""Download hardening against a local HTTP server on 127.0.0.1: If-Range resume across runs, archives that do
not extract, a full disk during extraction, and hostile LPR4M URL-list lines."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from rice.data.download import (
    DownloadError,
    Manifest,
    RetryPolicy,
    download_lpr750k,
    download_url_lists,
    fetch_file,
)
from rice.data.download import archive as archive_module
from tests.data.http_server import FAST, Server, make_tar, quiet

ONE_TRY = RetryPolicy(attempts=1, backoff=0.01, max_delay=0.05, timeout=0.5)


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_resume_across_runs_sends_if_range_and_starts_over_when_the_file_changed(
    server: Server, tmp_path: Path, validator: str
) -> None:
    old = bytes(range(256)) * 2048
    new = bytes(reversed(range(256))) * 2048  # same length: only the validator can tell the versions apart
    server.routes["/f"] = old
    if validator == "last-modified":
        server.no_etag.add("/f")
    first_etag, first_modified = server.validators("/f")
    server.cut["/f"] = 1
    with pytest.raises(DownloadError):  # the first run is cut half-way and gives up
        fetch_file(server.url + "/f", tmp_path / "f", policy=ONE_TRY)
    assert (tmp_path / "f.part").stat().st_size == len(old) // 2

    server.routes["/f"] = new  # the host replaces the file between the runs
    result = fetch_file(server.url + "/f", tmp_path / "f", policy=FAST)
    sent = server.if_ranges[-1]
    assert sent == ("/f", first_etag if validator == "etag" else first_modified)
    assert (tmp_path / "f").read_bytes() == new and result.resumed_from == 0  # not half old + half new
    assert not list(tmp_path.glob("f.part*"))


def test_resume_across_runs_continues_an_unchanged_file(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 2048
    server.routes["/f"] = data
    server.cut["/f"] = 1
    with pytest.raises(DownloadError):
        fetch_file(server.url + "/f", tmp_path / "f", policy=ONE_TRY)
    result = fetch_file(server.url + "/f", tmp_path / "f", policy=FAST)
    assert (tmp_path / "f").read_bytes() == data and result.resumed_from == len(data) // 2
    assert server.ranges[-1] == ("/f", f"bytes={len(data) // 2}-")


def _parts(server: Server) -> dict[str, bytes]:
    parts = {
        "query": make_tar({f"query/c{i}/c{i}-0001.jpg": bytes([i]) * 3000 for i in range(4)}),
        "gallery": make_tar({"gallery/l1/g-0.jpg": b"g"}),
        "annotations": make_tar({"annotations/gallery_main.txt": b"l1/g-0.jpg\n"}),
    }
    for name, data in parts.items():
        server.routes[f"/lpr/{name}.tar"] = data
    return parts


def test_part_that_does_not_extract_fails_alone_and_is_fetched_again(server: Server, tmp_path: Path) -> None:
    parts = _parts(server)
    server.routes["/lpr/query.tar"] = parts["query"][:5000]  # served whole, but a truncated tar
    out = io.StringIO()
    kw = dict(parts=["query", "gallery", "annotations"], base_url=server.url + "/lpr", policy=FAST, progress=False)
    report = download_lpr750k(tmp_path, console=Console(file=out, width=300), **kw)
    assert [r.name for r in report.failed] == ["query.tar"] and "truncated" in report.failed[0].detail
    assert "FAILED query.tar" in out.getvalue() and "--parts query" in out.getvalue()
    assert (tmp_path / "gallery/l1/g-0.jpg").exists() and (tmp_path / "annotations/gallery_main.txt").exists()
    assert not (tmp_path / "query").exists() and not (tmp_path / "query.tar").exists()
    assert Manifest(tmp_path).get("query.tar") is None  # the truncated file's digest is not kept as a reference

    server.routes["/lpr/query.tar"] = parts["query"]  # the mirror is fixed
    hits = server.hits["/lpr/query.tar"]
    report2 = download_lpr750k(tmp_path, console=quiet(), **kw)
    assert [r.name for r in report2.fetched] == ["query.tar"] and not report2.failed
    assert server.hits["/lpr/query.tar"] == hits + 1
    assert (tmp_path / "query/c3/c3-0001.jpg").read_bytes() == bytes([3]) * 3000


def test_disk_full_during_extraction_keeps_the_archive_for_the_rerun(server: Server, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _parts(server)
    real_copy = archive_module.shutil.copyfileobj

    def full_disk(src, dst, length=0):  # noqa: ANN001, ANN202 - a write that fails as a full disk does
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module.shutil, "copyfileobj", full_disk)
    kw = dict(parts=["query"], base_url=server.url + "/lpr", policy=FAST, progress=False, console=quiet())
    report = download_lpr750k(tmp_path, **kw)
    assert [r.name for r in report.failed] == ["query.tar"]
    assert "disk full while extracting" in report.failed[0].detail and "archive is kept" in report.failed[0].detail
    assert (tmp_path / "query.tar").exists() and not (tmp_path / "query").exists()

    monkeypatch.setattr(archive_module.shutil, "copyfileobj", real_copy)  # space was freed
    hits = server.hits["/lpr/query.tar"]
    report2 = download_lpr750k(tmp_path, **kw)
    assert not report2.failed and server.hits["/lpr/query.tar"] == hits  # extracted from the kept archive
    assert (tmp_path / "query/c0/c0-0001.jpg").exists()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, "JPEG")
    return buf.getvalue()


def test_url_list_lines_that_leave_the_root_or_are_not_http_are_reported_and_skipped(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/img/ok.jpg"] = _jpeg()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_jpeg())
    root = tmp_path / "area" / "lpr"
    (tmp_path / "area" / "elsewhere").mkdir(parents=True)
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "area" / "elsewhere")
    good = server.url + "/img/ok.jpg"
    lines = [
        f"{good}\tgallery/ok.jpg",  # 1: fine
        f"{good}\t../../escaped.jpg",  # 2
        f"{good}\t{tmp_path / 'area' / 'absolute.jpg'}",  # 3
        f"{good}\tC:\\\\evil.jpg",  # 4
        f"{secret.as_uri()}\tgallery/copied.jpg",  # 5: file:// would copy a local file
        "ftp://127.0.0.1/x.jpg\tgallery/ftp.jpg",  # 6
        f"{good}\tlinked/through-link.jpg",  # 7: a link already in the root leading out
        f"{good}\tgallery/sub/../../../escaped2.jpg",  # 8
    ]
    url_list = tmp_path / "test_image_url_1.txt"
    url_list.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    report = download_url_lists([url_list], root, workers=2, timeout=2, progress=False,
                                console=Console(file=out, width=300))
    assert (report.total, report.fetched, report.failed) == (1, 1, 0)
    assert [r.split(":")[0] for r in report.rejected] == [f"test_image_url_1.txt line {n}" for n in range(2, 9)]
    assert "test_image_url_1.txt line 5: URL scheme 'file'" in out.getvalue()
    assert "7 line(s) rejected" in report.summary()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["area/lpr/gallery/ok.jpg", "area/lpr/lpr4m_failures.tsv", "secret.jpg",
                       "test_image_url_1.txt"]


def test_staging_folder_left_by_a_killed_extraction_is_removed(server: Server, tmp_path: Path) -> None:
    _parts(server)
    stale = tmp_path / ".rice-extract-killed"
    (stale / "query" / "c0").mkdir(parents=True)
    (stale / "query" / "c0" / "half.jpg").write_bytes(b"partial")
    report = download_lpr750k(tmp_path, parts=["query"], base_url=server.url + "/lpr", policy=FAST, progress=False,
                              console=quiet())
    assert not report.failed and not stale.exists()
    assert not (tmp_path / "query/c0/half.jpg").exists() and (tmp_path / "query/c0/c0-0001.jpg").exists()
