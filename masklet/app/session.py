"""The annotation app's engine: one open image or video, its objects and prompts, over the existing predictors.

All prompt handling and tracking is `ImagePredictor` / `VideoPredictor`; this module only decides what to call,
keeps the results (as COCO RLE) in the project folder and runs propagation in a background thread with
progress and cancel. HTTP lives in server.py; persistence in project.py.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import IMAGE_SUFFIXES, read_image
from ..data.sources import VIDEO_SUFFIXES, VideoFrames
from ..predictors.image import ImagePredictor
from ..predictors.prompts import NORMALIZED_COORDS_HINT
from ..predictors.video import VideoPredictor, VideoState
from ..utils.rle import coco_rle_to_mask, mask_to_coco_rle
from .project import MediaRecord, Project

COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
          "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000"]
MAX_OBJECTS = 254  # object ids are DAVIS palette indices (255 = void)
FEATURES_AHEAD = 4  # video frames encoded ahead of the scrubber while the user is idle
IMAGE_EMBEDDINGS_KEPT = 8  # images whose embedding stays in memory (each ~16 MB for a 1024 px model)
MAX_MEDIA_LISTED = 5000
log = logging.getLogger(__name__)


class AppError(Exception):
    """An error the client caused or can fix: answered as {"detail": message} with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------------------------------------- paths
def confine(root: Path, rel: Any, what: str = "media root") -> Path:
    """`root / rel` resolved, refusing absolute paths, `..` and symlinks that lead outside `root` (403)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise AppError(400, f"path must be a non-empty string relative to the {what}, got {rel!r}")
    p = Path(rel.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise AppError(403, f"path {rel!r} is outside the {what}: give a path relative to it, without '..'")
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise AppError(403, f"path {rel!r} leads outside the {what} (through a link)")
    if not full.exists():
        raise AppError(404, f"no file or folder {rel!r} under the {what}")
    return full


def _is_frame_folder(files: list[str]) -> bool:
    images = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return len(images) >= 2 and all(Path(f).stem.isdigit() for f in images)


def list_media(root: Path, skip: Path | None = None) -> list[dict[str, Any]]:
    """Images, videos and frame folders (image files all named by number, like DAVIS's 00000.jpg) under root."""
    items: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (skip is None or folder / d != skip))
        rel_dir = folder.relative_to(root).as_posix()
        if folder != root and _is_frame_folder(filenames):
            items.append({"path": rel_dir, "kind": "frames", "name": folder.name})
            continue
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if name.lower().endswith(IMAGE_SUFFIXES):
                items.append({"path": rel, "kind": "image", "name": name})
            elif name.lower().endswith(VIDEO_SUFFIXES):
                items.append({"path": rel, "kind": "video", "name": name})
        if len(items) >= MAX_MEDIA_LISTED:
            break
    return items[:MAX_MEDIA_LISTED]


# ---------------------------------------------------------------------------------------------- media
class Media:
    """One image, video file or frame folder: size, frame count and frames as (H, W, 3) uint8 RGB."""

    def __init__(self, root: Path, rel: str) -> None:
        self.rel = rel
        path = confine(root, rel)
        self.path = path
        self.video: VideoFrames | None = None
        self.image: np.ndarray | None = None
        try:
            if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
                self.video = VideoFrames(path, cache_size=32, prefetch=8)
                self.kind, self.num_frames = "video", len(self.video)
                self.height, self.width, self.fps = self.video.height, self.video.width, self.video.fps or 30.0
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                self.image = read_image(path)
                self.kind, self.num_frames, self.fps = "image", 1, None
                self.height, self.width = self.image.shape[:2]
            else:
                raise AppError(400, f"{rel!r} is not an image ({', '.join(IMAGE_SUFFIXES)}), a video "
                                    f"({', '.join(VIDEO_SUFFIXES)}) or a folder of numbered frames")
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise AppError(400, f"cannot open {rel!r}: {exc}") from None

    def frame(self, t: int) -> np.ndarray:
        return self.image if self.image is not None else self.video[t]

    def frame_name(self, t: int) -> str:
        return self.path.stem if self.video is None else self.video.frame_name(t)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()

    def info(self) -> dict[str, Any]:
        return {"path": self.rel, "kind": self.kind, "num_frames": self.num_frames, "height": self.height,
                "width": self.width, "fps": self.fps}


def video_predictor_kwargs() -> dict[str, Any]:
    """Options of the app's VideoPredictor: a bigger feature cache (frames encoded ahead of the scrubber), and
    corrections on tracked frames kept as conditioning frames (`add_all_frames_to_correct_as_cond`, the official
    switch) whenever this masklet's VideoPredictor has that option."""
    params = inspect.signature(VideoPredictor.__init__).parameters
    kwargs: dict[str, Any] = {"feature_cache": FEATURES_AHEAD + 4}
    if "add_all_frames_to_correct_as_cond" in params:
        kwargs["add_all_frames_to_correct_as_cond"] = True
    return kwargs


def _object_score(state: Any, obj_id: int, t: int) -> float | None:
    """The tracker's object score logit of an object on a frame (> 0: present), from the predictor's state."""
    idx = state.index_of(obj_id)
    if idx is None:
        return None
    obj = state.objects[idx]
    result = obj.temp_cond.get(t) or obj.temp_non_cond.get(t) or obj.lookup(t)
    return None if result is None else float(result.object_score_logits.reshape(-1)[0])


def _entry(mask: np.ndarray, score: float | None, source: str) -> dict[str, Any]:
    return {"counts": mask_to_coco_rle(mask)["counts"], "score": score, "source": source}


# ---------------------------------------------------------------------------------------------- jobs
class Job:
    """A propagation running in the background: progress counters, cancel flag, and what it changed."""

    def __init__(self, start: int, direction: str, total: int) -> None:
        self.start, self.direction, self.total = start, direction, total
        self.done, self.error, self.cancel = 0, None, threading.Event()
        self.running, self.started, self.finished = True, time.time(), None
        self.last_frame: int | None = None

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "start": self.start, "direction": self.direction, "done": self.done,
                "total": self.total, "last_frame": self.last_frame, "cancelled": self.cancel.is_set(),
                "error": self.error, "seconds": (self.finished or time.time()) - self.started}


# ---------------------------------------------------------------------------------------------- annotator
class Annotator:
    """The app's state: the model, the open media, its record, and the predictors over them.

    Thread safety: every method that touches the predictors or the record holds `self.lock`; a propagation
    holds it one frame at a time, so frames, overlays and progress are served while it runs (prompt changes
    are refused with 409 until it ends or is cancelled).
    """

    def __init__(self, root: str | Path, model: torch.nn.Module, project: str | Path, model_name: str = "",
                 only: str | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"media root {self.root} is not a folder")
        self.model = model.eval()
        self.model_name = model_name or type(model).__name__
        self.project = Project(project)
        self.only = only  # a single media file given as source=
        self.lock = threading.RLock()
        self.media: Media | None = None
        self.record: MediaRecord | None = None
        self.video_predictor = VideoPredictor(model, **video_predictor_kwargs()) \
            if getattr(model, "family", "") == "sam2" else None
        self.video_state: Any = None
        self.dirty = False  # the predictor's state must be rebuilt from the record (after undo, restart, import)
        self.image_predictors: OrderedDict[tuple[str, int], ImagePredictor] = OrderedDict()
        self.job: Job | None = None
        self._stop = threading.Event()
        self._prefetcher = threading.Thread(target=self._prefetch_loop, name="masklet-app-prefetch", daemon=True)
        self._prefetcher.start()

    # ------------------------------------------------------------------ media
    def list_media(self) -> list[dict[str, Any]]:
        if self.only is not None:  # started on one file: list just that (not everything next to it)
            kind = "image" if self.only.lower().endswith(IMAGE_SUFFIXES) else "video"
            return [{"path": self.only, "kind": kind, "name": self.only}]
        return list_media(self.root, self.project.folder)

    def open(self, rel: str) -> dict[str, Any]:
        with self.lock:
            self._require_idle()
            if self.only is not None and rel != self.only:
                raise AppError(403, f"this server was started for {self.only!r} only")
            media = Media(self.root, rel)
            if media.kind == "video" and self.video_predictor is None:
                media.close()
                raise AppError(400, f"{rel!r} is a video: tracking needs a SAM 2 / SAM 2.1 model, the server runs "
                                    f"{self.model_name}. Restart with model=sam2.1_t.pt (or s/b/l)")
            if self.media is not None:
                self.media.close()
            self.media, self.video_state = media, None
            self.record = self.project.record(rel, {k: v for k, v in media.info().items() if k != "path"})
            self.record.state["frame"] = min(self.record.state.get("frame", 0), media.num_frames - 1)
            if media.kind == "video":
                self.video_state = self.video_predictor.init_state(media.video)
            self.dirty = bool(self.record.state["prompts"])
            self.project.set_current(rel)
            return self.state()

    def close(self) -> None:
        self._stop.set()
        if self.job is not None:
            self.job.cancel.set()
        with self.lock:
            if self.media is not None:
                self.media.close()

    def _require_media(self) -> tuple[Media, MediaRecord]:
        if self.media is None or self.record is None:
            raise AppError(409, "no media is open: open one first (POST /api/open {\"path\": ...})")
        return self.media, self.record

    def _require_idle(self) -> None:
        if self.job is not None and self.job.running:
            raise AppError(409, "a propagation is running: wait for it or cancel it (POST /api/propagate/cancel)")

    def check_frame(self, t: Any) -> int:
        media, _ = self._require_media()
        if isinstance(t, bool) or not isinstance(t, int):
            raise AppError(400, f"frame must be an integer, got {t!r}")
        if not 0 <= t < media.num_frames:
            raise AppError(400, f"frame {t} is out of range: {media.rel} has {media.num_frames} frame(s) "
                                f"(0 to {media.num_frames - 1})")
        return t

    def _edit_target(self, obj_id: int, t: Any) -> tuple[Media, MediaRecord, int, str]:
        """The checks every prompt edit makes first (call with the lock held): no propagation running, media
        open, frame in range, object known. Returns (media, record, frame, object key)."""
        self._require_idle()
        media, record = self._require_media()
        t = self.check_frame(t)
        self._object(obj_id)
        return media, record, t, str(obj_id)

    def _object(self, obj_id: int) -> dict[str, Any]:
        _, record = self._require_media()
        for obj in record.state["objects"]:
            if obj["id"] == obj_id:
                return obj
        raise AppError(404, f"unknown object {obj_id}; objects: {[o['id'] for o in record.state['objects']]}")

    # ------------------------------------------------------------------ reading
    def state(self) -> dict[str, Any]:
        with self.lock:
            media, record = self._require_media()
            s = record.state
            presence = {str(o["id"]): [None] * media.num_frames for o in s["objects"]}
            for t, entries in record.frames.items():
                for oid, e in entries.items():
                    if oid in presence and t < media.num_frames:
                        # imported masks have no object score: shown as present
                        presence[oid][t] = e["score"] if e["score"] is not None else 10.0
            return {"media": media.info(), "frame": s["frame"], "objects": s["objects"], "prompts": s["prompts"],
                    "presence": presence, "can_undo": bool(s["undo"]), "can_redo": bool(s["redo"]),
                    "job": None if self.job is None else self.job.status(), "model": self.model_name,
                    "corrections_as_cond": "add_all_frames_to_correct_as_cond" in video_predictor_kwargs()}

    def masks(self, t: int) -> dict[str, Any]:
        with self.lock:
            media, record = self._require_media()
            self.check_frame(t)
            return {"frame": t, "size": [media.height, media.width], "masks": record.frames.get(t, {})}

    def mask_array(self, t: int, obj_id: int) -> np.ndarray | None:
        media, record = self._require_media()
        entry = record.frames.get(t, {}).get(str(obj_id))
        if entry is None:
            return None
        return coco_rle_to_mask({"size": [media.height, media.width], "counts": entry["counts"]})

    def set_frame(self, t: int) -> None:
        with self.lock:
            _, record = self._require_media()
            record.state["frame"] = self.check_frame(t)
            record.save()

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None, label: str | None, color: str | None) -> dict[str, Any]:
        with self.lock:
            _, record = self._require_media()
            s = record.state
            if len(s["objects"]) >= MAX_OBJECTS or s["next_id"] > MAX_OBJECTS:
                raise AppError(400, f"at most {MAX_OBJECTS} objects per media (DAVIS palette ids)")
            before = record.snapshot()
            oid = s["next_id"]
            obj = {"id": oid, "name": name or f"object {oid}", "label": label or "object",
                   "color": color or COLORS[(oid - 1) % len(COLORS)], "hidden": False}
            s["objects"].append(obj)
            s["next_id"] = oid + 1
            record.push_undo(before)
            record.save()
            return obj

    def update_object(self, obj_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            _, record = self._require_media()
            obj = self._object(obj_id)
            before = record.snapshot()
            obj.update({k: v for k, v in changes.items() if v is not None})
            record.push_undo(before)
            record.save()
            return obj

    def delete_object(self, obj_id: int) -> None:
        with self.lock:
            self._require_idle()
            _, record = self._require_media()
            obj = self._object(obj_id)
            key = str(obj_id)
            frames = [t for t, e in record.frames.items() if key in e]
            before = record.snapshot(frames)
            record.state["objects"].remove(obj)
            record.state["prompts"].pop(key, None)
            for t in frames:
                record.frames[t].pop(key, None)
                record.write_frame(t)
            if self.video_state is not None and not self.dirty:
                self.video_predictor.remove_object(self.video_state, obj_id, strict=False, need_output=False)
            record.push_undo(before)
            record.save()

    # ------------------------------------------------------------------ prompts
    def _image_predictor(self, t: int) -> ImagePredictor:
        """An ImagePredictor with the embedding of frame t of the open media: computed once and kept."""
        media, _ = self._require_media()
        key = (media.rel, t)
        if key in self.image_predictors:
            self.image_predictors.move_to_end(key)
            return self.image_predictors[key]
        predictor = ImagePredictor(self.model)
        predictor.set_image(media.frame(t))
        self.image_predictors[key] = predictor
        while len(self.image_predictors) > IMAGE_EMBEDDINGS_KEPT:
            self.image_predictors.popitem(last=False)
        return predictor

    def _ensure_video_state(self) -> None:
        """Rebuild the tracker's state from the record after undo, redo, import or a restart: every prompted
        frame becomes a mask prompt holding exactly the mask the user saw there."""
        if not self.dirty or self.video_state is None:
            self.dirty = False
            return
        vp, state, record = self.video_predictor, self.video_state, self.record
        vp.reset_state(state)
        for oid, frames in record.state["prompts"].items():
            for t in sorted(int(f) for f in frames):
                mask = self.mask_array(t, int(oid))
                if mask is not None:
                    vp.add_new_mask(state, t, int(oid), mask)
        self.dirty = False

    def _candidates(self, t: int, points: list, box: list | None) -> tuple[np.ndarray, np.ndarray]:
        """The image predictor's masks (C, H, W) and predicted IoUs (C,) for one object's prompts on frame t:
        three candidates for a single click (an ambiguous prompt), one otherwise."""
        predictor = self._image_predictor(t)
        multimask = len(points) == 1 and box is None
        masks, iou, _ = predictor.predict(
            point_coords=[p[:2] for p in points] or None, point_labels=[p[2] for p in points] or None,
            box=box, multimask_output=multimask)
        return masks, iou

    def set_prompts(self, obj_id: int, t: int, points: list, box: list | None) -> dict[str, Any]:
        """Replace an object's prompts on frame t (points [[x, y, label]] in pixels, label 1 = positive, 0 =
        negative; box [x0, y0, x1, y1]) and compute its mask there. Empty points and no box clear the frame."""
        with self.lock:
            media, record, t, key = self._edit_target(obj_id, t)
            if not points and box is None:
                return self.clear_prompts(obj_id, t)
            before = record.snapshot([t])
            candidates: list[float] = []
            choice = None
            try:
                if media.kind == "image":
                    masks, iou = self._candidates(t, points, box)
                    choice = int(np.argmax(iou))
                    candidates = [float(v) for v in iou]
                    mask, score = masks[choice], float(iou[choice])
                else:
                    self._ensure_video_state()
                    _, ids, logits = self.video_predictor.add_new_points_or_box(
                        self.video_state, t, obj_id, points=[p[:2] for p in points] or None,
                        labels=[p[2] for p in points] or None, box=box, clear_old_points=True)
                    mask = (logits[ids.index(obj_id), 0] > 0).cpu().numpy()
                    score = _object_score(self.video_state, obj_id, t)
            except (ValueError, TypeError) as exc:  # the predictors' PromptError names the problem
                raise AppError(422, f"bad prompt: {str(exc).replace(NORMALIZED_COORDS_HINT, '')}") from None
            record.state["prompts"].setdefault(key, {})[str(t)] = {"points": points, "box": box, "choice": choice,
                                                                 "mask": False}
            record.frames.setdefault(t, {})[key] = _entry(mask, score, "prompt")
            record.push_undo(before)
            record.write_frame(t)
            record.save()
            return {"object": obj_id, "frame": t, "mask": record.frames[t][key], "candidates": candidates,
                    "choice": choice}

    def choose(self, obj_id: int, t: int, choice: int) -> dict[str, Any]:
        """Pick another of the three masks of an ambiguous single click (the multimask choice)."""
        with self.lock:
            media, record, t, key = self._edit_target(obj_id, t)
            prompt = record.state["prompts"].get(key, {}).get(str(t))
            if prompt is None or prompt.get("points") is None:
                raise AppError(409, f"object {obj_id} has no clicks on frame {t} to choose a mask for")
            masks, iou = self._candidates(t, prompt["points"], prompt["box"])
            if not 0 <= choice < len(masks):
                raise AppError(400, f"choice {choice} is out of range: this prompt has {len(masks)} candidate "
                                    "mask(s) (more than one only for a single click)")
            before = record.snapshot([t])
            mask, score = masks[choice], float(iou[choice])
            if media.kind == "video":
                self._ensure_video_state()
                _, ids, logits = self.video_predictor.add_new_mask(self.video_state, t, obj_id, masks[choice])
                mask = (logits[ids.index(obj_id), 0] > 0).cpu().numpy()
                score = _object_score(self.video_state, obj_id, t)
            prompt.update(choice=choice, mask=media.kind == "video")
            record.frames.setdefault(t, {})[key] = _entry(mask, score, "prompt")
            record.push_undo(before)
            record.write_frame(t)
            record.save()
            return {"object": obj_id, "frame": t, "mask": record.frames[t][key],
                    "candidates": [float(v) for v in iou], "choice": choice}

    def clear_prompts(self, obj_id: int, t: int) -> dict[str, Any]:
        """Remove an object's prompts and mask on frame t."""
        with self.lock:
            _, record, t, key = self._edit_target(obj_id, t)
            before = record.snapshot([t])
            frames = record.state["prompts"].get(key, {})
            had = frames.pop(str(t), None) is not None
            if not frames:
                record.state["prompts"].pop(key, None)
            record.frames.get(t, {}).pop(key, None)
            if had and self.video_state is not None:
                self.dirty = True  # the tracker forgets this frame's prompt at the next rebuild
            record.push_undo(before)
            record.write_frame(t)
            record.save()
            return {"object": obj_id, "frame": t, "mask": None, "candidates": [], "choice": None}

    # ------------------------------------------------------------------ history
    def undo(self, redo: bool = False) -> dict[str, Any]:
        with self.lock:
            self._require_idle()
            _, record = self._require_media()
            source, target = ("redo", "undo") if redo else ("undo", "redo")
            if not record.step_back(source, target):
                raise AppError(409, f"nothing to {source}")
            self.dirty = self.video_state is not None
            return self.state()

    # ------------------------------------------------------------------ propagation
    def propagate(self, t: int, direction: str) -> dict[str, Any]:
        with self.lock:
            self._require_idle()
            media, record = self._require_media()
            if media.kind != "video":
                raise AppError(400, "propagation needs a video; an image has one frame")
            t = self.check_frame(t)
            if direction not in ("forward", "backward", "both"):
                raise AppError(422, f"direction must be forward, backward or both, got {direction!r}")
            if not any(record.state["prompts"].values()):
                raise AppError(409, "no object has prompts yet: click an object first, then propagate")
            # the predictor's reverse pass from frame 0 has nothing to track
            total = (media.num_frames - t if direction != "backward" else 0) + \
                (t + 1 if direction != "forward" and t > 0 else 0)
            self.job = Job(t, direction, total)
            threading.Thread(target=self._run_job, args=(self.job,), name="masklet-app-propagate",
                             daemon=True).start()
            return self.job.status()

    def _run_job(self, job: Job) -> None:
        record = self.record
        before: dict[int, dict] = {}
        snap = record.snapshot(meta=False)  # undo takes back the frames only, not object edits made meanwhile
        try:
            with self.lock:
                self._ensure_video_state()
            passes = {"forward": [False], "backward": [True], "both": [False, True]}[job.direction]
            for reverse in passes:
                frames = self.video_predictor.propagate_in_video(self.video_state, start_frame_idx=job.start,
                                                                 reverse=reverse, progress=False)
                while not job.cancel.is_set():
                    with self.lock:
                        item = next(frames, None)
                        if item is None:
                            break
                        t, ids, logits = item
                        self._store_tracked(record, t, ids, logits, before)
                    job.done += 1
                    job.last_frame = t
                frames.close()
                if job.cancel.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 (shown to the user in the progress; frames done so far are kept)
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self.lock:
                if before:
                    snap["frames"] = {str(t): v for t, v in before.items()}
                    record.push_undo(snap)
                    record.save()
                job.running, job.finished = False, time.time()

    def _store_tracked(self, record: MediaRecord, t: int, ids: list[int], logits: torch.Tensor,
                       before: dict[int, dict]) -> None:
        """Write one propagated frame; an object's own prompted frames keep the mask of its prompt."""
        entries = record.frames.setdefault(t, {})
        if t not in before:
            before[t] = dict(entries)
        prompts = record.state["prompts"]
        known = {str(o["id"]) for o in record.state["objects"]}
        masks = (logits[:, 0] > 0).cpu().numpy()
        for i, oid in enumerate(ids):
            key = str(oid)
            if key not in known or str(t) in prompts.get(key, {}):
                continue
            entries[key] = _entry(masks[i], _object_score(self.video_state, oid, t), "track")
        record.write_frame(t)

    def cancel(self) -> dict[str, Any]:
        if self.job is None or not self.job.running:
            raise AppError(409, "no propagation is running")
        self.job.cancel.set()
        return self.job.status()

    # ------------------------------------------------------------------ background encoding
    def _prefetch_loop(self) -> None:
        """Encode the frames just ahead of the scrubber while no propagation runs, so a click there only decodes.

        The encoder runs outside the app's lock, on a private VideoState over the same frames (the predictor's
        own `_features`, so exactly what tracking computes); only handing the features over takes the lock, so a
        click never waits for a frame it did not ask for."""
        shadow = None
        while not self._stop.wait(0.2):
            if (self.job is not None and self.job.running) or self.video_state is None:
                continue
            with self.lock:
                state, record = self.video_state, self.record
                if state is None or record is None:
                    continue
                cur = record.state["frame"]
                todo = [t for t in range(cur, min(cur + FEATURES_AHEAD, state.num_frames))
                        if t not in state.feature_cache]
                if not todo:
                    continue
                if shadow is None or shadow.frames is not state.frames:
                    shadow = VideoState(state.frames, state.num_frames, state.video_height, state.video_width,
                                        state.device, state.storage_device)
            try:
                with torch.inference_mode():
                    features = self.video_predictor._features(shadow, todo[0])
            except Exception as exc:  # noqa: BLE001 (an unreadable frame is reported when the user goes there)
                log.debug("encoding ahead failed: %s", exc)
                continue
            shadow.feature_cache.clear()
            with self.lock:
                if self.video_state is state and todo[0] not in state.feature_cache:
                    self.video_predictor._cache_features(state, todo[0], features)

    def is_prefetched(self, t: int) -> bool:
        return self.video_state is not None and t in self.video_state.feature_cache


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    try:
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    except ValueError:
        return 255, 0, 0


def overlay_rgba(annotator: Annotator, t: int, alpha: int = 120) -> np.ndarray:
    """The visible objects' masks on frame t as an (H, W, 4) uint8 RGBA overlay (transparent elsewhere)."""
    media, record = annotator._require_media()
    out = np.zeros((media.height, media.width, 4), dtype=np.uint8)
    for obj in record.state["objects"]:
        if obj.get("hidden"):
            continue
        mask = annotator.mask_array(t, obj["id"])
        if mask is not None:
            out[mask] = (*hex_to_rgb(obj["color"]), alpha)
    return out


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None
