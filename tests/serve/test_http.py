"""Real HTTP: `rice serve` as a subprocess on a port the OS picks, and a uvicorn thread for the concurrency check."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from rice.models.loading import load
from rice.retrieval.catalogue import Index
from rice.serve.server import BackgroundServer
from rice.serve.service import SearchService
from tests.serve.conftest import clip_of_image


def _multipart(path: Path, name: str | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name or path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _request(url: str, data: bytes | None = None, content_type: str | None = None, timeout: float = 60):
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _search(base: str, path: Path, query: str = "top_k=5") -> tuple[int, dict]:
    body, content_type = _multipart(path)
    status, raw = _request(f"{base}/search?{query}", body, content_type)
    return status, json.loads(raw)


def _oversized_upload(base: str, declared: int) -> bytes:
    """Send headers declaring a body larger than the limit and a little of it; return the raw answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode() + b"x" * 1000)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


@pytest.fixture(scope="module")
def server(catalogue, tmp_path_factory):
    """`rice serve INDEX --port 0` in a subprocess; the test reads the address it printed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path_factory.mktemp("server_tmp")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rice", "serve", str(catalogue.index_dir), "--port", "0", "--max-upload-mb", "1",
         "--max-scan-jobs", "2", "--timeout-header", "20", "--timeout-body", "20", "--timeout-keep-alive", "3",
         "--limit-concurrency", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    line = ""
    deadline = time.time() + 120
    while time.time() < deadline and "serving" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert "serving" in line, f"rice serve did not start: {line}{proc.stdout.read() if proc.poll() is not None else ''}"
    base = line.split(" on ")[1].split()[0]
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining the access log
    yield base, Path(env["TMPDIR"])
    proc.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down gracefully, then re-raises the signal (130)
    assert proc.wait(timeout=30) in (0, 130, -signal.SIGINT)
    assert not list(Path(env["TMPDIR"]).glob("rice-serve-*"))  # its temporary folder is gone


def test_rice_serve_answers_health_and_search_over_http(server, catalogue, tmp_path):
    base, tmp_root = server
    assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
    status, raw = _request(f"{base}/health")
    health = json.loads(raw)
    assert status == 200 and health["items"] == len(catalogue.images)
    assert health["max_upload_mb"] == 1 and health["max_scan_jobs"] == 2  # the flags reached the app

    reference = Index.load(catalogue.index_dir, model=load(catalogue.checkpoint))
    item_id, image = sorted(catalogue.images.items())[4]
    clip = clip_of_image(image, tmp_path / "clip.mp4")
    for query in (clip, image):
        status, body = _search(base, query)
        assert status == 200, body
        expected = reference.search([query], k=5)[0]
        assert [r["id"] for r in body["results"]] == [hit.id for hit in expected]
    assert body["results"][0]["id"] == item_id  # the image query finds itself
    status, picture = _request(base + body["results"][0]["image_url"])
    assert status == 200 and picture == image.read_bytes()


def test_bad_uploads_over_http_and_the_server_keeps_serving(server, catalogue, tmp_path):
    base, tmp_root = server
    answer = _oversized_upload(base, declared=5 * 2**20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    broken = tmp_path / "broken.mov"
    broken.write_bytes(b"\x00\x00\x00\x18ftypqt  " + b"\x01" * 5000)
    status, body = _search(base, broken)
    assert status == 422 and "broken.mov" in body["detail"]
    status, body = _search(base, tmp_path / "broken.mov", query="group=nope")
    assert status == 404
    item_id, image = sorted(catalogue.images.items())[5]
    status, body = _search(base, image)
    assert status == 200 and body["results"][0]["id"] == item_id
    # The only folder the server made is its temporary one, and it holds no upload between requests.
    made = [p for p in tmp_root.iterdir() if not p.name.startswith("torchinductor")]  # torch's own cache
    assert len(made) == 1 and made[0].name.startswith("rice-serve-") and list(made[0].iterdir()) == []


def test_a_running_search_does_not_block_the_server(catalogue, tmp_path):
    """While one request holds the model, /health and images are still answered (inference runs off the loop)."""
    model = load(catalogue.checkpoint)
    service = SearchService(Index.load(catalogue.index_dir, model=model), model)
    clip = clip_of_image(sorted(catalogue.images.values())[0], tmp_path / "clip.mp4")
    with BackgroundServer(service) as base:
        result = {}
        service._lock.acquire()  # the model is busy: a search must wait for it, in its worker thread
        try:
            worker = threading.Thread(target=lambda: result.update(answer=_search(base, clip)))
            worker.start()
            time.sleep(1.0)
            assert worker.is_alive() and "answer" not in result
            tic = time.perf_counter()
            status, raw = _request(f"{base}/health", timeout=10)
            assert status == 200 and time.perf_counter() - tic < 5
        finally:
            service._lock.release()
        worker.join(timeout=60)
        assert result["answer"][0] == 200
    assert not service.work_dir.exists()


def test_rice_serve_refuses_another_models_checkpoint(catalogue, tmp_path):
    import torch

    state = torch.load(catalogue.checkpoint, map_location="cpu", weights_only=False)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 0.01  # the same architecture, other weights
    other = tmp_path / "other.pt"
    torch.save(state, other)
    proc = subprocess.run([sys.executable, "-m", "rice", "serve", str(catalogue.index_dir), "--ckpt", str(other),
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "digest" in lines[0] and "Traceback" not in proc.stderr
