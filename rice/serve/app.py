"""The HTTP app: GET /health, POST /search, GET /items/{id}/image, GET / (the page) and its static files."""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from rice.data.video import MediaError
from rice.serve.service import SearchService
from rice.serve.uploads import UploadError, receive_upload

STATIC = resources.files("rice.serve") / "static"
MAX_TOP_K = 1000


def create_app(service: SearchService, max_upload_mb: float = 200.0) -> FastAPI:
    """The FastAPI app serving ``service``; the service's temporary folder is removed when the app shuts down."""
    max_bytes = int(max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        service.close()

    app = FastAPI(title="rice search", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service

    @app.exception_handler(HTTPException)
    async def one_line_errors(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/health")
    async def health() -> dict:
        return {**service.health(), "max_upload_mb": max_upload_mb}

    @app.get("/groups")
    async def groups() -> dict:
        return {"groups": service.index.groups}

    @app.post("/search")
    async def search(
        request: Request,
        top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="shop images returned")] = 10,
        group: Annotated[str | None, Query(description="rank only this group's items (shop, livestream)")] = None,
    ) -> dict:
        group = group or None
        if group is not None and group not in service.index.groups:
            # answered before the body is read: no upload is stored for a request that cannot succeed
            raise HTTPException(404, f"unknown group {group!r}; GET /groups lists the {len(service.index.groups)} "
                                     "groups of this index")
        try:
            upload = await receive_upload(request.headers.get("content-type", ""),
                                          request.headers.get("content-length"), request.stream(),
                                          service.work_dir, max_bytes)  # fmt: skip
        except UploadError as err:
            raise HTTPException(err.status, err.message) from None
        try:
            return await run_in_threadpool(service.search_file, upload.path, upload.filename, top_k, group)
        except MediaError as err:
            raise HTTPException(422, f"cannot decode the upload: {err}") from None
        finally:
            for leftover in service.work_dir.glob(upload.path.stem + "*"):  # the upload, renamed or not
                leftover.unlink(missing_ok=True)

    @app.get("/items/{item_id:path}/image")
    async def item_image(item_id: str) -> FileResponse:
        try:
            path = service.image_path(item_id)  # by id only: the request never names a file
        except KeyError as err:
            raise HTTPException(404, str(err.args[0])) from None
        return FileResponse(path)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
