"""The hostile-upload corpus against `rice serve` over real HTTP: each file is small on the wire and asks the decoder
for gigabytes (or, without a suffix, used to crash the suffix sniffing with a 500). Every one is answered 422 with
one line, the server's peak memory stays flat, and it keeps serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.data.test_bad_images import bomb_png
from tests.hostile_media import big_png, huge_frame_mp4, many_frames_mp4


def _post(base: str, path: Path, name: str) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/search?top_k=3", data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile_uploads")
    (folder / "bomb").write_bytes(bomb_png())  # 20000x10000 declared: PIL itself calls it a bomb
    return {
        "huge_frames.mp4": huge_frame_mp4(folder / "huge_frames.mp4"),
        "many_frames.mp4": many_frames_mp4(folder / "many_frames.mp4"),
        "big.png": big_png(folder / "big.png"),
        "bomb": folder / "bomb",
    }


@pytest.fixture(scope="module")
def server(catalogue, tmp_path_factory):
    """`rice serve INDEX --port 0` in a subprocess; yields its address and process id."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path_factory.mktemp("hostile_server_tmp")))
    proc = subprocess.Popen([sys.executable, "-m", "rice", "serve", str(catalogue.index_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    line = ""
    deadline = time.time() + 120
    while time.time() < deadline and "serving" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert "serving" in line, f"rice serve did not start: {line}"
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining the access log
    base = line.split(" on ")[1].split()[0]
    for query in (sorted(catalogue.images.values())[0], sorted(catalogue.videos.values())[0]):
        status, body = _post(base, query, query.name)  # warm up: the model and both decoders ran once
        assert status == 200, body
    yield base, proc.pid
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc")
@pytest.mark.parametrize(("file", "sent_as", "says"), [
    ("huge_frames.mp4", "huge_frames.mp4", "a frame of 8192x8192 pixels"),
    ("huge_frames.mp4", "clip", "a frame of 8192x8192 pixels"),  # no suffix: sniffed as a video
    ("many_frames.mp4", "many_frames.mp4", "declares 50000000 frames"),
    ("big.png", "big.png", "9000x9000 pixels"),
    ("big.png", "shop-photo", "9000x9000 pixels"),  # no suffix: sniffed as an image, then refused
    ("bomb", "upload", "decompression bomb"),  # was a 500: PIL's DecompressionBombError escaped the sniffing
])  # fmt: skip
def test_a_hostile_upload_is_one_line_422_and_costs_no_memory(server, corpus, catalogue, file, sent_as, says):
    base, pid = server
    before = _peak_rss_mb(pid)
    for _ in range(3):
        status, body = _post(base, corpus[file], sent_as)
        assert status == 422, body
        detail = body["detail"]
        assert isinstance(detail, str) and "\n" not in detail and says in detail, detail
        assert sent_as in detail and "rice-serve-" not in detail  # the client's name, not the server's copy
    assert _peak_rss_mb(pid) - before < 100, "a refused upload raised the server's peak memory"
    good = sorted(catalogue.images.values())[0]
    status, body = _post(base, good, "shop")  # an image without a suffix still works
    assert status == 200 and body["kind"] == "image", body
