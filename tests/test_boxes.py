"""Box utilities: conversions, IoU, NMS (against a scalar port of torchvision's CPU kernel), mask boxes."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from masklet.utils import boxes as B
from masklet.utils.boxes import (
    batched_nms,
    box_area,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_xywh,
    is_box_near_crop_edge,
    masks_to_boxes,
    nms,
)


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, idxs=None) -> list[int]:
    """Pair-by-pair greedy NMS written like torchvision's CPU kernel: float32 scalar arithmetic for
    areas/intersection/IoU, `ovr > thr` compared in double, stable descending sort."""
    dt = np.float32 if boxes.dtype == torch.float32 else np.float64
    b = boxes.numpy().astype(dt)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    areas = [(b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) for i in range(len(b))]
    suppressed = set()
    keep = []
    for pi, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pi + 1:]:
            if j in suppressed or (idxs is not None and idxs[i] != idxs[j]):
                continue
            w = max(dt(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(dt(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = dt(w * h)
            with np.errstate(divide="ignore", invalid="ignore"):
                ovr = dt(inter / dt(areas[i] + areas[j] - inter))
            if float(ovr) > thr:
                suppressed.add(j)
    return keep


def random_boxes(n: int, seed: int, scale: float = 100.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 3 + 0.5
    return torch.cat([xy, xy + wh], 1).to(dtype), torch.rand(n, generator=g).to(dtype)


# ----------------------------------------------------------------------------- conversions / IoU


def test_xyxy_xywh_round_trip_and_values():
    xyxy = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 0.0, 0.0]])
    xywh = box_xyxy_to_xywh(xyxy)
    assert torch.equal(xywh, torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(box_xywh_to_xyxy(xywh), xyxy)
    # arbitrary leading dims
    batch = torch.rand(2, 3, 4)
    assert torch.allclose(box_xywh_to_xyxy(box_xyxy_to_xywh(batch)), batch)


def test_box_area_and_hand_computed_iou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 11.0, 11.0], [0.0, 0.0, 1.0, 4.0]])
    assert torch.equal(box_area(a), torch.tensor([4.0, 4.0]))
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    expected = torch.tensor(
        [
            # [0,0,2,2] vs: quarter overlap 1/(4+4-1); itself; disjoint; a 1x4 column sharing a 1x2 strip
            # -> 2/(4+4-2)
            [1 / 7, 1.0, 0.0, 2 / 6],
            # [0,0,4,1] vs: overlap [1,1]-[3,1] is empty (height 0); overlap 2x1 -> 2/(4+4-2);
            # disjoint; cross of 4x1 and 1x4 -> 1/(4+4-1)
            [0.0, 2 / 6, 0.0, 1 / 7],
        ]
    )
    assert torch.allclose(iou, expected)
    # touching edges only -> 0, integer boxes are promoted
    assert box_iou(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[1, 0, 2, 1]])).item() == 0.0


# ----------------------------------------------------------------------------- NMS


def test_nms_empty():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.long and keep.shape == (0,)
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert keep.dtype == torch.long and keep.shape == (0,)


def test_nms_chain_is_greedy_not_transitive():
    # Chain a-b-c: a overlaps b, b overlaps c, a does not overlap c. Greedy NMS keeps a, drops b, and
    # then c survives because the box that overlapped it (b) was already suppressed.
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]  # IoU(a,b) = IoU(b,c) = 50/150 = 1/3
    # Same chain but b scores highest: b suppresses both neighbours.
    assert nms(boxes, torch.tensor([0.8, 0.9, 0.7]), 0.3).tolist() == [1]
    # Threshold above 1/3: nothing is suppressed; output by decreasing score.
    assert nms(boxes, torch.tensor([0.1, 0.9, 0.5]), 0.34).tolist() == [1, 2, 0]


def test_nms_threshold_is_strict():
    # [0,0,4,2] contains [0,0,4,1]: IoU = 4 / (8 + 4 - 4) = 0.5, exactly representable.
    boxes = torch.tensor([[0.0, 0, 4, 2], [0, 0, 4, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]  # 0.5 > 0.5 is false: kept
    assert nms(boxes, scores, 0.4999).tolist() == [0]


def test_nms_threshold_compared_in_double():
    # IoU = 7/10 computed in float32 is 0.699999988; torchvision compares it with the double 0.7 and keeps
    # the box. A float32 comparison would round 0.7 to the same float and also keep it; the case that
    # differs is a threshold just below the float32 value, which rounds up to it in float32.
    boxes = torch.tensor([[0.0, 0, 10, 1], [0, 0, 7, 1]])
    scores = torch.tensor([0.9, 0.8])
    iou32 = box_iou(boxes[:1], boxes[1:]).item()
    thr = np.nextafter(iou32, 0.0)  # a double strictly below the float32 IoU ...
    assert np.float32(thr) == np.float32(iou32)  # ... that float32 cannot tell apart from it
    assert nms(boxes, scores, float(thr)).tolist() == [0]  # ovr > thr in double: suppressed
    assert nms(boxes, scores, iou32).tolist() == [0, 1]


def test_nms_identical_boxes_and_ties():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4)
    # equal scores: the stable sort keeps the first index
    assert nms(boxes, torch.tensor([0.5, 0.5, 0.5, 0.5]), 0.5).tolist() == [0]
    assert nms(boxes, torch.tensor([0.1, 0.5, 0.9, 0.5]), 0.99).tolist() == [2]
    # disjoint boxes with tied scores come out in input order
    disjoint = torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]])
    assert nms(disjoint, torch.tensor([0.3, 0.7, 0.3]), 0.5).tolist() == [1, 0, 2]


def test_nms_degenerate_boxes_are_never_suppressed():
    # two identical zero-area boxes: 0/0 = NaN IoU, NaN > thr is false (torchvision keeps both)
    boxes = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, 1]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_nms_matches_reference_kernel(seed, thr):
    boxes, scores = random_boxes(150, seed)
    # inject exact duplicates and tied scores, which stress ordering
    boxes[10] = boxes[3]
    scores[10] = scores[3]
    scores[20:25] = 0.5
    assert nms(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)


def test_nms_float64_matches_reference():
    boxes, scores = random_boxes(100, 7, dtype=torch.float64)
    keep = nms(boxes, scores, 0.45)
    assert keep.tolist() == reference_nms(boxes, scores, 0.45)


def test_nms_row_by_row_path_matches_matrix_path(monkeypatch):
    boxes, scores = random_boxes(300, 11)
    idxs = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(0))
    full = nms(boxes, scores, 0.4)
    full_b = batched_nms(boxes, scores, idxs, 0.4)
    monkeypatch.setattr(B, "_FULL_MATRIX_MAX", 10)
    assert torch.equal(nms(boxes, scores, 0.4), full)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.4), full_b)
    # block boundaries in the matrix path must not matter either
    monkeypatch.setattr(B, "_FULL_MATRIX_MAX", 8192)
    monkeypatch.setattr(B, "_ROW_BLOCK", 7)
    assert torch.equal(nms(boxes, scores, 0.4), full)


def test_batched_nms_separates_categories():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # same box in two categories: both kept; box 2 overlaps box 0 (IoU 0.81) in the same category
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.5).tolist() == [0, 1, 3]
    # all one category equals plain nms
    assert batched_nms(boxes, scores, torch.zeros(4, dtype=torch.long), 0.5).tolist() == nms(boxes, scores, 0.5).tolist()
    # box 2 in category 1 is suppressed by box 1 instead, output ordered by score across categories
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 1, 2]), 0.5).tolist() == [0, 1, 3]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2, 2]), 0.5).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_equals_per_category_nms(seed):
    boxes, scores = random_boxes(200, seed)
    idxs = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(seed))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    expected = []
    for c in idxs.unique().tolist():
        where = torch.nonzero(idxs == c).flatten()
        expected += where[nms(boxes[where], scores[where], 0.5)].tolist()
    expected.sort(key=lambda i: (-scores[i].item(), i))
    assert keep.tolist() == expected
    assert keep.tolist() == reference_nms(boxes, scores, 0.5, idxs.tolist())


def test_nms_3000_boxes_is_fast():
    boxes, scores = random_boxes(3000, 0, scale=1000.0)
    nms(boxes[:10], scores[:10], 0.7)  # warm-up
    t = time.perf_counter()
    keep = nms(boxes, scores, 0.7)
    elapsed = time.perf_counter() - t
    assert 0 < len(keep) < 3000
    assert elapsed < 1.0, f"nms of 3000 boxes took {elapsed:.2f}s"
    # a keep-set property that must hold regardless of implementation: no two kept boxes overlap > thr
    iou = box_iou(boxes[keep], boxes[keep])
    iou.fill_diagonal_(0)
    assert float(iou.max()) <= 0.7


# ----------------------------------------------------------------------------- masks_to_boxes


def test_masks_to_boxes_hand_made_and_empty():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 2:5, 1:4] = True  # rows 2..4, cols 1..3
    masks[1, 5, 7] = True  # single pixel in the bottom-right corner
    # masks[2] stays empty
    out = masks_to_boxes(masks)
    assert out.dtype == torch.long
    assert out.tolist() == [[1, 2, 3, 4], [7, 5, 7, 5], [0, 0, 0, 0]]
    # two separate blobs: the box spans both
    m = torch.zeros(10, 10, dtype=torch.bool)
    m[0, 9] = True
    m[9, 0] = True
    assert masks_to_boxes(m).tolist() == [0, 0, 9, 9]
    # leading dims are kept; zero-size input
    assert masks_to_boxes(masks.reshape(1, 3, 6, 8)).shape == (1, 3, 4)
    assert masks_to_boxes(torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 4)


def test_masks_to_boxes_random_against_numpy():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(20, 13, 17, generator=g) > 0.97
    out = masks_to_boxes(masks)
    for m, box in zip(masks.numpy(), out.tolist()):
        ys, xs = np.nonzero(m)
        expected = [0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max(), ys.max()]
        assert box == [int(v) for v in expected]


# ----------------------------------------------------------------------------- crop edges


def test_is_box_near_crop_edge():
    orig = [0, 0, 1000, 800]
    crop = [500, 0, 1000, 400]  # right-top crop: its left edge (x=500) and bottom edge (y=400) are internal
    boxes = torch.tensor(
        [
            [5.0, 100, 100, 200],  # left side at crop x=5 -> image x=505, near internal crop edge
            [100.0, 100, 200, 200],  # well inside
            [100.0, 0, 200, 50],  # touches top, which is also the image top -> forgiven
            [300.0, 100, 500, 200],  # right side at image x=1000: crop edge == image edge -> forgiven
            [100.0, 300, 200, 395],  # bottom at y=395, internal crop edge within atol
            [100.0, 300, 200, 379],  # 21 px away from the bottom: outside atol=20
        ]
    )
    assert is_box_near_crop_edge(boxes, crop, orig).tolist() == [True, False, False, False, True, False]
    assert is_box_near_crop_edge(boxes, crop, orig, atol=25.0).tolist()[5] is True
    # the full-image crop has no internal edges
    assert not is_box_near_crop_edge(boxes, orig, orig).any()
