"""A small client for `rice serve`, in the standard library only (urllib): no web framework, no torch needed.

    import rice
    shop = rice.Client("http://127.0.0.1:8000")
    answer = shop.search("clip.mp4", top_k=5)          # a video, a frame folder's image or an image file
    answer = shop.search(embedding, top_k=5)           # or an embedding computed elsewhere (a list, numpy, torch)
    for hit in answer["results"]:
        print(hit["rank"], hit["id"], hit["score"], shop.url + hit["image_url"])

An answer is the server's JSON (docs/serving.md); an error answer raises `ServerError` with the server's one-line
``detail``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen


class ServerError(Exception):
    """The server answered an error: ``status`` (the HTTP code) and ``detail`` (its one-line reason)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class Client:
    """Searches a running `rice serve` at ``url`` (``http://HOST:PORT``); ``timeout`` seconds per request."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def health(self) -> dict[str, Any]:
        """``GET /health``: items, model, embedding dimension, limits."""
        return self._call(Request(f"{self.url}/health"))

    def groups(self) -> list[str]:
        return self._call(Request(f"{self.url}/groups"))["groups"]

    def search(self, query: str | os.PathLike[str] | Sequence[float] | Any, top_k: int = 10,
               group: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Search with a file (a path: uploaded as `POST /search` multipart) or an embedding (a sequence of
        numbers, or anything with ``tolist()`` such as a numpy array or a torch tensor: sent as JSON).

        Returns the server's answer: ``{"query", "results": [{"rank", "id", "path", "score", "image_url", ...}],
        "kind", ...}``. Raises `ServerError` (an error answer), FileNotFoundError (no such file), OSError (the
        server cannot be reached)."""
        if isinstance(query, (str, os.PathLike)):
            return self._search_file(Path(query), top_k, group)
        vector = query.tolist() if hasattr(query, "tolist") else list(query)
        while len(vector) == 1 and isinstance(vector[0], list):  # a (1, D) batch of one
            vector = vector[0]
        body = json.dumps({"embedding": [float(v) for v in vector], "top_k": top_k, "group": group}).encode()
        return self._call(Request(f"{self.url}/search", data=body, method="POST",
                                  headers={"Content-Type": "application/json"}))  # fmt: skip

    def _search_file(self, path: Path, top_k: int, group: str | None) -> dict[str, Any]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file to search with")
        boundary = uuid.uuid4().hex
        name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
        body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        params = {"top_k": top_k, **({"group": group} if group else {})}
        return self._call(Request(f"{self.url}/search?{urlencode(params)}", data=body, method="POST",
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))  # fmt: skip

    def _call(self, request: Request) -> dict[str, Any]:
        try:
            with urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read())
        except HTTPError as err:
            raw = err.read()
            try:
                detail = json.loads(raw)["detail"]
            except (ValueError, KeyError, TypeError):
                detail = raw.decode("utf-8", "replace").strip() or err.reason
            raise ServerError(err.code, str(detail)) from None
        except URLError as err:
            raise OSError(f"{self.url}: the server cannot be reached ({err.reason}); is `rice serve` running?") \
                from None


__all__ = ["Client", "ServerError"]
