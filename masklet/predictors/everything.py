"""Automatic mask generation ("segment everything"): the official SAM 2 automatic mask generator, faster on CPU.

The generator prompts the model with a regular grid of single foreground points, optionally over a pyramid of
overlapping image crops, filters the candidate masks by predicted IoU, stability and crop-edge contact, removes
duplicates with box NMS and returns one record per mask, exactly as `SAM2AutomaticMaskGenerator` does.

Why it is faster: the official generator upsamples every candidate's low-resolution logits (256 x 256) to the
crop size (e.g. 1200 x 1800) and runs the stability score, thresholding, box extraction and run-length
encoding on those full-resolution tensors: 3072 candidates for a 32 x 32 grid. Here, with identical results:

* The predicted-IoU filter runs first, on the decoder's output.
* Candidates are screened at low resolution. Bilinear upsampling gives every full-resolution pixel a value
  between the min and max of the four logits of one low-res "cell", so a cell whose four logits are clearly
  above (or below) a threshold has all its pixels above (or below) it. That gives each candidate's exact box
  (only the few undecided cells beyond the extent of the sure ones are interpolated, with the float32
  arithmetic of PyTorch's CPU kernel, checked bit for bit against `F.interpolate` at run time, with a plain
  upsampling fallback where it differs) and bounds on the two stability counts, which settle the stability
  filter for all but the masks whose bounds straddle the threshold; those are upsampled for real.
* Box NMS runs on those boxes; only its survivors are upsampled (`F.interpolate`, a few at a time) for their
  exact stability score and mask, which are stored bit-packed until output.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import ImageLike, as_rgb_uint8
from ..data.preprocess import resized_hw
from ..utils.boxes import batched_nms, box_area, box_xyxy_to_xywh, is_box_near_crop_edge, masks_to_boxes
from ..utils.masks import remove_small_regions
from ..utils.rle import encode_counts_string, masks_to_rle_uncompressed
from .image import ImagePredictor, postprocess_masks

__all__ = [
    "AutomaticMaskGenerator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "generate_crop_boxes",
]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


# ---------------------------------------------------------------------------------------------- grids and crops
def build_point_grid(n_per_side: int) -> np.ndarray:
    """Regular grid of n_per_side**2 points in [0, 1]^2, (n*n, 2) float64 (x, y), rows of constant y.

    Points sit at the centres of an n x n tiling: offset 1/(2n), spacing 1/n (via `np.linspace`, as the
    official code, so the coordinates are bit-identical).
    """
    offset = 1 / (2 * n_per_side)
    one_side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One normalised point grid per crop layer (layers 0..n_layers); layer i has
    int(n_per_side / scale_per_layer**i) points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes [x0, y0, x1, y1] of every layer and each box's layer index.

    Layer 0 is the whole image; layer i (1-based) tiles the image with 2**i x 2**i crops that overlap by
    int(overlap_ratio * short_side * 2 / 2**i) pixels. im_size is (H, W).
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layer_idxs = [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

    for i_layer in range(n_layers):
        n_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = crop_len(im_w, n_per_side, overlap)
        crop_h = crop_len(im_h, n_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        # x-major order, as the official itertools.product(x0s, y0s)
        for x0, y0 in product(x0s, y0s):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


def calculate_stability_score(masks: torch.Tensor, mask_threshold: float, threshold_offset: float) -> torch.Tensor:
    """Stability of mask logits (..., H, W) -> (...,) float32: the IoU of the masks binarised at
    threshold + offset and threshold - offset (0/0 gives NaN, as the official code)."""
    inter = (masks > (mask_threshold + threshold_offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    union = (masks > (mask_threshold - threshold_offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    return inter / union


# ---------------------------------------------------------------------------------------------- exact upsampling
def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add a * b + c with one rounding (the product of two float32 is exact in float64)."""
    return torch.addcmul(c.double(), a.double(), b.double()).float()


def _axis_tables(in_size: int, out_size: int) -> dict[str, torch.Tensor]:
    """Source indices and weights of PyTorch's bilinear resampling (align_corners=False, no antialias) along
    one axis, computed with the kernel's float32 arithmetic: scale = in / out in float32, source coordinate
    max(scale * (d + 0.5) - 0.5, 0) rounded once to float32, lambda1 = src - floor(src), lambda0 = 1 - lambda1."""
    scale = float(np.float32(in_size) / np.float32(out_size))
    d = torch.arange(out_size, dtype=torch.float64)
    src = (scale * (d + 0.5) - 0.5).float().clamp(min=0)
    i0 = src.long()
    lam1 = (src - i0.float()).clamp(0, 1)
    lam0 = 1 - lam1
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    count = torch.bincount(i0, minlength=in_size)
    start = torch.cumsum(count, 0) - count
    end = start + count - 1
    cells = torch.arange(in_size)
    nxt = torch.where(cells < in_size - 1, cells + 1, cells)
    return {"i0": i0, "i1": i1, "lam0": lam0, "lam1": lam1, "count": count, "start": start, "end": end,
            "next": nxt}


def _count_true(mask: torch.Tensor) -> torch.Tensor:
    """Number of True values per row of a bool tensor (N, L) -> (N,) int64.

    `bool.sum()` widens every element; here 8 bools are added at once as the bytes of an int64 word (at most
    255 words per partial sum so that no byte lane carries into the next), which is ~10x faster.
    """
    n, length = mask.shape
    group = 8 * 255
    padded = -(-length // group) * group
    buf = torch.zeros(n, padded, dtype=torch.bool)
    buf[:, :length] = mask
    words = buf.view(torch.uint8).view(torch.int64).view(n, -1, 255).sum(-1)
    return words.view(torch.uint8).view(n, -1).sum(-1, dtype=torch.int64)


class _Upsampler:
    """Everything the generator needs from `F.interpolate(low, out_hw, bilinear) > t` for low-res logits
    (M, h, w), computed as cheaply as possible.

    `screen` gives, for every candidate, bounds on the pixel counts above two thresholds (for the stability
    score) and the exact box of the mask; `exact` upsamples for real (a few masks at a time) for the candidates
    that need exact counts or their full mask. Screening works on low-res "cells": every output pixel (y, x)
    interpolates the four corners of one cell (i0(y) | i1(y)) x (j0(x) | j1(x)); a cell whose corners are all
    clearly above a threshold has all its pixels above it, one whose corners are all below has none, and only
    the remaining cells are uncertain. A box needs the exact values of the few uncertain cells beyond the
    extent of the certain ones; they are interpolated with the float32 arithmetic of PyTorch's CPU kernel,
    which is verified bit for bit against `F.interpolate` once per size pair (the kernel's rounding depends on
    how it was compiled); where it does not match, and for SAM 1's two-step resize, screening upsamples
    everything instead.
    """

    # Interpolation rounding is a few float32 ulps of the largest corner; this margin is ~30 ulps.
    REL_TOL = 4e-6
    # Masks screened at once (each step holds several (CHUNK, h, w) temporaries).
    CHUNK = 96
    # Masks upsampled at once by `exact` (CHUNK_DENSE x H x W float32).
    CHUNK_DENSE = 8
    # Beyond this many uncertain cells to interpolate, upsampling the whole mask is cheaper.
    MAX_CELLS = 4096
    # Box sides are settled by examining candidate cell lines from the outside in, this many lines per side
    # and round; after ROUNDS rounds, all remaining candidates at once.
    LINES_PER_ROUND = 2
    ROUNDS = 4

    # formula per (in_hw, out_hw), found once per process
    _formulas: ClassVar[dict[tuple, str | None]] = {}

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], spec, fast: bool = True) -> None:
        self.in_hw, self.out_hw, self.spec = tuple(in_hw), tuple(out_hw), spec
        self.formula: str | None = None
        if fast and spec.resize == "square":
            self.rows = _axis_tables(in_hw[0], out_hw[0])
            self.cols = _axis_tables(in_hw[1], out_hw[1])
            self.R = int(self.rows["count"].max())
            self.C = int(self.cols["count"].max())
            # float32 sums of pixel counts stay exact below 2**24
            dtype = torch.float64 if out_hw[0] * out_hw[1] >= 1 << 24 else torch.float32
            self.row_w, self.col_w = self.rows["count"].to(dtype), self.cols["count"].to(dtype)
            self.nonempty = (self.rows["count"][:, None] > 0) & (self.cols["count"][None, :] > 0)
            self.all_nonempty = bool(self.nonempty.all())
            key = (self.in_hw, self.out_hw)
            if key not in self._formulas:
                self._formulas[key] = self._matching_formula()
            self.formula = self._formulas[key]

    @property
    def cells(self) -> bool:
        """Whether screening works on cells (else it upsamples every mask)."""
        return self.formula is not None

    # ------------------------------------------------------------------ exact interpolation of cells
    def _combine(self, p: torch.Tensor, wp: torch.Tensor, q: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        if self.formula == "plain":
            return p * wp + q * wq
        return _fma(p, wp, q * wq)

    def _all_values(self, low: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The interpolated values (M, len(rows), W) of the given output rows with the cell arithmetic."""
        r, c = self.rows, self.cols
        t = self._combine(low[:, :, c["i0"]], c["lam0"], low[:, :, c["i1"]], c["lam1"])
        return self._combine(t[:, r["i0"][rows], :], r["lam0"][rows, None], t[:, r["i1"][rows], :],
                             r["lam1"][rows, None])

    def _matching_formula(self) -> str | None:
        """"fma" or "plain": the rounding with which the cell arithmetic reproduces F.interpolate bit for bit
        on this machine (it depends on how the kernel was compiled), checked on a random input over every
        column and a spread of rows (about 2 million pixels at most); None if neither does."""
        gen = torch.Generator().manual_seed(0)
        low = torch.randn(1, *self.in_hw, generator=gen) * 8
        ref = F.interpolate(low[:, None], self.out_hw, mode="bilinear", align_corners=False)[:, 0]
        height, width = self.out_hw
        rows = torch.arange(0, height, max(1, height * width >> 21))
        for formula in ("fma", "plain"):
            self.formula = formula
            if torch.equal(self._all_values(low, rows), ref[:, rows]):
                return formula
        return None

    def _cell_pixels(self, low: torch.Tensor, m: torch.Tensor, i: torch.Tensor, j: torch.Tensor):
        """Exact values (K, R, C) of the pixels of cells (m, i, j), their rows ys (K, R) and columns xs (K, C),
        and which of the R x C slots are real pixels (K, R, C)."""
        r, c = self.rows, self.cols
        i1, j1 = r["next"][i], c["next"][j]
        ar_r, ar_c = torch.arange(self.R), torch.arange(self.C)
        ys = (r["start"][i][:, None] + ar_r).clamp(max=self.out_hw[0] - 1)
        xs = (c["start"][j][:, None] + ar_c).clamp(max=self.out_hw[1] - 1)
        b0, b1 = c["lam0"][xs], c["lam1"][xs]
        t0 = self._combine(low[m, i, j][:, None], b0, low[m, i, j1][:, None], b1)
        t1 = self._combine(low[m, i1, j][:, None], b0, low[m, i1, j1][:, None], b1)
        v = self._combine(t0[:, None, :], r["lam0"][ys][:, :, None], t1[:, None, :], r["lam1"][ys][:, :, None])
        valid = (ar_r < r["count"][i][:, None])[:, :, None] & (ar_c < c["count"][j][:, None])[:, None, :]
        return v, ys, xs, valid

    def _corner_range(self, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Min and max (M, h, w) of each cell's four corners, and a per-mask rounding margin (M, 1, 1): every
        pixel of cell (i, j) interpolates to a value in [cmin - tol, cmax + tol]. Cells without pixels (when
        downsampling) get -inf so that they never count."""
        h, w = self.in_hw
        cmin, cmax = torch.empty_like(low), torch.empty_like(low)
        flat = low.reshape(low.shape[0], h * w)
        for out, op in ((cmin, torch.minimum), (cmax, torch.maximum)):
            # Pairwise along x then along y; the last row/column pairs with itself (i1 = i0 at the border).
            # Along x on the flattened rows (contiguous, so vectorised), then the last column is fixed.
            tmp = torch.empty_like(flat)
            op(flat[:, :-1], flat[:, 1:], out=tmp[:, :-1])
            tmp = tmp.view_as(low)
            tmp[:, :, -1] = low[:, :, -1]
            op(tmp[:, :-1], tmp[:, 1:], out=out[:, :-1])
            out[:, -1] = tmp[:, -1]
        if not self.all_nonempty:
            cmin[:, ~self.nonempty] = -math.inf
            cmax[:, ~self.nonempty] = -math.inf
        flat = low.flatten(1)
        magnitude = torch.maximum(flat.amax(-1), -flat.amin(-1))
        tol = magnitude.mul_(self.REL_TOL).add_(1e-30)[:, None, None]
        return cmin, cmax, tol

    def _weighted(self, cells: torch.Tensor) -> torch.Tensor:
        """Number of output pixels in the selected cells (M, h, w) bool -> (M,) int64."""
        counts = (cells.to(self.row_w.dtype) @ self.col_w) @ self.row_w
        return counts.round().long()

    # ------------------------------------------------------------------ screening
    def screen(self, low: torch.Tensor, thresholds: Sequence[float],
               box_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds (M, T, 2) int64 [min, max] on the number of pixels above each threshold, and exact XYXY boxes
        (M, 4) int64 of the pixels above `box_threshold` (as `masks_to_boxes`: inclusive, zeros when empty)."""
        n = low.shape[0]
        counts = torch.zeros(n, len(thresholds), 2, dtype=torch.long)
        boxes = torch.zeros(n, 4, dtype=torch.long)
        if not self.cells:
            for s in range(0, n, self.CHUNK_DENSE):
                c, b, _ = self._dense(low[s:s + self.CHUNK_DENSE], thresholds, box_threshold, False)
                counts[s:s + self.CHUNK_DENSE] = c[:, :, None]
                boxes[s:s + self.CHUNK_DENSE] = b
            return counts, boxes
        for s in range(0, n, self.CHUNK):
            chunk = low[s:s + self.CHUNK]
            cmin, cmax, tol = self._corner_range(chunk)
            for k, t in enumerate(thresholds):
                # sure: all pixels above t; maybe: some pixel possibly above t
                counts[s:s + self.CHUNK, k, 0] = self._weighted(cmin > t + tol)
                counts[s:s + self.CHUNK, k, 1] = self._weighted(cmax > t - tol)
            boxes[s:s + self.CHUNK] = self._boxes(chunk, cmin, cmax, tol, box_threshold)
        return counts, boxes

    def _boxes(self, low: torch.Tensor, cmin: torch.Tensor, cmax: torch.Tensor, tol: torch.Tensor,
               t: float) -> torch.Tensor:
        r, c = self.rows, self.cols
        h, w = self.in_hw
        big = max(self.out_hw) + 1
        ar_h, ar_w = torch.arange(h), torch.arange(w)
        sure_t = t + tol[:, :, 0]
        rows_any = cmin.amax(-1) > sure_t  # (M, h): cell rows holding a cell surely above t
        cols_any = cmin.amax(-2) > sure_t  # (M, w)
        i_first = torch.where(rows_any, ar_h, h).amin(-1)
        i_last = torch.where(rows_any, ar_h, -1).amax(-1)
        j_first = torch.where(cols_any, ar_w, w).amin(-1)
        j_last = torch.where(cols_any, ar_w, -1).amax(-1)
        # [y_first, y_last, x_first, x_last] of the sure cells
        ext = [torch.where(i_first < h, r["start"][i_first.clamp(max=h - 1)], big),
               torch.where(i_last >= 0, r["end"][i_last.clamp(min=0)], -1),
               torch.where(j_first < w, c["start"][j_first.clamp(max=w - 1)], big),
               torch.where(j_last >= 0, c["end"][j_last.clamp(min=0)], -1)]
        # Cells inside the sure cells' extent cannot move the box. Outside it there is no sure cell; the cells
        # there that may hold a pixel above t are examined line by line from the outside in, for each side
        # (rows above, rows below, columns left, columns right): the first line holding such a pixel settles
        # that side, so usually a line or two per side is interpolated.
        maybe_t = t - tol
        row_maybe, col_maybe = cmax.amax(-1) > maybe_t[:, :, 0], cmax.amax(-2) > maybe_t[:, :, 0]
        sides = [row_maybe & (ar_h < i_first[:, None]), row_maybe & (ar_h > i_last[:, None]),
                 col_maybe & (ar_w < j_first[:, None]), col_maybe & (ar_w > j_last[:, None])]
        ranks = []  # 1, 2, ... on a side's candidate lines from the outside in, 0 elsewhere
        for k, lines in enumerate(sides):
            if k % 2:  # bottom / right count from the end
                ranks.append((torch.cumsum(lines.flip(-1).int(), -1) * lines.flip(-1)).flip(-1))
            else:
                ranks.append(torch.cumsum(lines.int(), -1) * lines)
        totals = torch.stack([rk.amax(-1) for rk in ranks], 1)  # (M, 4) candidate lines per side
        done = totals == 0
        heavy = torch.zeros(low.shape[0], dtype=torch.bool)
        per_round = self.LINES_PER_ROUND
        for rnd in range(self.ROUNDS + 1):
            act = (~done).any(1).nonzero().flatten()
            if act.numel() == 0:
                break
            last = rnd == self.ROUNDS
            lo_rank, hi_rank = rnd * per_round, (h + w if last else (rnd + 1) * per_round)
            sel = [(rk[act] > lo_rank) & (rk[act] <= hi_rank) & ~done[act, k:k + 1] for k, rk in enumerate(ranks)]
            cells = (cmax[act] > maybe_t[act]) & ((sel[0] | sel[1])[:, :, None] | (sel[2] | sel[3])[:, None, :])
            if last:  # whatever remains, unless upsampling the whole mask is cheaper
                many = cells.flatten(1).sum(-1) > self.MAX_CELLS
                heavy[act[many]] = True
                cells[many] = False
            m, i, j = cells.nonzero(as_tuple=True)
            found = torch.zeros(act.numel(), 4, dtype=torch.int32)
            if m.numel():
                gm = act[m]
                v, ys, xs, valid = self._cell_pixels(low, gm, i, j)
                pos = (v > t) & valid
                has_y, has_x = pos.any(-1), pos.any(-2)
                ext[0].scatter_reduce_(0, gm, torch.where(has_y, ys, big).amin(-1), "amin")
                ext[1].scatter_reduce_(0, gm, torch.where(has_y, ys, -1).amax(-1), "amax")
                ext[2].scatter_reduce_(0, gm, torch.where(has_x, xs, big).amin(-1), "amin")
                ext[3].scatter_reduce_(0, gm, torch.where(has_x, xs, -1).amax(-1), "amax")
                hit = has_y.any(-1)
                for k in range(4):
                    on_side = sel[k][m, i] if k < 2 else sel[k][m, j]
                    found[:, k].index_add_(0, m, (hit & on_side).int())
            done[act] |= (found > 0) | (totals[act] <= hi_rank)
        boxes = torch.stack([ext[2], ext[0], ext[3], ext[1]], -1)
        boxes[ext[1] < 0] = 0
        if heavy.any():
            idx = heavy.nonzero().flatten()
            for s in range(0, len(idx), self.CHUNK_DENSE):
                sel_idx = idx[s:s + self.CHUNK_DENSE]
                boxes[sel_idx] = self._dense(low[sel_idx], [], t, False)[1]
        return boxes

    # ------------------------------------------------------------------ exact
    def _full(self, low: torch.Tensor) -> torch.Tensor:
        return postprocess_masks(low[:, None], self.out_hw, self.spec)[:, 0]

    def _dense(self, low: torch.Tensor, thresholds: Sequence[float], box_threshold: float,
               want_masks: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Upsample a few masks for real: counts (M, T), boxes (M, 4) and optionally the masks (M, H, W)."""
        full = self._full(low)
        flat = full.flatten(1)
        counts = torch.stack([_count_true(flat > t) for t in thresholds], 1) if len(thresholds) else \
            torch.zeros(low.shape[0], 0, dtype=torch.long)
        rows = full.amax(-1) > box_threshold
        cols = full.amax(-2) > box_threshold
        masks = full > box_threshold if want_masks else None
        boxes = torch.stack([_first(cols), _first(rows), _last(cols), _last(rows)], -1)
        boxes[~rows.any(-1)] = 0
        return counts, boxes, masks

    def exact(self, low: torch.Tensor, thresholds: Sequence[float], mask_threshold: float,
              want_masks: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Exact counts (M, T) above each threshold, and the bool masks (M, H, W) above `mask_threshold` when
        `want_masks`, by upsampling CHUNK_DENSE masks at a time."""
        counts, masks = [], []
        for s in range(0, low.shape[0], self.CHUNK_DENSE):
            c, _, m = self._dense(low[s:s + self.CHUNK_DENSE], thresholds, mask_threshold, want_masks)
            counts.append(c)
            masks.append(m)
        if not counts:
            return torch.zeros(0, len(thresholds), dtype=torch.long), \
                torch.zeros(0, *self.out_hw, dtype=torch.bool) if want_masks else None
        return torch.cat(counts), torch.cat(masks) if want_masks else None


def _first(present: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last dim (0 where none)."""
    return torch.where(present, torch.arange(present.shape[-1]), present.shape[-1]).amin(-1) % present.shape[-1]


def _last(present: torch.Tensor) -> torch.Tensor:
    return torch.where(present, torch.arange(present.shape[-1]), -1).amax(-1).clamp(min=0)


# ---------------------------------------------------------------------------------------------- the generator
def _fill_low_res(low: torch.Tensor, threshold: float, max_area: float) -> torch.Tensor:
    """SAM 2's `max_hole_area` / `max_sprinkle_area` post-processing on low-res logits (M, h, w): background
    8-connected components of at most `max_area` pixels become `threshold + 10`, foreground ones
    `threshold - 10` (both found on the input logits)."""
    out = low.clone()
    for k, mask in enumerate(low.numpy()):
        for fg, value in ((mask <= threshold, threshold + 10.0), (mask > threshold, threshold - 10.0)):
            _, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
            small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_area) + 1
            if small.size:
                sel = torch.from_numpy(np.isin(labels, small))
                out[k][sel] = value
    return out


class AutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts (SAM 2's automatic mask generator).

    Arguments and defaults are those of the official `SAM2AutomaticMaskGenerator`:

    points_per_side: grid points along each side (points_per_side**2 prompts on the whole image); exclusive
        with point_grids. points_per_batch: prompts decoded at once. pred_iou_thresh: keep masks whose
        predicted IoU is above this (0 disables). stability_score_thresh: keep masks whose stability score
        (IoU of the masks binarised at mask_threshold +/- stability_score_offset) is at least this (0 disables).
        mask_threshold: logit threshold of the masks. box_nms_thresh: box IoU above which a mask with a lower
        predicted IoU is a duplicate. crop_n_layers: also run on 2**i x 2**i overlapping crops for i = 1..n;
        crop_nms_thresh: duplicates across crops (masks of smaller crops win); crop_overlap_ratio: overlap of
        the first layer's crops, as a fraction of the short side; crop_n_points_downscale_factor: layer i uses
        points_per_side / factor**i points per side. point_grids: explicit normalised grids (N_i, 2) in [0, 1],
        one per layer. min_mask_region_area: with SAM 2, holes and islands of at most this many pixels are
        removed from the low-resolution masks before upsampling (the image predictor's max_hole_area /
        max_sprinkle_area; see `fill_small_regions`); with SAM 1 models, the SAM 1 post-processing (hole and
        island removal on the full masks, then NMS) runs instead. output_mode: "binary_mask" (HxW bool
        arrays), "uncompressed_rle" or "coco_rle" (compressed COCO RLE with str counts). use_m2m: refine each
        mask once by feeding it back as a mask prompt. multimask_output: 3 masks per point (else 1).

    Extra keyword-only options: progress shows a tqdm progress bar over the point batches of each crop (off
    by default, for library use). fill_small_regions (SAM 2 only): whether min_mask_region_area removes small
    holes and islands from the low-res masks (True, what the official generator does on a GPU with SAM 2's
    CUDA extension), or has no effect (False, the default: the official generator skips the step with a
    warning wherever the extension is missing, CPU included, and the reference outputs were made so; a
    warning says so when min_mask_region_area > 0). fast=False upsamples every candidate to full resolution
    instead of screening at low resolution (same results, slower; for checking). dtype: "bfloat16" / "float16"
    run the image encoder under autocast (as `ImagePredictor(dtype=...)`).

    `generate(image)` returns a list of dicts with keys segmentation, area, bbox (XYWH), predicted_iou,
    point_coords ([[x, y]]), stability_score and crop_box (XYWH), in the official order. After a call,
    `timings` holds the wall seconds spent encoding crops, decoding prompts and post-processing ("encode",
    "decode", "postprocess"; "<stage>_cpu" is the process CPU time, less sensitive to a busy machine), and
    `num_candidates` the number of masks decoded.

    Memory: the low-res logits (256 KB each) of the candidates of one crop that pass the filters are kept
    until the crop's NMS; the kept masks are stored bit-packed (H * W / 8 bytes each) until output.
    """

    def __init__(self, model: nn.Module, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: str = "binary_mask", use_m2m: bool = False,
                 multimask_output: bool = True, *, progress: bool = False, fill_small_regions: bool = False,
                 fast: bool = True, dtype: str | torch.dtype | None = None) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side and point_grids must be given (got "
                             f"points_per_side={points_per_side!r} and point_grids "
                             f"{'set' if point_grids is not None else 'None'}); pass points_per_side=None with "
                             "point_grids")
        if not isinstance(crop_n_layers, (int, np.integer)) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be an integer >= 0, got {crop_n_layers!r}")
        if not isinstance(crop_n_points_downscale_factor, (int, np.integer)) or crop_n_points_downscale_factor < 1:
            raise ValueError(f"crop_n_points_downscale_factor must be an integer >= 1, got "
                             f"{crop_n_points_downscale_factor!r}")
        if points_per_side is not None:
            if not isinstance(points_per_side, (int, np.integer)) or points_per_side < 1:
                raise ValueError(f"points_per_side must be a positive integer, got {points_per_side!r}")
            if int(points_per_side / crop_n_points_downscale_factor ** crop_n_layers) < 1:
                raise ValueError(f"points_per_side={points_per_side} leaves no points in crop layer {crop_n_layers}"
                                 f" with crop_n_points_downscale_factor={crop_n_points_downscale_factor}")
            self.point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                           crop_n_points_downscale_factor)
        else:
            grids = []
            for k, grid in enumerate(point_grids):
                g = np.asarray(grid, dtype=np.float64)
                if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] == 0:
                    raise ValueError(f"point_grids[{k}] must be an array (N, 2) of (x, y) in [0, 1], got shape "
                                     f"{g.shape}")
                if not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
                    raise ValueError(f"point_grids[{k}] must hold normalised coordinates in [0, 1]")
                grids.append(g)
            if len(grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids has {len(grids)} grid(s) but crop_n_layers={crop_n_layers} needs "
                                 f"{crop_n_layers + 1} (one per layer, layer 0 = the whole image)")
            self.point_grids = grids
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")
        if not isinstance(points_per_batch, (int, np.integer)) or points_per_batch < 1:
            raise ValueError(f"points_per_batch must be a positive integer, got {points_per_batch!r}")
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("stability_score_offset", stability_score_offset), ("mask_threshold", mask_threshold),
                            ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh),
                            ("crop_overlap_ratio", crop_overlap_ratio)):
            if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area!r}")
        for name in ("encode_prompts", "decode", "image_embedding", "input_spec"):
            if not hasattr(model, name):
                raise TypeError(f"model must be a masklet SAM / SAM 2 model (from masklet.models.build.load_model),"
                                f" got {type(model).__name__} without {name!r}")
        if min_mask_region_area > 0 and not fill_small_regions and getattr(model, "family", "sam2") == "sam2":
            warnings.warn("min_mask_region_area has no effect unless fill_small_regions=True: the official SAM 2 "
                          "generator removes small regions with a CUDA extension and skips the step without it, "
                          "so by default masklet reproduces its CPU results", UserWarning, stacklevel=2)
        self.model = model
        self.predictor = ImagePredictor(model, mask_threshold=mask_threshold, dtype=dtype)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.progress = progress
        self.fill_small_regions = fill_small_regions
        self.fast = fast
        self.timings: dict[str, float] = {}
        self.num_candidates = 0

    @property
    def is_sam2(self) -> bool:
        return getattr(self.model, "family", "sam2") == "sam2"

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Add the wall and CPU seconds of the block to timings[name] and timings[name + "_cpu"]."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - wall
            self.timings[name + "_cpu"] = self.timings.get(name + "_cpu", 0.0) + time.process_time() - cpu

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def generate(self, image: ImageLike) -> list[dict[str, Any]]:
        """Masks for the whole image (HxWx3 uint8 RGB array, PIL image or path).

        Returns one dict per mask: segmentation ((H, W) bool array, or an RLE dict per output_mode), area (int
        pixels), bbox [x, y, w, h] (ints, inclusive pixel extent: w = x_last - x_first), predicted_iou,
        point_coords [[x, y]] (the prompt, original pixels), stability_score and crop_box [x, y, w, h].
        """
        if isinstance(image, torch.Tensor):
            raise TypeError("generate expects an HxWx3 uint8 RGB numpy array, a PIL image or a path, not a "
                            "torch.Tensor; use tensor.permute(1, 2, 0).cpu().numpy() for a (3, H, W) uint8 tensor")
        image = as_rgb_uint8(image)
        self.timings = {k: 0.0 for k in ("encode", "decode", "postprocess", "encode_cpu", "decode_cpu",
                                         "postprocess_cpu")}
        self.num_candidates = 0
        data = self._generate_masks(image)
        with self._stage("postprocess"):
            if not self.is_sam2 and self.min_mask_region_area > 0:
                data = self._postprocess_small_regions(data, self.min_mask_region_area,
                                                       max(self.box_nms_thresh, self.crop_nms_thresh))
            return self._records(data)

    # ------------------------------------------------------------------ stages
    def _generate_masks(self, image: np.ndarray) -> dict[str, Any]:
        orig_hw = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
        parts = [self._process_crop(image, box, layer, orig_hw) for box, layer in zip(crop_boxes, layer_idxs)]
        with self._stage("postprocess"):
            data = _cat(parts)
            if len(crop_boxes) > 1 and len(data["iou"]):
                # prefer masks from smaller crops
                scores = 1 / box_area(data["crop_boxes"])
                keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]),
                                   self.crop_nms_thresh)
                data = _filter(data, keep)
        return data

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer_idx: int,
                      orig_hw: tuple[int, int]) -> dict[str, Any]:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_hw = crop.shape[:2]
        with self._stage("encode"):
            self.predictor.set_image(crop)

        # (x, y) pixels of the crop, float64 as the official code
        points_for_image = self.point_grids[layer_idx] * np.array(crop_hw)[None, ::-1]
        batches = range(0, len(points_for_image), self.points_per_batch)
        if self.progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc=f"crop {crop_box}", unit="batch", leave=False)
        upsampler = None
        parts = []
        for s in batches:
            part, upsampler = self._process_batch(points_for_image[s:s + self.points_per_batch], crop_hw, crop_box,
                                                  orig_hw, upsampler)
            parts.append(part)
        self.predictor.reset_predictor()

        with self._stage("postprocess"):
            lows = [part.pop("low") for part in parts]  # concatenated only for the survivors
            data = _cat(parts)
            keep = batched_nms(data["boxes"].float(), data["iou"], torch.zeros_like(data["boxes"][:, 0]),
                               self.box_nms_thresh)
            data = _filter(data, keep)
            # Only the survivors are upsampled for real: exact stability counts and the full mask.
            thr, off = self.mask_threshold, self.stability_score_offset
            counts, masks = upsampler.exact(_gather(lows, keep), [thr + off, thr - off], thr, want_masks=True)
            data["stability"] = _stability(counts.to(torch.int32))
            oh, ow = orig_hw
            if (x0, y0, x1, y1) != (0, 0, ow, oh):
                masks = F.pad(masks, (x0, ow - x1, y0, oh - y1), value=False)
            data["masks"] = _PackedMasks.from_bool(masks)
            data["boxes"] = data["boxes"] + torch.tensor([x0, y0, x0, y0], dtype=data["boxes"].dtype)
            data["points"] = data["points"] + torch.tensor([x0, y0], dtype=torch.float64)
            data["crop_boxes"] = torch.tensor([crop_box] * len(data["iou"]), dtype=torch.long).reshape(-1, 4)
        return data

    def _to_model_frame(self, points: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
        """Crop pixels (N, 2) float64 -> model-input pixels (N, 2) float64, with the official arithmetic
        (normalised by the crop size, times the input resolution for SAM 2; the resize factor for SAM 1)."""
        spec = self.predictor.spec
        h, w = crop_hw
        out = points.clone()
        if spec.resize == "square":
            out[:, 0] = out[:, 0] / w
            out[:, 1] = out[:, 1] / h
            return out * spec.size
        rh, rw = resized_hw(h, w, spec)
        out[:, 0] = out[:, 0] * (rw / w)
        out[:, 1] = out[:, 1] * (rh / h)
        return out

    def _decode(self, points: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
                multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder on the current image for B prompts: points (B, 1, 2) model-input pixels, labels (B, 1) int32,
        mask_input (B, 1, h, w) or None -> low-res logits (B, C, h, w) float32 on the CPU, *not* clamped (the
        official generator upsamples the unclamped logits), and predicted IoU (B, C)."""
        model, device = self.model, self.predictor.device
        features = self.predictor._images[0].features
        if model.dtype != torch.float32:
            points = points.to(model.dtype)
            mask_input = None if mask_input is None else mask_input.to(model.dtype)
        sparse, dense = model.encode_prompts(points.to(device), labels.to(device), None,
                                             None if mask_input is None else mask_input.to(device))
        out = model.decode(model.image_embedding(features), features.high_res, sparse, dense, multimask)
        return out.masks.float().cpu(), out.iou.float().cpu()

    def _process_batch(self, points: np.ndarray, crop_hw: tuple[int, int], crop_box: list[int],
                       orig_hw: tuple[int, int], upsampler: _Upsampler | None) -> tuple[dict[str, Any], _Upsampler]:
        with self._stage("decode"):
            points_t = torch.as_tensor(points, dtype=torch.float64)
            in_points = self._to_model_frame(points_t, crop_hw)
            labels = torch.ones(in_points.shape[0], 1, dtype=torch.int32)
            low, iou = self._decode(in_points[:, None, :], labels, None, self.multimask_output)
            n_out = low.shape[1]
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            points_t = points_t.repeat_interleave(n_out, dim=0)
            self.num_candidates += low.shape[0]
            if self.use_m2m:
                low, iou = self._refine_with_m2m(self._to_model_frame(points_t, crop_hw), low.clamp(-32.0, 32.0))

        with self._stage("postprocess"):
            data: dict[str, Any] = {"low": low, "iou": iou, "points": points_t}
            if self.pred_iou_thresh > 0.0:
                data = _filter(data, data["iou"] > self.pred_iou_thresh)
            if self.is_sam2 and self.fill_small_regions and self.min_mask_region_area > 0:
                data["low"] = _fill_low_res(data["low"], self.mask_threshold, self.min_mask_region_area)
            if upsampler is None:
                upsampler = _Upsampler(tuple(low.shape[-2:]), crop_hw, self.predictor.spec, self.fast)
            thr, off = self.mask_threshold, self.stability_score_offset
            # Exact boxes, and bounds on the stability counts when they filter, without upsampling (see
            # _Upsampler); the survivors of NMS get exact counts later.
            filtering = self.stability_score_thresh > 0.0
            bounds, data["boxes"] = upsampler.screen(data["low"], [thr + off, thr - off] if filtering else [], thr)
            if filtering:
                data = self._filter_stability(data, bounds, upsampler)
            oh, ow = orig_hw
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, ow, oh])
            if not bool(keep.all()):
                data = _filter(data, keep)
        return data, upsampler

    def _filter_stability(self, data: dict[str, Any], bounds: torch.Tensor, upsampler: _Upsampler) -> dict[str, Any]:
        """Keep the masks whose stability score is >= the threshold, from count bounds (M, 2, 2).

        stability = inter / union (int32 -> float32 division, as the official code) is monotone in both counts,
        so its value lies between those of the bounds; only masks whose range straddles the threshold are
        upsampled for exact counts."""
        t = self.stability_score_thresh
        b32 = bounds.to(torch.int32)
        lowest = _stability(torch.stack([b32[:, 0, 0], b32[:, 1, 1]], 1))
        highest = _stability(torch.stack([b32[:, 0, 1], b32[:, 1, 0]], 1))
        exact = (bounds[:, :, 0] == bounds[:, :, 1]).all(1)
        # NaN (0 / 0) compares False both ways: exact NaN fails the filter, as in the official code
        undecided = ~exact & ~(lowest >= t) & (highest >= t)
        if bool(undecided.any()):
            idx = undecided.nonzero().flatten()
            thr, off = self.mask_threshold, self.stability_score_offset
            counts, _ = upsampler.exact(data["low"][idx], [thr + off, thr - off], thr, want_masks=False)
            lowest[idx] = _stability(counts.to(torch.int32))
        return _filter(data, lowest >= t)

    def _refine_with_m2m(self, in_points: torch.Tensor, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-decode each mask (M, h, w) with its own point (M, 2) and itself as mask prompt, single-mask output
        (the official `refine_with_m2m`, batched by points_per_batch) -> logits (M, h, w), IoU (M,)."""
        masks, ious = [], []
        labels = torch.ones(in_points.shape[0], 1, dtype=torch.int32)
        for s in range(0, in_points.shape[0], self.points_per_batch):
            e = s + self.points_per_batch
            low, iou = self._decode(in_points[s:e, None, :], labels[s:e], low_res[s:e, None], False)
            masks.append(low[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(masks), torch.cat(ious)

    @staticmethod
    def _postprocess_small_regions(data: dict[str, Any], min_area: int, nms_thresh: float) -> dict[str, Any]:
        """SAM 1's post-processing: fill small holes, then remove small islands of each mask; masks that changed
        get their boxes recomputed and lose ties in a new NMS against unchanged ones."""
        n = len(data["iou"])
        if n == 0:
            return data
        masks = data["masks"].to_bool()
        new_masks, scores = [], []
        for mask in masks:
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(mask)
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        new = torch.from_numpy(np.stack(new_masks))
        boxes = masks_to_boxes(new)
        keep = batched_nms(boxes.float(), torch.tensor(scores), torch.zeros_like(boxes[:, 0]), nms_thresh)
        changed = [int(i) for i in keep if scores[int(i)] == 0.0]
        if changed:
            replaced = masks.copy()
            for i in changed:
                replaced[i] = new_masks[i]
                data["boxes"][i] = boxes[i]
            data["masks"] = _PackedMasks.from_bool(torch.from_numpy(replaced))
        return _filter(data, keep)

    def _records(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        n = len(data["iou"])
        if n == 0:
            return []
        packed: _PackedMasks = data["masks"]
        areas = packed.areas()
        if self.output_mode == "binary_mask":
            segmentations = list(packed.to_bool())
        else:
            segmentations = []
            for s in range(0, n, 16):
                rles = masks_to_rle_uncompressed(torch.from_numpy(packed.to_bool(slice(s, s + 16))))
                if self.output_mode == "coco_rle":
                    rles = [_compress_rle(r) for r in rles]
                segmentations.extend(rles)
        boxes = box_xyxy_to_xywh(data["boxes"]).tolist()
        crops = box_xyxy_to_xywh(data["crop_boxes"]).tolist()
        ious, stab, points = data["iou"].tolist(), data["stability"].tolist(), data["points"].tolist()
        return [{"segmentation": segmentations[k], "area": int(areas[k]), "bbox": boxes[k],
                 "predicted_iou": ious[k], "point_coords": [points[k]], "stability_score": stab[k],
                 "crop_box": crops[k]} for k in range(n)]


# ---------------------------------------------------------------------------------------------- helpers
_POPCOUNT = np.array([k.bit_count() for k in range(256)], dtype=np.uint8)


class _PackedMasks:
    """Full-image bool masks (N, H, W) stored 8 per byte until output (the official generator keeps RLEs)."""

    def __init__(self, bits: np.ndarray, hw: tuple[int, int]) -> None:
        self.bits, self.hw = bits, tuple(hw)

    @classmethod
    def from_bool(cls, masks: torch.Tensor) -> _PackedMasks:
        masks = torch.as_tensor(masks)
        hw = tuple(masks.shape[-2:])
        return cls(np.packbits(masks.reshape(masks.shape[0], hw[0] * hw[1]).numpy(), axis=1), hw)

    def __len__(self) -> int:
        return self.bits.shape[0]

    def select(self, index) -> _PackedMasks:
        return _PackedMasks(self.bits[np.asarray(index)], self.hw)

    def to_bool(self, index: slice | None = None) -> np.ndarray:
        bits = self.bits if index is None else self.bits[index]
        h, w = self.hw
        return np.unpackbits(bits, axis=1, count=h * w).reshape(-1, h, w).view(bool)

    def areas(self) -> np.ndarray:
        """Pixels per mask (N,) int64, by a popcount table over the packed bytes."""
        return _POPCOUNT[self.bits].sum(1, dtype=np.int64) if len(self) else np.zeros(0, dtype=np.int64)

    @staticmethod
    def cat(parts: list[_PackedMasks]) -> _PackedMasks:
        return _PackedMasks(np.concatenate([p.bits for p in parts]), parts[0].hw)


def _stability(counts: torch.Tensor) -> torch.Tensor:
    """Stability score from int32 counts (M, 2) [above thr + offset, above thr - offset], with the official
    arithmetic (int32 / int32 -> float32; 0 / 0 is NaN)."""
    return counts[:, 0] / counts[:, 1]


def _filter(data: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """Rows of every field kept by a bool mask or an index tensor (order of the index)."""
    keep = torch.as_tensor(keep)
    if keep.dtype == torch.bool:
        keep = keep.nonzero().flatten()
    out = {}
    for key, value in data.items():
        out[key] = value.select(keep.numpy()) if isinstance(value, _PackedMasks) else value[keep]
    return out


def _gather(parts: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Rows `index` (K,) of the concatenation of `parts` (each (N_i, ...)), without concatenating them."""
    sizes = torch.tensor([len(p) for p in parts])
    starts = torch.cumsum(sizes, 0) - sizes
    which = torch.searchsorted(starts, index, right=True) - 1
    rows = [parts[int(p)][int(k - starts[p])] for p, k in zip(which, index)]
    return torch.stack(rows) if rows else parts[0].new_zeros(0, *parts[0].shape[1:])


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        out[key] = _PackedMasks.cat(values) if isinstance(values[0], _PackedMasks) else torch.cat(values)
    return out


def _compress_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": encode_counts_string(rle["counts"])}
