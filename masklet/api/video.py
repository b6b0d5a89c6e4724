"""`SAM2VideoPredictor`: the Ultralytics-style video tracker, plus the official low-level video API.

    from masklet import SAM2VideoPredictor
    predictor = SAM2VideoPredictor(overrides=dict(imgsz=1024, model="sam2_b.pt"))
    results = predictor(source="video.mp4", points=[[920, 470], [909, 138]], labels=[1, 1])
    results[5].boxes.id      # the two objects' track ids on frame 5

Prompts (same rules as `SAM`, see `masklet.api.prompts`) are placed on frame `frame` (default 0); every object
is then tracked forwards and backwards through the video by SAM 2's memory. Object k of the prompts gets track
id k + 1 and class k on every frame. The official methods (`init_state`, `add_new_points_or_box`,
`add_new_mask`, `propagate_in_video`, `remove_object`, `reset_state`) are available on the same object.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from ..models.common import apply_compile_option
from ..predictors.precision import resolve_dtype
from . import PREDICT_ARGS, TRACK_SWITCHES
from .prompts import PromptError, check_prompts_inside, normalize_prompts
from .results import Results, check_gui, results_from_masks
from .sam import (
    DEFAULT_MODEL,
    RunReport,
    RunWriter,
    _Timer,
    apply_imgsz,
    check_common,
    check_imgsz,
    load_sam_model,
    make_save_dir,
    model_device,
    plot_args,
    progress_bar,
    prompt_drawing,
    select_device,
    unknown_keyword,
)

__all__ = ["SAM2VideoPredictor"]

# keys of PREDICT_ARGS that make no sense for tracking
_NOT_FOR_VIDEO = {"multimask_output", "stream"}
_VIDEO_KEYS = [k for k in PREDICT_ARGS if k not in _NOT_FOR_VIDEO] + list(TRACK_SWITCHES)


class _FrameSubset:
    """Every `stride`-th frame of a VideoFrames, at most `limit` of them, with the VideoFrames interface that
    the video predictor reads (len, [i], height, width, frame_name, fps)."""

    def __init__(self, frames: Any, stride: int, limit: int | None) -> None:
        self.frames, self.stride = frames, stride
        n = (len(frames) + stride - 1) // stride
        self.length = min(n, limit) if limit else n
        self.height, self.width = frames.height, frames.width
        self.path, self.name = getattr(frames, "path", None), getattr(frames, "name", "frames")
        self.fps = frames.fps / stride if getattr(frames, "fps", None) else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> np.ndarray:
        if not -self.length <= index < self.length:
            raise IndexError(f"frame index {index} out of range (0 to {self.length - 1})")
        return self.frames[(index % self.length) * self.stride]

    def frame_name(self, index: int) -> str:
        return self.frames.frame_name(index * self.stride)

    def source_index(self, index: int) -> int:
        return index * self.stride


def _is_random_access(source: Any) -> bool:
    """A finite video the tracker can seek in (file, frame folder, frame list); else a one-pass stream."""
    if isinstance(source, (bool, int)):
        return False
    if isinstance(source, (str, Path)):
        text = str(source)
        return not ("://" in text or text.isdigit())
    if isinstance(source, (np.ndarray, list, tuple)):
        return True
    return hasattr(source, "frame_name") and hasattr(source, "height")


def _mask_confidence(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean foreground probability over each object's mask pixels (N,); 0 for empty masks."""
    prob = torch.sigmoid(logits.float())
    area = masks.flatten(1).sum(1)
    total = (prob * masks).flatten(1).sum(1)
    return torch.where(area > 0, total / area.clamp(min=1), torch.zeros_like(total))

T = TypeVar("T")


def _timed(iterable: Iterable[T]) -> Iterator[tuple[T, float]]:
    """Each item with the milliseconds spent producing it (the tracking work happens inside next())."""
    it = iter(iterable)
    while True:
        timer = _Timer()
        with timer:
            item = next(it, _DONE)
        if item is _DONE:
            return
        yield item, timer.ms


_DONE = object()


class SAM2VideoPredictor:
    """Track prompted objects through a video with a SAM 2 / SAM 2.1 model (Ultralytics calling convention).

    overrides: default options for every call, e.g. dict(model="sam2_b.pt", imgsz=1024, conf=0.25,
    task="segment", mode="predict"); the keys are those of `masklet.api.PREDICT_ARGS`. The model is loaded
    here (downloaded into $MASKLET_HOME when needed). fill_hole_area: holes up to this many low-res pixels
    are filled, as in SAM 2.
    """

    def __init__(self, cfg: Any = None, overrides: dict[str, Any] | None = None, _callbacks: Any = None,
                 fill_hole_area: int = 8, **kwargs: Any) -> None:
        args = {}
        for source in (cfg if isinstance(cfg, dict) else None, overrides, kwargs):
            if source:
                args.update(source)
        for key in args:
            if key not in _VIDEO_KEYS:
                raise unknown_keyword("SAM2VideoPredictor", key, _VIDEO_KEYS)
        self.args: dict[str, Any] = {k: v[0] for k, v in {**PREDICT_ARGS, **TRACK_SWITCHES}.items()
                                     if k not in _NOT_FOR_VIDEO}
        self.args["mode"] = "track"
        self.args.update(args)
        check_common(self.args["task"], self.args["mode"], self.args["vid_stride"], self.args["max_frames"],
                     self.args["conf"])
        self.fill_hole_area = fill_hole_area
        self._set_model(self.args["model"] or DEFAULT_MODEL)
        self._apply_switches(self.args)
        self.video_predictor.dtype = resolve_dtype(self.args["dtype"], self.args["half"], self.device)
        apply_compile_option(self.model, self.args["compile"])
        self.inference_state: Any = None
        self.save_dir: Path | None = None
        self._last_source: Any = None

    def _set_model(self, model: str | Path | nn.Module) -> None:
        module, self.ckpt_path = load_sam_model(model)
        from ..predictors.video import VideoPredictor

        self.video_predictor = VideoPredictor(module, fill_hole_area=self.fill_hole_area)  # checks it is SAM 2
        self.model = module
        self.args["model"] = model if not isinstance(model, nn.Module) else type(model).__name__

    def _apply_switches(self, args: dict[str, Any]) -> None:
        for key in TRACK_SWITCHES:
            if not isinstance(args[key], bool):
                raise TypeError(f"{key} must be True or False, got {args[key]!r}")
            setattr(self.video_predictor, key, args[key])

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    # ------------------------------------------------------------------ official low-level API
    def init_state(self, video: Any, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> Any:
        """Open a video (frame folder, video file, frame list) for tracking; returns its state."""
        self.inference_state = self.video_predictor.init_state(video, offload_video_to_cpu, offload_state_to_cpu,
                                                               async_loading_frames)
        return self.inference_state

    def add_new_points_or_box(self, inference_state: Any, frame_idx: int, obj_id: int, points: Any = None,
                              labels: Any = None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box: Any = None) -> tuple[int, list[int], torch.Tensor]:
        """Official API: clicks (N, 2) with labels (N,) and/or a box (4,) for one object on one frame.
        Returns (frame_idx, obj_ids, masks (num_objects, 1, H, W) logits)."""
        return self.video_predictor.add_new_points_or_box(inference_state, frame_idx, obj_id, points, labels,
                                                          clear_old_points, normalize_coords, box)

    def add_new_mask(self, inference_state: Any, frame_idx: int, obj_id: int,
                     mask: Any) -> tuple[int, list[int], torch.Tensor]:
        """Official API: an object's (H, W) bool mask on a frame."""
        return self.video_predictor.add_new_mask(inference_state, frame_idx, obj_id, mask)

    def propagate_in_video(self, inference_state: Any, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False, **kwargs: Any) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Official API: yields (frame_idx, obj_ids, masks (num_objects, 1, H, W) logits) per frame (kwargs such
        as progress=False go to `VideoPredictor.propagate_in_video`)."""
        return self.video_predictor.propagate_in_video(inference_state, start_frame_idx, max_frame_num_to_track,
                                                       reverse, **kwargs)

    def remove_object(self, inference_state: Any, obj_id: int, strict: bool = True,
                      need_output: bool = True) -> Any:
        """Official API: forget an object."""
        return self.video_predictor.remove_object(inference_state, obj_id, strict, need_output)

    def reset_state(self, inference_state: Any) -> None:
        """Official API: forget every object and prompt."""
        self.video_predictor.reset_state(inference_state)

    # ------------------------------------------------------------------ Ultralytics-style call
    def __call__(self, source: Any = None, model: Any = None, stream: bool = False, *, points: Any = None,
                 labels: Any = None, bboxes: Any = None, masks: Any = None, frame: int | None = None,
                 **kwargs: Any) -> list[Results] | Iterator[Results]:
        """Track the prompted objects through `source`; one `Results` per frame, in frame order.

        source: a video file, a folder of frames, a list / (T, H, W, 3) array of RGB frames (tracked forwards
        and backwards from `frame`), or a webcam index / stream URL / iterable of frames (tracked forwards, the
        prompts go on frame `frame` when it arrives). None: the previous call's source.
        points / labels / bboxes: as for `SAM` (nesting depth -> objects); masks: (B, H, W) or (H, W) binary
        masks at the video's size, one object each (instead of points / boxes).
        Other keywords override the constructor's `overrides` for this call (save, imgsz, device, vid_stride,
        max_frames, verbose, the video switches of `masklet.api.TRACK_SWITCHES`, ...). Objects absent from a
        frame are left out of that frame's Results; `boxes.id` keeps each object's id and `boxes.conf` is its mean
        mask probability.

        The video is tracked in one pass (`propagate_in_video(..., one_pass=True)`): only what tracking onwards
        can still read is kept, so RAM stays flat however long the video; `inference_state` then takes no more
        prompts. With `frame` > 0 the frames before it come from a reverse pass run first, and their masks are
        held (as bits) until the forward pass reaches them in order.
        """
        for key in kwargs:
            if key not in _VIDEO_KEYS:
                raise unknown_keyword("SAM2VideoPredictor", key, _VIDEO_KEYS + ["stream"])
        args = {**self.args, **kwargs}
        check_common(args["task"], args["mode"], args["vid_stride"], args["max_frames"], args["conf"])
        if model is not None:
            self._set_model(model)
        self._apply_switches(args)
        frame = args["frame"] if frame is None else frame
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
            raise ValueError(f"frame must be a frame index >= 0, got {frame!r}")
        prompts = normalize_prompts(points, labels, bboxes)
        mask_list = _object_masks(masks)
        if mask_list is not None and not prompts.empty:
            raise PromptError("give each object either a mask or points / bboxes: masks cannot be combined with "
                              "points or bboxes in one call (to refine a mask with clicks, use the official API: "
                              "init_state, add_new_mask, add_new_points_or_box, propagate_in_video)")
        if prompts.empty and mask_list is None:
            raise PromptError("SAM2VideoPredictor tracks prompted objects: pass points (with labels), bboxes or "
                              "masks. To segment everything in every frame use SAM(model)(source) instead")
        self.model.to(select_device(args["device"], self.device))
        self.video_predictor.dtype = resolve_dtype(args["dtype"], args["half"], self.device)
        apply_compile_option(self.model, args["compile"])
        size = check_imgsz(self.model, args["imgsz"])
        apply_imgsz(self.model, size)
        if source is None:
            source = args.get("source") if args.get("source") is not None else self._last_source
            if source is None:
                raise ValueError("no source: pass a video, e.g. predictor(source='video.mp4', points=[x, y])")
        if args["show"]:
            check_gui()
        num_objects = len(mask_list) if mask_list is not None else prompts.batch
        object_prompts = [_one_object(prompts, mask_list, b) for b in range(num_objects)]
        if _is_random_access(source):
            from ..data.sources import VideoFrames

            frames = source if hasattr(source, "frame_name") else VideoFrames(source)
            frames = _FrameSubset(frames, int(args["vid_stride"]), args["max_frames"])
            if frame >= len(frames):
                raise ValueError(f"frame={frame} is outside the video, which has {len(frames)} frames (after "
                                 f"vid_stride / max_frames)")
            _check_objects(object_prompts, frames.height, frames.width)
            state = self.init_state(frames)
            prompt_time = _Timer()  # the prompted frame's image encode happens here: its time counts for that frame
            with prompt_time:
                for obj_id, (p, m) in enumerate(object_prompts, start=1):
                    if m is not None:
                        self.add_new_mask(state, frame, obj_id, m)
                    else:
                        self.add_new_points_or_box(state, frame, obj_id, points=p[0], labels=p[1], box=p[2])
            run = self._track_video(state, frames, frame, source, prompt_time.ms)
            total = len(frames)
        else:
            from ..data.sources import iter_stream

            run = self._track_stream(iter_stream(source), object_prompts, frame, args["vid_stride"],
                                     args["max_frames"], source)
            total = args["max_frames"]
        self._last_source = source
        writer = None
        if args["save"] or args["save_txt"]:
            # like Ultralytics, the run folder is named after the mode: runs/segment/predict for mode="predict"
            # (created at the first file written: a run that fails before leaves no empty folder)
            writer = RunWriter(make_save_dir(args["project"], args["name"], args["mode"] or "track", args["exist_ok"]),
                               args["save"], args["save_txt"], args["save_conf"],
                               plot_args(args["show_labels"], args["show_conf"], args["show_boxes"],
                                         args["line_width"]))
            self.save_dir = writer.save_dir
        # drawn on the prompted frame (numbered as in the source, as Results.frame is)
        drawn = (frame * int(args["vid_stride"]), prompt_drawing(prompts))
        out = self._emit(run, writer, args, size, num_objects, total, drawn)
        return out if stream else list(out)

    # ------------------------------------------------------------------ running
    def _results(self, image: np.ndarray, path: str, frame_idx: int,
                 logits: torch.Tensor | tuple[torch.Tensor, torch.Tensor], num_objects: int,
                 obj_ids: list[int]) -> Results:
        """Results of a frame from its (N, 1, H, W) logits, or from (masks (N, H, W) bool, confidences (N,))."""
        if isinstance(logits, tuple):
            masks, conf = logits
        else:
            masks = logits[:, 0] > 0.0
            conf = _mask_confidence(logits[:, 0], masks)
        keep = masks.flatten(1).any(1)
        ids = torch.as_tensor(obj_ids)[keep.cpu()].tolist()
        return results_from_masks(image, path, masks[keep], conf[keep], ids=ids, classes=[i - 1 for i in ids],
                                  names={k: str(k) for k in range(num_objects)}, frame=frame_idx)

    def _track_video(self, state: Any, frames: _FrameSubset, frame: int, source: Any,
                     prompt_ms: float = 0.0) -> Iterator[tuple[Results, float, float]]:
        path = str(frames.path) if frames.path is not None else getattr(frames, "name", "video")
        n = len(state.objects)

        earlier = []
        if frame > 0:
            # frames before the prompted one come from a reverse pass, run first so results stay in frame order;
            # their masks wait as bits (1/32 of the logits) with their confidences
            backwards = self.propagate_in_video(state, frame, reverse=True, progress=False, one_pass=True)
            for (idx, ids, logits), ms in _timed(backwards):
                if idx < frame:
                    masks = logits[:, 0] > 0.0
                    conf = _mask_confidence(logits[:, 0], masks).cpu()
                    earlier.append((idx, ids, np.packbits(masks.cpu().numpy(), axis=-1), conf, ms))
        width = frames.width
        while earlier:
            idx, ids, packed, conf, ms = earlier.pop()
            masks = torch.from_numpy(np.unpackbits(packed, axis=-1, count=width).astype(bool))
            yield self._timed_result(frames, idx, path, (masks, conf), n, ids, ms)
        for (idx, ids, logits), ms in _timed(self.propagate_in_video(state, frame, progress=False, one_pass=True)):
            yield self._timed_result(frames, idx, path, logits, n, ids, ms + (prompt_ms if idx == frame else 0.0))

    def _timed_result(self, frames: _FrameSubset, idx: int, path: str,
                      logits: torch.Tensor | tuple[torch.Tensor, torch.Tensor], n: int,
                      ids: list[int], inference_ms: float) -> tuple[Results, float, float]:
        pre, post = _Timer(), _Timer()
        with pre:
            image = frames[idx]
        with post:
            result = self._results(image, path, frames.source_index(idx), logits, n, ids)
        result.speed = {"preprocess": pre.ms, "inference": inference_ms, "postprocess": post.ms}
        return result, pre.ms, inference_ms

    def _track_stream(self, frames: Iterator[np.ndarray], object_prompts: list, frame: int, vid_stride: int,
                      max_frames: int | None, source: Any) -> Iterator[tuple[Results, float, float]]:
        from ..predictors.video import ObjectPrompt

        current: dict[str, Any] = {}

        def subset() -> Iterator[np.ndarray]:
            used = 0
            for k, image in enumerate(frames):
                if k % vid_stride:
                    continue
                if frame == used:
                    _check_objects(object_prompts, image.shape[0], image.shape[1])
                current["image"], current["index"] = image, k
                yield image
                used += 1
                if max_frames is not None and used >= max_frames:
                    return

        initial = {frame: [ObjectPrompt(obj_id, points=p[0], labels=p[1], box=p[2]) if m is None
                           else ObjectPrompt(obj_id, mask=m)
                           for obj_id, (p, m) in enumerate(object_prompts, start=1)]}
        path = source if isinstance(source, (str, Path)) else f"stream{source}" if isinstance(source, int) \
            else "stream"
        n = len(object_prompts)
        for (_, ids, logits), ms in _timed(self.video_predictor.track_stream(subset(), prompts=initial)):
            post = _Timer()
            with post:
                result = self._results(current["image"], str(path), current["index"], logits, n, ids)
            result.speed = {"preprocess": 0.0, "inference": ms, "postprocess": post.ms}
            yield result, 0.0, ms

    def _emit(self, run: Iterator[tuple[Results, float, float]], writer: RunWriter | None, args: dict[str, Any],
              size: int, num_objects: int, total: int | None = None,
              prompts: tuple[int | None, Any] = (None, None)) -> Iterator[Results]:
        plot = plot_args(args["show_labels"], args["show_conf"], args["show_boxes"], args["line_width"])
        prompt_frame, drawn = prompts
        bar = progress_bar(total=total, desc="track", unit="frame", disable=not args["verbose"])
        report = RunReport(writer, bar, size, args["show"], args["verbose"], plot)
        try:
            for result, _, _ in run:
                if result.frame == prompt_frame:
                    result.prompts = drawn
                fps = None
                if self.inference_state is not None and getattr(self.inference_state, "frames", None) is not None:
                    fps = getattr(self.inference_state.frames, "fps", None)
                report.add(result, result.path, True, fps, f"video 1/1 (frame {result.frame})", result.path)
                yield result
        finally:
            report.close()
            if writer is not None:
                self.save_dir = writer.save_dir
        report.summary("frame", f", {num_objects} object(s)")


def _object_masks(masks: Any) -> list[np.ndarray] | None:
    """Mask prompts -> one (H, W) bool array per object, or None."""
    if masks is None:
        return None
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    try:
        arr = np.asarray(masks)
    except (TypeError, ValueError):
        raise PromptError("masks must be an (H, W) or (B, H, W) array of 0/1 or bools") from None
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise PromptError(f"masks must have shape (H, W) or (B, H, W) (one binary mask per object at the video's "
                          f"size), got {np.shape(masks)}")
    return [m > 0 for m in arr]


def _one_object(prompts: Any, mask_list: list[np.ndarray] | None, b: int) -> tuple[tuple, np.ndarray | None]:
    """((points (N, 2) | None, labels (N,) | None, box (4,) | None), mask (H, W) | None) of object b."""
    if mask_list is not None:
        return (None, None, None), mask_list[b]
    pts = prompts.points[b] if prompts.points is not None else None
    lbl = prompts.labels[b] if prompts.labels is not None else None
    box = prompts.boxes[b] if prompts.boxes is not None else None
    return (pts, lbl, box), None


def _check_objects(object_prompts: list, height: int, width: int) -> None:
    from ..predictors.prompts import Prompts

    for (pts, lbl, box), mask in object_prompts:
        if mask is not None:
            if mask.shape != (height, width):
                raise PromptError(f"mask prompts must have the video's size ({height}, {width}), got {mask.shape}")
            continue
        check_prompts_inside(Prompts(None if pts is None else pts[None], None if lbl is None else lbl[None],
                                     None if box is None else box[None]), height, width)
