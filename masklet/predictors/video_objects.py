"""Which objects, prompts and per-frame results a video predictor holds, shared by the torch `VideoPredictor` and
the onnxruntime `OnnxVideoPredictor` (torch-free: the onnxruntime predictor must not import torch).

The bookkeeping follows the official `SAM2VideoPredictor` (sam2/sam2_video_predictor.py): prompt results wait in
temporary dicts until a propagation consolidates them into the memory bank (`_preflight`), clearing an object's
prompts on a frame turns its result there into a tracked frame, and so on. The tensor work (running the model,
resizing, concatenating) sits behind small hooks that each predictor provides: torch tensors in one, numpy arrays
in the other. Which memories a frame reads is `memory_bank`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import memory_bank
from .prompts import NORMALIZED_COORDS_HINT, binary_masks, check_inside, official_prompts


@dataclass
class FrameResult:
    """What one object keeps of one frame: low-res mask logits (1, 1, 4h, 4w), object pointer (1, C), object
    score (1, 1), and its memory (1, mem_dim, h, w) once encoded. torch tensors (memory in bfloat16) in
    `VideoPredictor`, numpy float32 (memory rounded to bfloat16) in `OnnxVideoPredictor`."""

    pred_masks: Any
    obj_ptr: Any
    object_score_logits: Any
    memory: Any = None


@dataclass
class TrackedObject:
    """One object's prompts and per-frame results. `cond` holds frames with prompts (conditioning frames),
    `non_cond` tracked frames; the `temp_*` dicts hold prompt results not yet consolidated into memory."""

    obj_id: int
    point_inputs: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # frame -> (coords, labels)
    mask_inputs: dict[int, Any] = field(default_factory=dict)
    cond: dict[int, FrameResult] = field(default_factory=dict)
    non_cond: dict[int, FrameResult] = field(default_factory=dict)
    temp_cond: dict[int, FrameResult] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameResult] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def clear(self) -> None:
        for d in (self.point_inputs, self.mask_inputs, self.cond, self.non_cond, self.temp_cond, self.temp_non_cond,
                  self.tracked):
            d.clear()

    def lookup(self, frame_idx: int) -> FrameResult | None:
        return self.cond.get(frame_idx) or self.non_cond.get(frame_idx)


class ObjectIndex:
    """`obj_ids` and `index_of` over the `objects` list of a video state (a dataclass that declares it)."""

    objects: list[TrackedObject]

    @property
    def obj_ids(self) -> list[int]:
        return [obj.obj_id for obj in self.objects]

    def index_of(self, obj_id: int) -> int | None:
        for i, obj in enumerate(self.objects):
            if obj.obj_id == obj_id:
                return i
        return None


def open_video(video: Any) -> Any:
    """A `VideoFrames` as given, or opened from a folder of frames, a video file or a list of HxWx3 uint8 frames."""
    from ..data.sources import VideoFrames

    return video if hasattr(video, "frame_name") and hasattr(video, "height") else VideoFrames(video)


class VideoObjects:
    """Object and prompt bookkeeping of a video predictor over a state with `objects`, `num_frames`,
    `video_height`, `video_width` and an LRU `feature_cache` (OrderedDict frame -> features).

    The predictor sets `feature_cache_size`, `batch_objects`, `num_maskmem`, `binarize_mask_from_pts_for_mem_enc`
    and provides the hooks below. The official switches default to the official values (see `VideoPredictor`).
    """

    add_all_frames_to_correct_as_cond = False
    clear_non_cond_mem_around_input = False
    clear_non_cond_mem_for_multi_obj = False
    feature_cache_size: int
    batch_objects: bool
    num_maskmem: int

    # ------------------------------------------------------------------ hooks (tensor library specifics)
    def _encode_frame(self, state: Any, frame_idx: int) -> Any:  # pragma: no cover - provided by the predictor
        """The image features of a frame."""
        raise NotImplementedError

    def _run_frame(self, state: Any, objs: list[TrackedObject], frame_idx: int, is_init: bool, points: Any,
                   mask_in: Any, reverse: bool, run_mem_encoder: bool, prev_mask_logits: Any = None,
                   plans: list | None = None) -> tuple[list[FrameResult], Any]:  # pragma: no cover
        """Track B objects (one memory layout) on a frame: their results and low-res masks (B, 1, 4h, 4w)."""
        raise NotImplementedError

    def _memory_plan(self, state: Any, obj: TrackedObject, frame_idx: int,
                     reverse: bool) -> tuple[list, list]:  # pragma: no cover - provided by the predictor
        """`memory_bank.memory_plan` with the model's settings."""
        raise NotImplementedError

    def _prompt_memory(self, state: Any, frame_idx: int, result: FrameResult) -> Any:  # pragma: no cover
        """The memory of a prompted frame's result (encoded from its binarised mask, as the official predictor)."""
        raise NotImplementedError

    def _blank_masks(self, state: Any) -> Any:  # pragma: no cover - provided by the predictor
        """(num_objects, 1, H, W) float32 at the no-object score, at video resolution."""
        raise NotImplementedError

    def _upscale(self, state: Any, low_res: Any) -> Any:  # pragma: no cover - provided by the predictor
        """Low-res logits (B, 1, 4h, 4w) -> video-resolution logits (B, 1, H, W)."""
        raise NotImplementedError

    def _on_device(self, state: Any, x: Any) -> Any:  # pragma: no cover - provided by the predictor
        raise NotImplementedError

    def _clip(self, x: Any, low: float, high: float) -> Any:  # pragma: no cover - provided by the predictor
        raise NotImplementedError

    def _concat(self, xs: list, axis: int) -> Any:  # pragma: no cover - provided by the predictor
        raise NotImplementedError

    def _constrain(self, masks: Any) -> Any:
        """A constraint on every returned mask set (the torch predictor's non_overlap_masks); none by default."""
        return masks

    def _check_editable(self, state: Any) -> None:
        """Raise when the state takes no more prompts (the torch predictor's one-pass runs); always fine here."""

    # ------------------------------------------------------------------ state
    def _features(self, state: Any, frame_idx: int) -> Any:
        cache = state.feature_cache
        if frame_idx in cache:
            cache.move_to_end(frame_idx)
            return cache[frame_idx]
        features = self._encode_frame(state, frame_idx)
        self._cache_features(state, frame_idx, features)
        return features

    def _cache_features(self, state: Any, frame_idx: int, features: Any) -> None:
        """Keep a frame's features, evicting the least recently used beyond `feature_cache_size`."""
        cache = state.feature_cache
        cache[frame_idx] = features
        while len(cache) > self.feature_cache_size:
            cache.popitem(last=False)

    def _check_frame(self, state: Any, frame_idx: int) -> int:
        if not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"frame_idx must be an integer, got {type(frame_idx).__name__}")
        if state.num_frames is not None and not 0 <= frame_idx < state.num_frames:
            raise IndexError(f"frame_idx {frame_idx} is out of range: the video has {state.num_frames} frames "
                             f"(0 to {state.num_frames - 1})")
        return int(frame_idx)

    def _object(self, state: Any, obj_id: int) -> TrackedObject:
        idx = state.index_of(obj_id)
        if idx is None:
            state.objects.append(TrackedObject(obj_id))
            return state.objects[-1]
        return state.objects[idx]

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def _check_points_or_box(points: Any, labels: Any, box: Any, clear_old_points: bool) -> None:
        """The argument checks of `add_new_points_or_box` (ValueError naming what is missing or not allowed)."""
        if points is None and box is None:
            raise ValueError("add_new_points_or_box needs points (with labels) or a box: both are missing")
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together (one label per point: 1 = foreground, "
                             "0 = background)")
        if box is not None and not clear_old_points:
            raise ValueError("a box can only be added with clear_old_points=True (the box is the first prompt of "
                             "the object on this frame)")

    def _prompt_points(self, state: Any, points: Any, labels: Any, box: Any, clear_old_points: bool,
                       normalize_coords: bool) -> tuple[np.ndarray, np.ndarray]:
        """The checks and conversion of `add_new_points_or_box`, one for the torch and ONNX predictors: (1, N, 2)
        float32 model-input coordinates (a box first, as its two corners with labels 2 and 3, as the official
        predictor) and (1, N) int32 labels. ValueError / PromptError for missing, misshapen or outside prompts."""
        self._check_points_or_box(points, labels, box, clear_old_points)
        prompts = official_prompts(points, labels, box, single_object=True)
        if normalize_coords:
            check_inside(prompts, state.video_height, state.video_width, NORMALIZED_COORDS_HINT)
        coords = [] if prompts.points is None else [np.asarray(prompts.points, np.float32)]
        lbls = [] if prompts.labels is None else [np.asarray(prompts.labels, np.int32)]
        if prompts.boxes is not None:
            coords.insert(0, np.asarray(prompts.boxes, np.float32).reshape(1, 2, 2))
            lbls.insert(0, np.array([[2, 3]], np.int32))
        new_points, new_labels = np.concatenate(coords, axis=1), np.concatenate(lbls, axis=1)
        if normalize_coords:
            new_points = new_points / np.array([state.video_width, state.video_height], np.float32)
        return new_points * np.float32(self.image_size), new_labels

    @staticmethod
    def _prompt_mask(state: Any, mask: Any) -> np.ndarray:
        """`add_new_mask`'s mask checked as one object's binary mask of the video's size: (1, H, W) bool
        (PromptError for another shape, a label map or a float mask with values other than 0 and 1)."""
        return binary_masks(mask, (state.video_height, state.video_width), "mask", allow_float=True,
                            single_object=True)

    def _add_points(self, state: Any, frame_idx: int, obj_id: int, new_points: Any, new_labels: Any,
                    clear_old_points: bool) -> tuple[int, list[int], Any]:
        """Store (B=1, N, 2) model-input coordinates and (1, N) labels as the object's clicks on the frame (after
        its earlier clicks there unless clear_old_points) and predict the frame."""
        obj = self._object(state, obj_id)
        old = None if clear_old_points else obj.point_inputs.get(frame_idx)
        if old is not None:
            new_points, new_labels = self._concat([old[0], new_points], 1), self._concat([old[1], new_labels], 1)
        obj.point_inputs[frame_idx] = (new_points, new_labels)
        obj.mask_inputs.pop(frame_idx, None)
        return self._prompt_frame(state, obj, frame_idx, (new_points, new_labels), None)

    def _add_mask(self, state: Any, frame_idx: int, obj_id: int, mask_in: Any) -> tuple[int, list[int], Any]:
        """Store a (1, 1, S, S) model-input mask as the object's prompt on the frame and predict the frame."""
        obj = self._object(state, obj_id)
        obj.mask_inputs[frame_idx] = mask_in
        obj.point_inputs.pop(frame_idx, None)
        return self._prompt_frame(state, obj, frame_idx, None, mask_in)

    def _prompt_frame(self, state: Any, obj: TrackedObject, frame_idx: int, points: Any,
                      mask_in: Any) -> tuple[int, list[int], Any]:
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        # a correction on a tracked frame is a conditioning frame only when asked: else the next propagation
        # that reaches the frame tracks over it (the official default)
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        temp = obj.temp_cond if is_cond else obj.temp_non_cond
        prev_logits = None
        if points is not None:
            prev = temp.get(frame_idx) or obj.lookup(frame_idx)
            if prev is not None:
                prev_logits = self._clip(self._on_device(state, prev.pred_masks), -32.0, 32.0)
        result, _ = self._run_frame(state, [obj], frame_idx, is_init, points, mask_in, reverse,
                                    run_mem_encoder=False, prev_mask_logits=prev_logits)
        temp[frame_idx] = result[0]
        return frame_idx, state.obj_ids, self._consolidate(state, frame_idx, is_cond=is_cond)

    def _consolidate(self, state: Any, frame_idx: int, is_cond: bool) -> Any:
        """Every object's current mask on a frame at video resolution (the no-object score where it has none)."""
        out = self._blank_masks(state)
        for i, obj in enumerate(state.objects):
            temp = obj.temp_cond if is_cond else obj.temp_non_cond
            result = temp.get(frame_idx) or obj.lookup(frame_idx)
            if result is not None:
                out[i: i + 1] = self._upscale(state, result.pred_masks)
        return self._constrain(out)

    def _to_video_res(self, state: Any, low_res: Any) -> Any:
        """The masks returned for a tracked frame: (N, 1, H, W) video-resolution logits."""
        return self._constrain(self._upscale(state, low_res))

    def clear_all_prompts_in_frame(self, state: Any, frame_idx: int, obj_id: int,
                                   need_output: bool = True) -> tuple[int, list[int], Any] | None:
        """Remove an object's prompts on a frame (its result there becomes an ordinary tracked frame). Returns
        (frame_idx, obj_ids, masks (num_objects, 1, H, W) logits), or None without need_output. ValueError for an
        unknown obj_id."""
        self._check_editable(state)
        frame_idx = self._check_frame(state, frame_idx)
        idx = state.index_of(obj_id)
        if idx is None:
            raise ValueError(f"unknown object id {obj_id}; existing object ids: {state.obj_ids}")
        obj = state.objects[idx]
        obj.point_inputs.pop(frame_idx, None)
        obj.mask_inputs.pop(frame_idx, None)
        obj.temp_cond.pop(frame_idx, None)
        obj.temp_non_cond.pop(frame_idx, None)
        result = obj.cond.pop(frame_idx, None)
        if result is not None:
            obj.non_cond[frame_idx] = result
            obj.tracked.pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.temp_cond for o in state.objects)
        return frame_idx, state.obj_ids, self._consolidate(state, frame_idx, is_cond)

    def remove_object(self, state: Any, obj_id: int, strict: bool = True,
                      need_output: bool = True) -> tuple[list[int], list[tuple[int, Any]]]:
        """Remove an object. Returns (remaining obj_ids, [(frame_idx, masks)] for frames it had prompts on).
        ValueError for an unknown obj_id when strict."""
        self._check_editable(state)
        idx = state.index_of(obj_id)
        if idx is None:
            if strict:
                raise ValueError(f"cannot remove object id {obj_id}: no such object; existing object ids: "
                                 f"{state.obj_ids}")
            return state.obj_ids, []
        if len(state.objects) == 1:
            self.reset_state(state)
            return state.obj_ids, []
        obj = state.objects[idx]
        input_frames = set(obj.point_inputs) | set(obj.mask_inputs)
        for frame_idx in input_frames:
            self.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)
        state.objects.pop(idx)
        updated = []
        if need_output:
            for frame_idx in sorted(input_frames):
                is_cond = any(frame_idx in o.temp_cond for o in state.objects)
                updated.append((frame_idx, self._consolidate(state, frame_idx, is_cond)))
        return state.obj_ids, updated

    def reset_state(self, state: Any) -> None:
        """Remove every object and prompt."""
        for obj in state.objects:
            obj.clear()
        state.objects.clear()

    # ------------------------------------------------------------------ tracking
    def _preflight(self, state: Any) -> None:
        """Encode the memories of newly prompted frames and move them into the memory bank."""
        if not state.objects:
            raise RuntimeError("no object has prompts yet: call add_new_points_or_box or add_new_mask first")
        inputs = {t for obj in state.objects for temp in (obj.temp_non_cond, obj.temp_cond) for t in temp}
        for obj in state.objects:
            for temp, bank in ((obj.temp_non_cond, obj.non_cond), (obj.temp_cond, obj.cond)):
                for frame_idx, result in temp.items():
                    if result.memory is None:
                        result.memory = self._prompt_memory(state, frame_idx, result)
                    bank[frame_idx] = result
                temp.clear()
            if not obj.cond:
                raise RuntimeError(f"object {obj.obj_id} has no prompts: add points, a box or a mask for it first")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)
        for frame_idx in sorted(inputs):
            self._clear_around_input(state, frame_idx, keep=inputs)

    def _clear_around_input(self, state: Any, frame_idx: int, keep: set[int]) -> None:
        """`clear_non_cond_mem_around_input`: drop the tracked results within num_maskmem frames of an input frame
        (both sides, as the legacy official predictor with memory_temporal_stride_for_eval = 1), of every object;
        with several objects only under `clear_non_cond_mem_for_multi_obj`. Frames in `keep` (the inputs) stay."""
        if not self.clear_non_cond_mem_around_input:
            return
        if len(state.objects) > 1 and not self.clear_non_cond_mem_for_multi_obj:
            return
        for obj in state.objects:
            for t in [t for t in obj.non_cond if abs(t - frame_idx) <= self.num_maskmem and t not in keep]:
                del obj.non_cond[t]

    def _track_frame_all(self, state: Any, frame_idx: int, reverse: bool) -> Any:
        """Every object's low-res mask on a frame (B, 1, 4h, 4w), tracking those without a prompt there; objects
        with the same memory layout in one batch when `batch_objects`."""
        masks: list[Any] = [None] * len(state.objects)
        groups: dict[tuple, list[tuple[int, TrackedObject, Any]]] = {}
        for i, obj in enumerate(state.objects):
            if frame_idx in obj.cond:
                masks[i] = self._on_device(state, obj.cond[frame_idx].pred_masks)
                obj.tracked[frame_idx] = reverse
                continue
            plan = self._memory_plan(state, obj, frame_idx, reverse)
            key = memory_bank.plan_key(plan)
            groups.setdefault(key if self.batch_objects else (i,) + key, []).append((i, obj, plan))
        for members in groups.values():
            results, low_res = self._run_frame(state, [m[1] for m in members], frame_idx, False, None, None, reverse,
                                               run_mem_encoder=True, plans=[m[2] for m in members])
            for k, (i, obj, _) in enumerate(members):
                obj.non_cond[frame_idx] = results[k]
                obj.tracked[frame_idx] = reverse
                masks[i] = low_res[k: k + 1]
        if any(frame_idx in obj.cond for obj in state.objects):
            # the legacy official predictor clears again whenever tracking passes a conditioning frame
            self._clear_around_input(state, frame_idx, keep={frame_idx})
        return self._concat(masks, 0)

    def _propagation(self, state: Any, start_frame_idx: int | None, max_frame_num_to_track: int | None,
                     reverse: bool) -> tuple[int, Iterable[int]]:
        """Consolidate the prompts; (start frame, frames in tracking order) of a `propagate_in_video` call, which
        starts at the earliest prompted frame unless given."""
        self._preflight(state)
        if start_frame_idx is None:
            start_frame_idx = memory_bank.first_prompted_frame(state.objects)
        start_frame_idx = self._check_frame(state, start_frame_idx)
        order = memory_bank.propagation_order(start_frame_idx, max_frame_num_to_track, state.num_frames, reverse)
        return start_frame_idx, order
