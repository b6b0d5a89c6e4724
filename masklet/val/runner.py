"""`masklet val`: evaluate a model on a video object segmentation or an interactive segmentation benchmark.

Two protocols, both written from their published descriptions:

* task="vos" - semi-supervised video object segmentation on a DAVIS, MOSE or SA-V layout dataset (see
  `VOSDataset`; SA-V's per-object PNG folders are read as they are). Every object is
  prompted with its ground-truth mask on its first annotated frame (frame 0 for most objects; objects
  appearing later on the frame where they first appear). All objects of a video live in one tracking
  state and the video is propagated forward once from the earliest prompt. The per-object logits are
  merged into one label map per frame: a pixel goes to the object with the highest logit among those > 0
  (background when none is > 0; ties to the smaller id). That label map is what is scored and what is saved,
  so the palette PNGs score the same with any DAVIS-style toolkit. In the SA-V per-object layout objects may
  overlap, so each object's mask is its own logits > 0, saved as <save_dir>/masks/<video>/<object>/<frame>.png
  (as the official vos_inference.py --per_obj_png_file does). An object has no prediction on frames
  before its prompt frame (the protocol does not let a tracker know an object before it is given). Scoring
  follows the benchmark's protocol (`protocol="davis"` or `"sav"`, detected from the layout; the rules are in
  `masklet.val.protocols`): the annotated frames except the first and the last, void (255) counted as
  background, J / F statistics with the DAVIS toolkit's decay bins, dataset means over all objects.
  `pred=` scores an existing prediction folder instead of running a model (`masklet.val.score`).
  As in the official SAM 2 VOS inference behind the paper's numbers, no
  mask post-processing is applied (hole filling off), and on CUDA the model runs under bfloat16 autocast
  unless `dtype` says otherwise.

* task="interactive" - click-based interactive image segmentation, the standard protocol used by SAM:
  for every instance the first click is at the interior point farthest from the object's boundary, each
  further click at the error pixel farthest from the boundary of its error region (positive when it is a
  missed pixel, negative when it is a false positive; `metrics.next_click`). After each click the model predicts
  again from all clicks so far plus its previous low-resolution logits as `mask_input`. The first click is
  ambiguous: with multimask_first=True (default, as SAM evaluates single points) three masks are predicted
  and the one with the highest predicted IoU is kept; later rounds predict one mask. Clicks go to the pixel
  coordinates (x, y) of the chosen pixel. IoU is measured on the full-resolution mask; a sample whose mask
  becomes perfect stops clicking and keeps IoU 1. NoC@85 / NoC@90 count a sample that never reaches the
  threshold as `max_clicks`; the mIoU@k curve covers k = 1..max_clicks and its AUC is the curve's mean.
  With multimask_first, the summary also gives mIoU@1-oracle: the mean IoU of the best of the three first-click
  masks (the SAM paper's "oracle"), so mIoU@1-oracle - mIoU@1 is what the predicted-IoU ranking loses.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np

from .datasets import MAX_OBJECTS, InteractiveDataset, VOSDataset, VOSVideo, write_palette_png
from .metrics import interactive_summary, miou_curve, next_click, region_similarity
from .protocols import VideoScorer, check_protocol, resolve_protocol
from .report import (
    VOS_COLUMNS,
    ObjectScores,
    format_table,
    interactive_table,
    per_object_table,
    per_video_table,
    summary,
    write_interactive_report,
    write_vos_report,
)

if TYPE_CHECKING:  # torch is imported when `run` is called, not when masklet.val is imported
    import torch
    import torch.nn as nn

PathLike = Union[str, os.PathLike]
TASKS = ("vos", "interactive")
IOU_THRESHOLDS = (0.85, 0.90)
PRINT_ROWS = 100  # longer per-object / per-sample tables are only written to CSV, not printed

# key -> (default, help) of `val_cli`; the defaults are those of `run`.
VAL_KEYS: dict[str, tuple[Any, str]] = {
    "model": (None, "checkpoint name or path (sam2.1_b.pt, ...); needed unless pred= is given"),
    "data": (None, "dataset root: DAVIS, MOSE or SA-V layout (JPEGImages/, Annotations/) for task=vos; images/ + "
                   "masks/ or a COCO JSON for task=interactive; required"),
    "pred": (None, "vos: score the masks in this folder instead of running a model (<pred>/<video>/<frame>.png "
                   "label maps, or SA-V <pred>/<video>/<object>/<frame>.png)"),
    "protocol": (None, "vos: davis (DAVIS 2017 tables) or sav (SA-V, MOSE tables); default: from the dataset "
                       "layout"),
    "task": ("vos", "vos (J&F, semi-supervised video object segmentation) or interactive (NoC, mIoU vs clicks)"),
    "imgsz": (None, "model input size, a multiple of 64 for SAM 2 (default: the model's native size)"),
    "max_videos": (None, "vos: evaluate only the first N videos"),
    "max_frames": (None, "vos: use only the first N frames of each video"),
    "max_samples": (None, "interactive: use only the first N images"),
    "max_clicks": (20, "interactive: clicks per instance"),
    "split": ("val", "vos: ImageSets/2017/<split>.txt (or ImageSets/<split>.txt) lists the videos when present"),
    "device": (None, "cpu, cuda, cuda:N or N (default: the first GPU if any, else cpu)"),
    "dtype": (None, "float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 elsewhere)"),
    "save_dir": (None, "output folder (default: runs/val/<task>, runs/val/<task>2, ...)"),
    "save_masks": (True, "vos: write the predicted masks as palette PNGs under <save_dir>/masks/<video>/"),
    "multimask_first": (True, "interactive: predict 3 masks for the first click and keep the most confident"),
    "max_objects": (MAX_OBJECTS, "vos: reject videos whose annotations hold more distinct ids (not label maps)"),
    "verbose": (True, "print tables and show progress bars"),
    "engine": ("local", "vos: local (this process) or ray (videos spread over a Ray actor pool, same report)"),
    "address": (None, "engine=ray: an existing Ray cluster (auto, ray://host:port); default: a local Ray"),
    "num_workers": (None, "engine=ray: actors, each with its own model (default: CPUs, or GPUs / gpus_per_worker)"),
    "gpus_per_worker": (0, "engine=ray: GPUs per actor (0: CPU actors, 1: one GPU each)"),
}
_INT_KEYS = ("imgsz", "max_videos", "max_frames", "max_samples", "max_clicks", "max_objects", "num_workers")
_BOOL_KEYS = ("save_masks", "multimask_first", "verbose")


# ---------------------------------------------------------------------------------------------------------------
# Model, device, output folder
# ---------------------------------------------------------------------------------------------------------------

def _select_device(device: Any) -> "torch.device":
    """The SAM API's device rule; no device means the first GPU when there is one."""
    import torch

    from ..api.sam import select_device

    return select_device(device, torch.device("cuda:0" if torch.cuda.is_available() else "cpu"))


def _prepare_model(model: Any, device: Any) -> tuple["nn.Module", str]:
    """(model on its device, a name for the report) from a checkpoint name/path, a model or a SAM wrapper, by
    `masklet.models.hub.get_model` (the one name -> model path and device rule of every entry point)."""
    from ..models.hub import get_model

    net, _ = get_model(model, device)
    return net, str(model) if isinstance(model, (str, os.PathLike)) else type(net).__name__


def _native_size(net: "nn.Module") -> int:
    from ..api.sam import native_size

    return native_size(net)


def _check_imgsz(net: "nn.Module", imgsz: Any) -> Optional[int]:
    """One imgsz rule for predict and val (the SAM API's); None keeps the model's size."""
    if imgsz is None:
        return None
    from ..api.sam import check_imgsz

    try:
        return check_imgsz(net, imgsz)
    except TypeError as exc:  # val reports every bad argument as a ValueError
        raise ValueError(str(exc)) from None


def _resolve_dtype(dtype: Any, device: "torch.device") -> "torch.dtype":
    import torch

    from ..predictors.precision import resolve_dtype

    if dtype is None:
        # The official SAM 2 VOS evaluation runs under bfloat16 autocast on GPU; CPUs are exact (and faster) in fp32.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return resolve_dtype(dtype)


def _make_save_dir(save_dir: Optional[PathLike], task: str) -> Path:
    """runs/val/<task>, <task>2, ... by default; a named save_dir that already holds files is not written into:
    the next free save_dir2, save_dir3, ... is used instead (one rule for every writer, `masklet.utils.runs`)."""
    from ..utils.runs import RunDir

    run_dir = RunDir(Path("runs") / "val" / task if save_dir is None else save_dir)
    if save_dir is not None and run_dir.path != Path(save_dir).expanduser():
        print(f"val: {save_dir} already exists; writing to {run_dir.path}")
    return run_dir.ensure()


def _progress(iterable: Any = None, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Video object segmentation
# ---------------------------------------------------------------------------------------------------------------

class _VideoFrames:
    """The frames of a `VOSVideo` with the interface the video predictor reads (len, [i], height, width,
    frame_name): exactly the dataset's frames, so a `max_frames` cut is a shorter video to the tracker too."""

    def __init__(self, video: VOSVideo) -> None:
        from ..data.images import read_image

        self._read = read_image
        self.paths = list(video.frame_paths)
        self.name, self.path, self.fps = video.name, None, None
        first = read_image(self.paths[0])
        self.height, self.width = first.shape[:2]
        self._cached: tuple[int, np.ndarray] = (0, first)  # features are cached by the predictor: one frame is enough

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.paths):
            raise IndexError(f"frame index {index} out of range (0 to {len(self.paths) - 1})")
        if self._cached[0] == index:
            return self._cached[1]
        frame = self._read(self.paths[index])
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {self.paths[index]} is {frame.shape[1]}x{frame.shape[0]} but the first frame of "
                             f"video {self.name!r} is {self.width}x{self.height}: every frame of a video must have the "
                             "same size")
        self._cached = (index, frame)
        return frame

    def frame_name(self, index: int) -> str:
        return self.paths[index].stem


def _label_map(logits: "torch.Tensor", obj_ids: list[int], prompt_frame: Mapping[int, int],
               frame_idx: int) -> np.ndarray:
    """(N, 1, H, W) logits -> (H, W) uint8 label map: each pixel to the object with the highest logit among those
    > 0, objects not yet prompted at `frame_idx` left out."""
    import torch

    with torch.inference_mode():
        scores = logits[:, 0].float()
        present = torch.tensor([prompt_frame[o] <= frame_idx for o in obj_ids], device=scores.device)
        scores = torch.where(present[:, None, None], scores, torch.full_like(scores, -math.inf))
        best, index = scores.max(dim=0)  # ties go to the first object, i.e. the smallest id (ids are sorted)
        ids = torch.tensor(obj_ids, dtype=torch.int64, device=scores.device)
        label = torch.where(best > 0, ids[index], torch.zeros_like(index))
        return label.to(torch.uint8).cpu().numpy()


def _object_masks(logits: "torch.Tensor", obj_ids: list[int], prompt_frame: Mapping[int, int],
                  frame_idx: int) -> dict[int, np.ndarray]:
    """(N, 1, H, W) logits -> {object id: (H, W) bool mask = logits > 0}, each object on its own (they may overlap,
    as SA-V's do); objects not yet prompted at `frame_idx` are empty."""
    import torch

    with torch.inference_mode():
        masks = (logits[:, 0] > 0).cpu().numpy()
    return {o: masks[i] if prompt_frame[o] <= frame_idx else np.zeros_like(masks[i]) for i, o in enumerate(obj_ids)}


def _track_video(predictor: Any, video: VOSVideo, masks_dir: Optional[Path],
                 verbose: bool, protocol: str = "davis") -> tuple[list[ObjectScores], int]:
    """Prompt, propagate, write and score one video; returns its per-object scores and the frames tracked."""
    prompts = video.prompt_frames()
    scorer = VideoScorer(video, protocol)
    frames = _VideoFrames(video)
    names = video.frame_names

    def emit(frame_idx: int, pred: Any) -> None:
        if masks_dir is not None:
            if isinstance(pred, dict):  # SA-V layout: one binary PNG per object, in the annotations' folder names
                for obj, mask in pred.items():
                    write_palette_png(masks_dir / video.name / video.object_dirs[obj] / f"{names[frame_idx]}.png",
                                      mask.astype(np.uint8))
            else:
                write_palette_png(masks_dir / video.name / f"{names[frame_idx]}.png", pred)
        scorer.add(frame_idx, pred)

    state = predictor.init_state(frames)
    for obj, frame_idx in prompts.items():
        predictor.add_new_mask(state, frame_idx, obj, video.gt_mask(frame_idx, obj))
    start = min(prompts.values())
    for frame_idx in range(start):  # before the first prompt nothing is known: empty masks
        empty = np.zeros((frames.height, frames.width), dtype=np.uint8)
        emit(frame_idx, {o: empty.astype(bool) for o in prompts} if video.per_object else empty)
    bar = _progress(total=len(video) - start, desc=f"  {video.name}", unit="frame", leave=False, disable=not verbose)
    tracked = 0
    try:
        # one pass: only what tracking onwards reads is kept, so RAM stays flat on long videos
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=start, progress=False,
                                                                       one_pass=True):
            merge = _object_masks if video.per_object else _label_map
            emit(frame_idx, merge(logits, list(obj_ids), prompts, frame_idx))
            tracked += 1
            bar.update()
    finally:
        bar.close()
        predictor.reset_state(state)
    return scorer.results(), tracked


def _open_vos(data: PathLike, max_videos: Optional[int], max_frames: Optional[int], split: str,
              max_objects: Optional[int]) -> VOSDataset:
    root = Path(data)
    if root.is_dir() and not (root / "JPEGImages").is_dir() and (root / "images").is_dir():
        raise FileNotFoundError(f"{root} has images/ but no JPEGImages/: it looks like an interactive dataset; use "
                                "task='interactive', or point data= at a DAVIS-layout root (JPEGImages/, Annotations/)")
    dataset = VOSDataset(root, max_videos=max_videos, max_frames=max_frames, split=split, max_objects=max_objects)
    for video in dataset:
        video.validate()  # every annotation read once: bad files fail now, not after an hour of tracking
    return dataset


def _vos_predictor(net: "nn.Module", dtype: "torch.dtype") -> Any:
    from ..predictors.video import VideoPredictor

    # fill_hole_area=0: the official evaluation applies no post-processing to the masks it scores
    predictor = VideoPredictor(net, fill_hole_area=0, dtype=dtype)
    predictor.binarize_mask_from_pts_for_mem_enc = False  # the official evaluation's setting (points only)
    return predictor


def _run_vos(net: "nn.Module", dataset: VOSDataset, save_dir: Optional[PathLike], save_masks: bool, verbose: bool,
             dtype: "torch.dtype", meta: dict[str, Any], protocol: str = "davis", engine: Any = None) -> dict[str, Any]:
    """engine: None tracks the videos here; else a callable (dataset, masks_dir) -> {video name: (per-object
    scores, frames tracked, seconds)} that tracks them elsewhere (`masklet.distributed.ray`)."""
    out = _make_save_dir(save_dir, "vos")
    masks_dir = out / "masks" if save_masks else None
    scores: list[ObjectScores] = []
    timing: dict[str, tuple[int, float]] = {}
    if engine is not None:
        results = engine(dataset, masks_dir)
        for video in dataset:  # dataset order, as one process would score them
            video_scores, tracked, seconds = results[video.name]
            scores.extend(video_scores)
            timing[video.name] = (tracked, seconds)
    else:
        predictor = _vos_predictor(net, dtype)
        for video in _progress(dataset, desc="videos", unit="video", disable=not verbose):
            t0 = time.perf_counter()
            video_scores, tracked = _track_video(predictor, video, masks_dir, verbose, protocol)
            scores.extend(video_scores)
            timing[video.name] = (tracked, time.perf_counter() - t0)

    object_rows = per_object_table(scores, binning="davis")
    video_rows = []
    for row in per_video_table(object_rows):
        tracked, seconds = timing[row["video"]]
        head = {"video": row["video"], "objects": row["objects"], "frames": len(dataset[row["video"]])}
        fps = tracked / seconds if seconds else math.nan
        video_rows.append({**head, **{c: row[c] for c in VOS_COLUMNS}, "fps": fps})
    summary_row = summary(object_rows)
    total_frames = sum(t for t, _ in timing.values())
    total_s = sum(s for _, s in timing.values())
    meta = {**meta, "videos": dataset.names, "frames_tracked": total_frames, "seconds": total_s,
            "fps": total_frames / total_s if total_s else None}
    files: dict[str, Path] = dict(write_vos_report(out, object_rows, video_rows, summary_row, meta))
    if masks_dir is not None:
        files["masks"] = masks_dir
    if verbose:
        if len(object_rows) <= PRINT_ROWS:
            print(format_table(object_rows, title="\nPer object"))
        print(format_table(video_rows, title=f"\nPer video ({protocol} protocol)"))
        print(format_table(summary_row, title=f"\nSummary ({dataset.root})"))
        print(f"\nResults saved to {out}")
    return {"task": "vos", "summary": summary_row, "per_video": video_rows, "per_object": object_rows,
            "save_dir": out, "files": files, "meta": meta}


# ---------------------------------------------------------------------------------------------------------------
# Interactive segmentation
# ---------------------------------------------------------------------------------------------------------------

def click_session(predictor: Any, gt: np.ndarray, max_clicks: int = 20, multimask_first: bool = True,
                  first_click_ious: Optional[list[float]] = None) -> list[float]:
    """IoU after each of up to `max_clicks` simulated clicks on one instance (the image must be set already).

    Implements the protocol of the module docstring; the list is shorter than max_clicks only when the mask
    became perfect (no error pixel left to click), and the caller treats the missing rounds as IoU 1. With
    multimask_first, `first_click_ious` (a list, if given) receives the IoU of each of the first click's masks:
    their maximum is the SAM paper's "oracle" score (the mask a user would pick), their entry at the most
    confident mask the score kept.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.zeros_like(gt)
    points: list[tuple[int, int]] = []
    labels: list[int] = []
    logits: Optional[np.ndarray] = None
    ious: list[float] = []
    for k in range(max_clicks):
        click = next_click(pred, gt, first=k == 0)
        if click is None:
            break
        x, y, positive = click
        points.append((x, y))
        labels.append(1 if positive else 0)
        multi = multimask_first and k == 0
        masks, iou_pred, low_res = predictor.predict(point_coords=np.asarray(points, dtype=np.float32),
                                                     point_labels=np.asarray(labels, dtype=np.int32),
                                                     mask_input=logits, multimask_output=multi)
        best = int(np.argmax(iou_pred)) if multi else 0
        if multi and first_click_ious is not None:
            first_click_ious.extend(region_similarity(np.asarray(m, dtype=bool), gt) for m in masks)
        pred = np.asarray(masks[best], dtype=bool)
        logits = np.asarray(low_res[best])[None]
        ious.append(region_similarity(pred, gt))
    return ious


def _open_interactive(data: PathLike, max_samples: Optional[int]) -> InteractiveDataset:
    root = Path(data)
    if root.is_dir() and (root / "JPEGImages").is_dir():
        raise FileNotFoundError(f"{root} has JPEGImages/: it looks like a video (DAVIS-layout) dataset; use "
                                "task='vos', or point data= at images/ + masks/ folders or a COCO JSON")
    return InteractiveDataset(root, max_samples=max_samples)


def _run_interactive(net: "nn.Module", dataset: InteractiveDataset, save_dir: Optional[PathLike], max_clicks: int,
                     multimask_first: bool, verbose: bool, dtype: "torch.dtype",
                     meta: dict[str, Any]) -> dict[str, Any]:
    from ..data.images import read_image
    from ..predictors.image import ImagePredictor

    predictor = ImagePredictor(net, dtype=dtype)
    out = _make_save_dir(save_dir, "interactive")
    names: list[str] = []
    all_ious: list[list[float]] = []
    oracle: list[float] = []  # per sample: the best of the first click's masks against the ground truth
    t0 = time.perf_counter()
    bar = _progress(total=len(dataset), desc="images", unit="image", disable=not verbose)
    try:
        for image_path, masks in dataset:
            if masks:
                predictor.set_image(read_image(image_path))
                for k, gt in enumerate(masks):
                    first: list[float] = []
                    ious = click_session(predictor, gt, max_clicks, multimask_first, first)
                    if first:
                        oracle.append(max(first))
                    # a perfect mask ends the session early; it stays perfect for the remaining clicks
                    all_ious.append(ious + [1.0] * (max_clicks - len(ious)))
                    names.append(f"{image_path.stem}/{k + 1}")
            bar.update()
            if all_ious:
                bar.set_postfix(mIoU1=f"{np.mean([r[0] for r in all_ious]):.3f}", refresh=False)
    finally:
        bar.close()
        predictor.reset_predictor()
    if not all_ious:
        raise ValueError(f"no instance masks to evaluate in {dataset.root} (every instance was empty or below "
                         "min_area)")
    seconds = time.perf_counter() - t0

    rows = interactive_table(names, all_ious, IOU_THRESHOLDS, max_clicks)
    at = tuple(k for k in (1, 2, 3, 5, 10, 20) if k <= max_clicks)
    summary_row = interactive_summary(all_ious, IOU_THRESHOLDS, max_clicks=max_clicks, at_clicks=at)
    summary_row["samples"] = len(all_ious)
    if multimask_first and len(oracle) == len(all_ious):
        # what the confidence ranking loses: mIoU@1 if the best of the three first-click masks were kept
        summary_row["mIoU@1-oracle"] = float(np.mean(oracle))
    for key in [k for k in summary_row if k.startswith("NoF@")]:
        summary_row[key] = int(summary_row[key])  # a count of samples
    curve = miou_curve(all_ious)
    meta = {**meta, "images": len(dataset), "samples": len(all_ious), "seconds": seconds,
            "skipped_images": [str(p) for p in dataset.skipped]}
    files = write_interactive_report(out, rows, summary_row, curve, all_ious, meta)
    if verbose:
        if len(rows) <= PRINT_ROWS:
            print(format_table(rows, title="\nPer sample"))
        print(format_table(summary_row, title=f"\nSummary ({dataset.root}, {max_clicks} clicks)"))
        print(f"\nResults saved to {out}")
    return {"task": "interactive", "summary": summary_row, "miou_curve": [float(v) for v in curve],
            "per_sample": rows, "save_dir": out, "files": files, "meta": meta}


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------

def _positive(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def run(model: Any = None, data: Optional[PathLike] = None, task: str = "vos", imgsz: Optional[int] = None,
        max_videos: Optional[int] = None, max_frames: Optional[int] = None, max_clicks: int = 20, device: Any = None,
        save_dir: Optional[PathLike] = None, save_masks: bool = True, verbose: bool = True, *,
        max_samples: Optional[int] = None, split: str = "val", dtype: Any = None, multimask_first: bool = True,
        max_objects: Optional[int] = MAX_OBJECTS, protocol: Optional[str] = None,
        pred: Optional[PathLike] = None, engine: str = "local", address: Optional[str] = None,
        num_workers: Optional[int] = None, gpus_per_worker: float = 0) -> dict[str, Any]:
    """Evaluate `model` on `data` and write the results; returns them as a dict.

    task="vos" scores under `protocol` ("davis" or "sav", default: the dataset layout's own; rules in
    `masklet.val.protocols`). pred: a folder of existing predicted masks to score instead of running a model
    (model must then be None; see `masklet.val.score.score`, which this calls).

    model: a checkpoint name or path (resolved with `resolve_weights`, loaded with `load_model`) or a loaded
    masklet model (or `masklet.SAM`, whose model is used). task="vos": DAVIS-layout dataset, J / F / J&F with
    recall and decay (SAM 2 models only); task="interactive": images + instance masks or a COCO JSON, NoC@85,
    NoC@90 and the mIoU-vs-clicks curve over `max_clicks` clicks. The protocols are described in the
    `masklet.val.runner` module docstring.

    imgsz: input size (SAM 2: a multiple of 64; the model's size is restored afterwards). max_videos /
    max_frames (vos) and max_samples (interactive, images) cut the dataset. device: cpu, cuda, cuda:N or N;
    None keeps a given model where it is and loads a named one on the first GPU if any. dtype: float32 /
    bfloat16 / float16 autocast, default bfloat16 on CUDA and float32 on CPU. save_dir: output folder, default
    runs/val/vos (then vos2, vos3, ...) or runs/val/interactive. save_masks (vos): palette PNGs of the
    predictions in <save_dir>/masks/<video>/<frame>.png.

    Returns {"task", "summary", "per_video" and "per_object" (vos) or "per_sample" and "miou_curve"
    (interactive), "save_dir", "files": {name: path}, "meta": run settings}. Files: per_object.csv,
    per_video.csv, summary.csv, results.json (vos); per_sample.csv, miou_curve.csv, miou_curve.png,
    summary.csv, results.json (interactive).

    engine="ray" (task="vos"): the videos are spread over `num_workers` Ray actors (each loads the model once,
    `gpus_per_worker` GPUs each) on the cluster at `address` (default a local Ray); each video is tracked and
    scored by the same code, so the report is the one of engine="local" (fps aside). See
    `masklet.distributed.ray`.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a validation task: use 'vos' (video object segmentation, J&F) or "
                         "'interactive' (click-based image segmentation, NoC)")
    if data is None:
        raise ValueError("data= is required: the dataset root, e.g. masklet.val.run(model='sam2.1_t.pt', data='DAVIS')")
    protocol = check_protocol(protocol)
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "ray" and (task != "vos" or pred is not None):
        raise ValueError("engine='ray' spreads videos over workers: it runs a model on task='vos' (scoring pred= "
                         "folders or interactive evaluation run in this process)")
    if pred is not None:
        if task != "vos":
            raise ValueError("pred= scores existing video predictions (task='vos'); interactive evaluation needs a "
                             "model to click with")
        if model is not None:
            raise ValueError("give either model= (run it and score its masks) or pred= (score masks that already "
                             "exist), not both")
        if max_frames is not None:
            raise ValueError("max_frames applies to running a model; with pred= every scored frame is read")
        from .score import score

        return score(data, pred, protocol=protocol, save_dir=save_dir, verbose=verbose,
                     max_videos=_positive("max_videos", max_videos), split=split, max_objects=max_objects)
    if model is None:
        raise ValueError("model= is required (a checkpoint name or path, e.g. sam2.1_t.pt), or pred= to score a "
                         "folder of existing predictions")
    max_videos, max_frames = _positive("max_videos", max_videos), _positive("max_frames", max_frames)
    max_samples, max_clicks = _positive("max_samples", max_samples), _positive("max_clicks", max_clicks)
    if max_clicks is None:
        raise ValueError("max_clicks must be a positive integer, got None")
    if task == "interactive" and (max_videos is not None or max_frames is not None):
        raise ValueError("max_videos / max_frames apply to task='vos'; for task='interactive' use max_samples "
                         "(number of images)")
    if task == "vos" and max_samples is not None:
        raise ValueError("max_samples applies to task='interactive'; for task='vos' use max_videos / max_frames")
    if not Path(data).exists():
        raise FileNotFoundError(f"dataset not found: {data} (relative paths start at {Path.cwd()})")
    # the dataset is checked before the model is loaded (or downloaded): a bad path or file fails in seconds
    dataset = (_open_vos(data, max_videos, max_frames, split, max_objects) if task == "vos"
               else _open_interactive(data, max_samples))

    net, model_name = _prepare_model(model, device)
    size = _check_imgsz(net, imgsz)
    torch_dtype = _resolve_dtype(dtype, net.device)
    meta: dict[str, Any] = {
        "task": task, "model": model_name, "variant": getattr(getattr(net, "config", None), "name", None),
        "data": str(data), "imgsz": size or int(getattr(net, "image_size", _native_size(net))),
        "device": str(net.device), "dtype": str(torch_dtype).replace("torch.", ""),
    }
    old_size = getattr(net, "image_size", None)
    if size is not None and hasattr(net, "set_image_size"):
        net.set_image_size(size)
    try:
        if task == "vos":
            name = resolve_protocol(protocol, dataset)  # type: ignore[arg-type]
            meta.update(max_videos=max_videos, max_frames=max_frames, split=split, protocol=name,
                        layout=dataset.layout)  # type: ignore[union-attr]
            tracker = None
            if engine == "ray":
                from ..distributed.ray import vos_tracker

                tracker = vos_tracker(model, device, size, dtype, name, address=address, num_workers=num_workers,
                                      gpus_per_worker=gpus_per_worker, verbose=verbose)
                meta["engine"] = "ray"
            return _run_vos(net, dataset, save_dir, save_masks, verbose, torch_dtype, meta, name, tracker)
        meta.update(max_samples=max_samples, max_clicks=max_clicks, multimask_first=multimask_first,
                    thresholds=list(IOU_THRESHOLDS))
        return _run_interactive(net, dataset, save_dir, max_clicks, multimask_first, verbose, torch_dtype, meta)
    finally:
        if size is not None and hasattr(net, "set_image_size") and old_size is not None and old_size != size:
            net.set_image_size(old_size)  # a caller's model is left at the size it came with


def _coerce(key: str, value: Any) -> Any:
    """A CLI value (maybe a string) -> the type `run` expects for `key`."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null", ""):
            return None
        if key in _BOOL_KEYS:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(f"{key}={value} must be True or False")
        if key == "gpus_per_worker":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{key}={value} must be a number") from None
        if key in _INT_KEYS:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{key}={value} must be an integer") from None
        return text
    if key in _INT_KEYS and isinstance(value, float) and value.is_integer():
        return int(value)
    if key in ("data", "save_dir", "model", "pred") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def val_cli(args: Mapping[str, Any]) -> dict[str, Any]:
    """`masklet val key=value ...`: check and convert the parsed keys, then call `run`.

    Keys (default): model (required unless pred=), data (required), pred, protocol ("davis" | "sav", default
    from the layout), task ("vos" | "interactive"), imgsz, max_videos, max_frames, max_samples, max_clicks (20),
    split ("val"), device, dtype, save_dir, save_masks (True), multimask_first (True), max_objects (100),
    verbose (True); `VAL_KEYS` holds a help line for each.
    Values may be strings ("512", "False", "None"). Unknown or missing keys raise ValueError.
    """
    unknown = [k for k in args if k not in VAL_KEYS]
    if unknown:
        import difflib

        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, list(VAL_KEYS), n=1)) else k
                 for k in unknown]
        raise ValueError(f"unknown key(s) for 'masklet val': {', '.join(hints)}. Valid keys: {', '.join(VAL_KEYS)}")
    kwargs = {k: _coerce(k, v) for k, v in args.items()}
    missing = [k for k in ("model", "data") if kwargs.get(k) is None and not (k == "model" and kwargs.get("pred"))]
    if missing:
        raise ValueError(f"masklet val needs {' and '.join(f'{k}=' for k in missing)}, e.g. "
                         "masklet val model=sam2.1_b.pt data=path/to/DAVIS task=vos (or pred=FOLDER instead of "
                         "model= to score existing masks)")
    return run(**kwargs)


VAL_HELP = "masklet val keys (default):\n" + "\n".join(f"  {k}={d!r}: {t}" for k, (d, t) in VAL_KEYS.items())
