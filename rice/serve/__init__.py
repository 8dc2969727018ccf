"""`rice serve`: an HTTP API and a web page over a catalogue index (FastAPI + uvicorn, the optional `serve` extra).

`rice.serve.service` holds the model, the index and the lock (no web framework); `rice.serve.app.create_app`
wraps it in FastAPI; `rice.serve.server.run_server` runs it with uvicorn; the page is `rice/serve/static/`;
`rice.serve.client.Client` (``rice.Client``) queries a running server.
"""

from typing import TYPE_CHECKING

from rice._lazy import lazy_getattr

# loaded on first use: `rice.serve.client` must not pay for torch and FastAPI
_LAZY = {"SearchService": "rice.serve.service", "open_service": "rice.serve.service"}
__all__ = ["SearchService", "open_service"]

if TYPE_CHECKING:
    from rice.serve.service import SearchService, open_service

__getattr__ = lazy_getattr("rice.serve", _LAZY, globals())
