"""numpy counterparts of the few torch operations the predictors apply outside the graphs.

`resize_bilinear` computes what `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` does,
with or without `antialias`: both are a separable triangle filter whose support widens by the scale when
shrinking (antialias, as PIL's bilinear filter and torch's `_upsample_bilinear2d_aa`) and is one pixel
otherwise; on an upsample torch's clamped two-tap formula gives the same weights. Differences to torch are
float32 rounding (measured: see tests/test_export_runtime.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _taps(in_size: int, out_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(out_size, K) source indices and weights of the triangle filter (torch's aa index/weight rule)."""
    if not (antialias and in_size > out_size):
        # torch's two-tap formula, in float32 as torch computes it (a float32 scale and source index)
        scale = np.float64(np.float32(in_size / out_size))
        src = np.maximum(scale * (np.arange(out_size) + 0.5) - 0.5, 0.0).astype(np.float32)
        i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        lam = (src - i0).astype(np.float32)
        idx = np.stack([i0, np.minimum(i0 + 1, in_size - 1)], axis=1)
        return idx, np.stack([1.0 - lam, lam], axis=1).astype(np.float32)
    scale = in_size / out_size
    support = scale if (antialias and scale >= 1.0) else 1.0
    invscale = 1.0 / scale if (antialias and scale >= 1.0) else 1.0
    centers = scale * (np.arange(out_size) + 0.5)
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    k = int((xmax - xmin).max())
    j = np.arange(k)
    idx = xmin[:, None] + j[None, :]
    w = np.clip(1.0 - np.abs((idx - centers[:, None] + 0.5) * invscale), 0.0, None)
    w[idx >= xmax[:, None]] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)
    return np.minimum(idx, in_size - 1), w.astype(np.float32)


def _resize_axis(x: np.ndarray, out_size: int, axis: int, antialias: bool) -> np.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    idx, w = _taps(in_size, out_size, antialias)
    shape = [1] * x.ndim
    shape[axis] = out_size
    out = None
    for k in range(idx.shape[1]):
        term = np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def resize_bilinear(x: np.ndarray, size: tuple[int, int], axes: tuple[int, int] = (-2, -1),
                    antialias: bool = False) -> np.ndarray:
    """Bilinear resize of float32 array `x` along `axes` (height, width) to `size` (h, w), align_corners=False."""
    x = np.asarray(x, dtype=np.float32)
    ah, aw = (a % x.ndim for a in axes)
    x = _resize_axis(x, size[1], aw, antialias)
    return _resize_axis(x, size[0], ah, antialias)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even) and back, as `t.to(torch.bfloat16).float()`:
    the torch video predictor keeps memories in bfloat16, and the onnxruntime one reproduces that rounding."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fill_holes_numpy(mask_logits: np.ndarray, max_area: int) -> np.ndarray:
    """`masklet.utils.masks.fill_holes` on numpy logits (N, 1, H, W): background 8-connected components of at most
    `max_area` pixels get logit 0.1 (SAM 2 video's hole filling)."""
    import cv2

    if max_area <= 0 or mask_logits.size == 0:
        return mask_logits
    out = mask_logits.copy()
    for i in range(out.shape[0]):
        background = (out[i, 0] <= 0).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
        holes = (labels > 0) & (stats[:, cv2.CC_STAT_AREA][labels] <= max_area)
        out[i, 0][holes] = 0.1
    return out
