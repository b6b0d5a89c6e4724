"""Auto-annotation: detector boxes -> SAM masks -> a segmentation dataset (YOLO label files or COCO JSON).

    from masklet import auto_annotate
    auto_annotate("path/to/images", det_model="yolo11x.pt", sam_model="sam2_b.pt")

The same call as Ultralytics' `auto_annotate`, with more kinds of box sources (`det_model`):

* an Ultralytics YOLO weights name or path (needs the optional `ultralytics` package, imported only here);
* any callable `image -> (boxes_xyxy, classes[, scores])` taking an (H, W, 3) uint8 RGB array;
* a folder of YOLO detection labels (`<stem>.txt`, lines `cls cx cy w h [conf]` normalised) or a COCO JSON with
  boxes: turns a box-labelled dataset into a segmentation dataset;
* None: segment everything with the automatic mask generator (every mask is class 0).

Videos are annotated frame by frame with SAM 2's tracker, so object ids persist across frames.
"""
from __future__ import annotations

import difflib
import json
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "ANNOTATE_ARGS",
    "AnnotateWarning",
    "Detections",
    "DetectorUnavailableError",
    "annotate_cli",
    "auto_annotate",
]

FORMATS = ("yolo", "coco")
COCO_FILE = "annotations.json"
# Boxes prompted at once: the predictor returns float32 masks at the image size, so a batch of 300 boxes on a
# 12 MP photo would hold 14 GB.
BOX_CHUNK = 16

# key -> (default, help): the keys of `annotate_cli` / `masklet annotate`, with the Python API's defaults.
ANNOTATE_ARGS: dict[str, tuple[Any, str]] = {
    "data": (None, "required: a folder of images and/or videos, one image or video file, or a glob pattern"),
    "det_model": ("yolo11x.pt", ("box source: Ultralytics YOLO weights (needs `pip install ultralytics`), a folder "
                                 "of YOLO detection labels (<stem>.txt: cls cx cy w h, normalised), a COCO JSON with "
                                 "boxes, or None to segment everything (class 0)")),
    "sam_model": ("sam2_b.pt", "SAM checkpoint name (sam2_t.pt ... sam2.1_l.pt, sam_b.pt, mobile_sam.pt) or path"),
    "device": ("", "cpu, cuda, cuda:N, N or mps; empty: a GPU when there is one"),
    "conf": (0.25, "drop detector boxes scored below this (boxes without a score, e.g. labels, are kept)"),
    "iou": (0.45, "NMS IoU threshold on scored detector boxes, per class"),
    "imgsz": (640, "detector input size (Ultralytics YOLO only); SAM runs at its native size"),
    "max_det": (300, "at most this many boxes (masks) per image or video"),
    "classes": (None, "keep only these class ids (of the box source), e.g. classes=[0,2]"),
    "output_dir": (None, "where to write; default <data parent>/<data name>_auto_annotate_labels"),
    "format": ("yolo", ("yolo: one <stem>.txt per image (cls x1 y1 x2 y2 ..., normalised); coco: one "
                        "annotations.json with RLE masks")),
    "amg_args": (None, "det_model=None only: options of the automatic mask generator, e.g. {'points_per_side': 16}"),
    "verbose": (True, "show a progress bar and print a summary"),
}


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


# ---------------------------------------------------------------------------------------------- writers
def _polygon_line(cls: int, mask: np.ndarray) -> str | None:
    """`cls x1 y1 x2 y2 ...` normalised, from the outer contour of the mask's largest component; None when it has
    fewer than 3 points (YOLO labels keep one polygon per object)."""
    from ..utils.masks import largest_polygon

    poly = largest_polygon(mask)
    if len(poly) < 3:
        return None
    h, w = mask.shape
    xy = (poly.astype(np.float64) / [w, h]).clip(0.0, 1.0)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1))


class _YoloWriter:
    def __init__(self, output_dir: Path, source: _BoxSource) -> None:
        self.output_dir, self.source = output_dir, source

    def write(self, stem: str, hw: tuple[int, int], instances: Iterable[_Instance], stats: _Stats,
              **_: Any) -> None:
        lines = []
        for inst in instances:
            line = _polygon_line(self.source.output_class(inst.cls, "yolo"), inst.mask)
            if line is None:
                stats.unusable_masks += 1
                continue
            lines.append(line)
        stats.written += len(lines)
        # An image without objects still gets its (empty) file: YOLO reads it as background, and the folder then
        # shows which images were processed.
        (self.output_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))

    def close(self, stats: _Stats) -> None:
        pass


class _CocoWriter:
    def __init__(self, output_dir: Path, source: _BoxSource) -> None:
        self.output_dir, self.source = output_dir, source
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.used_classes: set[int] = set()

    def write(self, stem: str, hw: tuple[int, int], instances: Iterable[_Instance], stats: _Stats,
              file_name: str = "", extra: dict | None = None) -> None:
        from ..utils.rle import mask_to_coco_rle

        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name or stem, "height": int(hw[0]),
                            "width": int(hw[1]), **(extra or {})})
        for inst in instances:
            ys, xs = np.nonzero(inst.mask.any(1))[0], np.nonzero(inst.mask.any(0))[0]
            if len(ys) == 0:
                stats.unusable_masks += 1
                continue
            category = self.source.output_class(inst.cls, "coco")
            self.used_classes.add(category)
            # bbox as pycocotools' toBbox: the pixel extent, so w = last - first + 1
            ann = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": int(category),
                   "segmentation": mask_to_coco_rle(inst.mask), "area": int(inst.mask.sum()),
                   "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)], "iscrowd": 0}
            if inst.score is not None:
                ann["score"] = float(inst.score)
            if inst.track_id is not None:
                ann["track_id"] = int(inst.track_id)
            self.annotations.append(ann)
            stats.written += 1

    def close(self, stats: _Stats) -> None:
        source = self.source
        if isinstance(source, _CocoSource) and source.categories:
            categories = [{k: v for k, v in c.items()} for c in source.categories]
            known = {int(c["id"]) for c in categories}
            categories += [{"id": c, "name": str(c)} for c in sorted(self.used_classes - known)]
        else:
            ids = sorted(set(source.names) | self.used_classes)
            categories = [{"id": c, "name": source.names.get(c, str(c))} for c in ids]
        doc = {"info": {"description": "masklet auto_annotate"}, "images": self.images,
               "annotations": self.annotations, "categories": categories}
        (self.output_dir / COCO_FILE).write_text(json.dumps(doc))


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class _Item:
    kind: str  # "image" or "video"
    path: Path


def _collect(data: Any) -> tuple[list[_Item], Path | None]:
    """The images and videos of `data`, and the path that names the default output folder (None for lists)."""
    from ..data.sources import open_source

    if isinstance(data, (str, Path)):
        paths, anchor = [data], Path(data).expanduser()
    elif isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, Path)) for d in data):
        paths, anchor = list(data), None
    else:
        raise TypeError(f"data must be a folder, an image or video file, a glob pattern, or a list of paths; got "
                        f"{type(data).__name__}" + (" (empty)" if isinstance(data, (list, tuple)) else "")
                        + ". Save in-memory images to files first: the labels are named after the files.")
    items: list[_Item] = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            sources = open_source(str(path))
        except FileNotFoundError as exc:
            if path.is_dir():
                subdirs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
                hint = (f" It holds the folders {', '.join(subdirs[:5])}: pass the one with the images "
                        "(folders are not searched recursively)." if subdirs else "")
                raise FileNotFoundError(f"auto_annotate: {exc}.{hint}") from None
            raise
        for src in sources:
            if src.kind not in ("image", "video") or src.path is None:
                raise ValueError(f"auto_annotate takes image and video files, not streams or webcams: {src.name}")
            items.append(_Item(src.kind, Path(src.path)))
    return items, anchor


def _default_output_dir(data: Path) -> Path:
    """<data parent>/<data name>_auto_annotate_labels, as Ultralytics; a glob names it after its folder."""
    while any(c in data.name for c in "*?[") or data.name in ("", ".", ".."):
        data = data.parent if any(c in data.name for c in "*?[") else data.resolve()
    name = data.name if data.is_dir() else data.stem
    return data.parent / f"{name}_auto_annotate_labels"


def _output_names(items: list[_Item]) -> None:
    """Label files are named after the image stems: two inputs with the same stem would overwrite each other."""
    owners: dict[str, list[str]] = {}
    for item in items:
        owners.setdefault(item.path.stem, []).append(str(item.path))
    clashes = {stem: files for stem, files in owners.items() if len(files) > 1}
    if clashes:
        stem, files = next(iter(clashes.items()))
        raise ValueError(f"{len(clashes)} file name(s) would share a label file, e.g. {', '.join(files)} -> "
                         f"{stem}.txt; rename them or annotate them in separate runs")


def _check_entries(source: _BoxSource, items: list[_Item]) -> None:
    """Label entries that match no input: none at all means the labels belong to other images (an error); some
    (e.g. a labels folder shared by several splits) are reported and ignored."""
    if source.entries is None:
        return
    keys: set[str] = set()
    for item in items:
        keys.update(_keys(item))
    if isinstance(source, _CocoSource):
        keys |= {Path(k).stem for k in keys}
    unmatched = sorted(source.entries - keys)
    where = getattr(source, "folder", None) or getattr(source, "path", "")
    if source.entries and len(unmatched) == len(source.entries):
        raise ValueError(f"none of the {len(unmatched)} label entries in {where} matches an image or video of data "
                         f"(e.g. {', '.join(unmatched[:3])}); labels are matched to images by file stem "
                         "(truck.jpg <-> truck.txt). Check that data and det_model belong together.")
    if unmatched:
        suffix = " (labels of a video's first frame are named <video stem>_000000)" if any(
            i.kind == "video" for i in items) else ""
        warnings.warn(f"{len(unmatched)} label entr{'y' if len(unmatched) == 1 else 'ies'} in {where} match no image "
                      f"in data and are ignored: {', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
                      f"{suffix}", AnnotateWarning, stacklevel=3)


def _keys(item: _Item) -> list[str]:
    if item.kind == "video":
        return [f"{item.path.stem}_{0:06d}", item.path.stem]
    return [item.path.stem, item.path.name]


# ---------------------------------------------------------------------------------------------- models
def _load_sam(sam_model: Any, device: Any) -> nn.Module:
    from .sam import select_device

    if isinstance(sam_model, nn.Module):
        model = sam_model.eval()
        if device not in (None, "") and hasattr(model, "device"):
            model.to(select_device(device, model.device))
    elif isinstance(sam_model, (str, Path)):
        from ..models.build import load_model
        from ..utils.downloads import resolve_weights

        path = resolve_weights(sam_model)
        auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(path, device=select_device(device, auto))
    else:
        raise TypeError(f"sam_model must be a checkpoint name or path (e.g. 'sam2_b.pt') or a loaded masklet model, "
                        f"got {type(sam_model).__name__}")
    for name in ("encode_prompts", "decode", "image_embedding", "input_spec"):
        if not hasattr(model, name):
            raise TypeError(f"sam_model must be a masklet SAM / SAM 2 model (masklet.load_model), got "
                            f"{type(model).__name__} without {name!r}")
    return model


def _mask_generator(model: nn.Module, amg_args: dict | None) -> Any:
    try:
        from ..predictors.everything import AutomaticMaskGenerator
    except ImportError as exc:
        raise ImportError(f"det_model=None needs masklet.predictors.everything ({exc})") from None
    try:
        return AutomaticMaskGenerator(model, **(amg_args or {}))
    except TypeError as exc:
        raise ValueError(f"amg_args: {exc}") from None


# ---------------------------------------------------------------------------------------------- annotation
class _Annotator:
    def __init__(self, model: nn.Module, source: _BoxSource, writer: Any, conf: float, iou: float, max_det: int,
                 classes: set[int] | None, amg_args: dict | None, verbose: bool) -> None:
        self.model, self.source, self.writer = model, source, writer
        self.conf, self.iou, self.max_det, self.classes = conf, iou, max_det, classes
        self.verbose = verbose
        self.stats = _Stats()
        self.generator = _mask_generator(model, amg_args) if isinstance(source, _EverythingSource) else None
        self._predictor = None

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from ..predictors.image import ImagePredictor

            self._predictor = ImagePredictor(self.model)
        return self._predictor

    # -- what to segment
    def _everything(self, image: np.ndarray) -> list[_Instance]:
        records = self.generator.generate(image)
        self.stats.boxes_found += len(records)
        self.stats.classes_seen.update([0] * len(records))
        if self.classes is not None and 0 not in self.classes:
            self.stats.removed_by_classes += len(records)
            return []
        records = sorted(records, key=lambda r: -r["predicted_iou"])
        self.stats.removed_by_conf_nms += max(0, len(records) - self.max_det)
        return [_Instance(0, np.asarray(r["segmentation"], dtype=bool), float(r["predicted_iou"]))
                for r in records[:self.max_det]]

    def _detections(self, image: np.ndarray, keys: Sequence[str]) -> Detections:
        dets = self.source.detect(image, keys)
        if dets is None:
            self.stats.no_entry.append(keys[0])
            return Detections.empty()
        return _filter(dets, image.shape[:2], self.conf, self.iou, self.max_det, self.classes, self.stats)

    def _segment_boxes(self, image: np.ndarray, dets: Detections) -> Iterator[_Instance]:
        """One instance per box, produced lazily: the writer turns each full-size mask into a polygon or an RLE
        before the next chunk is decoded, so memory does not grow with max_det."""
        if not len(dets):
            return  # nothing to prompt: skip the image encoder
        predictor = self.predictor
        predictor.set_image(image)
        try:
            for s in range(0, len(dets), BOX_CHUNK):
                chunk = dets.boxes[s:s + BOX_CHUNK]
                masks, _, _ = predictor.predict(box=chunk.astype(np.float32), multimask_output=False)
                # one box gives (1, H, W), several (B, 1, H, W)
                masks = masks.reshape(len(chunk), -1, *image.shape[:2])[:, 0] > 0
                for k, mask in enumerate(masks):
                    i = s + k
                    score = None if dets.scores is None else float(dets.scores[i])
                    yield _Instance(int(dets.classes[i]), mask, score)
        finally:
            predictor.reset_predictor()

    # -- inputs
    def image(self, path: Path) -> None:
        from ..data.images import read_image

        image = read_image(path)
        if self.generator is not None:
            instances = self._everything(image)
        else:
            instances = self._segment_boxes(image, self._detections(image, _keys(_Item("image", path))))
        self.writer.write(path.stem, image.shape[:2], instances, self.stats, file_name=path.name)
        self.stats.images += 1

    @torch.inference_mode()
    def video(self, path: Path) -> None:
        from tqdm.auto import tqdm

        from ..predictors.video import VideoPredictor

        predictor = VideoPredictor(self.model)
        state = predictor.init_state(str(path))
        try:
            first = state.frames[0]
            objects: dict[int, tuple[int, float | None]] = {}  # track id -> (class, score)
            if self.generator is not None:
                for k, inst in enumerate(self._everything(first), 1):
                    predictor.add_new_mask(state, 0, k, inst.mask)
                    objects[k] = (inst.cls, inst.score)
            else:
                dets = self._detections(first, _keys(_Item("video", path)))
                for k in range(len(dets)):
                    predictor.add_new_points_or_box(state, 0, k + 1, box=dets.boxes[k].astype(np.float32))
                    objects[k + 1] = (int(dets.classes[k]), None if dets.scores is None else float(dets.scores[k]))
            hw = (state.video_height, state.video_width)
            if objects:
                # one pass: only what tracking onwards reads is kept, so RAM stays flat on long videos
                tracked = predictor.propagate_in_video(state, progress=False, one_pass=True)
            else:
                empty = torch.zeros(0, 1, *hw)
                tracked = ((k, [], empty) for k in range(state.num_frames))
            for frame_idx, obj_ids, logits in tqdm(tracked, total=state.num_frames, desc=path.name, unit="frame",
                                                   leave=False, disable=not self.verbose):
                masks = (logits[:, 0] > 0).cpu().numpy()
                instances = [_Instance(objects[i][0], masks[k], objects[i][1], track_id=i)
                             for k, i in enumerate(obj_ids)]
                stem = f"{path.stem}_{frame_idx:06d}"
                # A tracked object can leave the frame: its empty mask is simply not written there.
                instances = [inst for inst in instances if inst.mask.any()]
                self.writer.write(stem, hw, instances, self.stats, file_name=f"{stem}.jpg",
                                  extra={"video": path.name, "frame_index": int(frame_idx)})
                self.stats.frames += 1
        finally:
            if state.frames is not None:
                state.frames.close()
        self.stats.videos += 1

    # -- the end
    def explain_empty(self, classes: list[int] | None) -> str | None:
        """Why nothing was written, or None when something was."""
        s = self.stats
        if s.written:
            return None
        n = f"{s.images} image(s)" + (f" and {s.frames} video frame(s)" if s.frames else "")
        if s.boxes_found == 0:
            if self.source.kind == "labels" and s.no_entry and len(s.no_entry) == s.images + s.videos:
                return f"no input had a label entry in det_model ({n})"
            what = "masks" if self.generator is not None else "boxes"
            given = [f"conf={self.conf}"] if self.source.kind == "detector" else []
            if isinstance(self.source, _UltralyticsSource) and classes is not None:
                given.append(f"classes={classes}")  # Ultralytics applies the class filter itself
            return f"the box source found no {what} in {n}" + (f" ({', '.join(given)})" if given else "")
        if s.removed_by_classes == s.boxes_found:
            found = sorted(s.classes_seen)
            return (f"classes={classes} removed all {s.boxes_found} boxes; the classes found were "
                    f"{found[:20]}{' ...' if len(found) > 20 else ''}")
        if s.invalid_boxes and s.invalid_boxes + s.removed_by_classes >= s.boxes_found:
            return f"all {s.invalid_boxes} remaining boxes lie outside their images or have no area"
        if s.unusable_masks:
            return (f"SAM gave no usable mask for any of the {s.unusable_masks} boxes (empty masks, or polygons with "
                    "fewer than 3 points)")
        return f"every box was removed by conf={self.conf} / iou={self.iou} / max_det={self.max_det}"


def _check_args(conf: Any, iou: Any, imgsz: Any, max_det: Any, classes: Any, fmt: Any) -> list[int] | None:
    for name, value in (("conf", conf), ("iou", iou)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    for name, value in (("imgsz", imgsz), ("max_det", max_det)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if classes is None:
        return None
    values = [classes] if isinstance(classes, (int, np.integer)) else classes
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"classes must be a class id or a list of class ids, e.g. classes=[0, 2], got {classes!r}")
    values = list(values)
    if not values or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0 for c in values):
        raise ValueError(f"classes must be a non-empty list of integer class ids >= 0, got {classes!r}")
    return [int(c) for c in values]


def auto_annotate(data: str | Path | Sequence[str | Path], det_model: Any = "yolo11x.pt",
                  sam_model: str | Path | nn.Module = "sam2_b.pt", device: Any = "", conf: float = 0.25,
                  iou: float = 0.45, imgsz: int = 640, max_det: int = 300, classes: Sequence[int] | None = None,
                  output_dir: str | Path | None = None, format: str = "yolo",
                  amg_args: dict | None = None, verbose: bool = True) -> Path:
    """Annotate images and videos with segmentation masks: detector boxes -> SAM masks -> labels.

    data: a folder of images and/or videos (not searched recursively), one image or video file, a glob
        pattern, or a list of such paths.
    det_model: where the boxes come from:
        - an Ultralytics YOLO weights name or path (e.g. "yolo11x.pt"; needs the optional `ultralytics`
          package, else a DetectorUnavailableError, which is an ImportError and a ValueError);
        - a callable image -> (boxes_xyxy (N, 4) pixels, classes (N,)[, scores (N,)]) taking an (H, W, 3)
          uint8 RGB array; an attribute `names` (dict or list) names the classes in the COCO output;
        - a folder of YOLO detection labels: <image stem>.txt with lines "cls cx cy w h [score]" normalised
          (polygon lines give the box around the polygon; a LabelImg classes.txt gives the class names);
        - a COCO JSON with boxes (images matched by file name, then stem; crowd boxes skipped);
        - None: segment everything with the automatic mask generator (options in `amg_args`); every mask is
          class 0, ranked by predicted IoU.
        Label entries that match no input are reported with an AnnotateWarning (an error when none matches);
        an input without a label entry is background.
    sam_model: a checkpoint name or path (found or downloaded with resolve_weights), or a loaded masklet model.
    device: "" keeps a loaded model where it is and puts a named one on the GPU when there is one.
    conf, iou: score threshold and per-class NMS IoU for scored boxes (detectors; labels with a score column).
        Unscored boxes (labels, callables returning no scores) are kept as given.
    imgsz: the Ultralytics detector's input size; SAM always runs at its native size.
    max_det: at most this many objects per image (per video for tracked objects).
    classes: keep only these class ids (as the box source numbers them; COCO: category ids).
    output_dir: default <data parent>/<data name>_auto_annotate_labels (required when data is a list).
    format: "yolo" writes <stem>.txt per image, one line "cls x1 y1 x2 y2 ..." (normalised outer polygon of the
        mask's largest component; polygons with fewer than 3 points are skipped; images without objects get
        an empty file). COCO category ids become contiguous YOLO ids 0..N-1 in category-id order.
        "coco" writes annotations.json: images (id, file_name, height, width), annotations (id, image_id,
        category_id, segmentation as compressed RLE of the whole mask, area in pixels, bbox XYWH pixel extent,
        iscrowd 0, score when known, track_id for video frames) and categories.
    Videos: boxes from the first frame are tracked with SAM 2's memory (SAM 2 models only), so every object
        keeps its id; each frame is labelled as "<video stem>_<frame:06d>" (.txt, or file_name .jpg plus
        "video" and "frame_index" in COCO). Objects entering after the first frame are not added.
    verbose: a progress bar and a one-line summary.

    When nothing at all is written (no boxes, or the class filter / thresholds removed all of them) the label
    files are still written (empty) and an AnnotateWarning says why. Returns the output folder.
    """
    classes_list = _check_args(conf, iou, imgsz, max_det, classes, format)
    items, anchor = _collect(data)
    if output_dir is None:
        if anchor is None:
            raise ValueError("output_dir is required when data is a list of paths")
        output_dir = _default_output_dir(anchor)
    output_dir = Path(output_dir).expanduser()
    _output_names(items)
    source = _box_source(det_model, float(conf), float(iou), int(imgsz), int(max_det), classes_list, device)
    _check_entries(source, items)
    model = _load_sam(sam_model, device)
    if any(i.kind == "video" for i in items) and getattr(model, "family", "sam2") != "sam2":
        raise ValueError(f"data holds videos, which are tracked with SAM 2's memory, but sam_model is a "
                         f"{getattr(model, 'family', type(model).__name__)} model: use a SAM 2 / SAM 2.1 checkpoint "
                         "(sam2_b.pt, sam2.1_b.pt, ...) or leave the videos out")
    output_dir.mkdir(parents=True, exist_ok=True)
    writer = (_CocoWriter if format == "coco" else _YoloWriter)(output_dir, source)
    annotator = _Annotator(model, source, writer, float(conf), float(iou), int(max_det),
                           None if classes_list is None else set(classes_list), amg_args, verbose)

    from tqdm.auto import tqdm

    for item in tqdm(items, desc="auto_annotate", unit="file", disable=not verbose):
        if item.kind == "video":
            annotator.video(item.path)
        else:
            annotator.image(item.path)
    writer.close(annotator.stats)

    stats = annotator.stats
    reason = annotator.explain_empty(classes_list)
    if reason:
        warnings.warn(f"auto_annotate wrote no annotations: {reason}. The (empty) labels are in {output_dir}",
                      AnnotateWarning, stacklevel=2)
    else:
        if stats.invalid_boxes:
            warnings.warn(f"{stats.invalid_boxes} box(es) outside their image or without area were skipped",
                          AnnotateWarning, stacklevel=2)
        if stats.unusable_masks:
            warnings.warn(f"{stats.unusable_masks} mask(s) were skipped: empty, or their polygon has fewer than 3 "
                          "points", AnnotateWarning, stacklevel=2)
    if verbose:
        videos = f", {stats.videos} video(s) ({stats.frames} frames)" if stats.videos else ""
        where = output_dir / COCO_FILE if format == "coco" else output_dir
        print(f"auto_annotate: {stats.images} image(s){videos}, {stats.written} annotation(s) -> {where}")
    return output_dir


def annotate_cli(args: dict[str, Any]) -> Path:
    """`masklet annotate key=value ...`: run `auto_annotate` with already parsed command-line values.

    Keys (see ANNOTATE_ARGS for defaults and help): data (required), det_model, sam_model, device, conf, iou,
    imgsz, max_det, classes, output_dir, format, amg_args, verbose. det_model=None (or "none") segments
    everything. Unknown keys raise ValueError with the closest valid key. Returns the output folder.
    """
    args = dict(args)
    unknown = [k for k in args if k not in ANNOTATE_ARGS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(ANNOTATE_ARGS), n=1)
        hint = f" Did you mean {close[0]}=?" if close else ""
        raise ValueError(f"'{key}' is not a valid key for masklet annotate.{hint} Valid keys: "
                         f"{', '.join(ANNOTATE_ARGS)}")
    if args.get("data") is None:
        raise ValueError("data= is required: a folder of images (or videos), e.g. masklet annotate data=images/ "
                         "det_model=labels/ sam_model=sam2_b.pt")
    data = args.pop("data")
    if isinstance(args.get("det_model"), str) and args["det_model"].strip().lower() in ("", "none"):
        args["det_model"] = None
    if isinstance(args.get("classes"), (int, float)) and not isinstance(args.get("classes"), bool):
        args["classes"] = [int(args["classes"])]
    for key in ("output_dir", "sam_model"):
        if isinstance(args.get(key), (int, float)) and not isinstance(args.get(key), bool):
            args[key] = str(args[key])  # a bare number on the command line is still a path
    return auto_annotate(str(data) if not isinstance(data, (list, tuple)) else list(map(str, data)), **args)
