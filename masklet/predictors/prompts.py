"""One place where user prompts are validated and turned into tensors in the model's input frame.

Both calling conventions land here: the official SAM 2 one (`point_coords` (N, 2) / (B, N, 2), `point_labels`,
`box` (4,) / (B, 4), `mask_input`) and the Ultralytics one (`points`/`labels`/`bboxes` whose nesting depth says
whether a list holds several objects or several points of one object).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.preprocess import InputSpec, resized_hw

if TYPE_CHECKING:  # torch is imported where tensors are made: the onnxruntime predictors validate prompts here too
    import torch


class PromptError(ValueError):
    """A prompt with the wrong shape, type or values."""


@dataclass
class Prompts:
    """Prompts for B objects in original-image pixel coordinates.

    points (B, N, 2) float and labels (B, N) int, or None; boxes (B, 4) xyxy or None; masks (B, 1, h, w) logits
    at the decoder's low resolution, or None. At least one of them is set unless `empty`.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None

    @property
    def batch(self) -> int:
        for value in (self.points, self.boxes, self.masks):
            if value is not None:
                return value.shape[0]
        return 0

    @property
    def empty(self) -> bool:
        return self.points is None and self.boxes is None and self.masks is None


def _as_float_array(value: Any, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be numbers (a list or array), got {value!r:.80}") from None
    if not np.isfinite(arr).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    return arr


def official_prompts(point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
                     mask_size: tuple[int, int] = (256, 256)) -> Prompts:
    """Validate prompts given in the official SAM 2 image-predictor form.

    point_coords (N, 2) or (B, N, 2); point_labels (N,) or (B, N); box (4,) or (B, 4); mask_input
    (1, h, w) / (B, 1, h, w) low-resolution logits of size `mask_size`.
    """
    prompts = Prompts()
    if point_coords is not None or point_labels is not None:
        if point_coords is None:
            raise PromptError("point_labels were given without point_coords")
        if point_labels is None:
            raise PromptError("point_coords were given without point_labels: pass one label per point "
                              "(1 = foreground, 0 = background)")
        coords = _as_float_array(point_coords, "point_coords")
        labels = _as_float_array(point_labels, "point_labels")
        if coords.ndim == 2:
            coords = coords[None]
        if labels.ndim == 1:
            labels = labels[None]
        if coords.ndim != 3 or coords.shape[-1] != 2:
            raise PromptError(f"point_coords must have shape (N, 2) or (B, N, 2) as (x, y) pixels, got "
                              f"{tuple(np.shape(point_coords))}")
        if labels.ndim != 2 or labels.shape != coords.shape[:2]:
            raise PromptError(f"point_labels must have one label per point: {coords.shape[:2]} expected for "
                              f"point_coords {tuple(np.shape(point_coords))}, got {tuple(np.shape(point_labels))}")
        if coords.shape[1] == 0:
            raise PromptError("point_coords is empty; pass at least one point or use point_coords=None")
        if not np.isin(labels, (0, 1, 2, 3, -1)).all():
            raise PromptError(f"point_labels must be 1 (foreground) or 0 (background), got {np.unique(labels)}")
        prompts.points, prompts.labels = coords, labels.astype(np.int64)
    if box is not None:
        boxes = _as_float_array(box, "box")
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise PromptError(f"box must be 4 numbers x1, y1, x2, y2 (or an array (B, 4)), got shape "
                              f"{tuple(np.shape(box))}")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise PromptError(f"box must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1, got {boxes.tolist()}")
        prompts.boxes = boxes
    if mask_input is not None:
        masks = _as_float_array(mask_input, "mask_input")
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim == 3:
            masks = masks[:, None] if masks.shape[0] != 1 or prompts.batch > 1 else masks[None]
        if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[-2:] != tuple(mask_size):
            raise PromptError(f"mask_input must be low-resolution logits of shape (1, {mask_size[0]}, {mask_size[1]})"
                              f" or (B, 1, {mask_size[0]}, {mask_size[1]}) — e.g. the low_res_logits returned by "
                              f"predict — got {tuple(np.shape(mask_input))}")
        prompts.masks = masks
    sizes = {v.shape[0] for v in (prompts.points, prompts.boxes, prompts.masks) if v is not None}
    if len(sizes - {1}) > 1:
        raise PromptError(f"prompts have different batch sizes {sorted(sizes)}: points, boxes and masks must "
                          "describe the same number of objects")
    return prompts


def check_inside(prompts: Prompts, height: int, width: int, hint: str = "") -> None:
    """Points (except padding, label -1) must lie in the image and boxes must overlap it, in pixels of the
    original image. `hint` is appended to the error (e.g. how to pass normalised coordinates)."""
    if prompts.points is not None:
        pts = prompts.points
        outside = (pts[..., 0] < 0) | (pts[..., 0] > width) | (pts[..., 1] < 0) | (pts[..., 1] > height)
        if prompts.labels is not None:
            outside &= prompts.labels >= 0
        if outside.any():
            bad = [round(v, 2) for v in pts[outside][0].tolist()]
            raise PromptError(f"point {bad} is outside the image, which is {width}x{height} pixels (x from 0 to "
                              f"{width}, y from 0 to {height}); points are [x, y] pixels of the original image{hint}")
    if prompts.boxes is not None:
        b = prompts.boxes
        off = (b[:, 2] < 0) | (b[:, 0] > width) | (b[:, 3] < 0) | (b[:, 1] > height)
        if off.any():
            raise PromptError(f"box {b[off][0].tolist()} lies entirely outside the image ({width}x{height} pixels); "
                              f"boxes are [x1, y1, x2, y2] pixels of the original image{hint}")


# what the official-style predictors add to an out-of-image error
NORMALIZED_COORDS_HINT = " (use normalize_coords=False for coordinates already in [0, 1])"


def model_frame_arrays(prompts: Prompts, orig_hw: tuple[int, int], spec: InputSpec,
                       normalized: bool = False) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Points (B, N, 2), labels (B, N) and boxes (B, 4) as float64 / int64 arrays in model-input pixels."""
    h, w = orig_hw
    rh, rw = resized_hw(h, w, spec)
    scale = np.array([rw, rh], dtype=np.float64) / (1.0 if normalized else np.array([w, h], dtype=np.float64))
    points = None if prompts.points is None else prompts.points * scale
    labels = None if prompts.labels is None else prompts.labels
    boxes = None if prompts.boxes is None else (prompts.boxes.reshape(-1, 2, 2) * scale).reshape(-1, 4)
    return points, labels, boxes


def to_model_frame(prompts: Prompts, orig_hw: tuple[int, int], spec: InputSpec, normalized: bool = False,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                                torch.Tensor | None, torch.Tensor | None]:
    """Tensors in model-input pixels: points (B, N, 2), labels (B, N) int32, boxes (B, 4), masks (B, 1, h, w).

    normalized: the coordinates are in [0, 1] relative to the image rather than pixels.
    """
    import torch

    def tensor(x: np.ndarray | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        return None if x is None else torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

    points, labels, boxes = model_frame_arrays(prompts, orig_hw, spec, normalized)
    return tensor(points), tensor(labels, torch.int32), tensor(boxes), tensor(prompts.masks)
