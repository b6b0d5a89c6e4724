"""Video predictor: click objects on any frame and follow them through the video with SAM 2's memory.

A drop-in for the official `SAM2VideoPredictor` (same method names, arguments, switches and outputs), with
three differences that matter for long videos: frames are decoded on demand (never the whole video in RAM),
objects whose memories line up are tracked in one batch per frame, and one-pass runs (`track_stream`, and
`propagate_in_video(..., one_pass=True)`) keep only the memories that attention can still reach. The object and
prompt bookkeeping (`video_objects.VideoObjects`) and the memory-bank rules (`memory_bank`) are torch-free and
shared with the onnxruntime `OnnxVideoPredictor`; this module holds the torch side.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.preprocess import SAM2_VIDEO_INPUT, preprocess
from ..models.common import apply_compile_option
from ..models.sam2 import NO_OBJ_SCORE, FrameOutput, ImageFeatures
from ..utils.allocator import retain_freed_memory
from ..utils.masks import fill_holes
from . import memory_bank
from .precision import autocast, resolve_dtype
from .video_objects import FrameResult, ObjectIndex, TrackedObject, VideoObjects, open_video


@dataclass
class VideoState(ObjectIndex):
    """Tracking state of one video (what the official API calls `inference_state`)."""

    frames: Any  # VideoFrames, or None for a stream
    num_frames: int | None
    video_height: int
    video_width: int
    device: torch.device
    storage_device: torch.device
    objects: list[TrackedObject] = field(default_factory=list)
    feature_cache: "OrderedDict[int, ImageFeatures]" = field(default_factory=OrderedDict)
    memory_pos: torch.Tensor | None = None  # the memories' position encoding: the same for every frame
    stream_frames: dict[int, np.ndarray] = field(default_factory=dict)
    # (start frame, reverse) of the one-pass propagation that pruned this state; None while it holds everything
    one_pass: tuple[int, bool] | None = None


@dataclass
class ObjectPrompt:
    """A prompt for `track_stream`: points (N, 2) with labels (N,), and/or a box (4,) xyxy, or a mask (H, W)."""

    obj_id: int
    points: Any = None
    labels: Any = None
    box: Any = None
    mask: Any = None


class VideoPredictor(VideoObjects):
    """Track objects through a video with a SAM 2 model.

    fill_hole_area: holes in the low-resolution masks up to this many pixels are filled (OpenCV, on CPU
    too). feature_cache: how many frames' image features are kept. batch_objects: track objects whose
    memories line up in one batch per frame (same results as one at a time); None = on CUDA only, since on a
    CPU the work is the same per object and one at a time measured slightly faster. dtype: "bfloat16" /
    "float16" run the image encoder and memory attention under autocast. compile: torch.compile the
    decoder and (float32) image trunk, see `ImagePredictor`.

    The official predictor's switches, with its defaults (sam2/sam2_video_predictor.py):
    add_all_frames_to_correct_as_cond: a correction (prompt on a frame already tracked) becomes a conditioning
        frame, so later propagations keep it instead of tracking over it (the fix for "my correction
        disappears"); default False: corrections are kept only until the next propagation reaches the frame.
    non_overlap_masks: every returned mask set (prompts and propagation) gives each pixel to at most one object,
        the one with the highest logit; the others' logits there are capped at -10. The memories are unchanged.
    clear_non_cond_mem_around_input: when prompts are added on a frame, and when a propagation passes a
        conditioning frame, the tracked (non-conditioning) results of the frames within num_maskmem of it are
        dropped, so the frames after it are tracked from the prompts alone rather than from memories that may
        still hold the object's old appearance. The semantics of the official legacy predictor
        (sam2_video_predictor_legacy.py; the current one raises AttributeError on this switch), except that the
        frames holding the new prompts keep their own results.
    clear_non_cond_mem_for_multi_obj: allow that clearing with several objects (it then clears every object's
        results around the frame); without it the clearing applies to single-object tracking only.
    """

    def __init__(self, model: nn.Module, fill_hole_area: int = 8, feature_cache: int = 2,
                 batch_objects: bool | None = None, dtype: str | torch.dtype | None = None,
                 add_all_frames_to_correct_as_cond: bool = False, non_overlap_masks: bool = False,
                 clear_non_cond_mem_around_input: bool = False,
                 clear_non_cond_mem_for_multi_obj: bool = False, compile: bool = False) -> None:
        if getattr(model, "family", None) != "sam2":
            raise ValueError(f"video tracking needs a SAM 2 / SAM 2.1 model (memory attention); "
                             f"{getattr(model, 'family', type(model).__name__)} models have no memory. "
                             "Use sam2_t/s/b/l.pt or sam2.1_t/s/b/l.pt")
        apply_compile_option(model, compile)
        self.model = model
        self.fill_hole_area = fill_hole_area
        self.feature_cache_size = max(1, feature_cache)
        self.batch_objects = model.device.type == "cuda" if batch_objects is None else batch_objects
        self.dtype = resolve_dtype(dtype)
        self.binarize_mask_from_pts_for_mem_enc = True
        self.max_obj_ptrs = model.config.max_obj_ptrs_in_encoder
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.clear_non_cond_mem_for_multi_obj = clear_non_cond_mem_for_multi_obj
        self.stream_state: VideoState | None = None  # the state of the running `track_stream`, for inspection

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def num_maskmem(self) -> int:
        return self.model.num_maskmem

    # ------------------------------------------------------------------ state
    @torch.inference_mode()
    def init_state(self, video: Any, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> VideoState:
        """Open a video (folder of JPEG frames, video file, or list of HxWx3 uint8 RGB frames).

        Frames are decoded when needed; `offload_video_to_cpu` and `async_loading_frames` are accepted for
        compatibility (frames always live on the CPU and are prefetched in the background).
        """
        frames = open_video(video)
        device = self.model.device
        storage = torch.device("cpu") if offload_state_to_cpu else device
        state = VideoState(frames, len(frames), frames.height, frames.width, device, storage)
        self._features(state, 0)  # fail early on an unreadable first frame
        return state

    @torch.inference_mode()
    def reset_state(self, state: VideoState) -> None:
        """Remove every object and prompt."""
        super().reset_state(state)
        state.one_pass = None

    def _frame_image(self, state: VideoState, frame_idx: int) -> np.ndarray:
        if state.frames is None:
            return state.stream_frames[frame_idx]
        return state.frames[frame_idx]

    def _encode_frame(self, state: VideoState, frame_idx: int) -> ImageFeatures:
        image = self._frame_image(state, frame_idx)
        x = preprocess(image, SAM2_VIDEO_INPUT.with_size(self.image_size), state.device)[None].to(self.model.dtype)
        with autocast(state.device, self.dtype):
            features = self.model.encode_image(x)
        return features.to(state.device, self.model.dtype)

    def _check_editable(self, state: VideoState) -> None:
        if state.one_pass is not None:
            raise RuntimeError(
                "this video state was tracked with one_pass=True, which dropped the memories of the frames tracking "
                "had moved past, so it takes no more prompts or propagations: call reset_state(state) and add the "
                "prompts again, or propagate with one_pass=False (the default) to keep every frame's state for "
                "later corrections")

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_new_points_or_box(self, state: VideoState, frame_idx: int, obj_id: int, points: Any = None,
                              labels: Any = None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box: Any = None) -> tuple[int, list[int], torch.Tensor]:
        """Add clicks (points (N, 2) (x, y) with labels (N,), 1 = foreground) and/or a box (4,) for an object on
        a frame. Returns (frame_idx, obj_ids, masks (num_objects, 1, H, W) video-resolution logits)."""
        self._check_editable(state)
        frame_idx = self._check_frame(state, frame_idx)
        new_points, new_labels = self._prompt_points(state, points, labels, box, clear_old_points, normalize_coords)
        new_points = torch.from_numpy(new_points).to(state.device)
        new_labels = torch.from_numpy(new_labels).to(state.device)
        return self._add_points(state, frame_idx, obj_id, new_points, new_labels, clear_old_points)

    @torch.inference_mode()
    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id: int,
                     mask: Any) -> tuple[int, list[int], torch.Tensor]:
        """Give an object's mask (H, W) bool at video resolution on a frame."""
        self._check_editable(state)
        frame_idx = self._check_frame(state, frame_idx)
        mask_in = torch.from_numpy(self._prompt_mask(state, mask)).float()[None].to(state.device)
        if mask_in.shape[-2:] != (self.image_size, self.image_size):
            mask_in = F.interpolate(mask_in, size=(self.image_size, self.image_size), mode="bilinear",
                                    align_corners=False, antialias=True)
            mask_in = (mask_in >= 0.5).float()
        return self._add_mask(state, frame_idx, obj_id, mask_in)

    # ------------------------------------------------------------------ hooks of VideoObjects
    def _blank_masks(self, state: VideoState) -> torch.Tensor:
        return torch.full((len(state.objects), 1, state.video_height, state.video_width), NO_OBJ_SCORE,
                          dtype=torch.float32, device=state.device)

    def _upscale(self, state: VideoState, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res.to(state.device).float(), size=(state.video_height, state.video_width),
                             mode="bilinear", align_corners=False)

    def _constrain(self, masks: torch.Tensor) -> torch.Tensor:
        return non_overlapping(masks) if self.non_overlap_masks else masks

    def _on_device(self, state: VideoState, x: torch.Tensor) -> torch.Tensor:
        return x.to(state.device)

    def _clip(self, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.clamp(x, low, high)

    def _concat(self, xs: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(xs, dim=axis)

    def _prompt_memory(self, state: VideoState, frame_idx: int, result: FrameResult) -> torch.Tensor:
        features = self._features(state, frame_idx)
        high = F.interpolate(result.pred_masks.to(state.device), size=(self.image_size,) * 2, mode="bilinear",
                             align_corners=False)
        # prompted frames: memory from the binarised mask, like the official predictor
        memory, _ = self._encode_memory(state, features, high, result.object_score_logits.to(state.device),
                                        self.binarize_mask_from_pts_for_mem_enc)
        return memory

    # the shared bookkeeping, without autograd like every public method here
    clear_all_prompts_in_frame = torch.inference_mode()(VideoObjects.clear_all_prompts_in_frame)
    remove_object = torch.inference_mode()(VideoObjects.remove_object)

    # ------------------------------------------------------------------ tracking
    def _use_multimask(self, is_init: bool, points: tuple[torch.Tensor, torch.Tensor] | None) -> bool:
        num_points = 0 if points is None else points[1].shape[1]
        return num_points <= 1  # multimask_output_in_sam, for tracking too, with at most one click

    def _memory_plan(self, state: VideoState, obj: TrackedObject, frame_idx: int,
                     reverse: bool) -> tuple[list[tuple[int, int, FrameResult]], list[tuple[int, int, FrameResult]]]:
        """Which memories and object pointers frame `frame_idx` attends to (`memory_bank.memory_plan`, shared with
        the onnxruntime predictor): ([(t_pos, frame, result)], [(signed temporal distance, frame, result)])."""
        return memory_bank.memory_plan(obj.cond, obj.non_cond, frame_idx, reverse, state.num_frames,
                                       self.num_maskmem, self.max_obj_ptrs, self.model.config.sam2_1,
                                       lambda r: r.memory is not None)

    def _attend(self, state: VideoState, features: ImageFeatures, plans: list) -> torch.Tensor:
        """Memory-conditioned features (B, C, h, w) for B objects sharing one memory layout."""
        first_memories, first_ptrs = plans[0]
        memory_pos = state.memory_pos
        memories = []
        for k, (t_pos, _, _) in enumerate(first_memories):
            # cast before the cat: CPU float16 autocast refuses a cat of the bfloat16-stored memories
            stacked = torch.cat([plan[0][k][2].memory.to(state.device, features.embed.dtype) for plan in plans])
            memories.append((t_pos, stacked, memory_pos.expand(len(plans), -1, -1, -1)))
        obj_ptrs = None
        if first_ptrs:
            max_ptrs = memory_bank.max_pointers(self.max_obj_ptrs, state.num_frames)
            stacked = torch.stack([torch.cat([plan[1][k][2].obj_ptr for plan in plans]) for k in range(len(first_ptrs))])
            obj_ptrs = self.model.object_pointer_tokens([p[0] for p in first_ptrs], stacked.to(state.device), max_ptrs)
        return self.model.attend_memory(features, memories, obj_ptrs)

    def _run_frame(self, state: VideoState, objs: list[TrackedObject], frame_idx: int, is_init: bool,
                   points: tuple[torch.Tensor, torch.Tensor] | None, mask_in: torch.Tensor | None, reverse: bool,
                   run_mem_encoder: bool, prev_mask_logits: torch.Tensor | None = None,
                   plans: list | None = None) -> tuple[list[FrameResult], torch.Tensor]:
        """Track B objects (one memory layout) on a frame; returns their results and low-res masks (B, 1, 4h, 4w)."""
        features = self._features(state, frame_idx)
        pix_feat = None
        if mask_in is None and not is_init:
            if plans is None:
                plans = [self._memory_plan(state, obj, frame_idx, reverse) for obj in objs]
            if state.memory_pos is None:
                raise RuntimeError("internal error: no memory encoded before tracking")
            # the expensive part (attention over all memories) runs in the reduced precision when asked
            with autocast(state.device, self.dtype):
                pix_feat = self._attend(state, features, plans)
            pix_feat = pix_feat.to(self.model.dtype)
        out: FrameOutput = self.model.track_frame(features, pix_feat, None if points is None else points[0],
                                                  None if points is None else points[1], mask_in,
                                                  self._use_multimask(is_init, points), prev_mask_logits)
        if run_mem_encoder:
            binarize = self.binarize_mask_from_pts_for_mem_enc and points is not None
            memory, _ = self._encode_memory(state, features, out.high_res_masks, out.object_score_logits, binarize)
        else:
            memory = None
        low_res = out.low_res_masks.float()
        if self.fill_hole_area > 0:
            low_res = fill_holes(low_res, self.fill_hole_area)
        results = []
        for i in range(len(objs)):
            results.append(FrameResult(
                low_res[i: i + 1].to(state.storage_device), out.obj_ptr[i: i + 1].to(state.storage_device),
                out.object_score_logits[i: i + 1].to(state.storage_device),
                None if memory is None else memory[i: i + 1]))
        return results, low_res

    def _encode_memory(self, state: VideoState, features: ImageFeatures, high_res_masks: torch.Tensor,
                       object_score_logits: torch.Tensor, binarize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        memory, pos = self.model.encode_memory(features, high_res_masks, object_score_logits, binarize)
        if state.memory_pos is None:
            state.memory_pos = pos[:1].float()
        # memories are kept in bfloat16 (as the reference does): half the RAM per frame
        return memory.to(torch.bfloat16).to(state.storage_device), pos

    @torch.inference_mode()
    def propagate_in_video(self, state: VideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           progress: bool = True,
                           one_pass: bool = False) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track every object through the video; yields (frame_idx, obj_ids, masks (num_objects, 1, H, W) logits)
        per frame, starting at the earliest prompted frame unless `start_frame_idx` is given.

        one_pass: the caller will not come back to this state (no corrections, no second propagation), so after
        each frame what tracking onwards can no longer read is dropped, as `track_stream` does: RAM stays flat on
        any length of video and the masks are the same. A reverse one-pass run also keeps what a forward one-pass
        run from the same start frame reads (backwards, then forwards from the prompted frame, as the
        Ultralytics-style call does); apart from that, a pruned state raises RuntimeError on new prompts and
        propagations until `reset_state`. Default False: every frame's state is kept for interactive use.
        """
        resuming = state.one_pass is not None
        if resuming and not (one_pass and not reverse and state.one_pass[1]
                             and start_frame_idx == state.one_pass[0]):
            self._check_editable(state)
        start_frame_idx, order = self._propagation(state, start_frame_idx, max_frame_num_to_track, reverse)
        if one_pass:
            state.one_pass = (start_frame_idx, reverse)
        obj_ids = state.obj_ids
        # every frame allocates and frees the same buffers: on a CPU keep freed memory for the next frame
        # instead of mapping fresh pages (SAM 2.1 tiny, 1024 px: 1.16x faster; utils.allocator)
        with retain_freed_memory(state.device.type == "cpu"):
            for frame_idx in tqdm(order, desc="propagate in video", disable=not progress, leave=False):
                low_res = self._track_frame_all(state, frame_idx, reverse)
                if one_pass:
                    self._forget_unreachable(state, frame_idx, reverse,
                                             resume_from=start_frame_idx if reverse else None)
                yield frame_idx, obj_ids, self._to_video_res(state, low_res)

    # ------------------------------------------------------------------ streaming
    @torch.inference_mode()
    def track_stream(self, frames: Iterable[np.ndarray],
                     prompts: Mapping[int, Sequence[ObjectPrompt]] | None = None,
                     prompt_fn: Any = None) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track objects over an unbounded sequence of (H, W, 3) uint8 RGB frames, forward only.

        prompts maps a frame index to the prompts given on that frame; `prompt_fn(frame_idx, frame)` may
        return more (a list of ObjectPrompt) while the stream runs. Only what memory attention can reach is
        kept (conditioning frames, the last num_maskmem frames' memories, the last 16 object pointers), so
        RAM stays flat however long the stream is. Yields (frame_idx, obj_ids, masks (N, 1, H, W) logits).
        """
        with retain_freed_memory(self.model.device.type == "cpu"):  # as in propagate_in_video
            yield from self._stream(frames, dict(prompts or {}), prompt_fn)

    def _stream(self, frames: Iterable[np.ndarray], prompts: dict[int, Sequence[ObjectPrompt]],
                prompt_fn: Any) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        from ..data.images import as_rgb_uint8

        state: VideoState | None = None
        for frame_idx, frame in enumerate(frames):
            frame = as_rgb_uint8(frame)
            if state is None:
                device = self.model.device
                state = VideoState(None, None, frame.shape[0], frame.shape[1], device, device)
                self.stream_state = state
            elif frame.shape[:2] != (state.video_height, state.video_width):
                raise ValueError(f"frame {frame_idx} has size {frame.shape[:2]}, the stream started at "
                                 f"{(state.video_height, state.video_width)}")
            state.stream_frames = {frame_idx: frame}
            new = list(prompts.pop(frame_idx, []))
            if prompt_fn is not None:
                new += list(prompt_fn(frame_idx, frame) or [])
            for p in new:
                if p.mask is not None:
                    self.add_new_mask(state, frame_idx, p.obj_id, p.mask)
                else:
                    self.add_new_points_or_box(state, frame_idx, p.obj_id, p.points, p.labels, box=p.box)
            if not state.objects:
                yield frame_idx, [], torch.zeros(0, 1, state.video_height, state.video_width, device=state.device)
                continue
            self._preflight(state)
            low_res = self._track_frame_all(state, frame_idx, reverse=False)
            self._forget_unreachable(state, frame_idx)
            yield frame_idx, state.obj_ids, self._to_video_res(state, low_res)

    def _forget_unreachable(self, state: VideoState, frame_idx: int, reverse: bool = False,
                            resume_from: int | None = None) -> None:
        """After tracking `frame_idx`, drop what tracking onwards (towards the end, or the start when reverse)
        can no longer read: the next frame reads the object pointers of the max_obj_ptrs - 1 frames behind it and
        the memories of the num_maskmem - 1 frames behind it (`_memory_plan`); conditioning frames are always
        kept. `resume_from`: a forward pass will follow from this frame, so what it reads stays too."""
        ptr_reach, mem_reach = self.max_obj_ptrs - 2, self.model.num_maskmem - 2
        for obj in state.objects:
            for t in list(obj.non_cond):
                behind = t - frame_idx if reverse else frame_idx - t
                before_resume = resume_from - t if resume_from is not None else 0
                if behind > ptr_reach and not 0 < before_resume <= ptr_reach:
                    del obj.non_cond[t]
                    continue
                result = obj.non_cond[t]
                if behind > mem_reach and not 0 < before_resume <= mem_reach:
                    result.memory = None  # only its object pointer is still reachable
                if behind > 0 and result.pred_masks.numel():
                    # masks of frames behind are never read again (a new tensor: a slice would keep the storage)
                    shape = result.pred_masks.shape
                    result.pred_masks = result.pred_masks.new_empty((*shape[:2], 0, shape[-1]))
            for t in [t for t in obj.tracked if (t - frame_idx if reverse else frame_idx - t) > 0]:
                del obj.tracked[t]


def non_overlapping(logits: torch.Tensor) -> torch.Tensor:
    """SAM 2's `non_overlap_masks` constraint on (N, 1, H, W) logits: at each pixel the object with the highest
    logit keeps it, every other object's logit there is capped at -10 (so no pixel is in two masks)."""
    if logits.shape[0] <= 1:
        return logits
    winner = logits.argmax(dim=0, keepdim=True)
    objects = torch.arange(logits.shape[0], device=logits.device).view(-1, 1, 1, 1)
    return torch.where(winner == objects, logits, logits.clamp(max=-10.0))
