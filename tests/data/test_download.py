"""rice download against a local HTTP server on 127.0.0.1 (no network): resume, corruption, failures,
idempotence, unsafe archives, confirmation pages, LPR4M URL lists."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from rice.data.download import (
    MANIFEST_NAME,
    DownloadError,
    Manifest,
    UnsafeArchiveError,
    download_lpr750k,
    download_movingfashion,
    download_url_lists,
    fetch_file,
    find_confirmation_url,
    safe_extract,
)
from tests.data.http_server import FAST, Server, make_tar, quiet


def test_cut_transfer_resumes_with_range_and_is_byte_identical(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    server.routes["/big.bin"] = data
    server.cut["/big.bin"] = 1
    result = fetch_file(server.url + "/redirect/big.bin", tmp_path / "big.bin", policy=FAST)
    assert (tmp_path / "big.bin").read_bytes() == data
    assert result.attempts == 2 and result.resumed_from == len(data) // 2
    assert server.ranges[-1] == ("/big.bin", f"bytes={len(data) // 2}-")
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "big.bin.part").exists()


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    data = b"abcdefgh" * 50_000
    server.routes["/f"] = data
    server.no_range.add("/f")
    (tmp_path / "f.part").write_bytes(data[:1000])  # an old partial file
    result = fetch_file(server.url + "/f", tmp_path / "f", policy=FAST)
    assert (tmp_path / "f").read_bytes() == data and result.resumed_from == 0


def test_known_checksum_mismatch_is_retried_then_fails(server: Server, tmp_path: Path) -> None:
    data = b"x" * 5000
    server.routes["/f"] = data
    server.corrupt["/f"] = 1
    good = hashlib.sha256(data).hexdigest()
    fetch_file(server.url + "/f", tmp_path / "f", sha256=good[:8] + "*" + good[-4:], policy=FAST)
    assert (tmp_path / "f").read_bytes() == data and server.hits["/f"] == 2
    with pytest.raises(DownloadError, match="sha256"):
        fetch_file(server.url + "/f", tmp_path / "g", sha256="0" * 64, policy=FAST)
    assert not (tmp_path / "g").exists()


def test_confirmation_page_is_followed(server: Server, tmp_path: Path) -> None:
    data = make_tar({"MovingFashion/train.json": b"{}", "MovingFashion/test.json": b"{}"})
    server.routes["/uc"] = data
    server.confirm.add("/uc")
    report = download_movingfashion(tmp_path, url=server.url + "/redirect/uc", policy=FAST, progress=False,
                                    console=quiet())
    assert not report.failed, report.summary()
    # the single top folder of the archive was flattened into the root
    assert (tmp_path / "train.json").exists() and not (tmp_path / "MovingFashion").exists()
    assert any(r == ("/uc", None) for r in server.ranges) and server.hits["/uc"] == 2


def test_find_confirmation_url_link_variant() -> None:
    page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=X">Download anyway</a>'
    assert find_confirmation_url(page, "https://host/uc?id=X") == "https://host/uc?export=download&confirm=AbC1&id=X"
    assert find_confirmation_url("<html>quota exceeded</html>", "https://host/") is None


def lpr_parts(server: Server) -> dict[str, bytes]:
    parts = {
        "query": make_tar({"query/c1/c1-0001.jpg": b"q1", "query/c1/c1-0002.jpg": b"q2"}),
        "gallery": make_tar({"gallery/l1/g-0.jpg": b"g"}),
        "annotations": make_tar({"annotations/gallery_main.txt": b"l1/g-0.jpg\n"}),
        "training_image": make_tar({"training_image/i.jpg": b"i" * 100_000}),
    }
    for name, data in parts.items():
        server.routes[f"/lpr/{name}.tar"] = data
    return parts


def test_lpr750k_failures_reported_others_complete_and_second_run_is_noop(server: Server, tmp_path: Path) -> None:
    lpr_parts(server)
    del server.routes["/lpr/gallery.tar"]  # 404
    server.slow.add("/lpr/annotations.tar")  # times out
    server.cut["/lpr/training_image.tar"] = 1  # cut once: resumed
    out = io.StringIO()
    report = download_lpr750k(tmp_path, parts=["query", "gallery", "annotations", "training_image"],
                              base_url=server.url + "/lpr", policy=FAST, progress=False,
                              console=Console(file=out, width=300))
    failed = {r.name: r.detail for r in report.failed}
    assert set(failed) == {"gallery.tar", "annotations.tar"}
    assert "404" in failed["gallery.tar"] and "timed out" in failed["annotations.tar"]
    assert (tmp_path / "query/c1/c1-0002.jpg").read_bytes() == b"q2"
    assert (tmp_path / "training_image/i.jpg").read_bytes() == b"i" * 100_000
    assert not (tmp_path / "query.tar").exists()  # archives are removed after extraction by default
    assert report.retry_command is not None and "--parts gallery,annotations" in report.retry_command
    assert "retry with: rice download lpr750k" in out.getvalue()

    # the host recovers: a second run fetches only the two failed parts, a third fetches nothing
    lpr_parts(server)
    server.slow.clear()
    before = sum(server.hits.values())
    report2 = download_lpr750k(tmp_path, parts=["query", "gallery", "annotations", "training_image"],
                               base_url=server.url + "/lpr", policy=FAST, progress=False, console=quiet())
    assert {r.name for r in report2.fetched} == {"gallery.tar", "annotations.tar"} and not report2.failed
    assert sum(server.hits.values()) - before == 2
    before = sum(server.hits.values())
    out3 = io.StringIO()
    report3 = download_lpr750k(tmp_path, parts=["query", "gallery", "annotations", "training_image"],
                               base_url=server.url + "/lpr", policy=FAST, progress=False,
                               console=Console(file=out3, width=300))
    assert report3.nothing_to_do and sum(server.hits.values()) == before
    assert "nothing to do" in out3.getvalue()


def test_corrupted_archive_is_detected_and_fetched_again(server: Server, tmp_path: Path) -> None:
    parts = lpr_parts(server)
    kw = dict(parts=["query"], base_url=server.url + "/lpr", policy=FAST, progress=False, console=quiet(),
              keep_archives=True)
    download_lpr750k(tmp_path, **kw)
    recorded = Manifest(tmp_path).get("query.tar")
    assert recorded and recorded["sha256"] == hashlib.sha256(parts["query"]).hexdigest()
    assert (tmp_path / MANIFEST_NAME).exists()
    # flip bytes on disk: the size/mtime check notices, the sha256 check confirms, the file is fetched again
    with open(tmp_path / "query.tar", "r+b") as fh:
        fh.seek(600)
        fh.write(b"\x00garbage\x00")
    hits = server.hits["/lpr/query.tar"]
    report = download_lpr750k(tmp_path, **kw)
    assert [r.name for r in report.fetched] == ["query.tar"]
    assert server.hits["/lpr/query.tar"] == hits + 1
    assert (tmp_path / "query.tar").read_bytes() == parts["query"]


def test_dry_run_reports_sizes_and_fetches_nothing(server: Server, tmp_path: Path) -> None:
    parts = lpr_parts(server)
    report = download_lpr750k(tmp_path, parts=["query", "gallery"], base_url=server.url + "/lpr", dry_run=True,
                              policy=FAST, progress=False, console=quiet())
    assert [r.size for r in report.results] == [len(parts["query"]), len(parts["gallery"])]
    assert all(r.status == "would-fetch" for r in report.results) and sum(server.hits.values()) == 0


def test_free_space_check_refuses(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    lpr_parts(server)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 99, 1))  # type: ignore[attr-defined]
    with pytest.raises(OSError, match="not enough free space"):
        download_lpr750k(tmp_path, parts=["query"], base_url=server.url + "/lpr", policy=FAST, progress=False,
                         console=quiet())


def test_unknown_part_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training_video_07"):
        download_lpr750k(tmp_path, parts=["querry"], progress=False, console=quiet())


def _evil_tar(path: Path, kind: str) -> None:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if kind == "dotdot":
            info = tarfile.TarInfo("../evil")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "absolute":
            info = tarfile.TarInfo("/tmp/rice-evil-absolute")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            info = tarfile.TarInfo("sub/link")
            info.type = tarfile.SYMTYPE
            info.linkname = "../../outside"
            tar.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("hl")
            info.type = tarfile.LNKTYPE
            info.linkname = "../etc/passwd"
            tar.addfile(info)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_tar_is_refused_and_nothing_extracted(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "evil.tar"
    _evil_tar(archive, kind)
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        safe_extract(archive, root)
    assert not (root / "fine.txt").exists() and not (tmp_path / "evil").exists()


def test_unsafe_tar_from_server_fails_that_part_only(server: Server, tmp_path: Path) -> None:
    lpr_parts(server)
    _evil_tar(tmp_path / "evil.tar", "dotdot")
    server.routes["/lpr/gallery.tar"] = (tmp_path / "evil.tar").read_bytes()
    root = tmp_path / "root"
    report = download_lpr750k(root, parts=["query", "gallery"], base_url=server.url + "/lpr", policy=FAST,
                              progress=False, console=quiet())
    assert [r.name for r in report.failed] == ["gallery.tar"] and "unsafe" in report.failed[0].detail
    assert (root / "query/c1/c1-0001.jpg").exists() and not (tmp_path / "evil").exists()


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def test_lpr4m_url_lists(server: Server, tmp_path: Path) -> None:
    live = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
    clip = f"{live}-1667916122888-1667916252390"
    server.routes[f"/f/{clip}-0001.jpg"] = _jpeg((1280, 720))
    server.routes[f"/f/{clip}-0002.jpg"] = _jpeg((100, 80))  # smaller than 256: kept as is
    server.routes["/f/notimage-0003.jpg"] = b"<html>expired</html>"
    server.routes[f"/g/{live}/fff8b484-2eeb-11ee-b7bb-77cb20e634dc-0.jpg"] = _jpeg((400, 800))
    server.slow.add("/f/slow.jpg")
    server.routes["/f/slow.jpg"] = b""
    frames = tmp_path / "test_frame_url_5.txt"
    frames.write_text("\n".join(server.url + p for p in [f"/f/{clip}-0001.jpg", f"/f/{clip}-0002.jpg",
                                                          "/f/notimage-0003.jpg", "/f/missing.jpg", "/f/slow.jpg"]))
    images = tmp_path / "test_image_url_1.txt"
    images.write_text(server.url + f"/g/{live}/fff8b484-2eeb-11ee-b7bb-77cb20e634dc-0.jpg\n")
    root = tmp_path / "lpr"
    report = download_url_lists([frames, images], root, workers=3, timeout=0.5, progress=False, console=quiet())
    assert (report.total, report.fetched, report.failed) == (6, 3, 3)
    assert report.reasons == {"not an image": 1, "http 404": 1, "timeout": 1}
    with Image.open(root / f"query/{clip}/{clip}-0001.jpg") as img:
        assert img.size == (455, 256) and img.format == "JPEG"
    with Image.open(root / f"query/{clip}/{clip}-0002.jpg") as img:
        assert img.size == (100, 80)
    with Image.open(root / f"gallery/{live}/fff8b484-2eeb-11ee-b7bb-77cb20e634dc-0.jpg") as img:
        assert img.size == (256, 512)
    failures = (root / "lpr4m_failures.tsv").read_text().splitlines()
    assert len(failures) == 3 and any("missing.jpg\thttp 404" in line for line in failures)
    # resume: what is on disk is skipped, failures are tried again
    hits = sum(server.hits.values())
    report2 = download_url_lists([frames, images], root, workers=2, timeout=0.5, progress=False, console=quiet())
    # (the 404 is not counted in hits: the server answers it before counting)
    assert (report2.skipped, report2.failed) == (3, 3) and sum(server.hits.values()) - hits == 2


def test_cli_download_then_nothing_to_do(server: Server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rice.cli import app

    lpr_parts(server)
    args = ["download", "lpr750k", "--root", str(tmp_path), "--parts", "query,gallery", "--base-url",
            server.url + "/lpr", "--retries", "2", "--timeout", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "gallery/l1/g-0.jpg").exists()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "nothing to do" in second.output
    del server.routes["/lpr/gallery.tar"]
    third = CliRunner().invoke(app, [*args[:4], "--parts", "training_image,gallery", *args[6:]])
    assert third.exit_code == 0, third.output  # gallery was done earlier: the 404 now does not matter
