"""`OnnxVideoPredictor`: `VideoPredictor`'s methods on exported graphs, onnxruntime and numpy.

The tracking rules (which memories and object pointers a frame reads, their temporal positions, propagation
order) come from `masklet.predictors.memory_bank`, shared with the torch predictor; prompts are validated by
`masklet.predictors.prompts`. The memory bank is passed to memory_attention.onnx at its actual size (dynamic
axes). Masks come back as numpy float32 logits where the torch predictor returns tensors.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.preprocess import InputSpec
from ..predictors import memory_bank
from ..predictors.prompts import NORMALIZED_COORDS_HINT, PromptError, check_inside, official_prompts
from .image import decoder_points, input_spec, select_masks
from .ops import fill_holes_numpy, resize_bilinear, round_to_bfloat16
from .session import ExportedModel, load_exported


@dataclass
class FrameResult:
    """One object on one frame: low-res logits (1, 1, 4h, 4w), object pointer (1, C), object score (1, 1) and its
    memory (1, mem_dim, h, w) (bfloat16-rounded float32) once encoded."""

    pred_masks: np.ndarray
    obj_ptr: np.ndarray
    object_score_logits: np.ndarray
    memory: np.ndarray | None = None


@dataclass
class TrackedObject:
    obj_id: int
    point_inputs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    mask_inputs: dict[int, np.ndarray] = field(default_factory=dict)
    cond: dict[int, FrameResult] = field(default_factory=dict)
    non_cond: dict[int, FrameResult] = field(default_factory=dict)
    temp_cond: dict[int, FrameResult] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameResult] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)

    def lookup(self, frame_idx: int) -> FrameResult | None:
        return self.cond.get(frame_idx) or self.non_cond.get(frame_idx)


@dataclass
class OnnxVideoState:
    frames: Any
    num_frames: int
    video_height: int
    video_width: int
    objects: list[TrackedObject] = field(default_factory=list)
    feature_cache: OrderedDict[int, dict] = field(default_factory=OrderedDict)

    @property
    def obj_ids(self) -> list[int]:
        return [obj.obj_id for obj in self.objects]

    def index_of(self, obj_id: int) -> int | None:
        for i, obj in enumerate(self.objects):
            if obj.obj_id == obj_id:
                return i
        return None


class OnnxVideoPredictor:
    """Track objects through a video on an exported SAM 2 folder (`masklet.export`).

    Same methods, arguments and outputs as `masklet.predictors.video.VideoPredictor` (init_state,
    add_new_points_or_box, add_new_mask, propagate_in_video in both directions, clear_all_prompts_in_frame,
    remove_object, reset_state); masks are numpy (num_objects, 1, H, W) float32 logits. batch_objects: track
    objects with the same memory layout in one graph call (default True: fewer calls).
    """

    def __init__(self, model: str | Path | ExportedModel, fill_hole_area: int = 8, feature_cache: int = 2,
                 batch_objects: bool = True, providers: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        self.model = load_exported(model, providers=providers, threads=threads)
        self.meta = self.model.meta
        if not self.model.is_sam2:
            raise ValueError(f"video tracking needs an exported SAM 2 / SAM 2.1 model; {self.meta['variant']} has no "
                             "memory. Export sam2_t/s/b/l.pt or sam2.1_t/s/b/l.pt")
        self.image_size = int(self.meta["image_size"])
        base = input_spec(self.meta)
        self.spec = InputSpec(base.size, "square", self.meta.get("video_resample", "pil-bicubic"), base.mean, base.std)
        self.fill_hole_area = fill_hole_area
        self.feature_cache_size = max(1, feature_cache)
        self.batch_objects = batch_objects
        self.binarize_mask_from_pts_for_mem_enc = True
        self.max_obj_ptrs = int(self.meta["max_obj_ptrs_in_encoder"])
        self.num_maskmem = int(self.meta["num_maskmem"])

    # ------------------------------------------------------------------ state
    def init_state(self, video: Any, **_: Any) -> OnnxVideoState:
        """Open a video (folder of frames, video file, or list of HxWx3 uint8 RGB frames); frames are decoded when
        needed. The official offload/async flags are accepted and ignored."""
        from ..data.sources import VideoFrames

        frames = video if hasattr(video, "frame_name") and hasattr(video, "height") else VideoFrames(video)
        state = OnnxVideoState(frames, len(frames), frames.height, frames.width)
        self._features(state, 0)
        return state

    def reset_state(self, state: OnnxVideoState) -> None:
        """Remove every object and prompt."""
        state.objects.clear()

    def _features(self, state: OnnxVideoState, frame_idx: int) -> dict[str, np.ndarray]:
        from .image import preprocess_numpy

        cache = state.feature_cache
        if frame_idx in cache:
            cache.move_to_end(frame_idx)
            return cache[frame_idx]
        x = preprocess_numpy(state.frames[frame_idx], self.spec)[None]
        features = self.model.run("image_encoder", {"image": x})
        cache[frame_idx] = features
        while len(cache) > self.feature_cache_size:
            cache.popitem(last=False)
        return features

    def _check_frame(self, state: OnnxVideoState, frame_idx: int) -> int:
        if not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"frame_idx must be an integer, got {type(frame_idx).__name__}")
        if not 0 <= frame_idx < state.num_frames:
            raise IndexError(f"frame_idx {frame_idx} is out of range: the video has {state.num_frames} frames "
                             f"(0 to {state.num_frames - 1})")
        return int(frame_idx)

    def _object(self, state: OnnxVideoState, obj_id: int) -> TrackedObject:
        idx = state.index_of(obj_id)
        if idx is None:
            state.objects.append(TrackedObject(obj_id))
            return state.objects[-1]
        return state.objects[idx]

    # ------------------------------------------------------------------ prompts
    def add_new_points_or_box(self, state: OnnxVideoState, frame_idx: int, obj_id: int, points: Any = None,
                              labels: Any = None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box: Any = None) -> tuple[int, list[int], np.ndarray]:
        """Clicks (points (N, 2), labels (N,)) and/or a box (4,) for an object on a frame, as
        `VideoPredictor.add_new_points_or_box`. Returns (frame_idx, obj_ids, masks (num_objects, 1, H, W))."""
        frame_idx = self._check_frame(state, frame_idx)
        if points is None and box is None:
            raise ValueError("add_new_points_or_box needs points (with labels) or a box: both are missing")
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together (one label per point: 1 = foreground, "
                             "0 = background)")
        if box is not None and not clear_old_points:
            raise ValueError("a box can only be added with clear_old_points=True (the box is the first prompt of "
                             "the object on this frame)")
        prompts = official_prompts(points, labels, box)
        if prompts.batch > 1:
            raise PromptError("add_new_points_or_box takes the prompts of one object: points (N, 2) and box (4,)")
        if normalize_coords:
            check_inside(prompts, state.video_height, state.video_width, NORMALIZED_COORDS_HINT)
        coords = [] if prompts.points is None else [prompts.points.astype(np.float32)]
        lbls = [] if prompts.labels is None else [prompts.labels.astype(np.int64)]
        if prompts.boxes is not None:
            coords.insert(0, prompts.boxes.astype(np.float32).reshape(1, 2, 2))
            lbls.insert(0, np.array([[2, 3]], np.int64))
        new_points, new_labels = np.concatenate(coords, axis=1), np.concatenate(lbls, axis=1)
        if normalize_coords:
            new_points = new_points / np.array([state.video_width, state.video_height], np.float32)
        new_points = (new_points * self.image_size).astype(np.float32)
        obj = self._object(state, obj_id)
        old = None if clear_old_points else obj.point_inputs.get(frame_idx)
        if old is not None:
            new_points = np.concatenate([old[0], new_points], axis=1)
            new_labels = np.concatenate([old[1], new_labels], axis=1)
        obj.point_inputs[frame_idx] = (new_points, new_labels)
        obj.mask_inputs.pop(frame_idx, None)
        return self._prompt_frame(state, obj, frame_idx, (new_points, new_labels), None)

    def add_new_mask(self, state: OnnxVideoState, frame_idx: int, obj_id: int,
                     mask: Any) -> tuple[int, list[int], np.ndarray]:
        """An object's mask (H, W) bool at video resolution on a frame."""
        frame_idx = self._check_frame(state, frame_idx)
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.shape != (state.video_height, state.video_width):
            raise ValueError(f"mask must be a 2-D array of the video's size ({state.video_height}, "
                             f"{state.video_width}), got shape {mask.shape}")
        mask_in = mask.astype(bool).astype(np.float32)[None, None]
        if mask_in.shape[-2:] != (self.image_size, self.image_size):
            mask_in = resize_bilinear(mask_in, (self.image_size, self.image_size), antialias=True)
            mask_in = (mask_in >= 0.5).astype(np.float32)
        obj = self._object(state, obj_id)
        obj.mask_inputs[frame_idx] = mask_in
        obj.point_inputs.pop(frame_idx, None)
        return self._prompt_frame(state, obj, frame_idx, None, mask_in)

    def _prompt_frame(self, state, obj, frame_idx, points, mask_in):
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        temp = obj.temp_cond if is_init else obj.temp_non_cond
        prev_logits = None
        if points is not None:
            prev = temp.get(frame_idx) or obj.lookup(frame_idx)
            if prev is not None:
                prev_logits = np.clip(prev.pred_masks, -32.0, 32.0)
        results, _ = self._run_frame(state, [obj], frame_idx, is_init, points, mask_in, reverse,
                                     run_mem_encoder=False, prev_mask_logits=prev_logits)
        temp[frame_idx] = results[0]
        return frame_idx, state.obj_ids, self._consolidate(state, frame_idx, is_cond=is_init)

    def _consolidate(self, state: OnnxVideoState, frame_idx: int, is_cond: bool) -> np.ndarray:
        out = np.full((len(state.objects), 1, state.video_height, state.video_width), self.meta["no_obj_score"],
                      dtype=np.float32)
        for i, obj in enumerate(state.objects):
            temp = obj.temp_cond if is_cond else obj.temp_non_cond
            result = temp.get(frame_idx) or obj.lookup(frame_idx)
            if result is not None:
                out[i: i + 1] = self._to_video_res(state, result.pred_masks)
        return out

    def _to_video_res(self, state: OnnxVideoState, low_res: np.ndarray) -> np.ndarray:
        return resize_bilinear(low_res, (state.video_height, state.video_width))

    def clear_all_prompts_in_frame(self, state: OnnxVideoState, frame_idx: int, obj_id: int,
                                   need_output: bool = True) -> tuple[int, list[int], np.ndarray] | None:
        """Remove an object's prompts on a frame (its result there becomes an ordinary tracked frame)."""
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

    def remove_object(self, state: OnnxVideoState, obj_id: int, strict: bool = True,
                      need_output: bool = True) -> tuple[list[int], list[tuple[int, np.ndarray]]]:
        """Remove an object. Returns (remaining obj_ids, [(frame_idx, masks)] for frames it had prompts on)."""
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

    # ------------------------------------------------------------------ tracking
    def _plan(self, state: OnnxVideoState, obj: TrackedObject, frame_idx: int, reverse: bool):
        return memory_bank.memory_plan(obj.cond, obj.non_cond, frame_idx, reverse, state.num_frames,
                                       self.num_maskmem, self.max_obj_ptrs, bool(self.meta["sam2_1"]),
                                       lambda r: r.memory is not None)

    def _attend(self, state: OnnxVideoState, features: dict, plans: list) -> np.ndarray:
        """Memory-conditioned features (B, C, h, w) of B objects sharing one memory layout."""
        memories, ptrs = plans[0]
        batch = len(plans)
        memory = np.stack([np.concatenate([plan[0][k][2].memory for plan in plans]) for k in range(len(memories))],
                          axis=1)
        tpos = np.array([t_pos for t_pos, _, _ in memories], np.int64)
        c = features["vision_features"].shape[1]
        if ptrs:
            obj_ptrs = np.stack([np.concatenate([plan[1][k][2].obj_ptr for plan in plans]) for k in range(len(ptrs))],
                                axis=1)
        else:
            obj_ptrs = np.zeros((batch, 0, c), np.float32)
        limit = memory_bank.max_pointers(self.max_obj_ptrs, state.num_frames)
        positions = np.array(memory_bank.pointer_positions([p for p, _, _ in ptrs], limit), np.float32)
        out = self.model.run("memory_attention", {
            "vision_features": features["vision_features"], "vision_pos_enc": features["vision_pos_enc"],
            "memory": np.ascontiguousarray(memory, np.float32), "memory_tpos": tpos,
            "obj_ptrs": np.ascontiguousarray(obj_ptrs, np.float32), "obj_ptr_tpos": positions})
        return out["pix_feat"]

    def _decode(self, features: dict, pix_feat: np.ndarray, points, mask_input, multimask: bool):
        """`SAM2Model._sam_heads` around the decoder graph: (low-res masks (B, 1, 4h, 4w) with absent objects at
        the no-object score, object pointers (B, C), object scores (B, 1))."""
        batch = pix_feat.shape[0]
        if points is None:
            coords, labels = np.zeros((batch, 1, 2), np.float32), -np.ones((batch, 1), np.int64)
        else:
            coords, labels = points
        coords, labels = decoder_points(coords, labels, None, sam2=True)

        def tile(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.broadcast_to(a, (batch, *a.shape[1:])))

        size = tuple(self.meta["mask_input_size"])
        out = self.model.run("prompt_decoder", {
            "image_embed": tile(pix_feat), "high_res_feats_0": tile(features["high_res_feats_0"]),
            "high_res_feats_1": tile(features["high_res_feats_1"]), "point_coords": coords, "point_labels": labels,
            "mask_input": np.zeros((batch, 1, *size), np.float32) if mask_input is None else tile(mask_input),
            "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32)})
        masks, iou, _ = select_masks(out["masks"], out["iou_predictions"], multimask, True,
                                     self.meta["stability_delta"], self.meta["stability_thresh"])
        rows = np.arange(batch)
        if multimask:
            best = np.argmax(iou, axis=-1)
            low, token = masks[rows, best][:, None], best + 1
        else:
            low, token = masks, np.zeros(batch, np.int64)
        score = out["object_score_logits"]
        low = np.where(score[:, :, None, None] > 0, low, np.float32(self.meta["no_obj_score"])).astype(np.float32)
        return low, out["obj_ptr"][rows, token], score

    def _mask_as_output(self, features: dict, mask_in: np.ndarray):
        """`SAM2Model.mask_as_output`: the mask prompt (B, 1, S, S) taken as the output (scaled logits)."""
        high = mask_in * 20.0 - 10.0
        low = resize_bilinear(high, (high.shape[-2] // 4, high.shape[-1] // 4), antialias=True)
        prompt = self.model.run("mask_prompt", {"mask": np.ascontiguousarray(mask_in, np.float32)})
        _, ptr, _ = self._decode(features, features["vision_features"], None, prompt["mask_for_decoder"], False)
        present = (mask_in.reshape(mask_in.shape[0], -1) > 0).any(axis=1)[:, None]
        ptr = np.where(present, ptr, prompt["no_obj_ptr"])
        score = np.where(present, 10.0, -10.0).astype(np.float32)
        return low.astype(np.float32), ptr.astype(np.float32), score

    def _encode_memory(self, features: dict, low_res: np.ndarray, scores: np.ndarray, binarize: bool) -> np.ndarray:
        out = self.model.run("memory_encoder", {
            "vision_features": features["vision_features"], "mask_logits": np.ascontiguousarray(low_res, np.float32),
            "object_score_logits": np.ascontiguousarray(scores, np.float32),
            "binarize": np.array([1.0 if binarize else 0.0], np.float32)})
        # bfloat16 storage as in the torch predictor (and the reference)
        return round_to_bfloat16(out["maskmem_features"])

    def _run_frame(self, state, objs, frame_idx, is_init, points, mask_in, reverse, run_mem_encoder,
                   prev_mask_logits=None, plans=None):
        features = self._features(state, frame_idx)
        if mask_in is not None:
            low, ptr, score = self._mask_as_output(features, mask_in)
        else:
            if is_init:
                pix_feat = features["image_embed"]
            else:
                if plans is None:
                    plans = [self._plan(state, obj, frame_idx, reverse) for obj in objs]
                pix_feat = self._attend(state, features, plans)
            multimask = (0 if points is None else points[1].shape[1]) <= 1
            if pix_feat.shape[0] != len(objs):
                pix_feat = np.broadcast_to(pix_feat, (len(objs), *pix_feat.shape[1:]))
            low, ptr, score = self._decode(features, pix_feat, points, prev_mask_logits, multimask)
        memory = None
        if run_mem_encoder:
            binarize = self.binarize_mask_from_pts_for_mem_enc and points is not None
            memory = self._encode_memory(features, low, score, binarize)
        if self.fill_hole_area > 0:
            low = fill_holes_numpy(low, self.fill_hole_area)
        results = [FrameResult(low[i: i + 1], ptr[i: i + 1], score[i: i + 1],
                               None if memory is None else memory[i: i + 1]) for i in range(len(objs))]
        return results, low

    def _preflight(self, state: OnnxVideoState) -> None:
        if not state.objects:
            raise RuntimeError("no object has prompts yet: call add_new_points_or_box or add_new_mask first")
        for obj in state.objects:
            for temp, bank in ((obj.temp_non_cond, obj.non_cond), (obj.temp_cond, obj.cond)):
                for frame_idx, result in temp.items():
                    if result.memory is None:
                        result.memory = self._encode_memory(self._features(state, frame_idx), result.pred_masks,
                                                            result.object_score_logits,
                                                            self.binarize_mask_from_pts_for_mem_enc)
                    bank[frame_idx] = result
                temp.clear()
            if not obj.cond:
                raise RuntimeError(f"object {obj.obj_id} has no prompts: add points, a box or a mask for it first")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)

    def _track_frame_all(self, state: OnnxVideoState, frame_idx: int, reverse: bool) -> np.ndarray:
        masks: list[np.ndarray | None] = [None] * len(state.objects)
        groups: dict[tuple, list] = {}
        for i, obj in enumerate(state.objects):
            if frame_idx in obj.cond:
                masks[i] = obj.cond[frame_idx].pred_masks
                obj.tracked[frame_idx] = reverse
                continue
            plan = self._plan(state, obj, frame_idx, reverse)
            key = memory_bank.plan_key(plan)
            groups.setdefault(key if self.batch_objects else (i,) + key, []).append((i, obj, plan))
        for members in groups.values():
            results, low = self._run_frame(state, [m[1] for m in members], frame_idx, False, None, None, reverse,
                                           run_mem_encoder=True, plans=[m[2] for m in members])
            for k, (i, obj, _) in enumerate(members):
                obj.non_cond[frame_idx] = results[k]
                obj.tracked[frame_idx] = reverse
                masks[i] = low[k: k + 1]
        return np.concatenate(masks, axis=0)

    def propagate_in_video(self, state: OnnxVideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           progress: bool = True) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Track every object; yields (frame_idx, obj_ids, masks (num_objects, 1, H, W) logits) per frame."""
        from tqdm.auto import tqdm

        self._preflight(state)
        if start_frame_idx is None:
            start_frame_idx = memory_bank.first_prompted_frame(state.objects)
        start_frame_idx = self._check_frame(state, start_frame_idx)
        order = memory_bank.propagation_order(start_frame_idx, max_frame_num_to_track, state.num_frames, reverse)
        obj_ids = state.obj_ids
        for frame_idx in tqdm(order, desc="propagate in video (onnx)", disable=not progress, leave=False):
            low_res = self._track_frame_all(state, frame_idx, reverse)
            yield frame_idx, obj_ids, self._to_video_res(state, low_res)
