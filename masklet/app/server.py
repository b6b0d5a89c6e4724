"""The annotation app's HTTP API (FastAPI) and the static frontend.

Every error a client can cause is a 4xx answer {"detail": "what is wrong and how to fix it"}: 400 bad value
(frame out of range, unreadable media), 403 path outside the media root, 404 unknown object / file, 409 wrong
moment (no media open, propagation running, nothing to undo), 413 upload too large, 422 malformed request or
prompt. Client data is parsed as JSON or read as bytes; nothing is unpickled.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from .session import Annotator, AppError, confine, overlay_rgba

STATIC = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD_MB = 50

# ---------------------------------------------------------------------------------------------- request bodies
Coord = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenBody(Strict):
    path: str


class FrameBody(Strict):
    frame: int


class ObjectBody(Strict):
    name: str | None = Field(None, max_length=200)
    label: str | None = Field(None, max_length=200)
    color: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$")
    hidden: bool | None = None


class PromptBody(Strict):
    object: int
    frame: int = 0
    points: list[tuple[Coord, Coord, Literal[0, 1]]] = Field(default_factory=list, max_length=500)
    box: tuple[Coord, Coord, Coord, Coord] | None = None


class ChoiceBody(Strict):
    object: int
    frame: int = 0
    choice: int


class PropagateBody(Strict):
    frame: int = 0
    direction: Literal["forward", "backward", "both"] = "forward"


class ExportBody(Strict):
    format: Literal["coco", "yolo", "davis", "mp4"]


class ImportPathBody(Strict):
    path: str
    where: Literal["root", "project"] = "root"


def create_app(annotator: Annotator, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               allowed_hosts: list[str] | None = None) -> Any:
    """The FastAPI application over `annotator`. allowed_hosts: Host headers accepted (a guard against DNS
    rebinding when bound to 127.0.0.1); None accepts any."""
    import cv2

    from . import exports

    max_bytes = int(max_upload_mb * 1_000_000)
    app = FastAPI(title="masklet app", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.annotator = annotator
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "malformed request: " + "; ".join(problems[:5])}, status_code=422)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return JSONResponse({"detail": f"request body of {int(length)} bytes is over the upload limit of "
                                           f"{max_bytes} bytes (max_upload_mb={max_upload_mb:g})"}, status_code=413)
        t0 = time.perf_counter()
        response = await call_next(request)
        # the time spent serving, for the browser's devtools and bench/app_latency.py
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1e3:.2f}"
        return response

    a = annotator

    # ------------------------------------------------------------------ pages
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ media
    @app.get("/api/info")
    def info() -> dict:
        from .. import __version__

        return {"version": __version__, "model": a.model_name, "root": str(a.root), "project": str(a.project.folder),
                "current": a.project.meta.get("current"), "max_upload_mb": max_upload_mb,
                "video": a.video_predictor is not None}

    @app.get("/api/media")
    def media() -> list[dict]:
        return a.list_media()

    @app.post("/api/open")
    def open_media(body: OpenBody) -> dict:
        return a.open(body.path)

    @app.get("/api/state")
    def state() -> dict:
        return _clean(a.state())

    @app.put("/api/frame")
    def set_frame(body: FrameBody) -> dict:
        a.set_frame(body.frame)
        return {"frame": body.frame}

    @app.get("/api/image/{t}")
    def image(t: int) -> Response:
        with a.lock:
            media_, _ = a._require_media()
            a.check_frame(t)
            rgb = media_.frame(t)
        _, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        return Response(buf.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/overlay/{t}")
    def overlay(t: int) -> Response:
        with a.lock:
            a.check_frame(t)
            rgba = overlay_rgba(a, t)
        _, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        return Response(buf.tobytes(), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/masks/{t}")
    def masks(t: int) -> dict:
        return _clean(a.masks(t))

    # ------------------------------------------------------------------ objects and prompts
    @app.post("/api/objects")
    def add_object(body: ObjectBody) -> dict:
        return a.add_object(body.name, body.label, body.color)

    @app.patch("/api/objects/{obj_id}")
    def update_object(obj_id: int, body: ObjectBody) -> dict:
        return a.update_object(obj_id, body.model_dump())

    @app.delete("/api/objects/{obj_id}")
    def delete_object(obj_id: int) -> dict:
        a.delete_object(obj_id)
        return {"deleted": obj_id}

    @app.post("/api/prompts")
    def prompts(body: PromptBody) -> dict:
        box = list(body.box) if body.box is not None else None
        if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
            raise AppError(422, f"malformed prompt: box {box} must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        return _clean(a.set_prompts(body.object, body.frame, [list(p) for p in body.points], box))

    @app.post("/api/prompts/choice")
    def choice(body: ChoiceBody) -> dict:
        return _clean(a.choose(body.object, body.frame, body.choice))

    @app.delete("/api/prompts/{obj_id}/{t}")
    def clear_prompts(obj_id: int, t: int) -> dict:
        return a.clear_prompts(obj_id, t)

    @app.post("/api/undo")
    def undo() -> dict:
        return _clean(a.undo())

    @app.post("/api/redo")
    def redo() -> dict:
        return _clean(a.undo(redo=True))

    # ------------------------------------------------------------------ video
    @app.post("/api/propagate", status_code=202)
    def propagate(body: PropagateBody) -> dict:
        return a.propagate(body.frame, body.direction)

    @app.get("/api/propagate")
    def progress() -> dict:
        return {"running": False} if a.job is None else a.job.status()

    @app.post("/api/propagate/cancel")
    def cancel() -> dict:
        return a.cancel()

    # ------------------------------------------------------------------ export / import
    @app.post("/api/export")
    def export(body: ExportBody) -> dict:
        path = exports.export(a, body.format)
        rel = path.relative_to(a.project.folder).as_posix()
        return {"format": body.format, "path": str(path), "url": f"/api/download/{rel}" if path.is_file() else None}

    @app.get("/api/download/{rel:path}")
    def download(rel: str) -> FileResponse:
        path = confine(a.project.folder, rel, "project folder")
        if not path.is_file() or path.relative_to(a.project.folder).parts[0] != "exports":
            raise AppError(404, f"no exported file {rel!r}")
        return FileResponse(path, filename=path.name)

    @app.post("/api/import")
    async def import_upload(file: Annotated[UploadFile, File()]) -> dict:
        data = bytearray()
        while chunk := await file.read(1 << 20):
            data += chunk
            if len(data) > max_bytes:
                raise AppError(413, f"upload is over the limit of {max_bytes} bytes (max_upload_mb)")
        files = exports.unpack(file.filename or "upload", bytes(data), max_bytes)
        masks_, objects = exports.read_import(a, files)
        return exports.apply_import(a, masks_, objects)

    @app.post("/api/import/path")
    def import_path(body: ImportPathBody) -> dict:
        base = a.root if body.where == "root" else a.project.folder
        files = exports.read_folder(confine(base, body.path, f"{body.where} folder"), max_bytes)
        masks_, objects = exports.read_import(a, files)
        return exports.apply_import(a, masks_, objects)

    return app


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats (an absent object's score can be -1024 or inf) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value
