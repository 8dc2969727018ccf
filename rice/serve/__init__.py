"""`rice serve`: an HTTP API and a web page over a catalogue index (FastAPI + uvicorn, the optional `serve` extra).

`rice.serve.service` holds the model, the index and the lock (no web framework); `rice.serve.app.create_app`
wraps it in FastAPI; `rice.serve.server.run_server` runs it with uvicorn; the page is `rice/serve/static/`.
"""

from rice.serve.service import SearchService as SearchService
from rice.serve.service import open_service as open_service

__all__ = ["SearchService", "open_service"]
