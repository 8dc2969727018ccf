"""Run the app with uvicorn, telling the caller the address actually bound (``--port 0`` lets the OS pick)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import uvicorn

from rice.serve.app import create_app
from rice.serve.connections import ConnectionLimits
from rice.serve.service import SearchService


def bound_url(server: uvicorn.Server) -> str:
    """``http://HOST:PORT`` of a started server, read back from its listening socket."""
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 200.0,
                log_level: str = "warning", *, max_scan_jobs: int = 1,
                limits: ConnectionLimits = ConnectionLimits()) -> uvicorn.Server:  # fmt: skip
    """A uvicorn server for the app, with ``limits`` on its connections (read deadlines, concurrency)."""
    app = create_app(service, max_upload_mb, max_scan_jobs=max_scan_jobs)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                            **limits.uvicorn_options())  # fmt: skip
    return uvicorn.Server(config)


def run_server(service: SearchService, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 200.0,
               on_ready: Callable[[str], None] | None = None, log_level: str = "warning", *,
               max_scan_jobs: int = 1, limits: ConnectionLimits = ConnectionLimits()) -> None:  # fmt: skip
    """Serve until interrupted (Ctrl-C); ``on_ready(url)`` is called once the socket listens."""
    server = make_server(service, host, port, max_upload_mb, log_level, max_scan_jobs=max_scan_jobs, limits=limits)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started and on_ready is not None:
            on_ready(bound_url(server))
        await task

    try:
        asyncio.run(serve())
    finally:
        service.close()


class BackgroundServer:
    """A server in a thread of this process (tests, notebooks): ``with BackgroundServer(service) as url: ...``."""

    def __init__(self, service: SearchService, host: str = "127.0.0.1", port: int = 0,
                 max_upload_mb: float = 200.0, **options: object) -> None:
        self.server = make_server(service, host, port, max_upload_mb, **options)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server stopped while starting (is the address in use?)")
            self._thread.join(0.05)
        return bound_url(self.server)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
