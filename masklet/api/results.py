"""`Results`: what `SAM(...)(source)` and `SAM2VideoPredictor(...)(source)` return, one per image or frame.

The attribute names and behaviour follow the Ultralytics `Results` so that code written for it keeps working:
`orig_img` is the BGR image, `masks.data` the (N, H, W) masks, `boxes.xyxy` / `.conf` / `.cls` / `.id` the
boxes around them, `plot()` an annotated BGR image, `save_txt()` YOLO segmentation labels.
"""
from __future__ import annotations

import colorsys
import json
import os
import sys
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["BaseTensor", "Boxes", "Masks", "Results", "check_gui", "colors"]

ArrayLike = torch.Tensor | np.ndarray


def colors(index: int) -> tuple[int, int, int]:
    """A distinct BGR colour for instance/class `index` (golden-ratio steps around the hue circle)."""
    hue = (index * 0.618033988749895 + 0.08) % 1.0
    sat = 0.85 if index % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


class BaseTensor:
    """A tensor (or array) of per-object data plus the (height, width) of the image it belongs to."""

    def __init__(self, data: ArrayLike, orig_shape: tuple[int, int]) -> None:
        if not isinstance(data, (torch.Tensor, np.ndarray)):
            raise TypeError(f"data must be a torch.Tensor or numpy array, got {type(data).__name__}")
        self.data = data
        self.orig_shape = tuple(int(s) for s in orig_shape[:2])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return len(self.data)

    def _new(self, data: ArrayLike) -> BaseTensor:
        return type(self)(data, self.orig_shape)

    def __getitem__(self, idx: Any) -> BaseTensor:
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)  # keep the object axis
        return self._new(self.data[idx])

    def cpu(self) -> BaseTensor:
        return self if isinstance(self.data, np.ndarray) else self._new(self.data.cpu())

    def numpy(self) -> BaseTensor:
        return self if isinstance(self.data, np.ndarray) else self._new(self.data.cpu().numpy())

    def cuda(self) -> BaseTensor:
        return self.to("cuda")

    def to(self, *args: Any, **kwargs: Any) -> BaseTensor:
        return self._new(torch.as_tensor(self.data).to(*args, **kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data shape {self.shape}, orig_shape={self.orig_shape})"


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class Masks(BaseTensor):
    """Binary masks of N objects: `data` (N, H, W) bool at the original image size.

    `xy` / `xyn`: one outer polygon per mask (the component with the largest area), each a (K, 2) float32
    array of (x, y) in pixels / normalised to [0, 1]; an empty mask gives a (0, 2) array.
    """

    @cached_property
    def xy(self) -> list[np.ndarray]:
        from ..utils.masks import largest_polygon  # cv2 only when polygons are asked for

        return [largest_polygon(m) for m in _np(self.data).astype(bool)]

    @cached_property
    def xyn(self) -> list[np.ndarray]:
        h, w = self.orig_shape
        scale = np.array([w, h], dtype=np.float32)
        return [(p / scale).astype(np.float32) for p in self.xy]


class Boxes(BaseTensor):
    """Boxes of N objects: `data` (N, 6) `[x1, y1, x2, y2, conf, cls]` or (N, 7) `[x1, y1, x2, y2, id, conf, cls]`.

    x2, y2 are the last pixel column / row of the object (inclusive, as SAM's mask-to-box). `conf` is the
    model's predicted IoU of the mask; `cls` the object's index; `id` the track id of video objects.
    """

    def __init__(self, data: ArrayLike, orig_shape: tuple[int, int]) -> None:
        if data.ndim == 1:
            data = data[None]
        if data.ndim != 2 or data.shape[-1] not in (6, 7):
            raise ValueError(f"Boxes data must have shape (N, 6) or (N, 7), got {tuple(data.shape)}")
        super().__init__(data, orig_shape)
        self.is_track = data.shape[-1] == 7

    @property
    def xyxy(self) -> ArrayLike:
        """(N, 4) x1, y1, x2, y2 pixels."""
        return self.data[:, :4]

    @property
    def conf(self) -> ArrayLike:
        """(N,) predicted IoU of each mask."""
        return self.data[:, -2]

    @property
    def cls(self) -> ArrayLike:
        """(N,) object index (a key of `Results.names`)."""
        return self.data[:, -1]

    @property
    def id(self) -> ArrayLike | None:
        """(N,) track ids of video objects, None for images."""
        return self.data[:, -3] if self.is_track else None

    @property
    def xywh(self) -> ArrayLike:
        """(N, 4) centre x, centre y, width, height pixels."""
        xyxy = self.xyxy
        out = xyxy.clone() if isinstance(xyxy, torch.Tensor) else xyxy.copy()
        out[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
        out[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
        out[:, 2] = xyxy[:, 2] - xyxy[:, 0]
        out[:, 3] = xyxy[:, 3] - xyxy[:, 1]
        return out

    def _normalised(self, boxes: ArrayLike) -> ArrayLike:
        h, w = self.orig_shape
        out = boxes.clone() if isinstance(boxes, torch.Tensor) else boxes.copy()
        out[:, [0, 2]] /= w
        out[:, [1, 3]] /= h
        return out

    @property
    def xyxyn(self) -> ArrayLike:
        """(N, 4) xyxy divided by the image width / height."""
        return self._normalised(self.xyxy)

    @property
    def xywhn(self) -> ArrayLike:
        """(N, 4) xywh divided by the image width / height."""
        return self._normalised(self.xywh)


def check_gui() -> None:
    """Raise a RuntimeError explaining why no window can be opened (headless OpenCV, no display)."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("cannot show images: no display (DISPLAY is not set). Save them instead: "
                           "results.save('out.jpg'), or predict(..., save=True)")
    info = cv2.getBuildInformation()
    gui = [line for line in info.splitlines() if line.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        raise RuntimeError("cannot show images: this OpenCV build has no GUI support (opencv-python-headless). "
                           "Install opencv-python for windows, or save the images instead: results.save('out.jpg'), "
                           "or predict(..., save=True)")


class Results:
    """Masks (and boxes around them) predicted on one image or video frame.

    orig_img: the image as an (H, W, 3) uint8 BGR array (as OpenCV and Ultralytics hold it).
    path: file path of the image or video, or a generated name ("image0") for in-memory inputs.
    names: {cls: name} of the objects. masks: `Masks` (N, H, W). boxes: `Boxes` (N, 6|7).
    speed: {"preprocess", "inference", "postprocess"} milliseconds. frame: frame index in a video (else None).
    prompts: what was asked on this image, drawn by `plot()`: {"points": (K, 2) xy pixels, "labels": (K,) 1
    positive / 0 negative, "bboxes": (M, 4) xyxy pixels}, or None.
    """

    def __init__(self, orig_img: np.ndarray, path: str, names: dict[int, str], boxes: ArrayLike | None = None,
                 masks: ArrayLike | None = None, speed: dict[str, float] | None = None,
                 frame: int | None = None) -> None:
        self.orig_img = orig_img
        self.orig_shape = tuple(orig_img.shape[:2])
        self.path = str(path)
        self.names = dict(names)
        self.masks = Masks(masks, self.orig_shape) if masks is not None else None
        self.boxes = Boxes(boxes, self.orig_shape) if boxes is not None else None
        self.speed = dict(speed or {"preprocess": None, "inference": None, "postprocess": None})
        self.frame = frame
        self.save_dir: str | None = None
        self.prompts: dict[str, np.ndarray] | None = None
        self.probs = self.keypoints = self.obb = None  # other tasks' fields, for code that checks them

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        for value in (self.boxes, self.masks):
            if value is not None:
                return len(value)
        return 0

    def _apply(self, fn: str, *args: Any, **kwargs: Any) -> Results:
        out = self.new()
        for key in ("boxes", "masks"):
            value = getattr(self, key)
            if value is not None:
                setattr(out, key, getattr(value, fn)(*args, **kwargs))
        return out

    def __getitem__(self, idx: Any) -> Results:
        """A Results holding only the selected object(s) (int, slice, index array or bool mask)."""
        if isinstance(idx, (int, np.integer)) and not -len(self) <= int(idx) < len(self):
            raise IndexError(f"object index {idx} out of range for {len(self)} object(s)")
        return self._apply("__getitem__", idx)

    def __iter__(self) -> Iterator[Results]:
        for i in range(len(self)):
            yield self[i]

    def new(self) -> Results:
        """An empty Results for the same image."""
        out = Results(self.orig_img, self.path, self.names, speed=self.speed, frame=self.frame)
        out.save_dir, out.prompts = self.save_dir, self.prompts
        return out

    def update(self, boxes: ArrayLike | None = None, masks: ArrayLike | None = None) -> None:
        if boxes is not None:
            self.boxes = Boxes(boxes, self.orig_shape)
        if masks is not None:
            self.masks = Masks(masks, self.orig_shape)

    def cpu(self) -> Results:
        return self._apply("cpu")

    def numpy(self) -> Results:
        return self._apply("numpy")

    def cuda(self) -> Results:
        return self._apply("cuda")

    def to(self, *args: Any, **kwargs: Any) -> Results:
        return self._apply("to", *args, **kwargs)

    # ------------------------------------------------------------------ text
    def verbose(self) -> str:
        """One-line description, e.g. "3 masks"."""
        n = len(self)
        return f"{n} mask{'s' if n != 1 else ''}" if n else "(no masks)"

    def __repr__(self) -> str:
        where = f", frame={self.frame}" if self.frame is not None else ""
        return (f"Results(path={self.path!r}{where}, orig_shape={self.orig_shape}, {len(self)} object(s), "
                f"speed={{{', '.join(f'{k}: {v:.1f}ms' for k, v in self.speed.items() if v is not None)}}})")

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per object: name, class, confidence, box {x1, y1, x2, y2}, track_id (video), segments {x, y}."""
        if self.boxes is None:
            return []
        h, w = self.orig_shape if normalize else (1, 1)
        boxes = _np(self.boxes.data)
        polygons = self.masks.xy if self.masks is not None else None
        out = []
        for i, row in enumerate(boxes):
            cls = int(row[-1])
            item: dict[str, Any] = {"name": self.names.get(cls, str(cls)), "class": cls,
                                    "confidence": round(float(row[-2]), decimals),
                                    "box": {k: round(float(v) / s, decimals) for k, v, s in
                                            zip(("x1", "y1", "x2", "y2"), row[:4], (w, h, w, h))}}
            if self.boxes.is_track:
                item["track_id"] = int(row[-3])
            if polygons is not None:
                poly = polygons[i]
                item["segments"] = {"x": [round(float(x) / w, decimals) for x in poly[:, 0]],
                                    "y": [round(float(y) / h, decimals) for y in poly[:, 1]]}
            out.append(item)
        return out

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as a JSON string."""
        return json.dumps(self.summary(normalize=normalize, decimals=decimals), indent=2)

    tojson = to_json  # older Ultralytics name

    def to_df(self, normalize: bool = False, decimals: int = 5) -> Any:
        """A pandas DataFrame with one row per object (as Ultralytics' `Results.to_df`): name, class, confidence,
        x1, y1, x2, y2 (pixels, or fractions of the width / height with normalize=True), area (mask pixels),
        track_id for video objects and frame for video frames. Needs pandas (`pip install 'masklet[tables]'`)."""
        pd = _pandas("Results.to_df")
        rows = []
        areas = _np(self.masks.data).reshape(len(self), -1).sum(1) if self.masks is not None and len(self) else []
        for i, item in enumerate(self.summary(normalize=normalize, decimals=decimals)):
            row: dict[str, Any] = {"name": item["name"], "class": item["class"], "confidence": item["confidence"],
                                   **item["box"]}
            if "track_id" in item:
                row["track_id"] = item["track_id"]
            if len(areas):
                row["area"] = int(areas[i])
            if self.frame is not None:
                row["frame"] = int(self.frame)
            rows.append(row)
        columns = ["name", "class", "confidence", "x1", "y1", "x2", "y2"]
        if self.masks is not None:
            columns.append("area")
        if self.boxes is not None and self.boxes.is_track:
            columns.append("track_id")
        if self.frame is not None:
            columns.append("frame")
        return pd.DataFrame(rows, columns=columns)

    def to_csv(self, path_or_buf: Any = None, normalize: bool = False, decimals: int = 5, **kwargs: Any) -> Any:
        """`to_df()` as CSV (no index column): written to `path_or_buf`, or returned as a string when it is None.
        Other keywords go to `pandas.DataFrame.to_csv`."""
        kwargs.setdefault("index", False)
        return self.to_df(normalize=normalize, decimals=decimals).to_csv(path_or_buf, **kwargs)

    def save_crop(self, save_dir: str | os.PathLike, file_name: str | os.PathLike = "im.jpg") -> list[Path]:
        """Save each object's box cut from the original image to `save_dir/<class name>/<file_name stem>.jpg`
        (as Ultralytics does); a taken name gets 2, 3, ... appended, so earlier crops are never overwritten.
        Returns the written paths, in object order. Objects with an empty mask have no box and are skipped."""
        from ..utils.runs import increment_path

        written: list[Path] = []
        if self.boxes is None or not len(self):
            return written
        h, w = self.orig_shape
        stem = Path(file_name).stem or "im"
        cls = _np(self.boxes.cls).astype(int)
        for i, box in enumerate(_np(self.boxes.xyxy)):
            x1, y1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
            x2, y2 = min(int(np.ceil(box[2])) + 1, w), min(int(np.ceil(box[3])) + 1, h)  # x2, y2 are inclusive
            if x2 <= x1 or y2 <= y1 or (self.masks is not None and not _np(self.masks.data[i]).any()):
                continue
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.names.get(int(cls[i]), str(cls[i])))
            folder = Path(save_dir) / (name or "object")
            folder.mkdir(parents=True, exist_ok=True)
            path = increment_path(folder / f"{stem}.jpg")
            self._write(np.ascontiguousarray(self.orig_img[y1:y2, x1:x2]), path)
            written.append(path)
        return written

    # ------------------------------------------------------------------ drawing
    def plot(self, conf: bool = True, line_width: float | None = None, font_size: float | None = None,
             labels: bool = True, boxes: bool = True, masks: bool = True, img: np.ndarray | None = None,
             alpha: float = 0.5, pil: bool = False, save: bool = False, filename: str | None = None,
             prompts: bool = True) -> Any:
        """The image with masks (filled, `alpha` opacity), boxes, labels and the prompts drawn on it.

        Returns an (H, W, 3) uint8 BGR array (a PIL RGB image with pil=True). img: draw on this BGR image
        instead of `orig_img` (same size). Labels read "id:<track id> <name> <conf>"; a label that would cover
        an earlier one moves down until it is free. prompts: draw `self.prompts` as SAM 2's notebooks show them
        (positive points green stars, negative points red stars, each with a white edge; box prompts green).
        """
        import cv2

        im = np.ascontiguousarray((img if img is not None else self.orig_img).copy())
        if im.shape[:2] != self.orig_shape:
            raise ValueError(f"img is {im.shape[1]}x{im.shape[0]} but the results are for a "
                             f"{self.orig_shape[1]}x{self.orig_shape[0]} image")
        n = len(self)
        ids = _np(self.boxes.id).astype(int) if self.boxes is not None and self.boxes.is_track else None
        cls = _np(self.boxes.cls).astype(int) if self.boxes is not None else np.arange(n)
        # Colour by track id for videos, so an object keeps its colour from frame to frame.
        keys = ids if ids is not None else cls
        if masks and self.masks is not None and n:
            data = _np(self.masks.data).astype(bool)
            overlay = im.copy()
            for i in range(n):
                overlay[data[i]] = colors(int(keys[i]))
            covered = data.any(axis=0)
            blended = cv2.addWeighted(im, 1.0 - alpha, overlay, alpha, 0.0)
            im[covered] = blended[covered]
        if boxes and self.boxes is not None and n:
            lw = int(line_width or max(2, round(0.002 * (im.shape[0] + im.shape[1]))))
            scale = font_size / 10 if font_size else lw / 3
            thick = max(lw - 1, 1)
            xyxy, confs = _np(self.boxes.xyxy), _np(self.boxes.conf)
            placed: list[tuple[int, int, int, int]] = []  # label rectangles drawn so far
            for i in range(n):
                color = colors(int(keys[i]))
                x1, y1, x2, y2 = (round(float(v)) for v in xyxy[i])
                cv2.rectangle(im, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
                if not labels:
                    continue
                text = (f"id:{ids[i]} " if ids is not None else "") + self.names.get(int(cls[i]), str(cls[i]))
                if conf:
                    text += f" {confs[i]:.2f}"
                (tw, th), base = cv2.getTextSize(text, 0, scale, thick)
                above = y1 - th - 3 >= 0
                top = y1 - th - base - 3 if above else y1
                top, x1 = _free_spot(placed, x1, top, tw + 2, th + base + 3, im.shape[:2])
                placed.append((x1, top, x1 + tw + 2, top + th + base + 3))
                cv2.rectangle(im, (x1, top), (x1 + tw + 2, top + th + base + 3), color, -1, cv2.LINE_AA)
                dark = sum(color) > 3 * 160  # light box colour: dark text
                cv2.putText(im, text, (x1 + 1, top + th + 1), 0, scale, (0, 0, 0) if dark else (255, 255, 255),
                            thick, cv2.LINE_AA)
        if prompts and self.prompts:
            _draw_prompts(im, self.prompts, line_width)
        if save:
            self._write(im, filename or f"results_{Path(self.path).stem}.jpg")
        if pil:
            from PIL import Image

            return Image.fromarray(im[..., ::-1].copy())
        return im

    @staticmethod
    def _write(im: np.ndarray, filename: str | os.PathLike) -> None:
        import cv2

        path = Path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            ok = cv2.imwrite(str(path), im)
        except cv2.error:  # OpenCV raises for an unknown suffix, returns False for an unwritable path
            raise ValueError(f"cannot write {path}: use an image suffix such as .jpg or .png") from None
        if not ok:
            raise ValueError(f"cannot write {path}: check that the folder is writable")

    def show(self, *args: Any, **kwargs: Any) -> None:
        """Show `plot(*args, **kwargs)` in an OpenCV window; a RuntimeError explains why when there is no GUI."""
        import cv2

        check_gui()
        im = self.plot(*args, **kwargs)
        try:
            cv2.imshow(self.path, im)
            cv2.waitKey(1)
        except cv2.error as exc:
            raise RuntimeError(f"cannot show images: {str(exc).strip().splitlines()[-1]}. Save them instead: "
                               "results.save('out.jpg')") from None

    def save(self, filename: str | os.PathLike | None = None, *args: Any, **kwargs: Any) -> str:
        """Write `plot(*args, **kwargs)` to `filename` (default results_<image stem>.jpg); returns the path."""
        filename = str(filename or f"results_{Path(self.path).stem}.jpg")
        self._write(self.plot(*args, **kwargs), filename)
        return filename

    def save_txt(self, txt_file: str | os.PathLike, save_conf: bool = False) -> str:
        """Append YOLO segmentation labels to `txt_file`, one line per object:
        `cls x1 y1 x2 y2 ...` with polygon points normalised to [0, 1] (then `conf` with save_conf, then the
        track id for video objects). Objects with an empty mask are skipped; nothing is written without objects.
        """
        if self.masks is None or self.boxes is None or not len(self):
            return str(txt_file)
        lines = []
        confs, cls = _np(self.boxes.conf), _np(self.boxes.cls).astype(int)
        ids = _np(self.boxes.id).astype(int) if self.boxes.is_track else None
        for i, poly in enumerate(self.masks.xyn):
            if len(poly) == 0:
                continue
            values: list[Any] = [int(cls[i]), *poly.reshape(-1).tolist()]
            if save_conf:
                values.append(float(confs[i]))
            if ids is not None:
                values.append(int(ids[i]))
            lines.append(" ".join(f"{v:g}" for v in values))
        if lines:
            path = Path(txt_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write("\n".join(lines) + "\n")
        return str(txt_file)


def results_from_masks(orig_rgb: np.ndarray, path: str, masks: torch.Tensor, scores: ArrayLike | None = None,
                       ids: Sequence[int] | None = None, classes: Sequence[int] | None = None,
                       names: dict[int, str] | None = None, speed: dict[str, float] | None = None,
                       frame: int | None = None) -> Results:
    """Build a Results from bool masks (N, H, W) on an RGB image: boxes are the masks' tight boxes.

    scores (N,): confidence per mask (1.0 when None). ids (N,): track ids (video objects). classes (N,):
    class index per mask, default its position 0..N-1; `names` defaults to {k: str(k)} for those classes.
    """
    from ..utils.boxes import masks_to_boxes

    masks = torch.as_tensor(masks).bool()
    if masks.ndim == 4:
        masks = masks[:, 0]
    n = masks.shape[0]
    device = masks.device
    boxes = masks_to_boxes(masks).float() if n else torch.zeros(0, 4, device=device)
    conf = (torch.as_tensor(_np(scores), dtype=torch.float32, device=device).reshape(-1) if scores is not None
            else torch.ones(n, device=device))
    columns = [boxes]
    if ids is not None:
        columns.append(torch.as_tensor(list(ids), dtype=torch.float32, device=device).reshape(-1, 1))
    cls = (torch.as_tensor(list(classes), dtype=torch.float32, device=device).reshape(-1) if classes is not None
           else torch.arange(n, dtype=torch.float32, device=device))
    columns += [conf[:, None], cls[:, None]]
    data = torch.cat(columns, dim=1)
    names = names if names is not None else {int(k): str(int(k)) for k in cls.tolist()}
    bgr = np.ascontiguousarray(orig_rgb[..., ::-1])
    return Results(bgr, path, names, boxes=data, masks=masks, speed=speed, frame=frame)


def _pandas(what: str) -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(f"{what} needs pandas, which is not installed: pip install pandas (or pip install "
                          "'masklet[tables]')") from None
    return pandas


def _free_spot(placed: list[tuple[int, int, int, int]], x: int, top: int, width: int, height: int,
               hw: tuple[int, int]) -> tuple[int, int]:
    """(top, x) of a label rectangle that overlaps no label drawn so far: moved down one label height at a time
    (then right, if it runs off the bottom), so the labels of overlapping boxes stay readable."""
    h, w = hw

    def hits(t: int, left: int) -> bool:
        return any(left < px2 and left + width > px1 and t < py2 and t + height > py1 for px1, py1, px2, py2 in placed)

    left = min(max(x, 0), max(w - width, 0))
    t = top
    while hits(t, left):
        t += height
        if t + height > h:
            t, left = top, left + width
            if left + width > w:
                return top, min(max(x, 0), max(w - width, 0))  # no free spot: overlap rather than vanish
    return t, left


def _star(center: tuple[float, float], radius: float) -> np.ndarray:
    """The 10 corners of a five-pointed star (matplotlib's '*' marker) as int32 (10, 2)."""
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.4)
    xy = np.stack([center[0] + r * np.cos(angles), center[1] + r * np.sin(angles)], axis=1)
    return np.round(xy).astype(np.int32)


def _draw_prompts(im: np.ndarray, prompts: dict[str, Any], line_width: float | None) -> None:
    """Points and boxes as in SAM 2's notebooks: positive points green stars, negative red, white edges; box
    prompts green rectangles. Drawn last, so they stay visible over masks and boxes."""
    import cv2

    lw = int(line_width or max(2, round(0.002 * (im.shape[0] + im.shape[1]))))
    radius = max(8.0, 0.012 * (im.shape[0] + im.shape[1]))
    for box in np.asarray(prompts.get("bboxes") if prompts.get("bboxes") is not None else []).reshape(-1, 4):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(im, (x1, y1), (x2, y2), (0, 200, 0), lw, cv2.LINE_AA)
    points = prompts.get("points")
    if points is None:
        return
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    labels = prompts.get("labels")
    labels = np.ones(len(points)) if labels is None else np.asarray(labels).reshape(-1)
    for (x, y), label in zip(points, labels):
        if label not in (0, 1):  # padding (-1) and other special labels are not clicks
            continue
        star = _star((x, y), radius)
        cv2.fillPoly(im, [star], (0, 200, 0) if label == 1 else (0, 0, 230), cv2.LINE_AA)
        cv2.polylines(im, [star], True, (255, 255, 255), max(1, lw // 2), cv2.LINE_AA)
