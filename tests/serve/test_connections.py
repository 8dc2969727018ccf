"""The server's connections over real sockets: half-sent requests are closed after the read deadlines, the server
keeps answering meanwhile, and the concurrency limit answers 503 instead of letting connections pile up."""

import socket
import time
import urllib.error
import urllib.request

import pytest

from rice.models.loading import load
from rice.retrieval.catalogue import Index
from rice.serve.connections import ConnectionLimits, deadline_protocol
from rice.serve.server import BackgroundServer
from rice.serve.service import SearchService

BOUND = 60  # seconds a test waits for what must happen before it gives up (never a synchronisation)


@pytest.fixture(scope="module")
def service(catalogue):
    model = load(catalogue.checkpoint)
    svc = SearchService(Index.load(catalogue.index_dir, model=model), model)
    yield svc
    svc.close()


def _address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def _health(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=BOUND) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def _health_answered(base: str) -> bool:
    """/health answers 200; a 408 (the loop of a loaded machine stalled past the short header deadline of these
    tests before it read the request) is asked again, until BOUND."""
    deadline = time.monotonic() + BOUND
    while (status := _health(base)) == 408 and time.monotonic() < deadline:
        pass
    return status == 200


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open at ``deadline``."""
    answer = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the server kept a half-sent connection open for {BOUND} s") from None
        except ConnectionResetError:
            return answer
        if not data:
            return answer
        answer += data


def test_half_sent_requests_are_closed_and_the_server_keeps_answering(service):
    limits = ConnectionLimits(header_timeout=0.5, body_timeout=0.5, max_connections=None)
    with BackgroundServer(service, limits=limits) as base:
        address = _address(base)
        silent = [socket.create_connection(address, timeout=BOUND) for _ in range(10)]
        partial_headers = [socket.create_connection(address, timeout=BOUND) for _ in range(10)]
        for sock in partial_headers:
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; bo")
        partial_body = [socket.create_connection(address, timeout=BOUND) for _ in range(10)]
        for sock in partial_body:  # complete headers, then 20 of the 5000 announced bytes
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nContent-Disp")  # fmt: skip
        assert _health_answered(base)  # answered, whatever the half-sent connections do

        deadline = time.monotonic() + BOUND
        for sock in silent + partial_headers:
            answer = _read_until_closed(sock, deadline)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        for sock in partial_body:
            answer = _read_until_closed(sock, deadline)
            assert b" 200 " not in answer.split(b"\r\n", 1)[0], answer[:100]
        for sock in silent + partial_headers + partial_body:
            sock.close()
        assert _health_answered(base)
        # The partial uploads were dropped with their connections.
        ended = time.monotonic() + BOUND
        while list(service.work_dir.iterdir()) and time.monotonic() < ended:
            time.sleep(0.05)
        assert list(service.work_dir.iterdir()) == []


def test_a_complete_request_on_a_slow_start_is_still_answered(service):
    """The deadline is for the client: a request whose headers and body arrive in time gets its answer, however
    long the app takes (the clock is off once the request is in)."""
    limits = ConnectionLimits(header_timeout=BOUND, body_timeout=BOUND, max_connections=None)
    with BackgroundServer(service, limits=limits) as base, socket.create_connection(_address(base)) as sock:
        for part in (b"GET /hea", b"lth HTTP/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(part)
        answer = _read_until_closed(sock, time.monotonic() + BOUND)
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in answer


def test_the_concurrency_limit_answers_503_until_connections_close(service):
    limits = ConnectionLimits(header_timeout=BOUND, body_timeout=BOUND, max_connections=4)
    with BackgroundServer(service, limits=limits) as base:
        held = [socket.create_connection(_address(base), timeout=BOUND) for _ in range(4)]
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        deadline = time.monotonic() + BOUND  # the server accepts the held connections as it gets to them
        while _health(base) != 503:
            assert time.monotonic() < deadline, "no 503 with the limit's connections held open"
            time.sleep(0.05)
        for sock in held:
            sock.close()
        while _health(base) != 200:
            assert time.monotonic() < deadline, "still 503 after the held connections closed"
            time.sleep(0.05)


def test_deadlines_must_be_positive():
    for header, body in ((0, 1), (1, -1), (float("nan"), 1)):
        with pytest.raises(ValueError, match="must be > 0"):
            deadline_protocol(header, body)
