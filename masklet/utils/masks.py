"""Binary-mask post-processing: small-region removal, hole filling on logits, polygons and mask IoU.

Connected components are always 8-connected (a pixel touches its 8 neighbours), which is what SAM's
automatic mask generator (OpenCV, connectivity 8) and SAM 2's CUDA connected-components kernel use.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
import torch

__all__ = [
    "fill_holes",
    "largest_polygon",
    "mask_iou",
    "mask_to_polygons",
    "polygons_to_mask",
    "remove_small_regions",
]


def _components(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a bool array (H, W): labels (H, W) int32 (0 = not in `binary`) and the
    pixel count of each label (n_labels,), index 0 being the complement."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    return labels, stats[:, cv2.CC_STAT_AREA]


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """Remove small disconnected regions or holes from a bool mask (H, W), as SAM's AMG post-processing.

    mode="holes": background components with fewer than `area_thresh` pixels become foreground (this includes
    a small background region touching the border, exactly as SAM does). mode="islands": foreground
    components with fewer than `area_thresh` pixels are removed; if every component is that small, the
    largest one is kept. Returns (new mask (H, W) bool, changed) where `changed` is True when any region
    was below the threshold (in which case the returned mask is a new array).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask).astype(bool, copy=False)
    fill_holes_mode = mode == "holes"
    # Both modes become "find small components of the working mask": the background for holes, the
    # foreground for islands.
    working = ~mask if fill_holes_mode else mask
    labels, areas = _components(working)
    sizes = areas[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if fill_holes_mode:
        # Label 0 of the background's components is the original foreground; add the small holes to it.
        result = np.isin(labels, np.concatenate(([0], small)))
    else:
        big = np.flatnonzero(sizes >= area_thresh) + 1
        if big.size == 0:
            big = np.array([int(np.argmax(sizes)) + 1])
        result = np.isin(labels, big)
    return result, True


def fill_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """SAM 2 video's hole filling on mask logits (N, 1, H, W) -> same shape, dtype and device.

    For every mask, the background (logit <= 0) 8-connected components with at most `max_area` pixels get
    their logits set to 0.1, a small positive value that turns them into foreground while staying close to
    the decision boundary. This fills holes only; it does not remove small foreground specks. As in SAM 2,
    any small background component counts, including one that touches the border. SAM 2 does this with a
    CUDA extension and silently skips it without one; here it runs on the CPU with OpenCV for any device.
    `max_area <= 0` returns the input unchanged.
    """
    if max_area <= 0 or mask_logits.numel() == 0:
        return mask_logits
    if mask_logits.ndim != 4 or mask_logits.shape[1] != 1:
        raise ValueError(f"expected mask logits of shape (N, 1, H, W), got {tuple(mask_logits.shape)}")
    background = (mask_logits <= 0).squeeze(1).cpu().numpy()
    holes = np.zeros_like(background)
    for i, bg in enumerate(background):
        labels, areas = _components(bg)
        pixel_area = areas[labels]
        holes[i] = (labels > 0) & (pixel_area <= max_area)
    if not holes.any():
        return mask_logits
    hole_t = torch.from_numpy(holes).to(mask_logits.device).unsqueeze(1)
    return torch.where(hole_t, torch.tensor(0.1, dtype=mask_logits.dtype, device=mask_logits.device), mask_logits)


def mask_to_polygons(mask: np.ndarray | torch.Tensor, simplify: bool = True, min_points: int = 3) -> list[np.ndarray]:
    """Outer contours of a bool mask (H, W) as polygons, each a float32 array (K, 2) of (x, y) pixel coords.

    Uses `cv2.findContours` with RETR_EXTERNAL, so holes are not represented (a polygon covers its hole).
    simplify=True uses CHAIN_APPROX_SIMPLE (straight runs collapse to their end points; the filled shape is
    the same), simplify=False CHAIN_APPROX_NONE (every boundary pixel). Points are the centres of boundary
    pixels, so `polygons_to_mask` of the result reproduces each component including its boundary.
    Contours with fewer than `min_points` points (single pixels, 1-pixel lines) are dropped, since they
    are not valid polygons for segmentation labels.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.ascontiguousarray(np.asarray(mask).astype(np.uint8))
    method = cv2.CHAIN_APPROX_SIMPLE if simplify else cv2.CHAIN_APPROX_NONE
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, method)
    return [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= min_points]


def largest_polygon(mask: np.ndarray | torch.Tensor, simplify: bool = True) -> np.ndarray:
    """The outer polygon (K, 2) float32 of the mask's component with the largest enclosed area (ties: more
    points, then first found); an empty (0, 2) array when the mask has no polygon."""
    polygons = mask_to_polygons(mask, simplify=simplify)
    if not polygons:
        return np.zeros((0, 2), dtype=np.float32)
    return max(polygons, key=lambda p: (abs(cv2.contourArea(p)), len(p)))


def polygons_to_mask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise polygons (each (K, 2) of (x, y) pixel coords) into a bool mask (height, width) with
    `cv2.fillPoly`; the union of the polygons is filled (each is drawn on its own, so overlaps do not cancel).
    Coordinates are rounded to the nearest pixel."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            continue
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def mask_iou(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, empty: float = 1.0) -> float | np.ndarray:
    """IoU of bool masks a and b (..., H, W) (broadcastable): a float for 2-D inputs, else an array (...).

    Two empty masks are identical, so their IoU is `empty` (1.0 by default) rather than 0/0.
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if isinstance(b, torch.Tensor):
        b = b.detach().cpu().numpy()
    a = np.asarray(a).astype(bool, copy=False)
    b = np.asarray(b).astype(bool, copy=False)
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    iou = np.where(union > 0, inter / np.maximum(union, 1), empty)
    if np.ndim(iou) == 0:
        return float(iou)
    return iou
