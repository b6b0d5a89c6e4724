"""Training forward passes: SAM 2's decoder and memory run with simulated prompts, producing the per-frame,
per-step outputs the loss takes.

Everything goes through the model's own pieces (`encode_image`, `image_embedding`, `_sam_heads`,
`track_frame`, `encode_memory`, `object_pointer_tokens`, `attend_memory`), the same ones the predictors use,
so training and inference cannot drift apart. What is training-specific follows Meta's `SAM2Train`
(`training/model/sam2.py`): correction clicks feed the previous low-res logits back as mask input,
frames that receive clicks become conditioning frames, memories are encoded from the sigmoid of the
predicted mask (not binarised), and conditioning frames in the clip's future are attended to as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.common import ImageFeatures
from ..models.sam2 import FrameOutput, SAM2Model
from .prompts import ClipPlan, PromptRecipe, correction_click, first_prompt, plan_clip

Steps = dict[str, list[torch.Tensor]]


@dataclass
class _Memory:
    memory: torch.Tensor      # (B, mem_dim, h, w)
    memory_pos: torch.Tensor  # (B, mem_dim, h, w)
    obj_ptr: torch.Tensor     # (B, C)


def _new_steps() -> Steps:
    return {"multistep_pred_multimasks_high_res": [], "multistep_pred_ious": [], "multistep_object_score_logits": []}


def upsample_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """`F.interpolate(x, (size, size), mode="bilinear", align_corners=False)` as two matrix products with the
    same interpolation weights: (..., h, w) -> (..., size, size). Same values up to float rounding; its
    backward is two more products, where upsample_bilinear2d's backward is a slow scatter on a CPU (forward +
    backward of the 27 masks of a `sam2_test_wide` image step at 128 px, one AVX2 core: 3.5 ms against 7.0)."""
    def weights(n: int) -> torch.Tensor:  # (size, n): row i holds the weights of output i
        eye = torch.eye(n, device=x.device, dtype=x.dtype)[:, None]
        return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0].T

    return weights(x.shape[-2]) @ x @ weights(x.shape[-1]).T


def decode_step(model: SAM2Model, pix_feat: torch.Tensor, high_res: list[torch.Tensor], points: torch.Tensor | None,
                labels: torch.Tensor | None, mask_input: torch.Tensor | None,
                steps: Steps) -> FrameOutput:
    """One decoder call for B objects; appends (multimask high-res logits (B, M, S, S), predicted IoUs (B, M),
    object scores (B, 1)) to `steps` and returns the chosen mask as a FrameOutput. Multimask output when the
    prompt holds at most one point (SAM 2's multimask_max_pt_num = 1; a box counts as two)."""
    multimask = points is None or points.shape[1] <= 1
    out, ious, low_multi = model._sam_heads(pix_feat, high_res, points, labels, mask_input, multimask)
    high_multi = upsample_bilinear(low_multi, model.image_size)
    steps["multistep_pred_multimasks_high_res"].append(high_multi.float())
    steps["multistep_pred_ious"].append(ious.float())
    steps["multistep_object_score_logits"].append(out.object_score_logits.float())
    return out


def interact(model: SAM2Model, pix_feat: torch.Tensor, high_res: list[torch.Tensor], gt: torch.Tensor,
             points: torch.Tensor | None, labels: torch.Tensor | None, corrections: int, recipe: PromptRecipe,
             generator: torch.Generator | None, steps: Steps) -> FrameOutput:
    """First decoder step with the given prompt, then `corrections` clicks sampled from the error of the
    previous prediction, each decoded with all clicks so far and the previous low-res logits as mask input."""
    out = decode_step(model, pix_feat, high_res, points, labels, None, steps)
    for _ in range(corrections):
        new_points, new_labels = correction_click(gt, out.high_res_masks.detach() > 0, recipe, generator)
        new_points, new_labels = new_points.to(pix_feat.device), new_labels.to(pix_feat.device)
        points = new_points if points is None else torch.cat([points, new_points], dim=1)
        labels = new_labels if labels is None else torch.cat([labels, new_labels], dim=1)
        out = decode_step(model, pix_feat, high_res, points, labels, out.low_res_masks, steps)
    return out


def _per_object(features: ImageFeatures, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return features.embed[index], [f[index] for f in features.high_res]


def image_forward(model: SAM2Model, features: ImageFeatures, image_index: torch.Tensor, gt: torch.Tensor,
                  recipe: PromptRecipe, generator: torch.Generator | None) -> list[Steps]:
    """Interactive segmentation on images (SAM 2's image task, a one-frame clip).

    features: encoder output of the batch's images; image_index (N,) the image of each of the N objects;
    gt (N, S, S) bool. The first prompt is a point or a noisy box, then `recipe.corrections` clicks.
    Returns the one-frame output list for `SAM2Loss` (targets gt[None]).
    """
    embed = model.image_embedding(features)
    pix_feat = embed[image_index]
    high_res = [f[image_index] for f in features.high_res]
    points, labels = first_prompt(gt, recipe, generator)
    steps = _new_steps()
    interact(model, pix_feat, high_res, gt, points.to(pix_feat.device), labels.to(pix_feat.device),
             recipe.corrections, recipe, generator, steps)
    return [steps]


def _attend(model: SAM2Model, features: ImageFeatures, t: int, num_frames: int, cond: dict[int, _Memory],
            non_cond: dict[int, _Memory]) -> torch.Tensor:
    """Memory-conditioned features of frame t: every conditioning frame, the previous num_maskmem - 1 frames'
    memories and up to max_obj_ptrs object pointers (as `VideoPredictor._memory_plan` selects them)."""
    memories = [(0, m.memory, m.memory_pos) for m in cond.values()]
    for t_pos in range(1, model.num_maskmem):
        prev = non_cond.get(t - (model.num_maskmem - t_pos))
        if prev is not None:
            memories.append((t_pos, prev.memory, prev.memory_pos))
    max_ptrs = min(num_frames, model.config.max_obj_ptrs_in_encoder)
    ptrs = [(t - s, m.obj_ptr) for s, m in cond.items()]
    for t_diff in range(1, max_ptrs):
        if t - t_diff < 0:
            break
        prev = non_cond.get(t - t_diff)
        if prev is not None:
            ptrs.append((t_diff, prev.obj_ptr))
    rel = [p if model.config.sam2_1 else abs(p) for p, _ in ptrs]
    tokens = model.object_pointer_tokens(rel, torch.stack([p for _, p in ptrs]), max_ptrs) if ptrs else None
    return model.attend_memory(features, memories, tokens)


def video_forward(model: SAM2Model, features: ImageFeatures, gt: torch.Tensor, recipe: PromptRecipe,
                  generator: torch.Generator | None, plan: ClipPlan | None = None,
                  clip_index: torch.Tensor | None = None) -> list[Steps]:
    """Semi-supervised tracking of N objects through T-frame clips with simulated prompts.

    features: encoder output of B clips of T frames, clip-major (row b * T + t is frame t of clip b; B = 1
    without `clip_index`); gt (T, N, S, S) bool; clip_index (N,) the clip of each object (default: all in
    clip 0). Returns T per-frame output dicts for `SAM2Loss` (targets gt). The plan (mask or click input,
    conditioning frames, corrected frames) is drawn from `recipe` unless given, one for the whole batch as in
    Meta's trainer; several clips in one call share every decoder and memory-attention call.
    """
    num_frames, n = gt.shape[:2]
    if clip_index is None:
        clip_index = torch.zeros(n, dtype=torch.long)
    rows = clip_index.to(features.embed.device).long() * num_frames
    plan = plan or plan_clip(num_frames, recipe, generator)
    cond: dict[int, _Memory] = {}
    non_cond: dict[int, _Memory] = {}
    outputs: list[Steps | None] = [None] * num_frames
    for t in plan.processing_order:
        frame = features.select(rows + t)  # (N, ...): each object's own clip at frame t
        steps = _new_steps()
        is_init = t in plan.init_cond_frames
        if is_init and not plan.use_point_input:
            # the ground-truth mask is taken as the output itself; its IoU is predicted as 1
            out = model.track_frame(frame, None, None, None, gt[t, :, None].float(), True)
            steps["multistep_pred_multimasks_high_res"].append(out.high_res_masks.float())
            steps["multistep_pred_ious"].append(torch.ones_like(out.object_score_logits).float())
            steps["multistep_object_score_logits"].append(out.object_score_logits.float())
        else:
            high_res = frame.high_res
            if is_init:
                pix_feat = model.image_embedding(frame)
                points, labels = first_prompt(gt[t], recipe, generator)
                points, labels = points.to(pix_feat.device), labels.to(pix_feat.device)
            else:
                pix_feat = _attend(model, frame, t, num_frames, cond, non_cond)
                points = labels = None
            corrections = recipe.corrections if t in plan.frames_to_correct else 0
            out = interact(model, pix_feat, high_res, gt[t], points, labels, corrections, recipe, generator, steps)
        memory, memory_pos = model.encode_memory(frame, out.high_res_masks, out.object_score_logits, binarize=False)
        entry = _Memory(memory, memory_pos, out.obj_ptr)
        (cond if is_init or t in plan.frames_to_correct else non_cond)[t] = entry
        outputs[t] = steps
    return outputs  # type: ignore[return-value]
