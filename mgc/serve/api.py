"""`mgc serve`'s HTTP routes (FastAPI), built in each replica around its deployment
(mgc.serve.app.Labeller): uploads are read into memory with a size cap, labelled through the
replica's batch of shared forward passes, and every upload that cannot be used is a 4xx JSON
answer with `mgc label`'s reason; nothing of a request is ever used as a path."""

from __future__ import annotations

import hmac
import os
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from mgc import storage

COOKIE = "mgc_token"
OPEN_ROUTES = ("/health",)
# A reason in an error row of `mgc label` -> the status an upload with it is answered with.
UNUSABLE = 422
MEDIA_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".aiff": "audio/aiff",
    ".aif": "audio/aiff",
    ".au": "audio/basic",
}


class Refused(Exception):
    """A request answered with a 4xx: its status, a machine-readable reason and words."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def _answer(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "error", "reason": reason, "detail": detail}, status_code=status, headers=headers)


def _authorised(request: Request, token: str) -> bool:
    """A bearer token in the Authorization header, or the cookie the page got (an <audio> element
    cannot send a header), or `?token=` on the page itself; compared in constant time."""
    given = request.headers.get("authorization", "")
    candidates = [given[7:].strip()] if given.lower().startswith("bearer ") else []
    candidates.append(request.cookies.get(COOKIE, ""))
    if request.url.path == "/":
        candidates.append(request.query_params.get("token", ""))
    return any(c and hmac.compare_digest(c.encode(), token.encode()) for c in candidates)


async def read_upload(request: Request, limit_mb: float) -> bytes:
    """The request's body (the audio file as it is), in memory only; refused when empty or over
    `limit_mb` (read no further than the limit)."""
    limit = int(limit_mb * 2**20)
    too_large = Refused(413, "too_large", f"the upload is over --max-upload-mb {limit_mb:g} MB")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    if not size:
        raise Refused(400, "empty", "the request has no body: send the audio file itself (curl --data-binary @FILE)")
    return b"".join(chunks)


def _upload_name(name: str | None) -> str:
    """The name an upload's messages give it: text only, never a path that is opened."""
    return (name or "upload").replace("\n", " ")[:200]


def build(replica: Any) -> FastAPI:
    """The routes of one replica; `replica` holds cfg, service (mgc.serve.service.Service),
    label_batch (its batched labelling) and its counts."""
    app = FastAPI(title="mgc serve", docs_url=None, redoc_url=None, openapi_url=None)
    _guard(app, replica.cfg.token)
    _upload_routes(app, replica)
    _catalogue_routes(app, replica.service)
    _service_routes(app, replica)
    return app


def _guard(app: FastAPI, token: str) -> None:
    """The token checked before every route but OPEN_ROUTES; refusals and invalid parameters
    answered as JSON with a reason."""

    @app.middleware("http")
    async def authorise(request: Request, call_next):
        if token and request.url.path not in OPEN_ROUTES and not _authorised(request, token):
            return _answer(401, "unauthorised", "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return _answer(e.status, e.reason, e.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return _answer(422, "bad_request", where)


def _catalogue_of(service: Any):
    """The replica's catalogue, or a 404 where the service was started without one."""
    if service.catalogue is None:
        raise Refused(404, "no_catalogue", "this service has no catalogue (mgc serve --catalogue)")
    return service.catalogue


def _upload_routes(app: FastAPI, replica: Any) -> None:
    """POST /label and POST /similar: an upload labelled through the replica's batch."""
    cfg = replica.cfg

    async def labelled(request: Request, name: str | None) -> dict[str, Any]:
        row = await replica.label_batch((await read_upload(request, cfg.max_upload_mb), _upload_name(name)))
        if row["status"] != "ok":
            raise Refused(UNUSABLE, row["reason"] or "feature_error", row["detail"] or "the upload cannot be used")
        return row

    @app.post("/label")
    async def label_upload(request: Request, name: str | None = None) -> dict[str, Any]:
        return await labelled(request, name)

    @app.post("/similar")
    async def similar_to_upload(
        request: Request, k: int = Query(10, ge=1, le=100), name: str | None = None
    ) -> dict[str, Any]:
        cat = _catalogue_of(replica.service)
        row = await labelled(request, name)
        query = np.asarray(row["embedding"], np.float32)
        return {"label": row, "similar": cat.nearest(query, k), "map": cat.place(query)}


def _catalogue_routes(app: FastAPI, service: Any) -> None:
    """GET /similar, /map and /audio: the catalogue alone."""

    @app.get("/similar")
    async def similar_to_track(track_id: str, k: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        cat = _catalogue_of(service)
        i = cat.index(track_id)
        if i is None:
            raise Refused(404, "unknown_track", "no such track in the catalogue")
        return {"track": cat.item(i), "similar": cat.nearest(cat.embeddings[i], k, exclude=i)}

    @app.get("/map")
    async def catalogue_map() -> dict[str, Any]:
        cat = _catalogue_of(service)
        return {"tracks": [cat.item(i) for i in range(len(cat))], "genres": sorted({g for g in cat.genres if g})}

    @app.get("/audio/{track_id:path}")
    async def audio(track_id: str) -> Response:
        # An exact key of the catalogue's own table: `../`, encoded or not, is just an unknown id.
        path = _catalogue_of(service).audio_file(track_id)
        if path is None:
            raise Refused(404, "unknown_track", "no audio for such a track in the catalogue")
        media = MEDIA_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
        if storage.is_uri(path):
            return Response(storage.read_bytes(path), media_type=media)
        return FileResponse(path, media_type=media)  # range requests: the page's player can seek


def _service_routes(app: FastAPI, replica: Any) -> None:
    """GET /health, /model and the page."""
    page = resources.files("mgc.serve").joinpath("page.html").read_text(encoding="utf-8")
    token = replica.cfg.token

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "replica": replica.replica_id,
            "uploads": replica.uploads,
            "batches": replica.batches,
        }

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return replica.service.describe()

    @app.get("/")
    async def index(request: Request) -> HTMLResponse:
        response = HTMLResponse(page)
        given = request.query_params.get("token")
        # The page's own requests (and its players) then carry the cookie; a wrong ?token= beside a
        # good cookie must not replace it.
        if token and given and hmac.compare_digest(given.encode(), token.encode()):
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return response
