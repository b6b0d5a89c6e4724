"""Ultralytics-style prompts (`points`, `labels`, `bboxes`) turned into per-object `Prompts`.

The one rule set shared by `SAM` and `SAM2VideoPredictor`. In the Ultralytics convention the nesting depth
of `points` says how the points group into objects:

==============================  =========================  ==============================
points                          meaning                    labels (default: all 1)
==============================  =========================  ==============================
``[x, y]``                      1 object, 1 point          ``1``, ``[1]``
``[[x, y], [x, y]]``            2 objects, 1 point each    ``[1, 1]`` (one per object)
``[[[x, y], [x, y]]]``          1 object, 2 points         ``[[1, 0]]`` (one per point)
==============================  =========================  ==============================

`bboxes` is one box ``[x1, y1, x2, y2]`` or a list of boxes, one object each. Given together, boxes, point
groups and mask prompts pair up object by object; a single box, point group or mask is shared by all
objects (1 box + N point groups, N boxes + 1 point group, N + N -> N objects); N and M (N != M, both > 1) is
a PromptError. Mask prompts follow `masklet.predictors.prompts.mask_prompt`: bool / 0-1 / 0-255 integer
masks are binary masks of the image's size, float masks are low-resolution logits.
A scalar label applies to every point. Coordinates are pixels of the original image.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data.preprocess import InputSpec
from ..predictors.prompts import PromptError, Prompts, broadcast_objects, mask_batch, mask_prompt, object_count
from ..predictors.prompts import check_inside as check_prompts_inside  # points in, boxes overlapping

__all__ = ["PromptError", "check_prompts_inside", "mask_objects", "normalize_prompts", "with_mask_prompt"]


# the shapes named in errors about how prompts pair up into objects
ACCEPTED = ("points (2,) / (B, 2) / (B, N, 2) with labels (), (B,) / (B, N), bboxes (4,) / (B, 4), masks (B, H, W) "
            "bool at the image size or (B, 1, 256, 256) float low-res logits; B = the number of objects, 1 or the "
            "same B for every kind")


def _shape(value: Any) -> str:
    """The shape of a nested list / array as text, or a description when it is ragged."""
    try:
        return str(tuple(np.shape(value)))
    except ValueError:
        return "ragged (sub-lists of different lengths)"


def _numbers(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; avoid importing torch for the check
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)):
        raise PromptError(f"{name} must be numbers, got the string {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be a (nested) list of numbers of a regular shape, got {value!r:.100} "
                          f"with shape {_shape(value)}") from None
    if not np.isfinite(arr).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    return arr


def _points(points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """points -> (B, N, 2), labels -> (B, N) by the nesting rules of the module docstring."""
    pts = _numbers(points, "points")
    given = pts.shape
    if pts.size == 0:
        raise PromptError("points is empty: pass [x, y], [[x, y], ...] (one point per object) or "
                          "[[[x, y], ...]] (several points per object), or leave points out")
    if pts.ndim not in (1, 2, 3) or pts.shape[-1] != 2:
        raise PromptError(f"points must be [x, y] (one object), [[x, y], ...] (one point per object) or "
                          f"[[[x, y], ...], ...] (points per object), i.e. shape (2,), (B, 2) or (B, N, 2); "
                          f"got shape {given}")
    if pts.ndim == 1:
        pts = pts[None, None]
    elif pts.ndim == 2:
        pts = pts[:, None]  # (B, 2): each point is its own object
    b, n = pts.shape[:2]
    if labels is None:
        return pts, np.ones((b, n), dtype=np.int64)
    lab = _numbers(labels, "labels")
    if lab.ndim == 0:
        lab = np.full((b, n), float(lab))
    elif len(given) == 3:
        # (B, N, 2): one label per point; a flat list is accepted for a single object
        if lab.shape == (n,) and b == 1:
            lab = lab[None]
        if lab.shape != (b, n):
            raise PromptError(f"labels shape {lab.shape} does not match points shape {given}: {b} object(s) with "
                              f"{n} point(s) each need labels of shape ({b}, {n}), e.g. "
                              f"{np.ones((b, n), dtype=int).tolist()}")
    else:
        # (2,) or (B, 2): one point per object, so one label per object
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.shape != (b,):
            what = "1 point" if len(given) == 1 else f"{b} objects with one point each"
            raise PromptError(f"labels shape {lab.shape} does not match points shape {given}: {what} need(s) "
                              f"{b} label(s), e.g. labels={[1] * b}. To give one object several points, nest them "
                              f"one level deeper: points=[[[x1, y1], [x2, y2]]], labels=[[1, 0]]")
        lab = lab[:, None]
    if not np.isin(lab, (0, 1)).all():
        raise PromptError(f"labels must be 1 (foreground) or 0 (background), got {sorted(set(lab.ravel().tolist()))}")
    return pts, lab.astype(np.int64)


def _boxes(bboxes: Any) -> np.ndarray:
    boxes = _numbers(bboxes, "bboxes")
    given = boxes.shape
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] == 0:
        raise PromptError(f"bboxes must be [x1, y1, x2, y2] or a list of such boxes, i.e. shape (4,) or (B, 4); "
                          f"got shape {given}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise PromptError(f"bboxes are x1, y1, x2, y2 with x2 >= x1 and y2 >= y1; got {boxes[bad][0].tolist()} "
                          "(for x, y, width, height boxes convert them first: [x, y, x + w, y + h])")
    return boxes


def normalize_prompts(points: Any = None, labels: Any = None, bboxes: Any = None) -> Prompts:
    """Ultralytics-style prompts -> `Prompts` for B objects (see the module docstring for the rules).

    Returns points (B, N, 2) float64 and labels (B, N) int64 (or None), boxes (B, 4) xyxy float64 (or None),
    all in original-image pixels; `Prompts.empty` when nothing was given. Raises `PromptError` (a ValueError)
    naming the shapes when they do not fit together.
    """
    prompts = Prompts()
    if points is None and labels is not None:
        raise PromptError("labels were given without points: pass points=[x, y] (or a list of points) with them")
    if points is not None:
        prompts.points, prompts.labels = _points(points, labels)
    if bboxes is not None:
        prompts.boxes = _boxes(bboxes)
    given = {"boxes": ("bboxes", _shape(bboxes), "bboxes"), "points": ("points", _shape(points), "point groups")}
    return broadcast_objects(prompts, given, ACCEPTED)


def mask_objects(prompts: Prompts, masks: Any) -> np.ndarray | None:
    """A `masks` prompt checked when the call is made (before any image is read): an array (dtype kept, it
    decides the meaning) whose number of objects pairs up with `prompts` (from `normalize_prompts`)."""
    if masks is None:
        return None
    arr, n = mask_batch(masks, "masks")
    sizes = {k: getattr(prompts, k).shape[0] for k in ("points", "boxes") if getattr(prompts, k) is not None}
    given = {k: (name, _shape(getattr(prompts, k)), noun) for k, name, noun in
             (("boxes", "bboxes", "bboxes"), ("points", "points", "point groups")) if k in sizes}
    given["masks"] = ("masks", str(arr.shape), "masks")
    object_count({**sizes, "masks": n}, given, ACCEPTED)
    return arr


def with_mask_prompt(prompts: Prompts, masks: np.ndarray | None, image_hw: tuple[int, int], spec: InputSpec,
                     mask_size: tuple[int, int]) -> Prompts:
    """`prompts` plus a mask prompt as low-resolution logits (B, 1, h, w) for an image of size image_hw,
    every kind broadcast to the same B (see `masklet.predictors.prompts.mask_prompt` for how masks are read)."""
    if masks is None:
        return prompts
    logits = mask_prompt(masks, mask_size, image_hw, spec, "masks")
    full = Prompts(prompts.points, prompts.labels, prompts.boxes, logits)
    given = {k: (name, _shape(getattr(prompts, k)), noun) for k, name, noun in
             (("boxes", "bboxes", "bboxes"), ("points", "points", "point groups"))}
    given["masks"] = ("masks", str(masks.shape), "masks")
    return broadcast_objects(full, given, ACCEPTED)
