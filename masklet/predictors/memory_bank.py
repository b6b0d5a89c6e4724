"""SAM 2's memory bank bookkeeping, independent of the tensor library (no torch, no numpy).

Which memories and object pointers a frame attends to, their temporal positions and the order frames are
tracked in (what a one-pass run may forget is `VideoPredictor._forget_unreachable`). Shared by the torch
`VideoPredictor` and the onnxruntime `OnnxVideoPredictor` so the tracking rules exist once. They follow the
official `SAM2Base._prepare_memory_conditioned_features`
(all conditioning frames, the num_maskmem - 1 previous frames' memories with temporal slots, object pointers of
conditioning frames on the tracked side and of up to max_obj_ptrs_in_encoder - 1 previous frames).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

R = TypeVar("R")


def max_pointers(max_obj_ptrs: int, num_frames: int | None) -> int:
    """How many frames' object pointers a frame may read: the model's limit, at most the video's length."""
    return max_obj_ptrs if num_frames is None else min(num_frames, max_obj_ptrs)


def memory_plan(cond: Mapping[int, R], non_cond: Mapping[int, R], frame_idx: int, reverse: bool,
                num_frames: int | None, num_maskmem: int, max_obj_ptrs: int, sam2_1: bool,
                has_memory: Callable[[R], bool]) -> tuple[list[tuple[int, int, R]], list[tuple[int, int, R]]]:
    """What frame `frame_idx` attends to for one object.

    cond / non_cond: frame -> result of the object's conditioning (prompted) and tracked frames; has_memory tells
    whether a result's memory is encoded. Returns ([(t_pos, frame, result)] memories: t_pos 0 for conditioning
    frames, 1..num_maskmem-1 for the frame that many steps back (num_maskmem - t_pos frames away)),
    [(signed temporal distance, frame, result)] object pointers (SAM 2.0 uses the absolute distance for
    conditioning frames)).
    """
    sign = -1 if reverse else 1
    memories = [(0, t, out) for t, out in cond.items()]
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos
        prev = frame_idx + t_rel if reverse else frame_idx - t_rel
        out = non_cond.get(prev)
        if out is not None and has_memory(out):
            memories.append((t_pos, prev, out))
    limit = max_pointers(max_obj_ptrs, num_frames)
    ptrs = [((frame_idx - t) * sign if sam2_1 else abs(frame_idx - t), t, out)
            for t, out in cond.items() if (t >= frame_idx if reverse else t <= frame_idx)]
    for t_diff in range(1, limit):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        out = non_cond.get(t)
        if out is not None:
            ptrs.append((t_diff, t, out))
    return memories, ptrs


def pointer_positions(rel_positions: list[int], max_ptrs: int) -> list[float]:
    """Signed temporal distances -> the normalised positions the SAM 2.1 pointer encoding takes (d / (max - 1))."""
    return [p / (max_ptrs - 1) for p in rel_positions]


def plan_key(plan: tuple[list, list]) -> tuple:
    """Objects whose plans have equal keys read the same memory layout and can be tracked in one batch."""
    memories, ptrs = plan
    return tuple((t_pos, t) for t_pos, t, _ in memories), tuple((p, t) for p, t, _ in ptrs)


def propagation_order(start: int, max_frames: int | None, num_frames: int, reverse: bool) -> range:
    """Frames visited by `propagate_in_video` from `start` (inclusive), at most max_frames further."""
    if max_frames is None:
        max_frames = num_frames
    if reverse:
        end = max(start - max_frames, 0)
        return range(start, end - 1, -1) if start > 0 else range(0)
    end = min(start + max_frames, num_frames - 1)
    return range(start, end + 1)


def first_prompted_frame(objects: list[Any]) -> int:
    """The earliest conditioning frame over objects with a `cond` mapping (where propagation starts)."""
    return min(t for obj in objects for t in obj.cond)
