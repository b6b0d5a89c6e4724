"""Automatic mask generator: parity with the official SAM 2 generator, its building blocks, and the fast
low-resolution screening against plain upsampling."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_file, load_fixture, reference_state_dict

from masklet.data.images import read_image
from masklet.data.preprocess import SAM2_INPUT
from masklet.models.build import load_model
from masklet.predictors.everything import (
    AutomaticMaskGenerator,
    _count_true,
    _fill_low_res,
    _Upsampler,
    build_all_layer_point_grids,
    build_point_grid,
    calculate_stability_score,
    generate_crop_boxes,
)
from masklet.utils.rle import coco_rle_to_mask, rle_area, rle_uncompressed_to_mask

# ---------------------------------------------------------------------------------------------- parity
_RUNS: dict = {}


@pytest.fixture(scope="module")
def model():
    return load_model(reference_state_dict())


@pytest.fixture(scope="module")
def truck():
    return read_image(data_file("images/truck.jpg"))


def _run_case(name: str, model, image):
    """Run the generator once per reference case, keeping its records and the internal mask data."""
    if name not in _RUNS:
        case = load_fixture("sam2.1_hiera_t_amg_case.pt")["cases"][name]
        with warnings.catch_warnings():
            # grid8_crop1 sets min_mask_region_area, which (as the official generator on CPU) does nothing
            warnings.simplefilter("ignore", UserWarning)
            gen = AutomaticMaskGenerator(model, **case["kwargs"])
        captured = {}
        original = gen._generate_masks

        def spy(img):
            captured["data"] = original(img)
            return captured["data"]

        gen._generate_masks = spy
        records = gen.generate(image)
        _RUNS[name] = (case, records, captured["data"], gen)
    return _RUNS[name]


# The crop case encodes 5 crops and decodes 128 prompts (about a minute on a 2-core CPU): worth it, it is the
# only parity check of the crop path.
@pytest.mark.parametrize("name", ["grid16", "grid8_crop1"])
def test_parity_with_official(name, model, truck):
    case, records, _, _ = _run_case(name, model, truck)
    h, w = truck.shape[:2]
    ref = case["masks"]
    assert len(records) == len(ref)
    for got, exp in zip(records, ref):
        assert set(got) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                            "crop_box"}
        assert np.abs(np.asarray(got["bbox"]) - np.asarray(exp["bbox_xywh"])).max() <= 1
        assert abs(got["area"] - exp["area"]) <= 1e-4 * h * w
        assert got["predicted_iou"] == pytest.approx(exp["predicted_iou"], abs=1e-3)
        assert got["stability_score"] == pytest.approx(exp["stability_score"], abs=1e-3)
        assert got["point_coords"] == [list(map(float, p)) for p in exp["point_coords"]]
        assert got["crop_box"] == [int(v) for v in exp["crop_box_xywh"]]
        packed = np.asarray(exp["segmentation_packed"])
        seg = np.unpackbits(packed)[: h * w].reshape(h, w).astype(bool)
        assert got["segmentation"].shape == (h, w) and got["segmentation"].dtype == bool
        assert (got["segmentation"] != seg).sum() <= 1e-4 * h * w
        assert got["area"] == int(got["segmentation"].sum())


@pytest.mark.parametrize("mode", ["uncompressed_rle", "coco_rle"])
def test_output_modes_decode_to_the_binary_masks(mode, model, truck):
    case, records, data, _ = _run_case("grid16", model, truck)
    gen = AutomaticMaskGenerator(model, **case["kwargs"], output_mode=mode)
    gen._generate_masks = lambda img: data  # same masks, other encoding
    encoded = gen.generate(truck)
    assert len(encoded) == len(records)
    decode = rle_uncompressed_to_mask if mode == "uncompressed_rle" else coco_rle_to_mask
    for rec, enc in zip(records, encoded):
        seg = enc["segmentation"]
        assert seg["size"] == list(truck.shape[:2])
        assert isinstance(seg["counts"], list if mode == "uncompressed_rle" else str)
        np.testing.assert_array_equal(decode(seg), rec["segmentation"])
        assert rle_area(seg) == rec["area"] == enc["area"]
        assert {k: v for k, v in enc.items() if k != "segmentation"} == \
            {k: v for k, v in rec.items() if k != "segmentation"}


# ---------------------------------------------------------------------------------------------- building blocks
def test_point_grid():
    grid = build_point_grid(4)
    side = [0.125, 0.375, 0.625, 0.875]
    assert grid.shape == (16, 2) and grid.dtype == np.float64
    np.testing.assert_allclose(grid[:4], [[x, 0.125] for x in side])  # rows of constant y, x varying fastest
    np.testing.assert_allclose(grid[::4, 1], side)
    layers = build_all_layer_point_grids(16, 2, 2)
    assert [len(g) for g in layers] == [256, 64, 16]
    assert build_point_grid(1).tolist() == [[0.5, 0.5]]


def test_crop_boxes_one_layer():
    # short side 1200: overlap int(512/1500 * 1200) = 409; crops ceil((409 + 1800) / 2) = 1105 wide and
    # ceil((409 + 1200) / 2) = 805 high, starting at 0 and 1105 - 409 = 696 (x), 805 - 409 = 396 (y)
    boxes, layers = generate_crop_boxes((1200, 1800), 1, 512 / 1500)
    assert boxes == [[0, 0, 1800, 1200], [0, 0, 1105, 805], [0, 396, 1105, 1200], [696, 0, 1800, 805],
                     [696, 396, 1800, 1200]]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = generate_crop_boxes((100, 60), 2, 0.5)
    assert layers == [0] + [1] * 4 + [2] * 16
    assert boxes[0] == [0, 0, 60, 100]


def test_stability_score_and_count():
    logits = torch.tensor([[[2.0, 0.5], [-0.5, -2.0]], [[-3.0, -3.0], [-3.0, -3.0]]])
    score = calculate_stability_score(logits, 0.0, 1.0)
    assert score[0].item() == pytest.approx(1 / 3)
    assert math.isnan(score[1].item())  # 0 / 0 as the official code
    mask = torch.rand(5, 3001) > 0.3
    assert torch.equal(_count_true(mask), mask.sum(-1))


# ---------------------------------------------------------------------------------------------- validation
class _DummyModel(torch.nn.Module):
    """Just enough of a model for the generator's plumbing; decoding is replaced in the tests that use it."""

    family = "sam2"
    input_spec = SAM2_INPUT
    device = torch.device("cpu")
    dtype = torch.float32

    def encode_prompts(self, *args):  # pragma: no cover - replaced
        raise NotImplementedError

    decode = image_embedding = encode_prompts


@pytest.mark.parametrize("kwargs, message", [
    ({"points_per_side": 8, "point_grids": [build_point_grid(8)]}, "exactly one of points_per_side"),
    ({"points_per_side": None}, "exactly one of points_per_side"),
    ({"output_mode": "polygon"}, "unknown output_mode"),
    ({"points_per_side": 0}, "points_per_side must be a positive integer"),
    ({"points_per_batch": 0}, "points_per_batch"),
    ({"crop_n_layers": -1}, "crop_n_layers"),
    ({"points_per_side": None, "point_grids": [build_point_grid(4)], "crop_n_layers": 1}, "one per layer"),
    ({"points_per_side": None, "point_grids": [np.ones((3, 3))]}, r"\(N, 2\)"),
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh"),
    ({"min_mask_region_area": -1}, "min_mask_region_area"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutomaticMaskGenerator(_DummyModel(), **kwargs)


def test_min_mask_region_area_warns_without_fill():
    with pytest.warns(UserWarning, match="fill_small_regions"):
        AutomaticMaskGenerator(_DummyModel(), min_mask_region_area=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutomaticMaskGenerator(_DummyModel(), min_mask_region_area=10, fill_small_regions=True)


def test_model_and_image_errors():
    with pytest.raises(TypeError, match="masklet SAM"):
        AutomaticMaskGenerator(torch.nn.Linear(2, 2))
    gen = AutomaticMaskGenerator(_DummyModel(), points_per_side=2)
    with pytest.raises(TypeError, match="numpy array"):
        gen.generate([[0, 1], [2, 3]])
    with pytest.raises(TypeError, match="torch.Tensor"):
        gen.generate(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        gen.generate(np.zeros((8, 8, 3), dtype=np.float32))


# ---------------------------------------------------------------------------------------------- fast == plain
def _random_logits(n: int, hw=(256, 256), seed: int = 0) -> torch.Tensor:
    """Mixed logits: noisy, smooth and steep blobs, plateaus exactly at the thresholds, empty and full masks."""
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    for k in range(n):
        kind = k % 6
        if kind == 0:
            x = torch.randn(h, w, generator=gen) * 2
        elif kind == 1:
            x = F.avg_pool2d(torch.randn(1, 1, h, w, generator=gen), 9, 1, 4)[0, 0] * 30
        elif kind == 2:
            cy, cx, r = (torch.rand(3, generator=gen) * torch.tensor([h, w, h / 2])).tolist()
            x = (r - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()) * (0.5 + k % 5)
        elif kind == 3:
            x = torch.randint(-1, 2, (h, w), generator=gen).float()  # exact threshold values -1, 0, 1
            x[: h // 2] = 0.0
        elif kind == 4:
            x = torch.full((h, w), -20.0)
            x[h // 3, w // 4] = 5.0  # a single hot cell
        else:
            x = torch.full((h, w), 40.0) - (torch.rand(h, w, generator=gen) < 0.001).float() * 80
        out.append(x)
    return torch.stack(out)


def _plain_stats(low, out_hw, thresholds, box_threshold):
    full = F.interpolate(low[:, None], out_hw, mode="bilinear", align_corners=False)[:, 0]
    counts = torch.stack([(full > t).flatten(1).sum(-1) for t in thresholds], 1)
    from masklet.utils.boxes import masks_to_boxes
    return counts, masks_to_boxes(full > box_threshold), full > box_threshold


@pytest.mark.parametrize("out_hw", [(300, 450), (1200, 1800), (200, 120), (257, 1000)])
def test_screening_matches_upsampling(out_hw):
    low = _random_logits(12, seed=out_hw[0])
    thresholds = [1.0, -1.0]
    counts, boxes, masks = _plain_stats(low, out_hw, thresholds, 0.0)
    up = _Upsampler((256, 256), out_hw, SAM2_INPUT)
    assert up.cells, "the cell arithmetic should reproduce F.interpolate on this machine"
    bounds, fast_boxes = up.screen(low, thresholds, 0.0)
    assert torch.equal(fast_boxes, boxes)
    assert bool(((bounds[..., 0] <= counts) & (counts <= bounds[..., 1])).all())
    exact, fast_masks = up.exact(low, thresholds, 0.0, want_masks=True)
    assert torch.equal(exact, counts) and torch.equal(fast_masks, masks)


class _FakeDecoder:
    """Deterministic stand-in for the model's decoder: logits (B, C, 64, 64) shaped by each prompt point (a
    blob around it, plus noise for some) and IoU predictions from the point, so that the generator's
    filtering and NMS have something to do."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        s = torch.arange(size, dtype=torch.float32) * (1024 / size)
        self.yy, self.xx = torch.meshgrid(s, s, indexing="ij")

    def __call__(self, points, labels, mask_input, multimask):
        out, ious = [], []
        for p in points[:, 0].float():
            seed = int(p[0] * 7 + p[1] * 13) % 10_000
            g = torch.Generator().manual_seed(seed)
            dist = ((self.xx - p[0]) ** 2 + (self.yy - p[1]) ** 2).sqrt()
            masks = [(r - dist) / 2 for r in (80.0, 200.0, 400.0)]
            masks[seed % 3] = masks[seed % 3] + torch.randn(self.size, self.size, generator=g) * 2
            out.append(torch.stack(masks if multimask else masks[:1]))
            ious.append(torch.rand(3 if multimask else 1, generator=g) * 0.4 + 0.6)
        low = torch.stack(out)
        if mask_input is not None:  # m2m: blend in the prompt mask
            low = low + 0.5 * F.interpolate(mask_input.float(), (self.size, self.size), mode="bilinear")
        return low, torch.stack(ious)


@pytest.mark.parametrize("kwargs", [
    {},
    {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
    {"stability_score_thresh": 0.5, "pred_iou_thresh": 0.7, "use_m2m": True, "box_nms_thresh": 0.5},
    {"min_mask_region_area": 30, "fill_small_regions": True, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.8},
])
def test_fast_path_equals_plain_path(kwargs):
    image = np.zeros((150, 225, 3), dtype=np.uint8)
    results = []
    for fast in (True, False):
        gen = AutomaticMaskGenerator(_DummyModel(), points_per_side=4, points_per_batch=8, fast=fast,
                                     **kwargs)
        gen.predictor.set_image = lambda img: None
        gen._decode = _FakeDecoder()
        results.append(gen.generate(image))
    fast_out, plain_out = results
    assert len(fast_out) > 0 and len(fast_out) == len(plain_out)
    for a, b in zip(fast_out, plain_out):
        np.testing.assert_array_equal(a.pop("segmentation"), b.pop("segmentation"))
        assert a == b


def _straightforward(image, fake, points_per_side=4, points_per_batch=8, pred_iou_thresh=0.8,
                     stability_score_thresh=0.95, offset=1.0, box_nms_thresh=0.7, crop_n_layers=0,
                     crop_nms_thresh=0.7, downscale=1, use_m2m=False):
    """The official generator's steps written out plainly on full-resolution logits (a test oracle)."""
    from masklet.utils.boxes import batched_nms, is_box_near_crop_edge, masks_to_boxes

    h, w = image.shape[:2]
    grids = build_all_layer_point_grids(points_per_side, crop_n_layers, downscale)
    crops, layers = generate_crop_boxes((h, w), crop_n_layers, 512 / 1500)
    rows = []  # (mask, box, iou, stability, point, crop)
    for crop, layer in zip(crops, layers):
        x0, y0, x1, y1 = crop
        ch, cw = y1 - y0, x1 - x0
        pts = torch.as_tensor(grids[layer] * np.array([cw, ch]))
        cand = []
        for s in range(0, len(pts), points_per_batch):
            p = pts[s:s + points_per_batch]
            model_pts = p / torch.tensor([cw, ch], dtype=torch.float64) * 1024
            low, iou = fake(model_pts[:, None], None, None, True)
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            p = p.repeat_interleave(3, 0)
            if use_m2m:
                ref_low, ref_iou = [], []
                mp = p / torch.tensor([cw, ch], dtype=torch.float64) * 1024
                for t in range(0, len(p), points_per_batch):
                    lo, io = fake(mp[t:t + points_per_batch, None], None,
                                  low[t:t + points_per_batch, None].clamp(-32, 32), False)
                    ref_low.append(lo[:, 0])
                    ref_iou.append(io[:, 0])
                low, iou = torch.cat(ref_low), torch.cat(ref_iou)
            full = F.interpolate(low[:, None], (ch, cw), mode="bilinear", align_corners=False)[:, 0]
            keep = iou > pred_iou_thresh if pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
            full, iou, p = full[keep], iou[keep], p[keep]
            stab = calculate_stability_score(full, 0.0, offset)
            keep = stab >= stability_score_thresh if stability_score_thresh > 0 else torch.ones_like(keep[keep])
            full, iou, p, stab = full[keep], iou[keep], p[keep], stab[keep]
            masks = full > 0
            boxes = masks_to_boxes(masks)
            keep = ~is_box_near_crop_edge(boxes, crop, [0, 0, w, h])
            for k in keep.nonzero().flatten().tolist():
                cand.append((masks[k], boxes[k], iou[k], stab[k], p[k]))
        if not cand:
            continue
        boxes = torch.stack([c[1] for c in cand])
        keep = batched_nms(boxes.float(), torch.stack([c[2] for c in cand]), torch.zeros(len(cand)), box_nms_thresh)
        for k in keep.tolist():
            m, b, io, st, p = cand[k]
            full = torch.zeros(h, w, dtype=torch.bool)
            full[y0:y1, x0:x1] = m
            rows.append((full, b + torch.tensor([x0, y0, x0, y0]), io, st, p + torch.tensor([x0, y0]), crop))
    if len(crops) > 1 and rows:
        boxes = torch.stack([r[1] for r in rows])
        areas = torch.tensor([(c[2] - c[0]) * (c[3] - c[1]) for *_, c in rows])
        keep = batched_nms(boxes.float(), 1 / areas, torch.zeros(len(rows)), crop_nms_thresh)
        rows = [rows[k] for k in keep.tolist()]
    return rows


@pytest.mark.parametrize("kwargs", [
    {},
    {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
    {"stability_score_thresh": 0.6, "pred_iou_thresh": 0.7, "use_m2m": True, "box_nms_thresh": 0.5},
])
def test_generator_follows_the_official_steps(kwargs):
    image = np.zeros((150, 225, 3), dtype=np.uint8)
    gen = AutomaticMaskGenerator(_DummyModel(), points_per_side=4, points_per_batch=8, **kwargs)
    gen.predictor.set_image = lambda img: None
    gen._decode = _FakeDecoder()
    out = gen.generate(image)
    names = {"crop_n_points_downscale_factor": "downscale"}
    expected = _straightforward(image, _FakeDecoder(), **{names.get(k, k): v for k, v in kwargs.items()})
    assert len(out) == len(expected) > 0
    for rec, (mask, box, iou, stab, point, crop) in zip(out, expected):
        np.testing.assert_array_equal(rec["segmentation"], mask.numpy())
        assert rec["bbox"] == [box[0].item(), box[1].item(), (box[2] - box[0]).item(), (box[3] - box[1]).item()]
        assert rec["area"] == int(mask.sum())
        assert rec["predicted_iou"] == iou.item() and rec["stability_score"] == stab.item()
        assert rec["point_coords"] == [point.tolist()]
        assert rec["crop_box"] == [crop[0], crop[1], crop[2] - crop[0], crop[3] - crop[1]]


def test_sam1_family_postprocesses_small_regions():
    """SAM 1 models: upsampling through the padded input frame, and SAM 1's small-region post-processing
    (holes filled and islands removed on the full masks, boxes recomputed, NMS preferring unchanged masks)."""
    from masklet.data.preprocess import SAM1_INPUT
    from masklet.utils.boxes import masks_to_boxes
    from masklet.utils.masks import remove_small_regions

    class Sam1(_DummyModel):
        family = "sam1"
        input_spec = SAM1_INPUT

    image = np.zeros((150, 225, 3), dtype=np.uint8)
    gen = AutomaticMaskGenerator(Sam1(), points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0,
                                 stability_score_thresh=0.0, min_mask_region_area=400)
    gen.predictor.set_image = lambda img: None
    gen._decode = _FakeDecoder()
    out = gen.generate(image)
    assert out
    for rec in out:
        seg = rec["segmentation"]
        assert not remove_small_regions(seg, 400, "islands")[1] and not remove_small_regions(seg, 400, "holes")[1]
        assert rec["area"] == int(seg.sum())
        x1, y1, x2, y2 = masks_to_boxes(torch.from_numpy(seg)).tolist()
        assert rec["bbox"] == [x1, y1, x2 - x1, y2 - y1]


def test_fill_small_regions_on_low_res():
    low = torch.full((1, 16, 16), -5.0)
    low[0, 2:10, 2:10] = 5.0
    low[0, 5, 5] = -1.0  # a one-pixel hole
    low[0, 13, 13] = 3.0  # a one-pixel island
    out = _fill_low_res(low, 0.0, 2)
    assert out[0, 5, 5] == 10.0 and out[0, 13, 13] == -10.0
    assert torch.equal(out[0, 2:10, 2:10] > 0, torch.ones(8, 8, dtype=torch.bool))
    assert torch.equal(_fill_low_res(low, 0.0, 0.5), low)  # nothing that small
