"""The HTTP app: GET /health, POST /search, POST|GET|DELETE /scan (scan jobs), GET /items/{id}/image, GET / (the
page) and its static files."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rice.data.video import MediaError
from rice.scanning.timeline import SCAN_RULE as RULE
from rice.scanning.timeline import scan_rule
from rice.serve.scan_jobs import JobsFull, ScanJobs, UnknownJob
from rice.serve.service import SearchService
from rice.serve.uploads import Upload, UploadError, receive_upload

STATIC = resources.files("rice.serve") / "static"
MAX_TOP_K = 1000
MAX_SMOOTH = 50  # windows on either side of the vote; more would hold a minute of windows back at the default stride


def create_app(service: SearchService, max_upload_mb: float = 200.0, max_scan_jobs: int = 1) -> FastAPI:
    """The FastAPI app serving ``service``; at shutdown, scan jobs are cancelled and the service's temporary folder
    is removed. ``max_scan_jobs`` scans run at once (`ScanJobs`); later ones wait in a queue."""
    max_bytes = int(max_upload_mb * 2**20)
    scan_jobs = ScanJobs(service, max_jobs=max_scan_jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        scan_jobs.close()
        service.close()

    app = FastAPI(title="rice search", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.state.scan_jobs = scan_jobs

    @app.exception_handler(HTTPException)
    async def one_line_errors(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(UnknownJob)
    async def unknown_job(request: Request, exc: UnknownJob) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def known_group(group: str | None) -> str | None:
        """``group`` or None; answered before the body is read: no upload is stored for a request that fails."""
        group = group or None
        if group is not None and group not in service.index.groups:
            raise HTTPException(404, f"unknown group {group!r}; GET /groups lists the {len(service.index.groups)} "
                                     "groups of this index")
        return group

    async def receive(request: Request) -> Upload:
        try:
            return await receive_upload(request.headers.get("content-type", ""),
                                        request.headers.get("content-length"), request.stream(),
                                        service.work_dir, max_bytes)  # fmt: skip
        except UploadError as err:
            raise HTTPException(err.status, err.message) from None

    async def receive_embedding(request: Request, top_k: int, group: str | None) -> EmbeddingQuery:
        """The JSON body of an embedding query, read up to the upload limit; ``top_k`` and ``group`` in the body
        override the query string's."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise HTTPException(413, f"body larger than the limit of {max_upload_mb:g} MB")
        try:
            fields = json.loads(body)
            if not isinstance(fields, dict):
                raise ValueError("not an object")
            return EmbeddingQuery.model_validate({"top_k": top_k, "group": group, **fields})
        except ValidationError as err:
            raise HTTPException(422, validation_detail(err.errors(), prefixed=False)) from None
        except ValueError as err:  # json.JSONDecodeError is one
            raise HTTPException(422, f"the JSON body is not an object like {{\"embedding\": [...], \"top_k\": 10}} "
                                     f"({_one_line(err)})") from None

    @app.get("/health")
    async def health() -> dict:
        return {**service.health(), "max_upload_mb": max_upload_mb, "max_scan_jobs": max_scan_jobs,
                "scan_rule": dataclasses.asdict(RULE)}

    @app.get("/groups")
    async def groups() -> dict:
        return {"groups": service.index.groups}

    @app.post("/search")
    async def search(
        request: Request,
        top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="shop images returned")] = 10,
        group: Annotated[str | None, Query(description="rank only this group's items (shop, livestream)")] = None,
    ) -> dict:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            query = await receive_embedding(request, top_k, group)
            try:
                return await run_in_threadpool(service.search_vector, query.embedding, query.top_k,
                                               known_group(query.group))  # fmt: skip
            except ValueError as err:
                raise HTTPException(422, str(err)) from None
        group = known_group(group)
        upload = await receive(request)
        try:
            return await run_in_threadpool(service.search_file, upload.path, upload.filename, top_k, group)
        except MediaError as err:
            raise HTTPException(422, f"cannot decode the upload: {err}") from None
        finally:
            for leftover in service.work_dir.glob(upload.path.stem + "*"):  # the upload, renamed or not
                leftover.unlink(missing_ok=True)

    @app.post("/scan", status_code=202)
    async def submit_scan(
        request: Request,
        top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="shop images kept per window")] = 5,
        group: Annotated[str | None, Query(description="scan for this group's items only")] = None,
        window: Annotated[float | None, Query(gt=0, allow_inf_nan=False, description="seconds per window (default: "
                                              "the model's)")] = None,
        stride: Annotated[float, Query(gt=0, allow_inf_nan=False, description="seconds between window starts")] = 1.0,
        min_score: Annotated[float, Query(ge=-1, le=1, allow_inf_nan=False, description="a window shows a product "
                                          "only when its top-1 cosine reaches this")] = RULE.min_score,
        min_margin: Annotated[float, Query(ge=0, le=2, allow_inf_nan=False, description="... and leads the "
                                           "runner-up by this much")] = RULE.min_margin,
        smooth: Annotated[int, Query(ge=0, le=MAX_SMOOTH, description="majority vote over this many windows on "
                                     "either side")] = RULE.smooth,
        min_seconds: Annotated[float, Query(ge=0, allow_inf_nan=False, description="shorter product segments are "
                                            "dropped")] = RULE.min_seconds,
        host_gate: Annotated[bool, Query(description="learn the stream's recurring content (the host); label a "
                                         "window only when it matches a product better")] = (
            RULE.host_margin is not None),
        host_margin: Annotated[float, Query(ge=-2, le=2, allow_inf_nan=False, description="... by this much")] = (
            RULE.host_margin if RULE.host_margin is not None else 0.0),
    ) -> dict:
        """Queue a scan of an uploaded recording: ``{"id", "status": "queued"}``; GET /scan/ID follows it. The
        decision rule's fields default to `rice scan`'s (`SCAN_RULE`)."""
        group = known_group(group)
        if scan_jobs.full():
            raise HTTPException(429, "too many scans are waiting; try again when one has finished")
        rule = scan_rule(min_score=min_score, min_margin=min_margin, smooth=smooth, min_seconds=min_seconds,
                         host_margin=host_margin, host_gate=host_gate)  # fmt: skip
        upload = await receive(request)
        try:  # the source is opened here: an upload that is not a video is refused now, not when its turn comes
            return await run_in_threadpool(scan_jobs.submit, upload.path, upload.filename, top_k=top_k, group=group,
                                           window=window, stride=stride, rule=rule)  # fmt: skip
        except MediaError as err:
            raise HTTPException(422, f"cannot decode the upload: {err}") from None
        except ValueError as err:  # settings the scan refuses
            raise HTTPException(422, str(err)) from None
        except JobsFull as err:
            raise HTTPException(429, str(err)) from None

    @app.get("/scan/{job_id}")
    async def scan_state(job_id: str) -> dict:
        return scan_jobs.state(job_id)

    @app.delete("/scan/{job_id}")
    async def cancel_scan(job_id: str) -> dict:
        return scan_jobs.cancel(job_id)

    @app.get("/scan/{job_id}/segments/{n}/thumbnail")
    async def scan_thumbnail(job_id: str, n: int) -> Response:
        return Response(scan_jobs.thumbnail(job_id, n), media_type="image/jpeg")

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


class EmbeddingQuery(BaseModel):
    """``POST /search`` with ``Content-Type: application/json``: a query embedded elsewhere."""

    model_config = ConfigDict(extra="forbid")

    embedding: Annotated[list[float], Field(min_length=1, max_length=1 << 16)]
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 10
    group: str | None = None

    @field_validator("embedding")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in values):
            raise ValueError("every number must be finite")
        return values


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def validation_detail(errors: Sequence[dict[str, Any]], prefixed: bool = True) -> str:
    """FastAPI's (or pydantic's) list of validation errors as the one line every other error is: ``top_k=0:
    input should be greater than or equal to 1`` (several joined by ``; ``). ``prefixed``: each location starts
    with where the value was (``query``, ``body``), which is left out."""
    parts = []
    for error in errors:
        name = ".".join(str(part) for part in error.get("loc", ())[1 if prefixed else 0 :]) or "request"
        message = str(error.get("msg", "invalid value"))
        message = message[:1].lower() + message[1:]
        value = error.get("input")
        shown = f"{name}={value}" if isinstance(value, (str, int, float)) and error.get("type") != "missing" else name
        parts.append(f"{shown}: {message}")
    return " ".join("; ".join(parts).split())
