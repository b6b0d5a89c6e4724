"""Prompt simulation for training, following the recipe of Meta's SAM 2 trainer (`training/model/sam2.py` and
`sam2/modeling/sam2_utils.py`, fine-tuning config `sam2.1_hiera_b+_MOSE_finetune.yaml`).

* First prompt on each initial conditioning frame: with probability `prob_point_input` (0.5) a click input,
  else the ground-truth mask itself. A click input is a box (probability `prob_box`, 0.5) with each corner
  moved by up to 10 % of the box side, at most 20 px, or one positive point drawn uniformly inside the mask.
  Single images always get a click input (the official trainer forces it when a clip has one frame).
* Correction clicks: a pixel drawn uniformly from the error region of the current prediction; a missed pixel
  (false negative) gives a positive click, a false positive a negative click. With probability
  `prob_click_from_gt` (0.1) the click is drawn as if the prediction were empty (from the ground truth).
* Video: 1-2 initial conditioning frames (the first frame and a random other one); with click input, 1-2
  frames get correction clicks (the conditioning frames, maybe one more), and a corrected frame becomes a
  conditioning frame.

All randomness comes from one `torch.Generator`, so a seed fixes every prompt.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..models.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from ..utils.boxes import masks_to_boxes


@dataclass(frozen=True)
class PromptRecipe:
    """Probabilities and counts of the simulated prompts (defaults: the official fine-tuning config)."""

    prob_point_input: float = 0.5   # click input (point or box) rather than the GT mask, on video clips
    prob_box: float = 0.5           # a box rather than a point, given click input
    box_noise: float = 0.1          # corner noise as a fraction of the box side ...
    box_noise_bound: float = 20.0   # ... capped at this many pixels
    corrections: int = 7            # correction clicks per corrected frame
    prob_click_from_gt: float = 0.1
    max_init_cond_frames: int = 2   # 1..2 initial conditioning frames
    max_frames_to_correct: int = 2  # with click input: conditioning frames + maybe more, up to this many

    def __post_init__(self) -> None:
        """ValueError naming the field for a probability outside [0, 1], a negative noise, or a count that is
        not an integer at or above its minimum (a negative `corrections` used to mean silently none)."""
        def number(value: object) -> bool:
            return isinstance(value, numbers.Real) and not isinstance(value, bool)

        for name in ("prob_point_input", "prob_box", "prob_click_from_gt"):
            value = getattr(self, name)
            if not number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
        for name in ("box_noise", "box_noise_bound"):
            value = getattr(self, name)
            if not number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name, low in (("corrections", 0), ("max_init_cond_frames", 1), ("max_frames_to_correct", 1)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def box_prompt(masks: torch.Tensor, noise: float = 0.1, noise_bound: float = 20.0,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy box around each mask as two corner points.

    masks (B, H, W) or (B, 1, H, W) bool. Each coordinate of the tight box moves by a uniform amount in
    [-d, d] with d = min(noise * side, noise_bound) pixels (side = box width for x, height for y), then is
    clamped to the image. Returns points (B, 2, 2) float (x, y) and labels (B, 2) int32 = [2, 3] (top-left,
    bottom-right), the form `SAM2Model._sam_heads` takes.
    """
    masks = masks.reshape(masks.shape[0], *masks.shape[-2:])
    b, h, w = masks.shape
    box = masks_to_boxes(masks).float()
    if noise > 0:
        side = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], dim=-1)  # (B, 2) w, h
        bound = torch.clamp(side * noise, max=noise_bound).repeat(1, 2)             # (B, 4) dx, dy, dx, dy
        jitter = torch.rand(b, 4, generator=generator).to(box.device) * 2 - 1
        box = box + jitter * bound
        limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], dtype=box.dtype, device=box.device)
        box = torch.minimum(box.clamp(min=0), limit)
    labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=torch.int32, device=masks.device).repeat(b, 1)
    return box.reshape(b, 2, 2), labels


def error_click(gt: torch.Tensor, pred: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per object drawn uniformly from the error region of `pred` against `gt`.

    gt, pred (B, H, W) or (B, 1, H, W) bool; pred None means an empty prediction (so the click is a uniform
    positive point inside the mask). A pixel of gt & ~pred gives label 1, of ~gt & pred label 0. When the
    prediction is already exact, a negative click lands in the background. Returns points (B, 1, 2) float
    (x, y) pixels and labels (B, 1) int32.
    """
    gt = gt.reshape(gt.shape[0], -1, *gt.shape[-2:])[:, 0].bool()
    pred = torch.zeros_like(gt) if pred is None else pred.reshape(gt.shape).bool()
    b, h, w = gt.shape
    false_neg, false_pos = gt & ~pred, ~gt & pred
    exact = ~(false_neg | false_pos).flatten(1).any(-1)
    region = false_neg | false_pos | (exact[:, None, None] & ~gt)
    # a uniform draw from the region: the largest of i.i.d. uniform scores restricted to it
    scores = torch.rand(b, h, w, generator=generator).to(gt.device) * region
    idx = scores.flatten(1).argmax(-1)
    labels = false_neg.flatten(1).gather(1, idx[:, None]).to(torch.int32)
    points = torch.stack([idx % w, idx // w], dim=-1).float()[:, None]
    return points, labels


def first_prompt(gt: torch.Tensor, recipe: PromptRecipe, generator: torch.Generator | None = None,
                 use_box: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first click input on a frame for B objects: a noisy box (P recipe.prob_box) or one uniform point in
    the mask. gt (B, H, W) bool. Returns points (B, P, 2) and labels (B, P)."""
    if use_box is None:
        use_box = _uniform(generator) < recipe.prob_box
    if use_box:
        return box_prompt(gt, recipe.box_noise, recipe.box_noise_bound, generator)
    return error_click(gt, None, generator)


def correction_click(gt: torch.Tensor, pred: torch.Tensor, recipe: PromptRecipe,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The next correction click (from the error region, or with P recipe.prob_click_from_gt from the GT)."""
    from_gt = recipe.prob_click_from_gt > 0 and _uniform(generator) < recipe.prob_click_from_gt
    return error_click(gt, None if from_gt else pred, generator)


@dataclass
class ClipPlan:
    """How one training clip is prompted: mask or click input, which frames start as conditioning frames and
    which get correction clicks (frame indices in the clip)."""

    num_frames: int
    use_point_input: bool
    init_cond_frames: list[int]
    frames_to_correct: list[int]

    @property
    def processing_order(self) -> list[int]:
        """Initial conditioning frames first (they need no memory), then the others in time order."""
        return self.init_cond_frames + [t for t in range(self.num_frames) if t not in self.init_cond_frames]


def plan_clip(num_frames: int, recipe: PromptRecipe, generator: torch.Generator | None = None) -> ClipPlan:
    """Draw the prompting plan of a clip of `num_frames` frames (1 for an image)."""
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if num_frames == 1:
        return ClipPlan(1, True, [0], [0])
    use_points = _uniform(generator) < recipe.prob_point_input
    n_init = 1
    if recipe.max_init_cond_frames > 1:
        n_init = int(torch.randint(1, min(recipe.max_init_cond_frames, num_frames) + 1, (), generator=generator))
    others = torch.randperm(num_frames - 1, generator=generator) + 1
    init = [0] + others[:n_init - 1].tolist()
    correct: list[int] = []
    if use_points:
        n_correct = n_init
        if recipe.max_frames_to_correct > n_init:
            n_correct = int(torch.randint(n_init, min(recipe.max_frames_to_correct, num_frames) + 1, (),
                                          generator=generator))
        rest = [t for t in others.tolist() if t not in init]
        correct = init + rest[:n_correct - n_init]
    return ClipPlan(num_frames, use_points, init, correct)
