"""Box sources of `auto_annotate` (detectors, label folders, COCO JSON, segment-everything) and the box filter.

Each source turns an image into `Detections` (xyxy pixels, class ids, optional scores); `_filter` then clips,
filters by class and score, runs per-class NMS and caps the count. Split out of `masklet.api.annotate`.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


class AnnotateWarning(UserWarning):
    """Something in the input was skipped or led to no annotations (the run still completes)."""


class DetectorUnavailableError(ImportError, ValueError):
    """det_model names an Ultralytics model but the optional `ultralytics` package is not installed.

    Also a ValueError, so that the command line reports it as bad input rather than a crash."""


@dataclass
class Detections:
    """Boxes of one image: xyxy pixels (N, 4) float64, class ids (N,) int64, scores (N,) float64 or None
    (None: the source gives no scores, e.g. ground-truth labels)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.classes)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.classes[index], None if self.scores is None else self.scores[index])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), None)


@dataclass
class _Instance:
    """One annotation: class id as the box source gives it, (H, W) bool mask, score and track id (videos)."""

    cls: int
    mask: np.ndarray
    score: float | None = None
    track_id: int | None = None


@dataclass
class _Stats:
    """Counts for the summary and for explaining an empty result."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    boxes_found: int = 0  # before any filtering
    removed_by_classes: int = 0
    removed_by_conf_nms: int = 0  # conf, NMS and max_det
    invalid_boxes: int = 0  # outside the image or zero-sized
    no_entry: list = field(default_factory=list)  # images without a label file / COCO entry
    unusable_masks: int = 0  # empty masks or polygons with fewer than 3 points
    written: int = 0
    classes_seen: Counter = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------------- box sources
def _numpy(x: Any, name: str, dtype: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"det_model returned {name} that is not numeric: {exc}") from None


def _as_detections(out: Any, where: str) -> Detections:
    """Validate what a callable detector returned."""
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise ValueError(f"{where} must return (boxes_xyxy, classes) or (boxes_xyxy, classes, scores), got "
                         f"{type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    boxes = _numpy(out[0], "boxes", np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where} returned boxes of shape {boxes.shape}; expected (N, 4) x1, y1, x2, y2 pixels")
    classes = _numpy(out[1], "classes", np.float64).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"{where} returned {len(boxes)} boxes but {len(classes)} classes (one class id per box)")
    if len(classes) and (not np.all(np.isfinite(classes)) or np.any(classes != np.round(classes)) or classes.min() < 0):
        raise ValueError(f"{where} returned class ids {classes[:5].tolist()}...: class ids must be integers >= 0")
    scores = None
    if len(out) == 3 and out[2] is not None:
        scores = _numpy(out[2], "scores", np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{where} returned {len(boxes)} boxes but {len(scores)} scores (one score per box)")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{where} returned boxes with NaN or infinite coordinates")
    return Detections(boxes, classes.astype(np.int64), scores)


class _BoxSource:
    """Where the boxes of an image come from. `detect` returns None when the source has no entry for the image
    (label sources only); `keys` are the names the image may be listed under, most specific first."""

    kind = "detector"
    names: ClassVar[dict[int, str]] = {}  # instances that know names set their own
    # label sources: the stems they hold, to report entries that match no image
    entries: set[str] | None = None

    def detect(self, image: np.ndarray, keys: Sequence[str]) -> Detections | None:
        raise NotImplementedError

    def output_class(self, cls: int, fmt: str) -> int:
        """The id written to the output for a class id of this source."""
        return cls


class _CallableSource(_BoxSource):
    def __init__(self, fn: Callable[[np.ndarray], Any]) -> None:
        self.fn = fn
        self.names = _names_of(getattr(fn, "names", None))
        self.where = f"det_model {getattr(fn, '__name__', type(fn).__name__)}"

    def detect(self, image: np.ndarray, keys: Sequence[str]) -> Detections:
        return _as_detections(self.fn(image), self.where)


class _UltralyticsSource(_BoxSource):
    def __init__(self, weights: str, conf: float, iou: float, imgsz: int, max_det: int,
                 classes: list[int] | None, device: Any) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise DetectorUnavailableError(_no_ultralytics_message(weights)) from None
        self.model = YOLO(weights)
        self.names = _names_of(getattr(self.model, "names", None))
        self.kwargs = {"conf": conf, "iou": iou, "imgsz": imgsz, "max_det": max_det, "classes": classes,
                       "device": device or None, "verbose": False}

    def detect(self, image: np.ndarray, keys: Sequence[str]) -> Detections:
        # Ultralytics takes numpy images as OpenCV does: BGR
        result = self.model.predict(np.ascontiguousarray(image[..., ::-1]), **self.kwargs)[0]
        b = result.boxes
        return _as_detections((b.xyxy, b.cls, b.conf), "the Ultralytics model")


class _YoloLabelSource(_BoxSource):
    """A folder of YOLO labels: `cls cx cy w h` (normalised), optionally a 6th column with a score; segmentation
    lines (`cls x1 y1 x2 y2 x3 y3 ...`) give the box around their polygon. LabelImg's classes.txt gives names."""

    kind = "labels"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt"
                 and not p.name.startswith(".")]
        names_file = folder / "classes.txt"
        if names_file.is_file():
            # LabelImg writes the class names next to its labels; it is not a label file itself
            files = [p for p in files if p != names_file]
            lines = [s.strip() for s in names_file.read_text().splitlines()]
            self.names = {i: s for i, s in enumerate(lines) if s}
        if not files:
            raise ValueError(f"det_model folder {folder} holds no YOLO label files (<image stem>.txt with lines "
                             "'cls cx cy w h', normalised): pass the labels folder of a detection dataset")
        self.files = {p.stem: p for p in files}
        self.entries = set(self.files)

    def detect(self, image: np.ndarray, keys: Sequence[str]) -> Detections | None:
        path = next((self.files[k] for k in keys if k in self.files), None)
        if path is None:
            return None
        h, w = image.shape[:2]
        boxes, classes, scores = [], [], []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                values = [float(v) for v in parts]
            except ValueError:
                raise ValueError(f"{path}:{line_no}: not a YOLO label line ({line.strip()!r}); expected "
                                 "'cls cx cy w h' with normalised numbers") from None
            cls, rest = values[0], values[1:]
            if cls != int(cls) or cls < 0:
                raise ValueError(f"{path}:{line_no}: class id {parts[0]} is not an integer >= 0")
            score = None
            if len(rest) in (4, 5):
                cx, cy, bw, bh = rest[:4]
                box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
                score = rest[4] if len(rest) == 5 else None
            elif len(rest) >= 6 and len(rest) % 2 == 0:
                xy = np.asarray(rest).reshape(-1, 2)
                box = [*xy.min(0), *xy.max(0)]
            else:
                raise ValueError(f"{path}:{line_no}: {len(parts)} numbers; a YOLO label line is 'cls cx cy w h' "
                                 "(optionally followed by a score) or a polygon 'cls x1 y1 x2 y2 x3 y3 ...'")
            boxes.append(np.asarray(box) * [w, h, w, h])
            classes.append(int(cls))
            scores.append(score)
        if not boxes:
            return Detections.empty()
        has_scores = all(s is not None for s in scores)
        return Detections(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64),
                          np.asarray(scores, dtype=np.float64) if has_scores else None)


class _CocoSource(_BoxSource):
    """Boxes of a COCO JSON (`images`, `annotations` with XYWH `bbox`, `categories`); images are matched by file
    name, then by stem. Crowd annotations (iscrowd=1) are skipped: they mark groups, not one object."""

    kind = "labels"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"det_model {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise ValueError(f"det_model {path} is not a COCO dataset JSON: expected an object with 'images' and "
                             "'annotations' lists (and 'categories')")
        self.categories = [c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c]
        self.names = {int(c["id"]): str(c.get("name", c["id"])) for c in self.categories}
        by_id: dict[Any, dict] = {}
        self.by_name: dict[str, Any] = {}
        self.by_stem: dict[str, Any] = {}
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise ValueError(f"det_model {path}: every entry of 'images' needs 'id' and 'file_name', got {img!r}")
            by_id[img["id"]] = img
            file_name = Path(str(img["file_name"]))
            self.by_name.setdefault(file_name.name, img["id"])
            self.by_stem.setdefault(file_name.stem, img["id"])
        self.images = by_id
        self.annotations: dict[Any, list[dict]] = {}
        for k, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "bbox" not in ann or "image_id" not in ann or "category_id" not in ann:
                raise ValueError(f"det_model {path}: annotation {k} needs 'image_id', 'category_id' and 'bbox'")
            if ann["image_id"] not in by_id:
                raise ValueError(f"det_model {path}: annotation {k} refers to image_id {ann['image_id']!r}, which is "
                                 "not in 'images'")
            if ann.get("iscrowd", 0):
                continue
            self.annotations.setdefault(ann["image_id"], []).append(ann)
        for ann in (a for anns in self.annotations.values() for a in anns):
            self.names.setdefault(int(ann["category_id"]), str(ann["category_id"]))
        # YOLO class ids must be 0..N-1: categories in id order
        self.yolo_ids = {cid: i for i, cid in enumerate(sorted(self.names))}
        self.entries = set(self.by_stem)
        self.used: set[Any] = set()

    def lookup(self, keys: Sequence[str]) -> Any:
        for key in keys:
            for table, k in ((self.by_name, key), (self.by_stem, Path(key).stem)):
                if k in table:
                    return table[k]
        return None

    def detect(self, image: np.ndarray, keys: Sequence[str]) -> Detections | None:
        image_id = self.lookup(keys)
        if image_id is None:
            return None
        info = self.images[image_id]
        h, w = image.shape[:2]
        if ("width" in info and int(info["width"]) != w) or ("height" in info and int(info["height"]) != h):
            raise ValueError(f"det_model {self.path}: image {info['file_name']} is {info.get('width')}x"
                             f"{info.get('height')} in the JSON but {w}x{h} on disk; the boxes would not fit")
        anns = self.annotations.get(image_id, [])
        if not anns:
            return Detections.empty()
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.asarray([int(a["category_id"]) for a in anns], dtype=np.int64)
        has_scores = all("score" in a for a in anns)
        scores = np.asarray([a["score"] for a in anns], dtype=np.float64) if has_scores else None
        return Detections(boxes, classes, scores)

    def output_class(self, cls: int, fmt: str) -> int:
        # COCO keeps the dataset's own category ids; YOLO needs contiguous ids from 0
        return cls if fmt == "coco" else self.yolo_ids[cls]


class _EverythingSource(_BoxSource):
    """No detector: the automatic mask generator's masks, all class 0."""

    kind = "everything"
    names: ClassVar[dict[int, str]] = {0: "object"}


def _names_of(names: Any) -> dict[int, str]:
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return {i: str(v) for i, v in enumerate(names)}
    return {}


def _no_ultralytics_message(det_model: Any) -> str:
    return (f"det_model={str(det_model)!r} is not an existing labels folder or COCO JSON, so it is taken as an "
            "Ultralytics YOLO model, which needs the optional `ultralytics` package: pip install ultralytics. "
            "Without it, det_model can be a callable image -> (boxes_xyxy, classes[, scores]), a folder of YOLO "
            "detection labels (<image stem>.txt), a COCO JSON with boxes, or None to segment everything.")


def _box_source(det_model: Any, conf: float, iou: float, imgsz: int, max_det: int, classes: list[int] | None,
                device: Any) -> _BoxSource:
    if det_model is None:
        return _EverythingSource()
    if isinstance(det_model, (str, Path)):
        path = Path(det_model).expanduser()
        if path.is_dir():
            return _YoloLabelSource(path)
        if path.suffix.lower() == ".json":
            if not path.is_file():
                raise FileNotFoundError(f"det_model COCO JSON not found: {path}")
            return _CocoSource(path)
        if str(det_model).strip().lower() in ("", "none"):
            return _EverythingSource()
        return _UltralyticsSource(str(det_model), conf, iou, imgsz, max_det, classes, device)
    if callable(det_model):
        return _CallableSource(det_model)
    raise TypeError(f"det_model must be a YOLO weights name/path, a callable image -> (boxes, classes[, scores]), "
                    f"a labels folder, a COCO JSON path or None, got {type(det_model).__name__}")


# ---------------------------------------------------------------------------------------------- filtering
def _filter(dets: Detections, hw: tuple[int, int], conf: float, iou: float, max_det: int,
            classes: set[int] | None, stats: _Stats) -> Detections:
    """Clip to the image, then classes, conf, per-class NMS and max_det. Unscored boxes (labels) skip conf and NMS:
    NMS on ground truth would delete genuinely overlapping objects."""
    from ..utils.boxes import batched_nms

    stats.boxes_found += len(dets)
    stats.classes_seen.update(dets.classes.tolist())
    if classes is not None and len(dets):
        keep = np.isin(dets.classes, sorted(classes))
        stats.removed_by_classes += int((~keep).sum())
        dets = dets.take(np.nonzero(keep)[0])
    if len(dets):
        h, w = hw
        boxes = dets.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        stats.invalid_boxes += int((~valid).sum())
        dets = Detections(boxes, dets.classes, dets.scores).take(np.nonzero(valid)[0])
    n = len(dets)
    if dets.scores is not None and n:
        keep = np.nonzero(dets.scores >= conf)[0]
        dets = dets.take(keep)
        if len(dets):
            order = batched_nms(torch.from_numpy(dets.boxes).float(), torch.from_numpy(dets.scores).float(),
                                torch.from_numpy(dets.classes), iou).numpy()
            dets = dets.take(order)
    dets = dets.take(np.arange(min(len(dets), max_det)))
    stats.removed_by_conf_nms += n - len(dets)
    return dets
