"""Box utilities: format conversion, IoU, non-maximum suppression and mask-to-box.

All boxes are torch tensors whose last dimension holds 4 numbers, either XYXY (x1, y1, x2, y2) or
XYWH (x, y, w, h with x, y the top-left corner). Nothing here needs torchvision; `nms` and `batched_nms`
reproduce `torchvision.ops.nms` / `batched_nms` exactly (same IoU formula, same strict `>` test, same
decreasing-score order with ties kept in input order).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "batched_nms",
    "box_area",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_xywh",
    "is_box_near_crop_edge",
    "masks_to_boxes",
    "nms",
    "uncrop_boxes_xyxy",
]

# Above this many boxes the full N x N overlap matrix (N^2 bytes once thresholded, 4 N^2 bytes while
# being computed) gets too big, so NMS switches to computing one row per kept box instead.
_FULL_MATRIX_MAX = 8192
_ROW_BLOCK = 512


def box_xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) XYXY -> (..., 4) XYWH (top-left corner, width, height)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)


def box_xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) XYWH (top-left corner, width, height) -> (..., 4) XYXY."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas (...,) of XYXY boxes (..., 4); not clamped, so inverted boxes give negative/odd values
    exactly as torchvision does."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise intersection and union areas (N, M) of XYXY boxes a (N, 4) and b (M, 4)."""
    area_a = box_area(a)
    area_b = box_area(b)
    # Per coordinate rather than on (N, M, 2) corner tensors: half the peak memory for large N.
    w = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    # Same association order as torchvision's kernel (area_i + area_j - inter) so the float rounding, and
    # therefore every threshold decision, is identical.
    union = area_a[:, None] + area_b[None, :] - inter
    return inter, union


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (N, M) of XYXY boxes a (N, 4) and b (M, 4).

    Two zero-area boxes give 0/0 = NaN, as in torchvision; NaN never exceeds a threshold, so NMS keeps them.
    Integer boxes are promoted to float32.
    """
    if not a.is_floating_point():
        a = a.float()
    if not b.is_floating_point():
        b = b.float()
    inter, union = _inter_union(a, b)
    return inter / union


def _iou_rows(boxes: np.ndarray, area: np.ndarray, r0: int, r1: int, c0: int) -> np.ndarray:
    """IoU (r1 - r0, N - c0) of rows r0:r1 against columns c0: of XYXY boxes (N, 4), with torchvision's
    formula and rounding: inter = max(0, w) * max(0, h), iou = inter / (area_i + area_j - inter)."""
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    w = np.minimum(x2[r0:r1, None], x2[None, c0:])
    w -= np.maximum(x1[r0:r1, None], x1[None, c0:])
    np.maximum(w, 0, out=w)
    h = np.minimum(y2[r0:r1, None], y2[None, c0:])
    h -= np.maximum(y1[r0:r1, None], y1[None, c0:])
    np.maximum(h, 0, out=h)
    w *= h
    union = area[r0:r1, None] + area[None, c0:]
    union -= w
    with np.errstate(divide="ignore", invalid="ignore"):
        w /= union
    return w


def _greedy_suppress(boxes: torch.Tensor, iou_threshold: float, groups: torch.Tensor | None) -> np.ndarray:
    """Greedy NMS over boxes (N, 4) already sorted by decreasing score; returns kept positions (K,) into
    that sorted order. When `groups` (N,) is given, only boxes of the same group suppress each other."""
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    b = boxes.detach().cpu().numpy()
    g = None if groups is None else groups.detach().cpu().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    # torchvision compares the float IoU with the threshold as a C++ double; comparing in float32 would
    # round the threshold first and could flip a decision. A strongly typed float64 scalar makes numpy
    # compare in float64.
    thr = np.float64(iou_threshold)
    n = b.shape[0]
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    if n <= _FULL_MATRIX_MAX:
        # Vectorised overlap test for all pairs i < j, computed in row blocks over the upper triangle only
        # (half the work, bounded float temporaries); the inherently sequential greedy pass then costs one
        # O(N) boolean OR per kept box.
        over = np.zeros((n, n), dtype=bool)
        for r0 in range(0, n, _ROW_BLOCK):
            r1 = min(n, r0 + _ROW_BLOCK)
            block = _iou_rows(b, area, r0, r1, r0) > thr
            if g is not None:
                block &= g[r0:r1, None] == g[None, r0:]
            over[r0:r1, r0:] = block
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed[i + 1:] |= over[i, i + 1:]
    else:
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            row = _iou_rows(b, area, i, i + 1, i + 1)[0] > thr
            if g is not None:
                row &= g[i + 1:] == g[i]
            suppressed[i + 1:] |= row
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, identical in result to `torchvision.ops.nms`.

    boxes: (N, 4) XYXY float; scores: (N,); a box is dropped when its IoU with an already kept,
    higher-scored box is strictly greater than `iou_threshold`.
    Returns a LongTensor (K,) of kept indices into the input, by decreasing score (ties in input order).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = _greedy_suppress(boxes[order], float(iou_threshold), None)
    return order[torch.from_numpy(kept).to(order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS done independently per category, like `torchvision.ops.batched_nms`.

    boxes: (N, 4) XYXY float; scores: (N,); idxs: (N,) integer category of each box.
    Boxes of different categories never suppress each other. Instead of torchvision's coordinate-offset
    trick (which shifts coordinates and can change float rounding) the IoU matrix is masked by category,
    which gives exactly the per-category result. Returns kept indices (K,) by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = _greedy_suppress(boxes[order], float(iou_threshold), idxs[order])
    return order[torch.from_numpy(kept).to(order.device)]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (..., 4) around boolean masks (..., H, W), as SAM's `batched_mask_to_box`.

    Coordinates are pixel indices with inclusive ends: x2 is the last column holding a pixel, so a single
    pixel at (row 3, column 5) gives [5, 3, 5, 3]. Empty masks give [0, 0, 0, 0]. Returns int64.
    """
    masks = torch.as_tensor(masks)
    *lead, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.long, device=masks.device)
    masks = masks.reshape(-1, h, w).bool()
    rows = masks.any(dim=-1)  # (B, H): which rows hold a pixel
    cols = masks.any(dim=-2)  # (B, W)

    def edges(present: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        coords = torch.arange(size, device=present.device)
        last = torch.where(present, coords, -1).amax(dim=-1)
        first = torch.where(present, coords, size).amin(dim=-1)
        return first, last

    y1, y2 = edges(rows, h)
    x1, x2 = edges(cols, w)
    out = torch.stack([x1, y1, x2, y2], dim=-1)
    empty = ~rows.any(dim=-1)
    out[empty] = 0
    return out.reshape(*lead, 4)


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Shift XYXY boxes (..., 4) from the coordinates of a crop to those of the full image.

    crop_box: [x0, y0, x1, y1] of the crop in the image.
    """
    x0, y0 = crop_box[0], crop_box[1]
    offset = torch.tensor([x0, y0, x0, y0], device=boxes.device, dtype=boxes.dtype)
    return boxes + offset


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """Which boxes touch an edge of their crop that is not also an edge of the image (SAM AMG filter).

    boxes: (N, 4) XYXY in the crop's coordinates (as the mask generator produces them); crop_box: the
    crop [x0, y0, x1, y1] in image coordinates; orig_box: the image [0, 0, W, H]. A side counts as touching
    when it is within `atol` pixels of the corresponding crop side; it is forgiven when it is also within
    `atol` of the same image side. Returns a bool tensor (N,).
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes.float(), crop_box)
    near_crop = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None, :], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)
