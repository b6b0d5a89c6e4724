"""SAM 2's training loss: focal + dice on the best of the multimask outputs, L1 on the predicted IoUs of every
mask, and an object-score term, summed over correction steps and frames.

Follows `MultiStepMultiMasksAndIous` of Meta's training code (`training/loss_fns.py`) with the weights of its
fine-tuning config (`sam2.1_hiera_b+_MOSE_finetune.yaml`): focal x 20 (alpha 0.25, gamma 2), dice x 1, IoU L1
x 1 supervised on all masks, object score as a focal loss with gamma 0 and no alpha (plain BCE) x 1. The mask,
dice and IoU terms of an object count only on frames where the object is present; every term is divided by the
number of objects (averaged over DDP ranks, as the official loss does).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

LOSS_KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class")
CORE_LOSS = "core_loss"


def focal_loss_per_mask(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                        gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al., RetinaNet) averaged over pixels: (N, M, H, W) -> (N, M).

    alpha < 0 switches the class weighting off; gamma = 0 gives plain binary cross-entropy.
    """
    return _focal(logits, targets, alpha, gamma).flatten(2).mean(-1)


def _focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    # targets broadcast against logits; 1 - p_t and alpha_t written with as few full-size passes as they take
    ce = F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), reduction="none")
    if gamma:
        prob = logits.sigmoid()
        ce = ce * (prob + targets - 2 * prob * targets).pow(gamma)  # (1 - p_t)^gamma
    if alpha >= 0:
        ce = ce * ((1 - alpha) + (2 * alpha - 1) * targets)  # alpha_t
    return ce


def dice_loss_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice with +1 smoothing, in the L1 form of Wang et al. (MICCAI 2023): (N, M, H, W) -> (N, M)."""
    prob, tgt = logits.sigmoid().flatten(2), targets.flatten(2)
    total = prob.sum(-1) + tgt.sum(-1)
    return 1 - (total - (prob - tgt).abs().sum(-1) + 1) / (total + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded (logit > 0) masks with the targets, (N, M, H, W) -> (N, M); 0 for two empty masks."""
    pred, gt = logits.flatten(2) > 0, targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


def _wrong_class(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For logits x and binary targets t (bool, broadcastable to x): t as x's dtype, u = 1 - 2t, the logit of
    the wrong class z = u x, and q = sigmoid(z) = 1 - p_t."""
    tf = t.to(x.dtype)
    u = 1 - 2 * tf
    z = x * u
    return tf, u, z, z.sigmoid()


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for a (N, M, P) and b (N, 1 or M, P): a matrix product when b is shared by the M rows,
    so the product is never written out."""
    return (a @ b.transpose(1, 2)).squeeze(-1) if b.shape[1] == 1 < a.shape[1] else (a * b).sum(-1)


def _binary_grad(x: torch.Tensor, t: torch.Tensor, g_focal: torch.Tensor, g_dice: torch.Tensor, denom: torch.Tensor,
                 dice: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """d (g_focal * focal + g_dice * dice) / d logits for logits x (..., P) and binary targets t (bool,
    broadcastable to x); the per-mask upstream gradients, the dice denominator and the dice of the forward
    are of shape (...). With u = 1 - 2t, z = u x and q = sigmoid(z) = 1 - p_t:
    focal = a_t softplus(z) q^gamma / P, so d/dx = u a_t q^gamma (q + gamma softplus(z) (1 - q)) / P;
    dice = sum q / D with D = sum p + sum t + 1, so d/dx = q (1 - q) (u - dice) / D."""
    tf, u, z, q = _wrong_class(x, t)
    d = q if not gamma else q.pow(gamma) * (q + gamma * F.softplus(z) * (1 - q))
    if alpha >= 0:
        d = d * ((1 - alpha) + (2 * alpha - 1) * tf)
    focal = u * d * (g_focal / x.shape[-1])[..., None]
    return focal + q * (1 - q) * (u - dice[..., None]) * (g_dice / denom)[..., None]


class _MaskTerms(torch.autograd.Function):
    """Focal and dice of every multimask output against binary targets in one pass, with their gradient in
    closed form, and the IoU of the thresholded masks (same values as `focal_loss_per_mask`,
    `dice_loss_per_mask` and `mask_iou` up to float rounding).

    With binary targets both losses are functions of z = (1 - 2t) x, the logit of the wrong class: binary
    cross-entropy is softplus(z), 1 - p_t = |p - t| = sigmoid(z), and the sums the dice needs are sums of
    sigmoid(z): the forward writes five (N, M, H, W) tensors and reduces them with matrix products against
    the per-pixel target weights, where autograd through the plain definitions writes about twenty and keeps a
    dozen for its backward. The loss trains only the best of the M outputs: on a CPU the backward computes
    only the rows whose upstream gradient is non-zero (on a GPU all of them, as choosing the rows would make
    the host wait for the device). For the official recipe's clip at 1024 px: a third of the peak memory,
    about 40 % of the time (`bench/train_loss.py`).

    forward(logits (N, M, H, W), targets (N, 1 or M, H, W) bool, alpha, gamma) -> focal (N, M), dice (N, M),
    iou (N, M; 0 for two empty masks, not differentiable)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, t = logits.flatten(2), targets.flatten(2)  # (N, M, P), (N, 1 or M, P)
        tf, u, z, q = _wrong_class(x, t)
        ce = F.softplus(z)
        if gamma:
            ce = ce * (q * q if gamma == 2 else q.pow(gamma))
        focal = (_row_dot(ce, (1 - alpha) + (2 * alpha - 1) * tf) if alpha >= 0 else ce.sum(-1)) / x.shape[-1]
        del ce
        n_pos = tf.sum(-1)
        denom = n_pos + _row_dot(q, u) + n_pos + 1  # sum p = n_pos + sum q u
        dice = q.sum(-1) / denom
        del q
        pred = (x > 0).to(x.dtype)
        inter = _row_dot(pred, tf)
        iou = inter / (pred.sum(-1) + n_pos - inter).clamp(min=1.0)
        ctx.save_for_backward(logits, targets, denom, dice)
        ctx.alpha, ctx.gamma = alpha, gamma
        ctx.mark_non_differentiable(iou)
        return focal, dice, iou

    @staticmethod
    def backward(ctx, g_focal: torch.Tensor, g_dice: torch.Tensor, _g_iou: torch.Tensor):
        logits, targets, denom, dice = ctx.saved_tensors
        x, t = logits.flatten(2), targets.flatten(2)
        terms = (ctx.alpha, ctx.gamma)
        if logits.device.type != "cpu":
            return _binary_grad(x, t, g_focal, g_dice, denom, dice, *terms).view_as(logits), None, None, None
        grad = torch.zeros_like(logits)
        rows = ((g_focal != 0) | (g_dice != 0)).nonzero()  # (K, 2): (object, output) pairs that get a gradient
        if len(rows):
            i, j = rows.unbind(1)
            t = t[i, j if t.shape[1] == x.shape[1] else 0]
            grad.flatten(2)[i, j] = _binary_grad(x[i, j], t, g_focal[i, j], g_dice[i, j], denom[i, j], dice[i, j],
                                                 *terms)
        return grad, None, None, None


@dataclass
class SAM2Loss:
    """The official multi-step, multi-mask loss.

    __call__(outputs, targets): `outputs` is a list over frames of dicts holding lists over prediction steps
    (first prompt, then each correction click) of
      "multistep_pred_multimasks_high_res" (N, M, H, W) mask logits (M = 3 multimask or 1),
      "multistep_pred_ious" (N, M) predicted IoUs, "multistep_object_score_logits" (N, 1);
    `targets` (frames, N, H, W) binary masks (bool or 0 / 1; other values raise ValueError). Returns
    {"loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"} summed over frames and steps, where
    core_loss is the weighted sum that is back-propagated.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"loss_mask": 20.0, "loss_dice": 1.0,
                                                                   "loss_iou": 1.0, "loss_class": 1.0})
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    supervise_all_iou: bool = True
    iou_use_l1_loss: bool = True
    pred_obj_scores: bool = True
    focal_alpha_obj_score: float = -1.0
    focal_gamma_obj_score: float = 0.0

    def num_objects(self, targets: torch.Tensor) -> float:
        n = torch.tensor(float(targets.shape[1]), device=targets.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(n)
            n = n / torch.distributed.get_world_size()
        return max(float(n), 1.0)

    def __call__(self, outputs: Sequence[Mapping[str, Sequence[torch.Tensor]]],
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(outputs) != len(targets):
            raise ValueError(f"{len(outputs)} frames of outputs but {len(targets)} frames of targets")
        if targets.dtype != torch.bool:
            if not ((targets == 0) | (targets == 1)).all():
                raise ValueError("SAM2Loss takes binary target masks (bool, or 0 / 1 values); got other values: "
                                 "threshold soft masks first, e.g. targets > 0.5")
            targets = targets != 0
        num_objects = self.num_objects(targets)
        totals: dict[str, torch.Tensor] = {}
        for frame_out, frame_targets in zip(outputs, targets):
            target = frame_targets.unsqueeze(1)
            steps = zip(frame_out["multistep_pred_multimasks_high_res"], frame_out["multistep_pred_ious"],
                        frame_out["multistep_object_score_logits"])
            for masks, ious, obj_logits in steps:
                for key, value in self._step(masks, target, ious, obj_logits, num_objects).items():
                    totals[key] = totals[key] + value if key in totals else value
        totals[CORE_LOSS] = sum(totals[k] * self.weights.get(k, 0.0) for k in LOSS_KEYS if self.weights.get(k, 0.0))
        return totals

    def _step(self, masks: torch.Tensor, target: torch.Tensor, ious: torch.Tensor, obj_logits: torch.Tensor,
              num_objects: float) -> dict[str, torch.Tensor]:
        focal, dice, actual = _MaskTerms.apply(masks, target, self.focal_alpha, self.focal_gamma)
        focal, dice = focal / num_objects, dice / num_objects
        iou_err = (F.l1_loss if self.iou_use_l1_loss else F.mse_loss)(ious, actual, reduction="none") / num_objects
        if self.pred_obj_scores:
            present = target.flatten(1).any(-1, keepdim=True).to(masks.dtype)
            loss_class = _focal(obj_logits, present, self.focal_alpha_obj_score,
                                self.focal_gamma_obj_score).mean(1).sum() / num_objects
        else:
            present = masks.new_ones(masks.shape[0], 1)
            loss_class = masks.new_zeros(())
        if masks.shape[1] > 1:
            # only the output closest to the target (lowest weighted focal + dice) is trained to produce it
            combo = focal * self.weights["loss_mask"] + dice * self.weights["loss_dice"]
            best = combo.argmin(-1, keepdim=True)
            focal, dice = focal.gather(1, best), dice.gather(1, best)
            iou_err = iou_err.mean(-1, keepdim=True) if self.supervise_all_iou else iou_err.gather(1, best)
        return {"loss_mask": (focal * present).sum(), "loss_dice": (dice * present).sum(),
                "loss_iou": (iou_err * present).sum(), "loss_class": loss_class}
