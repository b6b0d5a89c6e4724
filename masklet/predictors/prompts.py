"""One place where user prompts are validated and turned into tensors in the model's input frame.

Both calling conventions land here: the official SAM 2 one (`point_coords` (N, 2) / (B, N, 2), `point_labels`,
`box` (4,) / (B, 4), `mask_input`) and the Ultralytics one (`points`/`labels`/`bboxes` whose nesting depth says
whether a list holds several objects or several points of one object).

Objects (broadcasting). Each prompt kind (point sets, boxes, masks) describes 1 or B objects. Given
together, kinds with B entries pair up object by object and a kind with a single entry is shared by every
object: 1 box + N point sets, N boxes + 1 point set, N + N -> N objects; N + M with N != M (both > 1) is a
PromptError naming both arguments and their shapes. Each object's result is the one it gets predicted alone.

Mask prompts (`mask_prompt`). The meaning is read from the dtype, never from the size:
- bool or integer arrays (integers 0/1 or 0/255) are binary masks of the image's size, (H, W), (B, H, W) or
  (B, 1, H, W); they become low-resolution logits the way the official video predictor turns an
  `add_new_mask` mask into SAM logits (resize to the model input, threshold at 0.5, logits +/-10, downsample
  with antialiasing), also when the image happens to be 256x256;
- float arrays are low-resolution logits (the official `mask_input`, e.g. `low_res_logits` of an earlier
  predict), (1, h, w) / (B, 1, h, w) (also (h, w), (B, h, w)) with (h, w) the mask-input size (256x256 for the
  released models); a float array of any other size is an error that says how to pass a binary mask.
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


def _shape(value: Any) -> tuple:
    try:
        return tuple(np.shape(value))
    except ValueError:
        return ("ragged",)


def broadcast_objects(prompts: Prompts, given: dict[str, tuple[str, tuple, str]], accepted: str) -> Prompts:
    """Bring point sets, boxes and masks to one number of objects B (see the module docstring).

    given maps "points" / "boxes" / "masks" to (argument name, shape as the user passed it, plural noun) for
    the error; accepted describes the accepted shapes. Raises PromptError for N and M objects, N != M > 1.
    """
    fields = [k for k in ("points", "boxes", "masks") if getattr(prompts, k) is not None]
    sizes = {k: getattr(prompts, k).shape[0] for k in fields}
    b = object_count(sizes, given, accepted)
    if b > 1:
        for k in fields:
            if sizes[k] == 1:
                setattr(prompts, k, np.repeat(getattr(prompts, k), b, axis=0))
                if k == "points":
                    prompts.labels = np.repeat(prompts.labels, b, axis=0)
    return prompts


def object_count(sizes: dict[str, int], given: dict[str, tuple[str, tuple, str]], accepted: str) -> int:
    """The number of objects B that prompt kinds with `sizes` entries describe (0 without prompts), or
    PromptError when two kinds give different counts above 1 (arguments as for `broadcast_objects`)."""
    batches = set(sizes.values()) - {1}
    if len(batches) > 1:
        named = [k for k in given if k in sizes]
        counts = " and ".join(f"{sizes[k]} {given[k][2]}" for k in named)
        shapes = ", ".join(f"{given[k][0]} shape {given[k][1]}" for k in named)
        raise PromptError(f"{counts} ({shapes}) describe different numbers of objects: give every kind once per "
                          f"object (N and N), or a single one to share with all N objects (1 and N); accepted: "
                          f"{accepted}")
    return batches.pop() if batches else max(sizes.values(), default=0)


def official_prompts(point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
                     mask_size: tuple[int, int] = (256, 256), image_hw: tuple[int, int] | None = None,
                     spec: InputSpec | None = None, single_object: bool = False) -> Prompts:
    """Validate prompts given in the official SAM 2 image-predictor form and broadcast them to B objects.

    point_coords (N, 2) or (B, N, 2); point_labels (N,) or (B, N); box (4,) or (B, 4) (also as corners
    (2, 2) / (B, 2, 2), as the official reshape allows); mask_input: float low-resolution logits (1, h, w) /
    (B, 1, h, w) of size `mask_size`, or a bool / 0-1 / 0-255 integer mask of the image's size `image_hw`
    (see `mask_prompt`; needs `spec`). single_object: the video predictor's form, one object per call.
    Returns `Prompts` whose kinds all have the same batch B. Raises PromptError naming the argument, the
    shape it got and the shapes accepted.
    """
    accepted = (f"point_coords (N, 2) / (B, N, 2) with point_labels (N,) / (B, N), box (4,) / (B, 4), "
                f"mask_input (1, {mask_size[0]}, {mask_size[1]}) / (B, 1, {mask_size[0]}, {mask_size[1]}) float "
                "logits or (H, W) / (B, H, W) bool masks of the image's size; B = the number of objects, 1 or "
                "the same B for every kind")
    pc, pl = "point_coords", "point_labels"
    if single_object:
        accepted = "points (N, 2) with labels (N,) and/or box (4,) for the one object of the call"
        pc, pl = "points", "labels"  # the official add_new_points_or_box names
    prompts = Prompts()
    given: dict[str, tuple[str, tuple, str]] = {}
    if point_coords is not None or point_labels is not None:
        if point_coords is None:
            raise PromptError(f"{pl} were given without {pc}")
        if point_labels is None:
            raise PromptError(f"{pc} were given without {pl}: pass one label per point "
                              "(1 = foreground, 0 = background)")
        coords = _as_float_array(point_coords, pc)
        labels = _as_float_array(point_labels, pl)
        if coords.ndim == 2:
            coords = coords[None]
        if labels.ndim == 1:
            labels = labels[None]
        if coords.ndim != 3 or coords.shape[-1] != 2:
            raise PromptError(f"{pc} must have shape (N, 2) or (B, N, 2) as (x, y) pixels, got "
                              f"{_shape(point_coords)}")
        if labels.ndim != 2 or labels.shape != coords.shape[:2]:
            raise PromptError(f"{pl} must have one label per point: shape {_shape(point_coords)[:-1]} for {pc} of "
                              f"shape {_shape(point_coords)}, got {_shape(point_labels)}")
        if coords.shape[1] == 0 or coords.shape[0] == 0:
            raise PromptError(f"{pc} is empty; pass at least one point or use {pc}=None")
        if not np.isin(labels, (0, 1, 2, 3, -1)).all():
            raise PromptError(f"{pl} must be 1 (foreground) or 0 (background), got {np.unique(labels)}")
        prompts.points, prompts.labels = coords, labels.astype(np.int64)
        given["points"] = (pc, _shape(point_coords), "point sets")
    if box is not None:
        boxes = _as_float_array(box, "box")
        if boxes.ndim >= 2 and boxes.shape[-2:] == (2, 2) and boxes.ndim <= 3:
            boxes = boxes.reshape(-1, 4)  # corners [[x1, y1], [x2, y2]]
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] == 0:
            raise PromptError(f"box must be 4 numbers x1, y1, x2, y2 (or an array (B, 4)), got shape "
                              f"{_shape(box)}")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise PromptError(f"box must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1, got {boxes.tolist()}")
        prompts.boxes = boxes
        given["boxes"] = ("box", _shape(box), "boxes")
    if mask_input is not None:
        prompts.masks = mask_prompt(mask_input, mask_size, image_hw, spec, "mask_input")
        given["masks"] = ("mask_input", _shape(mask_input), "masks")
    prompts = broadcast_objects(prompts, given, accepted)
    if single_object and prompts.batch > 1:
        got = ", ".join(f"{name} {shape}" for name, shape, _ in given.values())
        raise PromptError(f"this call takes the prompts of one object, got {got} ({prompts.batch} objects); "
                          f"accepted: {accepted}. Add each object with its own obj_id")
    return prompts


# ---------------------------------------------------------------------------------------------- mask prompts
def _mask_numpy(mask: Any, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor can only come from a caller that imported torch
    if torch is not None and isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu()
        mask = (mask.float() if mask.dtype in (torch.bfloat16, torch.float16) else mask).numpy()
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be an array (numpy, torch or nested lists of a regular shape), got "
                          f"{type(mask).__name__}") from None
    if arr.dtype.kind not in "biuf":
        raise PromptError(f"{name} must be a bool, integer or float array, got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.ndim > 4 or arr.size == 0:
        raise PromptError(f"{name} must have shape (H, W), (B, H, W) or (B, 1, H, W), got {arr.shape}")
    return arr


def mask_batch(mask: Any, name: str = "masks") -> tuple[np.ndarray, int]:
    """A mask prompt as an array (dtype kept) and the number of objects it describes: (H, W) -> 1,
    (B, H, W) / (B, 1, H, W) -> B. Validates what can be checked before the image is known."""
    arr = _mask_numpy(mask, name)
    if arr.ndim == 4 and arr.shape[1] != 1:
        raise PromptError(f"{name} of shape {arr.shape}: a 4-D mask prompt must be (B, 1, H, W)")
    return arr, 1 if arr.ndim == 2 else arr.shape[0]


def binary_masks(mask: Any, image_hw: tuple[int, int], name: str = "mask", allow_float: bool = False,
                 single_object: bool = False) -> np.ndarray:
    """A binary mask prompt -> (B, H, W) bool. bool arrays as they are; integers must be 0/1 or 0/255 (other
    values, e.g. a label map, are an error); floats only with allow_float (the official add_new_mask takes
    float 0/1 masks) and then only 0/1. Shape (H, W), (B, H, W) or (B, 1, H, W) with (H, W) = image_hw;
    single_object: only (H, W) (or B = 1), as the video predictor's add_new_mask takes one object's mask."""
    arr = _mask_numpy(mask, name)
    h, w = image_hw
    got = arr.shape
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-2:] != (h, w) or (single_object and arr.shape[0] != 1):
        accepted = f"({h}, {w})" if single_object else f"({h}, {w}), (B, {h}, {w}) or (B, 1, {h}, {w})"
        raise PromptError(f"{name} of shape {got} is not {'one' if single_object else 'a'} binary mask of the "
                          f"image's size: expected {accepted}")
    if arr.dtype.kind == "b":
        return arr
    values = np.unique(arr)
    if arr.dtype.kind in "iu":
        if set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}:
            return arr > 0
        more = "..." if len(values) > 8 else ""
        raise PromptError(f"{name} is an integer mask with values {values[:8].tolist()}{more}"
                          f": a binary mask holds 0/1 or 0/255 (or is bool); threshold it first, e.g. mask > 127")
    if allow_float and set(values.tolist()) <= {0.0, 1.0}:
        return arr > 0.5
    raise PromptError(f"{name} is a float array with values other than 0 and 1 ({values[:4].tolist()} ...): pass a "
                      f"binary mask as bool (e.g. mask > 0.5)")


def binary_mask_logits(masks: np.ndarray, spec: InputSpec, mask_size: tuple[int, int]) -> np.ndarray:
    """(B, H, W) bool image-space masks -> (B, 1, h, w) float32 low-resolution logits.

    Follows the official video predictor for a mask prompt: `add_new_mask` resizes the mask to the model
    input (bilinear, antialiased) and thresholds at 0.5, `_use_mask_as_output` maps it to logits +/-10 and
    downsamples those (bilinear, antialiased) to the decoder's low resolution. SAM 1 inputs are resized along
    the longest side and padded (background) like the image.
    """
    import torch
    import torch.nn.functional as F

    h, w = masks.shape[1:]
    x = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    rh, rw = resized_hw(h, w, spec)
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        x = (x >= 0.5).float()
    if (rh, rw) != (spec.size, spec.size):
        x = F.pad(x, (0, spec.size - rw, 0, spec.size - rh))
    logits = x * 20.0 - 10.0
    if tuple(logits.shape[-2:]) != tuple(mask_size):
        logits = F.interpolate(logits, size=tuple(mask_size), mode="bilinear", align_corners=False, antialias=True)
    return logits.numpy()


def mask_prompt(mask: Any, mask_size: tuple[int, int], image_hw: tuple[int, int] | None = None,
                spec: InputSpec | None = None, name: str = "mask_input") -> np.ndarray:
    """A mask prompt -> (B, 1, h, w) float64 low-resolution logits for the prompt encoder.

    The rule (module docstring): a float array is logits of the mask-input size `mask_size`, (h, w) / (1, h, w)
    / (B, h, w) / (B, 1, h, w); a bool or 0/1, 0/255 integer array is a binary mask of the image's size
    `image_hw` (needs `spec`, the model's input layout), converted by `binary_mask_logits`. Raises PromptError
    naming the shape got and the shapes accepted.
    """
    arr, _ = mask_batch(mask, name)
    mh, mw = mask_size
    logit_shapes = f"(1, {mh}, {mw}) or (B, 1, {mh}, {mw})"
    if arr.dtype.kind in "biu":
        if image_hw is None or spec is None:
            raise PromptError(f"{name} is a {arr.dtype} array, i.e. a binary mask, but this call takes only "
                              f"low-resolution float logits {logit_shapes}")
        binary = binary_masks(arr, image_hw, name)
        return binary_mask_logits(binary, spec, mask_size).astype(np.float64)
    got = arr.shape
    masks = arr.astype(np.float64)
    if not np.isfinite(masks).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim == 3:
        masks = masks[:, None]
    if masks.shape[1:] != (1, mh, mw):
        hint = ""
        if image_hw is not None:
            h, w = image_hw
            hint = f", or a binary mask of the image's size ({h}, {w}) as bool / uint8 (e.g. mask > 0.5)"
        raise PromptError(f"{name} must be low-resolution logits {logit_shapes} when float (e.g. the "
                          f"low_res_logits of an earlier prediction){hint}; got shape {got} with dtype {arr.dtype}")
    return masks


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
