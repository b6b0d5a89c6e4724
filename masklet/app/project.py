"""The annotation app's project folder: what the user made, written atomically on every change.

Layout (all JSON, nothing pickled; masks are COCO RLE with compressed counts)::

    PROJECT/app.json                    {"version": 1, "current": "videos/dog.mp4"}
    PROJECT/media/<key>/state.json      objects, prompts, current frame, undo/redo stacks
    PROJECT/media/<key>/masks/<t>.json  {"<obj_id>": {"counts": "...", "score": 2.7, "source": "track"}} for frame t
    PROJECT/media/<key>/history/<n>.json  one undo (or redo) step: the state and frames it changes, as they were
    PROJECT/exports/<key>/...           COCO, YOLO-seg, DAVIS PNGs, MP4

Each file is written to a temporary file in the same folder and moved into place with `os.replace`, so a
file is always either the old or the new version, even when the server is killed mid-write. Frames of a
propagation are written one by one as they are computed: what the user has seen is on disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

VERSION = 1
MAX_UNDO = 200  # undo steps kept per media (older ones are deleted)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` via a temporary file + os.replace (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    """JSON content of `path`, or `default` when it does not exist. A corrupt file is an error naming it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"project file {path} is corrupt ({exc}); restore it from a backup or delete it to "
                         "start that media over") from None


def media_key(rel_path: str) -> str:
    """A folder name for a media path: readable, and unique through a short hash of the full path."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", rel_path).strip("._")[-60:] or "root"
    return f"{readable}-{hashlib.sha1(rel_path.encode()).hexdigest()[:8]}"


class MediaRecord:
    """The persistent annotation of one image or video: objects, prompts, per-frame masks and history.

    state: {"path", "kind", "num_frames", "height", "width", "frame", "next_id",
            "objects": [{"id", "name", "label", "color", "hidden"}],
            "prompts": {"<obj_id>": {"<frame>": {"points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | None,
                                                 "choice": int | None, "mask": bool}}},
            "undo": [step numbers], "redo": [step numbers], "step": last step number}
    frames: {frame: {"<obj_id>": {"counts": str, "score": float | None, "source": "prompt" | "track" | "import"}}}
    """

    def __init__(self, folder: Path, defaults: dict[str, Any]) -> None:
        self.folder = folder
        # a write cut short (the process killed between the temporary file and its rename) leaves the
        # temporary file behind; the file it was to replace is intact, so the leftover is dropped
        for sub in (folder, folder / "masks", folder / "history"):
            for stale in (sub.glob(".*.tmp") if sub.is_dir() else ()):
                with suppress(OSError):
                    stale.unlink()
        loaded = read_json(folder / "state.json")
        self.state: dict[str, Any] = loaded if loaded is not None else {
            **defaults, "frame": 0, "next_id": 1, "objects": [], "prompts": {}, "undo": [], "redo": [], "step": 0}
        self.frames: dict[int, dict[str, dict]] = {}
        mask_dir = folder / "masks"
        if mask_dir.is_dir():
            for f in mask_dir.glob("*.json"):
                if f.stem.isdigit():
                    self.frames[int(f.stem)] = read_json(f, {})
        if loaded is None:
            self.save()

    # ------------------------------------------------------------------ writing
    def save(self) -> None:
        write_json_atomic(self.folder / "state.json", self.state)

    def write_frame(self, t: int) -> None:
        data = self.frames.get(t) or {}
        path = self.folder / "masks" / f"{t:06d}.json"
        if data:
            write_json_atomic(path, data)
        else:
            self.frames.pop(t, None)
            with suppress(OSError):
                path.unlink()

    # ------------------------------------------------------------------ history
    def snapshot(self, frames: set[int] | list[int] = (), meta: bool = True) -> dict[str, Any]:
        """What an action may change: the masks of `frames`, and (meta) objects, prompts and next_id."""
        snap: dict[str, Any] = {"frames": {str(t): dict(self.frames.get(t, {})) for t in frames}}
        if meta:
            snap.update(objects=json.loads(json.dumps(self.state["objects"])),
                        prompts=json.loads(json.dumps(self.state["prompts"])), next_id=self.state["next_id"])
        return snap

    def push_undo(self, before: dict[str, Any]) -> None:
        """Record the state before an action as an undo step; a new action clears the redo stack."""
        for n in self.state["redo"]:
            with suppress(OSError):
                (self.folder / "history" / f"{n:06d}.json").unlink()
        self.state["redo"] = []
        self._push("undo", before)
        while len(self.state["undo"]) > MAX_UNDO:
            n = self.state["undo"].pop(0)
            with suppress(OSError):
                (self.folder / "history" / f"{n:06d}.json").unlink()

    def _push(self, stack: str, snap: dict[str, Any]) -> None:
        self.state["step"] += 1
        n = self.state["step"]
        write_json_atomic(self.folder / "history" / f"{n:06d}.json", snap)
        self.state[stack].append(n)

    def step_back(self, source: str, target: str) -> bool:
        """Undo (source="undo") or redo: restore the top step of `source`, saving the present onto `target`."""
        if not self.state[source]:
            return False
        n = self.state[source].pop()
        path = self.folder / "history" / f"{n:06d}.json"
        snap = read_json(path, None)
        if snap is None:
            raise ValueError(f"undo step {path} is missing from the project folder")
        frames = [int(t) for t in snap["frames"]]
        self._push(target, self.snapshot(frames, meta="objects" in snap))
        with suppress(OSError):
            path.unlink()
        if "objects" in snap:
            self.state["objects"], self.state["prompts"] = snap["objects"], snap["prompts"]
            self.state["next_id"] = snap["next_id"]
        for t in frames:
            self.frames[t] = dict(snap["frames"][str(t)])
            self.write_frame(t)
        self.save()
        return True


class Project:
    """A project folder: one MediaRecord per media path, and which media was open last."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        if not os.access(self.folder, os.W_OK):
            raise PermissionError(f"project folder {self.folder} is not writable: pass project=DIR")
        self.meta = read_json(self.folder / "app.json", None) or {"version": VERSION, "current": None}
        if self.meta.get("version", VERSION) > VERSION:
            raise ValueError(f"project {self.folder} was written by a newer masklet (format {self.meta['version']})")

    def set_current(self, rel_path: str | None) -> None:
        self.meta["current"] = rel_path
        write_json_atomic(self.folder / "app.json", self.meta)

    def record(self, rel_path: str, defaults: dict[str, Any]) -> MediaRecord:
        return MediaRecord(self.folder / "media" / media_key(rel_path), {"path": rel_path, **defaults})

    def export_dir(self, rel_path: str) -> Path:
        path = self.folder / "exports" / media_key(rel_path)
        path.mkdir(parents=True, exist_ok=True)
        return path
