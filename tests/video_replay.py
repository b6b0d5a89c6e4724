"""Replaying the official video predictor's interaction scripts (`steps` of the reference `*_video_case.pt` and
`*_video_switches_case.pt` fixtures, see ../shared/reference/README.md) on a masklet video predictor, and checking
the masks it returns: shared by the torch parity, ONNX, switches and precision tests."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def replay_steps(predictor: Any, state: Any, steps: list[dict], on_output: Callable[[int, dict, dict], None],
                 first: int = 0) -> None:
    """Run steps[first:] on a `VideoPredictor` or `OnnxVideoPredictor` and its state; after each step call
    on_output(index, step, output), output being {None: (obj_ids, masks)} for a prompt step and
    {frame_idx: (obj_ids, masks)}, in tracking order, for a propagation. Step kinds: add_points, add_box,
    propagate, remove_object_then_propagate, reset_then_add_mask (a mask of the video's size, True on
    `mask_box_rows_cols` = [r0, r1, c0, c1])."""
    for i in range(first, len(steps)):
        step = steps[i]
        kind = step["step"]
        if kind == "add_points":
            _, ids, masks = predictor.add_new_points_or_box(
                state, step["frame_idx"], step["obj_id"], points=step["points"], labels=step["labels"],
                clear_old_points=step.get("clear_old_points", True))
            output = {None: (list(ids), masks)}
        elif kind == "add_box":
            _, ids, masks = predictor.add_new_points_or_box(state, step["frame_idx"], step["obj_id"], box=step["box"])
            output = {None: (list(ids), masks)}
        elif kind in ("propagate", "remove_object_then_propagate"):
            if kind != "propagate":
                remaining, _ = predictor.remove_object(state, step["removed_obj_id"])
                assert step["removed_obj_id"] not in remaining
            output = {f: (list(ids), m) for f, ids, m in predictor.propagate_in_video(
                state, start_frame_idx=step.get("start_frame_idx"), reverse=step["reverse"], progress=False)}
        elif kind == "reset_then_add_mask":
            predictor.reset_state(state)
            r0, r1, c0, c1 = step["mask_box_rows_cols"]
            mask = np.zeros((state.video_height, state.video_width), dtype=bool)
            mask[r0:r1, c0:c1] = True
            _, ids, masks = predictor.add_new_mask(state, step["frame_idx"], step["obj_id"], mask)
            output = {None: (list(ids), masks)}
        else:
            raise AssertionError(f"unknown step {kind!r}")
        on_output(i, step, output)


def mask_errors(masks: torch.Tensor | np.ndarray, record: dict) -> tuple[float, int]:
    """Full-resolution logits against a reference mask record (`{"shape", "positive_packed", "logits"}`, see
    ../shared/reference/README.md): the largest difference at the sampled logits, and how many mask pixels are
    on the other side of 0. Also used by bench/gpu.py, which reports them instead of asserting."""
    flat = torch.as_tensor(masks).detach().float().cpu().reshape(-1)
    probe = record["logits"]
    diff = float((flat[probe["sample_index"]] - probe["sample"]).abs().max())
    positive = np.unpackbits(record["positive_packed"].numpy())[: flat.numel()].astype(bool)
    return diff, int((positive != (flat > 0).numpy()).sum())


def check_masks(masks: torch.Tensor | np.ndarray, record: dict) -> None:
    """Video-resolution logits (N, 1, H, W) against a reference mask record: its shape, the sampled logits within
    1e-3, and at most 0.01% of the mask pixels on the other side of 0."""
    masks = torch.as_tensor(masks)
    assert list(masks.shape) == list(record["shape"])
    diff, flipped = mask_errors(masks, record)
    assert diff <= 1e-3
    assert flipped <= 1e-4 * masks.numel(), f"{flipped} of {masks.numel()} mask pixels differ"


def check_step(step: dict, output: dict) -> None:
    """One output of `replay_steps` against the reference step: object ids and every returned mask set (the same
    frames in the same order for a propagation)."""
    if None in output:
        ids, masks = output[None]
        assert ids == step["out_obj_ids"]
        check_masks(masks, step["masks"])
    else:
        assert list(output) == list(step["masks"])
        for frame_idx, record in step["masks"].items():
            ids, masks = output[frame_idx]
            assert len(ids) == record["shape"][0]
            check_masks(masks, record)
