"""A local HTTP file server on 127.0.0.1 (port chosen by the OS) for the download tests, with switchable faults."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rich.console import Console

from rice.data.download import RetryPolicy

FAST = RetryPolicy(attempts=3, backoff=0.01, max_delay=0.05, timeout=0.5)


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """Serves ``routes[path] = bytes``; behaviours per path: cut (send half, then drop the connection, N times),
    corrupt (flip bytes N times), no_range, slow (never answer in time), confirm (HTML warning page first).

    Every answer carries an ``ETag`` (a digest of the current bytes) and a ``Last-Modified`` (when the route was
    last replaced), unless the path is in ``no_validators``; a Range request with an ``If-Range`` that no longer
    matches gets the whole new file (RFC 9110), as real servers do."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.cut: Counter[str] = Counter()
        self.corrupt: Counter[str] = Counter()
        self.no_range: set[str] = set()
        self.slow: set[str] = set()
        self.confirm: set[str] = set()
        self.no_validators: set[str] = set()
        self.no_etag: set[str] = set()  # Last-Modified only
        self.if_ranges: list[tuple[str, str | None]] = []
        self._versions: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, Last-Modified when they appeared)
        self.hits: Counter[str] = Counter()
        self.ranges: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path, _, query = self.path.partition("?")
                if path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", path[len("/redirect"):] + ("?" + query if query else ""))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path not in server.routes:
                    self.send_error(404)
                    return
                if not head:
                    server.hits[path] += 1
                    server.ranges.append((path, self.headers.get("Range")))
                if path in server.slow:
                    time.sleep(2.0)
                    self.close_connection = True
                    return
                if path in server.confirm and "confirm=" not in query and not head:
                    page = (b"<html><head><title>Google Drive - Virus scan warning</title></head><body>"
                            b"<form id='download-form' action='" + path.encode() + b"' method='get'>"
                            b"<input type='hidden' name='id' value='abc'><input type='hidden' name='confirm' "
                            b"value='t'><input type='hidden' name='uuid' value='u-1'></form></body></html>")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                data = server.routes[path]
                etag, modified = server.validators(path)
                if_range = self.headers.get("If-Range")
                if not head:
                    server.if_ranges.append((path, if_range))
                start = 0
                rng = self.headers.get("Range")
                accepted = (modified,) if path in server.no_etag else (etag, modified)
                if if_range is not None and if_range not in accepted:
                    rng = None  # the file changed since the client's first response: send all of it
                if rng and path not in server.no_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if path not in server.no_validators:
                    if path not in server.no_etag:
                        self.send_header("ETag", etag)
                    self.send_header("Last-Modified", modified)
                self.end_headers()
                if head:
                    return
                if server.corrupt[path] > 0:
                    server.corrupt[path] -= 1
                    body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
                if server.cut[path] > 0:
                    server.cut[path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def validators(self, path: str) -> tuple[str, str]:
        """(ETag, Last-Modified) of the bytes now served at ``path``; a new version gets a later date."""
        data = self.routes[path]
        known = self._versions.get(path)
        if known is None or known[0] != data:
            stamp = time.time() + len(self._versions) + (1 if known else 0)
            known = (data, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(stamp)))
            self._versions[path] = known
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"', known[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


