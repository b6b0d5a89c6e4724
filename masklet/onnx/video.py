"""`OnnxVideoPredictor`: `VideoPredictor`'s methods on exported graphs, onnxruntime and numpy.

The tracking rules (which memories and object pointers a frame reads, their temporal positions, propagation
order) come from `masklet.predictors.memory_bank` and the object and prompt bookkeeping from
`masklet.predictors.video_objects`, both shared with the torch predictor; prompts are validated by
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
from ..predictors.video_objects import FrameResult, ObjectIndex, TrackedObject, VideoObjects, open_video
from .image import decoder_points, input_spec, select_masks
from .ops import fill_holes_numpy, resize_bilinear, round_to_bfloat16
from .session import ExportedModel, load_exported


@dataclass
class OnnxVideoState(ObjectIndex):
    """Tracking state of one video, as `VideoState` of the torch predictor."""

    frames: Any
    num_frames: int
    video_height: int
    video_width: int
    objects: list[TrackedObject] = field(default_factory=list)
    feature_cache: OrderedDict[int, dict] = field(default_factory=OrderedDict)


class OnnxVideoPredictor(VideoObjects):
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
        frames = open_video(video)
        state = OnnxVideoState(frames, len(frames), frames.height, frames.width)
        self._features(state, 0)
        return state

    def _encode_frame(self, state: OnnxVideoState, frame_idx: int) -> dict[str, np.ndarray]:
        from .image import preprocess_numpy

        return self.model.run("image_encoder", {"image": preprocess_numpy(state.frames[frame_idx], self.spec)[None]})

    # ------------------------------------------------------------------ prompts
    def add_new_points_or_box(self, state: OnnxVideoState, frame_idx: int, obj_id: int, points: Any = None,
                              labels: Any = None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box: Any = None) -> tuple[int, list[int], np.ndarray]:
        """Clicks (points (N, 2), labels (N,)) and/or a box (4,) for an object on a frame, as
        `VideoPredictor.add_new_points_or_box`. Returns (frame_idx, obj_ids, masks (num_objects, 1, H, W))."""
        frame_idx = self._check_frame(state, frame_idx)
        new_points, new_labels = self._prompt_points(state, points, labels, box, clear_old_points, normalize_coords)
        new_labels = new_labels.astype(np.int64)
        return self._add_points(state, frame_idx, obj_id, new_points, new_labels, clear_old_points)

    def add_new_mask(self, state: OnnxVideoState, frame_idx: int, obj_id: int,
                     mask: Any) -> tuple[int, list[int], np.ndarray]:
        """An object's mask (H, W) bool at video resolution on a frame."""
        frame_idx = self._check_frame(state, frame_idx)
        mask_in = self._prompt_mask(state, mask).astype(np.float32)[None]
        if mask_in.shape[-2:] != (self.image_size, self.image_size):
            mask_in = resize_bilinear(mask_in, (self.image_size, self.image_size), antialias=True)
            mask_in = (mask_in >= 0.5).astype(np.float32)
        return self._add_mask(state, frame_idx, obj_id, mask_in)

    # ------------------------------------------------------------------ hooks of VideoObjects
    def _blank_masks(self, state: OnnxVideoState) -> np.ndarray:
        return np.full((len(state.objects), 1, state.video_height, state.video_width), self.meta["no_obj_score"],
                       dtype=np.float32)

    def _upscale(self, state: OnnxVideoState, low_res: np.ndarray) -> np.ndarray:
        return resize_bilinear(low_res, (state.video_height, state.video_width))

    def _on_device(self, state: OnnxVideoState, x: np.ndarray) -> np.ndarray:
        return x

    def _clip(self, x: np.ndarray, low: float, high: float) -> np.ndarray:
        return np.clip(x, low, high)

    def _concat(self, xs: list[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(xs, axis=axis)

    def _prompt_memory(self, state: OnnxVideoState, frame_idx: int, result: FrameResult) -> np.ndarray:
        return self._encode_memory(self._features(state, frame_idx), result.pred_masks, result.object_score_logits,
                                   self.binarize_mask_from_pts_for_mem_enc)

    # ------------------------------------------------------------------ tracking
    def _memory_plan(self, state: OnnxVideoState, obj: TrackedObject, frame_idx: int, reverse: bool):
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
                    plans = [self._memory_plan(state, obj, frame_idx, reverse) for obj in objs]
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

    def propagate_in_video(self, state: OnnxVideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           progress: bool = True) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Track every object; yields (frame_idx, obj_ids, masks (num_objects, 1, H, W) logits) per frame."""
        from tqdm.auto import tqdm

        _, order = self._propagation(state, start_frame_idx, max_frame_num_to_track, reverse)
        obj_ids = state.obj_ids
        for frame_idx in tqdm(order, desc="propagate in video (onnx)", disable=not progress, leave=False):
            low_res = self._track_frame_all(state, frame_idx, reverse)
            yield frame_idx, obj_ids, self._to_video_res(state, low_res)
