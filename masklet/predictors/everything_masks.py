"""Segment everything, part 2: the candidate masks' post-processing (stability scores, exact low-resolution
screening and upsampling, small-region filling, bit-packed storage and the per-candidate tables).

Bilinear upsampling gives every full-resolution pixel a value between the min and max of the four logits of
one low-res "cell"; `_Upsampler` uses that to get exact boxes and stability-count bounds without upsampling
(see the module docstring of masklet.predictors.everything).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..utils.rle import encode_counts_string
from .image import postprocess_masks


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
