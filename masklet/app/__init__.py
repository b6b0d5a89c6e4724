"""`masklet app`: a local web annotator for images and videos (FastAPI + a plain HTML/JS frontend).

    masklet app source=path/to/folder_or_video model=sam2.1_t.pt port=8008 project=runs/app/mydata

Needs the [app] extra: pip install 'masklet[app]'. Nothing is imported at package import time.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

APP_ARGS: dict[str, tuple[Any, str]] = {
    "source": (".", "a folder of images / videos / frame folders (the media root), or one video or image file"),
    "model": ("sam2.1_t.pt", "checkpoint name or path (SAM 2 / 2.1 for videos; SAM and MobileSAM work on images)"),
    "port": (8008, "TCP port (0 = any free port)"),
    "host": (None, ("interface to bind; default 127.0.0.1 (this machine only). Anything else exposes the app and "
                    "your media to the network: a warning is printed")),
    "project": (None, ("folder for prompts, masks, history and exports (default runs/app/<source name>); "
                       "reopening it resumes where you left off")),
    "device": (None, "cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)"),
    "max_upload_mb": (50, "largest import upload accepted, in MB"),
}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _require_extra() -> None:
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    # python-multipart installs `python_multipart` (0.0.13 on) and, for older code, a deprecated `multipart`
    # alias that warns when imported: look for either without importing it
    if all(importlib.util.find_spec(name) is None for name in ("python_multipart", "multipart")):
        missing.append("python-multipart")
    if missing:
        raise ImportError(f"masklet app needs {', '.join(missing)}: pip install 'masklet[app]'")


def build(source: str | Path = ".", model: Any = "sam2.1_t.pt", project: str | Path | None = None,
          device: str | None = None, max_upload_mb: float = 50, allowed_hosts: list[str] | None = None) -> Any:
    """The FastAPI application for `source` (a media folder, or one video / image file), with the model loaded.
    model: a checkpoint name / path or a built model module."""
    _require_extra()
    import torch

    from ..api.sam import load_sam_model
    from .server import create_app
    from .session import Annotator

    src = Path(source).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"source {src} not found: pass a folder of media or a video / image file")
    root, only = (src, None) if src.is_dir() else (src.parent, src.name)
    module, _ = load_sam_model(model)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device)
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    project = Path(project) if project is not None else Path("runs") / "app" / (src.resolve().stem or "root")
    annotator = Annotator(root, module, project, name, only=only)
    return create_app(annotator, max_upload_mb, allowed_hosts)


def serve(source: str | Path = ".", model: Any = "sam2.1_t.pt", port: int = 8008, host: str | None = None,
          project: str | Path | None = None, device: str | None = None, max_upload_mb: float = 50) -> None:
    """Run the annotator until Ctrl+C; prints the URL to open."""
    _require_extra()
    import socket

    import uvicorn

    bind = host or "127.0.0.1"
    if bind not in LOCAL_HOSTS:
        warnings.warn(f"host={bind}: the app (your media and the annotations, with no login) is reachable from "
                      "other machines. Use the default 127.0.0.1 unless you trust the network.", stacklevel=2)
    local = bind in LOCAL_HOSTS
    app = build(source, model, project, device, max_upload_mb,
                allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if local else None)
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, int(port)))
    except OSError as exc:
        raise OSError(f"cannot listen on {bind}:{port} ({exc.strerror}): pass another port=, or port=0 for any "
                      "free one") from None
    actual = sock.getsockname()[1]
    shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    print(f"masklet app: media {app.state.annotator.root}, project {app.state.annotator.project.folder}", flush=True)
    print(f"masklet app: open http://{shown}:{actual}/  (Ctrl+C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        app.state.annotator.close()


def app_cli(args: dict[str, Any]) -> None:
    """`masklet app key=value ...`: serve the annotator."""
    unknown = set(args) - set(APP_ARGS)
    if unknown:
        raise ValueError(f"unknown key(s) for masklet app: {', '.join(sorted(unknown))}")
    kwargs = {k: args.get(k, default) for k, (default, _) in APP_ARGS.items()}
    serve(**kwargs)


__all__ = ["APP_ARGS", "app_cli", "build", "serve"]
