"""Segment everything, part 1: the point grids and the crop pyramid of the automatic mask generator (the
official `build_all_layer_point_grids` / `generate_crop_boxes`, same arithmetic)."""
from __future__ import annotations

import math
from itertools import product

import numpy as np


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
