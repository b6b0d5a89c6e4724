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
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils.allocator import retain_freed_memory
from .annotate_inputs import _check_entries, _collect, _default_output_dir, _Item, _keys, _output_names
from .annotate_sources import (
    AnnotateWarning,
    Detections,
    DetectorUnavailableError,
    _box_source,
    _BoxSource,
    _EverythingSource,
    _filter,
    _Instance,
    _Stats,
    _UltralyticsSource,
)
from .annotate_writers import COCO_FILE, _CocoWriter, _YoloWriter
from .sam import model_device

__all__ = [
    "ANNOTATE_ARGS",
    "AnnotateWarning",
    "Detections",
    "DetectorUnavailableError",
    "annotate_cli",
    "auto_annotate",
]

FORMATS = ("yolo", "coco")
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
    "exist_ok": (False, ("write into a named output_dir that already holds files (same-name files are replaced); "
                         "the default folder is numbered instead (_labels2, _labels3, ...)")),
    "engine": ("local", "local: this process; ray: a Ray Data actor pool, resumable (manifest.jsonl, errors.jsonl)"),
    "address": (None, "engine=ray: an existing Ray cluster (auto, ray://host:port); default: a local Ray"),
    "num_workers": (None, "engine=ray: actors, each with its own model (default: CPUs, or GPUs / gpus_per_worker)"),
    "gpus_per_worker": (0, "engine=ray: GPUs per actor (0: CPU actors, 1: one GPU each)"),
    "batch_size": (4, "engine=ray: items per Ray batch (a video is one item)"),
}


# ---------------------------------------------------------------------------------------------- models
def _load_sam(sam_model: Any, device: Any) -> nn.Module:
    from ..models.hub import get_model

    if not isinstance(sam_model, (str, Path, nn.Module)) and not isinstance(getattr(sam_model, "model", None),
                                                                          nn.Module):
        raise TypeError(f"sam_model must be a checkpoint name or path (e.g. 'sam2_b.pt') or a loaded masklet model, "
                        f"got {type(sam_model).__name__}")
    model, _ = get_model(sam_model, device)
    for name in ("encode_prompts", "decode", "image_embedding", "input_spec"):
        if not hasattr(model, name):
            raise TypeError(f"sam_model must be a masklet SAM / SAM 2 model (masklet.load_model), got "
                            f"{type(model).__name__} without {name!r}")
    return model


def _mask_generator(model: nn.Module, amg_args: dict | None, verbose: bool = False) -> Any:
    try:
        from ..predictors.everything import AutomaticMaskGenerator
    except ImportError as exc:
        raise ImportError(f"det_model=None needs masklet.predictors.everything ({exc})") from None
    try:
        # verbose: a bar over the grid's prompt batches of each image, as `SAM.predict` shows
        return AutomaticMaskGenerator(model, **{"progress": verbose, **(amg_args or {})})
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
        self.generator = _mask_generator(model, amg_args, verbose) if isinstance(source, _EverythingSource) else None
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
                  amg_args: dict | None = None, verbose: bool = True, exist_ok: bool = False, engine: str = "local",
                  address: str | None = None, num_workers: int | None = None, gpus_per_worker: float = 0,
                  batch_size: int = 4) -> Path:
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
    output_dir: default <data parent>/<data name>_auto_annotate_labels, or ..._labels2, ..._labels3 when taken, so
        a second run never overwrites the first (required when data is a list). A named output_dir that already
        holds files raises OutputExistsError (a FileExistsError and ValueError) unless exist_ok=True. The folder
        is created when the first file is written: a run that fails before leaves nothing behind.
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
    engine: "local" (this process) or "ray": a Ray Data pipeline, one image or one whole video per unit of work,
        `num_workers` actors (each loads the model once; `gpus_per_worker` GPUs each) on the cluster at `address`
        ("auto", "ray://host:port"; default a local Ray), `batch_size` items per batch. The outputs are those of
        the local engine; the run is resumable (manifest.jsonl: a rerun with exist_ok=True skips finished items)
        and a failing item goes to errors.jsonl instead of stopping the run. The returned folder then has a
        `summary` dict (done, skipped, failed, errors, seconds). See `masklet.distributed.ray`.

    When nothing at all is written (no boxes, or the class filter / thresholds removed all of them) the label
    files are still written (empty) and an AnnotateWarning says why. Returns the output folder.
    """
    from ..utils.runs import RunDir

    classes_list = _check_args(conf, iou, imgsz, max_det, classes, format)
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    items, anchor = _collect(data)
    if output_dir is None:
        if anchor is None:
            raise ValueError("output_dir is required when data is a list of paths")
        run_dir = RunDir(_default_output_dir(anchor), exist_ok=exist_ok)
    else:
        run_dir = RunDir(output_dir, exist_ok=exist_ok, mode="refuse", what="output_dir")
    _output_names(items)
    source = _box_source(det_model, float(conf), float(iou), int(imgsz), int(max_det), classes_list, device)
    _check_entries(source, items)
    if engine == "ray":
        from ..distributed.ray import annotate_with_ray

        config = {"det_model": det_model, "sam_model": sam_model, "device": device, "conf": float(conf),
                  "iou": float(iou), "imgsz": int(imgsz), "max_det": int(max_det), "classes": classes_list,
                  "format": format, "amg_args": amg_args}
        return annotate_with_ray(items, run_dir, source, config, address=address, num_workers=num_workers,
                                 gpus_per_worker=gpus_per_worker, batch_size=batch_size, verbose=verbose)
    model = _load_sam(sam_model, device)
    if any(i.kind == "video" for i in items) and getattr(model, "family", "sam2") != "sam2":
        raise ValueError(f"data holds videos, which are tracked with SAM 2's memory, but sam_model is a "
                         f"{getattr(model, 'family', type(model).__name__)} model: use a SAM 2 / SAM 2.1 checkpoint "
                         "(sam2_b.pt, sam2.1_b.pt, ...) or leave the videos out")
    writer = (_CocoWriter if format == "coco" else _YoloWriter)(run_dir, source)
    annotator = _Annotator(model, source, writer, float(conf), float(iou), int(max_det),
                           None if classes_list is None else set(classes_list), amg_args, verbose)

    from tqdm.auto import tqdm

    # file after file allocates and frees the same buffers: on a CPU keep freed memory for reuse (utils.allocator)
    with retain_freed_memory(model_device(model).type == "cpu"):
        for item in tqdm(items, desc="auto_annotate", unit="file", disable=not verbose):
            if item.kind == "video":
                annotator.video(item.path)
            else:
                annotator.image(item.path)
    writer.close(annotator.stats)
    output_dir = run_dir.ensure()

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
