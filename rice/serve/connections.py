"""Read deadlines for uvicorn's HTTP connections: a half-sent request must not hold a socket forever.

uvicorn closes a keep-alive connection that stays idle after an answer (``timeout_keep_alive``), and
``limit_concurrency`` answers 503 once too many connections are open; but a connection that never finishes its
request headers, or stops sending a body it announced, is kept open for as long as the client likes: a thousand
of them hold a thousand sockets and, with a concurrency limit, lock everyone else out. uvicorn has no read timeout,
so the protocol class is extended here (uvicorn takes the class as ``Config(http=...)``):

- **headers**: a request's headers must be complete within ``header_timeout`` seconds of the connection opening or
  of the previous answer on it (a total deadline, so trickling a byte at a time does not extend it); otherwise the
  connection is answered ``408`` and closed;
- **body**: while the app waits for more of an announced body, at most ``body_timeout`` seconds may pass between
  two reads; otherwise the connection is closed (the app sees the client disconnect and drops the partial upload).
  The body deadline is an idle limit, not a total one: a large upload over a slow link is legitimate. It does not
  run while reading is paused because the app has not taken the body received so far (not the client's fault).

Only the attributes shared by uvicorn's h11 and httptools protocols are used: ``transport``, ``flow``, ``cycle``
(``more_body``, ``response_complete``) and ``on_response_complete``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

_TOO_SLOW = b"the request headers came too slowly; send them at once"
REQUEST_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                          b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_SLOW), _TOO_SLOW))


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take and how many connections the server serves (the `rice serve` flags)."""

    header_timeout: float = 10.0  # s from the connection (or the previous answer) to complete request headers
    body_timeout: float = 30.0  # s between two reads of an announced body
    keep_alive: int = 5  # s an idle connection is kept after an answer (uvicorn's timeout_keep_alive)
    max_connections: int | None = 100  # open connections or requests beyond this are answered 503 (uvicorn's
    # limit_concurrency); None: no limit

    def uvicorn_options(self) -> dict[str, Any]:
        return {"http": deadline_protocol(self.header_timeout, self.body_timeout),
                "timeout_keep_alive": self.keep_alive, "limit_concurrency": self.max_connections}  # fmt: skip


class ReadDeadlines:
    """Mixin over a uvicorn HTTP protocol class; see the module docstring. Build with `deadline_protocol`."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def connection_made(self, transport: Any) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = "headers"
        super().connection_made(transport)  # type: ignore[misc]
        self._arm("headers", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        cycle = getattr(self, "cycle", None)
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():  # type: ignore[attr-defined]
            self._disarm()
            return
        current = getattr(self, "cycle", None)
        if current is None or (current is cycle and self._waiting_for == "headers"):
            return  # still within the headers: their total deadline keeps running
        if current.more_body and not current.response_complete:
            self._arm("body", self.body_timeout)  # bytes of the body arrived: the idle clock starts again
        else:
            self._disarm()  # the request is in: what remains is the app's work, not the client's

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm("headers", self.header_timeout)  # the next request on this connection, if any

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    # ------------------------------------------------------------------------------------------------ the clock
    def _arm(self, waiting_for: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
        self._deadline = None
        self._waiting_for = "nothing"

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing():
            return
        if self._waiting_for == "body" and self.flow.read_paused:  # type: ignore[attr-defined]
            self._arm("body", self.body_timeout)  # the app has not taken the body yet: the client is not late
            return
        if self._waiting_for == "headers" and getattr(self, "cycle", None) is None:
            # The first request on the connection: nothing was answered yet, so a 408 tells a slow client why. After
            # an answer the connection is simply closed, as an idle keep-alive one is (an early answer, a 413, may
            # leave the client still sending its body: a second answer would not be read as one).
            transport.write(REQUEST_TIMEOUT_ANSWER)
        transport.close()


def deadline_protocol(header_timeout: float, body_timeout: float) -> type:
    """uvicorn's HTTP protocol class (h11, or httptools where installed) with these read deadlines (seconds)."""
    if not (header_timeout > 0 and body_timeout > 0):
        raise ValueError(f"--timeout-header {header_timeout} and --timeout-body {body_timeout} must be > 0 seconds")
    return type("RiceHTTPProtocol", (ReadDeadlines, AutoHTTPProtocol),
                {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout)})  # fmt: skip


__all__ = ["ConnectionLimits", "ReadDeadlines", "deadline_protocol"]
