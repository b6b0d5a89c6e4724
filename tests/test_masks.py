"""Mask post-processing: small regions (SAM AMG), hole filling on logits (SAM 2 video), polygons, IoU."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from masklet.utils.masks import (
    fill_holes,
    largest_polygon,
    mask_iou,
    mask_to_polygons,
    polygons_to_mask,
    remove_small_regions,
)


def square_with_holes() -> np.ndarray:
    """40x40 foreground square inside a 60x60 image with a 2x2 hole (4 px) and a 10x10 hole (100 px)."""
    m = np.zeros((60, 60), bool)
    m[10:50, 10:50] = True
    m[15:17, 15:17] = False  # small hole
    m[30:40, 30:40] = False  # large hole
    return m


def disk(h: int = 80, w: int = 90, cy: int = 40, cx: int = 45, r: int = 25) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def l_shape() -> np.ndarray:
    m = np.zeros((50, 60), bool)
    m[5:45, 5:15] = True  # vertical bar
    m[35:45, 5:50] = True  # foot
    return m


# ----------------------------------------------------------------------------- remove_small_regions


def test_holes_small_filled_large_kept():
    m = square_with_holes()
    out, changed = remove_small_regions(m, area_thresh=50, mode="holes")
    assert changed
    assert out[15:17, 15:17].all()  # 4 px hole filled
    assert not out[30:40, 30:40].any()  # 100 px hole kept
    assert not out[0, :].any()  # outer background (large) untouched
    expected = m.copy()
    expected[15:17, 15:17] = True
    assert np.array_equal(out, expected)
    # threshold is strict: a 4 px hole survives area_thresh=4, is filled at 5
    assert not remove_small_regions(m, 4, "holes")[1]
    assert remove_small_regions(m, 5, "holes")[0][15, 15]
    # a larger threshold fills the big hole too
    assert remove_small_regions(m, 101, "holes")[0][30:40, 30:40].all()


def test_holes_are_8_connected():
    # Two 1-px background pixels touching diagonally form ONE 2-px hole with 8-connectivity.
    m = np.ones((7, 7), bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False  # big outer background
    m[2, 2] = m[3, 3] = False
    out, changed = remove_small_regions(m, 2, "holes")
    assert not changed  # the diagonal pair is 2 px, not below 2
    out, changed = remove_small_regions(m, 3, "holes")
    assert changed and out[2, 2] and out[3, 3]


def test_islands_removed_and_largest_kept_when_all_small():
    m = np.zeros((50, 50), bool)
    m[5:25, 5:25] = True  # 400 px
    m[40:42, 40:43] = True  # 6 px island
    m[30, 5] = True  # 1 px island
    out, changed = remove_small_regions(m, 10, "islands")
    assert changed
    expected = np.zeros_like(m)
    expected[5:25, 5:25] = True
    assert np.array_equal(out, expected)
    # all components below the threshold: only the largest (6 px) survives
    small = np.zeros((20, 20), bool)
    small[1:3, 1:4] = True  # 6 px
    small[10:12, 10:12] = True  # 4 px
    out, changed = remove_small_regions(small, 100, "islands")
    assert changed
    assert out.sum() == 6 and out[1:3, 1:4].all()
    # nothing small: unchanged, same object
    out, changed = remove_small_regions(m, 1, "islands")
    assert not changed and out is m
    # 8-connectivity: diagonal neighbours are one island of 2 px
    d = np.zeros((5, 5), bool)
    d[1, 1] = d[2, 2] = True
    assert not remove_small_regions(d, 2, "islands")[1]


def test_remove_small_regions_empty_and_bad_mode():
    empty = np.zeros((8, 8), bool)
    out, changed = remove_small_regions(empty, 10, "islands")
    assert not changed and not out.any()
    # the whole background is one 64 px "hole" candidate: below 100 it is filled, as SAM does
    out, changed = remove_small_regions(empty, 100, "holes")
    assert changed and out.all()
    with pytest.raises(ValueError):
        remove_small_regions(empty, 10, "specks")


# ----------------------------------------------------------------------------- fill_holes


def test_fill_holes_on_logits():
    m = square_with_holes()
    logits = torch.from_numpy(np.where(m, 5.0, -5.0).astype(np.float32))
    batch = torch.stack([logits, -logits])[:, None]  # (2, 1, 60, 60); the second is the inverted mask
    out = fill_holes(batch, max_area=50)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    # mask 0: the 4 px hole becomes 0.1, the 100 px hole and the outer background keep their logits
    assert torch.all(out[0, 0, 15:17, 15:17] == 0.1)
    assert torch.all(out[0, 0, 30:40, 30:40] == -5.0)
    assert torch.all(out[0, 0, 0] == -5.0)
    changed = out[0, 0] != batch[0, 0]
    assert int(changed.sum()) == 4
    # mask 1 (inverted): its background is the ring (1,600 - 104 px) and the two former holes are now
    # foreground; no background component is <= 50 px, so nothing changes
    assert torch.equal(out[1], batch[1])
    # max_area is inclusive (<=): the 100 px hole is filled at exactly 100
    out100 = fill_holes(batch[:1], max_area=100)
    assert torch.all(out100[0, 0, 30:40, 30:40] == 0.1)
    assert torch.equal(fill_holes(batch[:1], max_area=99)[0, 0, 30:40, 30:40], batch[0, 0, 30:40, 30:40])


def test_fill_holes_threshold_is_logit_le_zero_and_8_connected():
    logits = torch.full((1, 1, 9, 9), 3.0)
    logits[0, 0, 4, 4] = 0.0  # exactly 0 counts as background (score <= 0)
    logits[0, 0, 1, 1] = -2.0
    logits[0, 0, 2, 2] = -1.0  # diagonal neighbour of (1,1): one 2-px hole
    out = fill_holes(logits, max_area=1)
    assert out[0, 0, 4, 4] == pytest.approx(0.1)
    assert out[0, 0, 1, 1] == -2.0 and out[0, 0, 2, 2] == -1.0  # 2 px > max_area 1
    out = fill_holes(logits, max_area=2)
    assert out[0, 0, 1, 1] == pytest.approx(0.1) and out[0, 0, 2, 2] == pytest.approx(0.1)
    # foreground values are never touched; max_area <= 0 is a no-op
    assert torch.all(out[logits > 0] == 3.0)
    assert fill_holes(logits, 0) is logits


def test_fill_holes_float64_and_validation():
    logits = -torch.ones(2, 1, 5, 5, dtype=torch.float64)
    out = fill_holes(logits, max_area=25)  # the whole 25 px background is one small component
    assert out.dtype == torch.float64 and torch.all(out == 0.1)
    with pytest.raises(ValueError):
        fill_holes(torch.zeros(2, 5, 5), 3)


# ----------------------------------------------------------------------------- polygons


@pytest.mark.parametrize("simplify", [True, False])
@pytest.mark.parametrize("make", [disk, l_shape], ids=["disk", "L"])
def test_polygon_round_trip(make, simplify):
    m = make()
    polys = mask_to_polygons(m, simplify=simplify)
    assert len(polys) == 1
    poly = polys[0]
    assert poly.dtype == np.float32 and poly.ndim == 2 and poly.shape[1] == 2
    # x within width, y within height (catches swapped axes on the non-square images)
    assert poly[:, 0].max() < m.shape[1] and poly[:, 1].max() < m.shape[0]
    back = polygons_to_mask(polys, *m.shape)
    assert back.shape == m.shape and back.dtype == bool
    assert mask_iou(back, m) > 0.95
    if make is l_shape:
        # a rectilinear shape is reproduced exactly; SIMPLE keeps only the corners of the pixel-centre trace
        # (6 corners, with the concave one cut by a one-pixel diagonal step: 7 points) instead of ~200 points
        assert np.array_equal(back, m)
        if simplify:
            assert 6 <= len(poly) <= 8
        else:
            assert len(poly) > 150


def test_polygons_multiple_components_and_largest():
    m = np.zeros((40, 40), bool)
    m[2:6, 2:6] = True  # 16 px
    m[10:30, 10:35] = True  # 500 px
    m[38, 38] = True  # single pixel: no polygon
    polys = mask_to_polygons(m)
    assert len(polys) == 2
    big = largest_polygon(m)
    only_big = np.zeros_like(m)
    only_big[10:30, 10:35] = True
    assert np.array_equal(polygons_to_mask([big], 40, 40), only_big)
    assert largest_polygon(np.zeros((5, 5), bool)).shape == (0, 2)
    # union of all polygons restores all but the single pixel
    restored = polygons_to_mask(polys, 40, 40)
    expected = m.copy()
    expected[38, 38] = False
    assert np.array_equal(restored, expected)
    # torch input works
    assert len(mask_to_polygons(torch.from_numpy(m))) == 2


def test_polygons_to_mask_overlap_is_union():
    a = np.array([[0, 0], [9, 0], [9, 9], [0, 9]], np.float32)
    b = a + 5
    out = polygons_to_mask([a, b], 20, 20)
    assert out[7, 7]  # in the overlap: must not cancel out
    assert out.sum() == 100 + 100 - 25
    assert not polygons_to_mask([], 4, 4).any()


# ----------------------------------------------------------------------------- mask_iou


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert mask_iou(a, b) == 1.0  # two empty masks are identical
    assert mask_iou(a, b, empty=0.0) == 0.0
    a[:2] = True  # 8 px
    assert mask_iou(a, b) == 0.0
    b[1:3] = True  # 8 px, overlap row 1 = 4 px, union 12
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert isinstance(mask_iou(a, b), float)
    batch = mask_iou(np.stack([a, a, b]), b)
    assert batch.shape == (3,) and np.allclose(batch, [1 / 3, 1 / 3, 1.0])
    assert mask_iou(torch.from_numpy(a), torch.from_numpy(a)) == 1.0


def test_cv2_connectivity_constant_sanity():
    # the area column used above; guards against an OpenCV change of the stats layout
    _, _, stats, _ = cv2.connectedComponentsWithStats(np.ones((3, 4), np.uint8), connectivity=8)
    assert stats[1, cv2.CC_STAT_AREA] == 12
