"""masklet.val: metrics against hand-computed values, datasets on tiny synthetic folders, report files."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from masklet.val.datasets import InteractiveDataset, VOSDataset, davis_palette, read_palette_png, write_palette_png
from masklet.val.metrics import (
    auc,
    boundary_f_measure,
    boundary_map,
    boundary_precision_recall,
    boundary_tolerance,
    interactive_summary,
    miou_curve,
    next_click,
    noc,
    region_similarity,
    score_sequence,
    statistics,
)
from masklet.val.report import (
    ObjectScores,
    format_table,
    per_object_table,
    per_video_table,
    plot_miou_curve,
    summary,
    write_csv,
    write_json,
    write_vos_report,
)


def square(shape=(20, 20), top=5, left=5, size=5) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top:top + size, left:left + size] = True
    return m


# --------------------------------------------------------------------------------------------------- J

def test_region_similarity_known_overlap():
    a = square((12, 12), 2, 2, 4)
    b = square((12, 12), 2, 4, 4)  # offset by 2 columns: 2x4 = 8 shared pixels, union 16 + 16 - 8 = 24
    assert region_similarity(a, b) == pytest.approx(8 / 24)
    assert region_similarity(a, a) == 1.0
    assert region_similarity(a, np.zeros_like(a)) == 0.0


def test_region_similarity_empty_and_void():
    empty = np.zeros((5, 5), bool)
    assert region_similarity(empty, empty) == 1.0
    a = square((12, 12), 2, 2, 4)
    b = square((12, 12), 2, 4, 4)
    void = np.zeros_like(a)
    void[:, 2:4] = True  # removes the 8 pred-only pixels: intersection 8, union 24 - 8 = 16
    assert region_similarity(a, b, void) == pytest.approx(8 / 16)
    with pytest.raises(ValueError, match="differ in size"):
        region_similarity(a, a[:5])


# --------------------------------------------------------------------------------------------------- F

def test_boundary_map_of_a_square_is_the_ring_grown_up_left():
    # A pixel is boundary when it differs from its right / bottom / bottom-right neighbour, so a filled square
    # rows/cols 5..9 has the 6x6 ring rows/cols 4..9 as boundary: 4 * 6 - 4 = 20 pixels.
    bd = boundary_map(square())
    ring = square(top=4, left=4, size=6) & ~square(top=5, left=5, size=4)
    assert np.array_equal(bd, ring)
    assert bd.sum() == 20
    assert not boundary_map(np.ones((6, 6), bool)).any()  # the image border is not a boundary


def test_boundary_tolerance():
    assert boundary_tolerance((480, 854)) == 8  # 0.008 * 979.6 = 7.84 -> ceil 8
    assert boundary_tolerance((20, 20)) == 1  # 0.008 * 28.3 = 0.23 -> ceil 1
    assert boundary_tolerance((20, 20), 3) == 3
    assert boundary_tolerance((20, 20), 2.5) == 3


def test_boundary_f_identical_and_within_tolerance():
    g = square()
    assert boundary_f_measure(g, g) == 1.0
    # Shifted by 1 px with a 1 px tolerance (20x20 image, default bound_th): every boundary pixel of one ring
    # has a boundary pixel of the other ring in its 4-neighbourhood.
    assert boundary_f_measure(np.roll(g, 1, axis=1), g) == 1.0
    assert boundary_f_measure(np.roll(g, 1, axis=0), g, bound_th=1) == 1.0


def test_boundary_f_shift_beyond_tolerance_hand_computed():
    # gt ring: rows r0..r0+5, cols 0..5 (relative); pred ring shifted right by 3: cols 3..8. Tolerance 1 px:
    # the disk of radius 1 is the pixel plus its 4-neighbours. Predicted boundary pixels that are matched:
    #   top row cols 3,4,5 (on the gt row) and col 6 (next to gt col 5) -> 4; bottom row likewise -> 4;
    #   left column (col 3) only its two ends, which touch the gt top/bottom rows -> 2; right column (col 8) -> 0.
    # Precision = 10 / 20 = 0.5, and recall = 0.5 by mirror symmetry, so F = 2 * 0.25 / 1 = 0.5.
    g = square()
    p = np.roll(g, 3, axis=1)
    assert boundary_precision_recall(p, g, bound_th=1) == (0.5, 0.5)
    assert boundary_f_measure(p, g, bound_th=1) == pytest.approx(0.5)
    # Far apart (10 px): nothing matches.
    assert boundary_f_measure(np.roll(g, 10, axis=1), g, bound_th=1) == 0.0


def test_boundary_f_empty_conventions():
    empty = np.zeros((20, 20), bool)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(square(), empty) == 0.0
    assert boundary_f_measure(empty, square()) == 0.0


def test_score_sequence():
    g = square()
    j, f = score_sequence([g, np.zeros_like(g)], [g, g])
    assert j.tolist() == [1.0, 0.0] and f.tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------------------------------- statistics

def test_statistics_mean_recall_decay():
    v = [1.0, 1.0, 0.9, 0.9, 0.5, 0.5, 0.2, 0.2]
    s = statistics(v)
    assert s["mean"] == pytest.approx(5.2 / 8)
    assert s["recall"] == pytest.approx(4 / 8)  # 0.5 is not > 0.5
    # default = DAVIS toolkit bins. For 8 frames: linspace(1, 8, 5) = 1, 2.75, 4.5, 6.25, 8 -> rounded 1, 3, 5,
    # 6, 8 (4.5 + 1e-10 rounds up) -> edges 0, 2, 4, 5, 7, both ends included: first bin frames 0-2 = [1, 1, .9],
    # last bin frames 5-7 = [.5, .2, .2] -> 2.9 / 3 - 0.9 / 3 = 2 / 3
    assert s["decay"] == pytest.approx(2 / 3)
    assert statistics(v, binning="davis")["decay"] == s["decay"]
    # array_split into [1, 1] [.9, .9] [.5, .5] [.2, .2] -> 1.0 - 0.2
    assert statistics(v, binning="split")["decay"] == pytest.approx(0.8)


def test_statistics_nan_safe():
    s = statistics([1.0, float("nan"), 0.0, 1.0, float("nan"), 0.0, 0.0, 0.0])
    assert s["mean"] == pytest.approx(2 / 6)
    assert s["recall"] == pytest.approx(2 / 6)
    # DAVIS bins for 8 frames (see above): first = frames 0-2 = [1, nan, 0] -> 0.5, last = frames 5-7 -> 0
    assert s["decay"] == pytest.approx(0.5)
    values = [1.0, float("nan"), 0.0, 1.0, float("nan"), 0.0, 0.0, 0.0]
    # split bins: first [1, nan] -> 1, last [0, 0] -> 0
    assert statistics(values, binning="split")["decay"] == pytest.approx(1.0)
    empty = statistics([])
    assert all(math.isnan(x) for x in empty.values())
    assert statistics([0.7])["decay"] == 0.0
    assert statistics([0.7], binning="split")["decay"] == 0.0
    # 2 frames: linspace(1, 2, 5) rounds to 1, 1, 2, 2, 2 -> edges 0, 0, 1, 1, 1: first bin [v0], last bin [v1]
    assert statistics([0.9, 0.6])["decay"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="binning"):
        statistics([0.5], binning="other")


# --------------------------------------------------------------------------------------------------- clicks

def test_next_click_false_negative_blob_is_positive_at_centre():
    gt = square((12, 12), top=2, left=3, size=5)  # rows 2..6, cols 3..7: centre (x=5, y=4)
    assert next_click(np.zeros_like(gt), gt) == (5, 4, True)
    assert next_click(gt, gt, first=True) == (5, 4, True)  # first click ignores the prediction


def test_next_click_false_positive_blob_is_negative():
    gt = square((12, 12), top=0, left=0, size=3)
    pred = gt | square((12, 12), top=6, left=5, size=5)  # FP blob rows 6..10, cols 5..9: centre (x=7, y=8)
    assert next_click(pred, gt) == (7, 8, False)
    assert next_click(gt, gt) is None


def test_next_click_tie_breaking_and_border():
    gt = np.zeros((6, 6), bool)
    gt[:, :] = True  # whole image is FN; the padding makes the border count as boundary
    x, y, pos = next_click(np.zeros_like(gt), gt)
    assert pos and (y, x) == (2, 2)  # the central 2x2 ties; first in row-major order


def test_noc():
    ious = [0.5, 0.7, 0.86, 0.91, 0.95]
    assert noc(ious, 0.85) == 3
    assert noc(ious, 0.90) == 4
    assert noc(ious, 0.99, max_clicks=20) == 20  # never reached: counts as max_clicks
    assert noc(ious, 0.99) == 5
    assert noc(ious, 0.90, max_clicks=3) == 3  # reached only after the click budget


def test_miou_curve_and_auc():
    curve = miou_curve([[0.4, 0.6, 0.8], [0.6, 0.8, 1.0]])
    assert curve.tolist() == pytest.approx([0.5, 0.7, 0.9])
    assert auc(curve) == pytest.approx(0.7)  # mean of mIoU@1..3
    assert miou_curve([[0.5, 1.0], [0.9]]).tolist() == pytest.approx([0.7, 0.95])  # short row keeps its last IoU
    s = interactive_summary([[0.5, 0.7, 0.86], [0.9, 0.95, 0.95]], max_clicks=3, at_clicks=(1,))
    assert s["NoC@85"] == pytest.approx(2.0) and s["NoC@90"] == pytest.approx(2.0)
    assert s["NoF@90"] == 1.0 and s["mIoU@1"] == pytest.approx(0.7)


# --------------------------------------------------------------------------------------------------- datasets

def test_palette_png_round_trip(tmp_path):
    labels = np.array([[0, 1, 2], [3, 255, 17]], dtype=np.uint8)
    path = write_palette_png(tmp_path / "sub" / "m.png", labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        assert img.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    assert np.array_equal(read_palette_png(path), labels)
    assert davis_palette()[255].tolist() == [224, 224, 192]


def _jpg(path, h=24, w=32, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def make_davis(root, videos=("bear", "cat")):
    """bear: 4 frames, object 1 on all, object 2 from frame 2, void on frame 1. cat: 3 frames, frame 0 annotated."""
    for name in videos:
        n = 4 if name == "bear" else 3
        for t in range(n):
            _jpg(root / "JPEGImages" / name / f"{t:05d}.jpg")
        for t in (range(n) if name == "bear" else [0]):
            lab = np.zeros((24, 32), np.uint8)
            lab[2:8, 2 + t:8 + t] = 1
            if name == "bear" and t >= 2:
                lab[12:20, 20:28] = 2
            if name == "bear" and t == 1:
                lab[0, :] = 255
            write_palette_png(root / "Annotations" / name / f"{t:05d}.png", lab)
    return root


def test_vos_dataset(tmp_path):
    ds = VOSDataset(make_davis(tmp_path))
    assert ds.names == ["bear", "cat"] and len(ds) == 2
    bear = ds["bear"]
    assert len(bear) == 4 and bear.frame_names[0] == "00000"
    assert bear.object_ids == [1, 2]
    assert bear.first_appearance(1) == 0 and bear.first_appearance(2) == 2
    assert bear.prompt_frames() == {1: 0, 2: 2}
    lab = bear.read_annotation(2)
    assert lab.dtype == np.uint8 and lab.shape == (24, 32) and set(np.unique(lab)) == {0, 1, 2}
    assert bear.void_mask(1)[0].all() and not bear.gt_mask(1, 1)[0].any()
    assert bear.gt_masks(0)[2].sum() == 0  # not there yet: empty mask
    assert bear.scored_frames() == [1, 2]
    assert bear.read_frame(0).shape == (24, 32, 3)
    cat = ds["cat"]
    assert cat.annotated_frames == [0] and cat.object_ids == [1] and cat.scored_frames() == [0]
    with pytest.raises(KeyError):
        cat.read_annotation(1)
    # an image-set list picks the videos; max_frames truncates (object 2 then never appears)
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("bear\n")
    short = VOSDataset(tmp_path, max_frames=2)
    assert short.names == ["bear"] and len(short[0]) == 2 and short[0].object_ids == [1]
    assert VOSDataset(tmp_path, videos=["cat"], split="train").names == ["cat"]


def test_vos_binary_greyscale_annotation(tmp_path):
    _jpg(tmp_path / "JPEGImages" / "v" / "0.jpg")
    lab = np.zeros((24, 32), np.uint8)
    lab[3:9, 3:9] = 255  # DAVIS 2016 style 0/255 greyscale mask
    (tmp_path / "Annotations" / "v").mkdir(parents=True)
    Image.fromarray(lab).save(tmp_path / "Annotations" / "v" / "0.png")
    v = VOSDataset(tmp_path)[0]
    assert v.object_ids == [1] and v.gt_mask(0, 1).sum() == 36


def test_vos_errors(tmp_path):
    make_davis(tmp_path, videos=("bear",))
    # video with frames but no annotations
    _jpg(tmp_path / "JPEGImages" / "dog" / "00000.jpg")
    with pytest.raises(ValueError, match="dog.*no annotations"):
        VOSDataset(tmp_path)
    assert VOSDataset(tmp_path, videos=["bear"]).names == ["bear"]
    # RGB annotation
    rgb = tmp_path / "Annotations" / "bear" / "00001.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(rgb)
    bear = VOSDataset(tmp_path, videos=["bear"])[0]
    with pytest.raises(ValueError, match="RGB.*palette"):
        bear.read_annotation(1)
    with pytest.raises(ValueError, match="00001.png"):
        bear.validate()
    # size mismatch
    write_palette_png(rgb, np.ones((10, 10), np.uint8))
    with pytest.raises(ValueError, match="frame's size"):
        VOSDataset(tmp_path, videos=["bear"])[0].read_annotation(1)
    # missing Annotations folder
    other = tmp_path / "noann"
    _jpg(other / "JPEGImages" / "a" / "0.jpg")
    with pytest.raises(FileNotFoundError, match="Annotations"):
        VOSDataset(other)


def test_interactive_folder_dataset(tmp_path):
    _jpg(tmp_path / "images" / "a.jpg", 16, 16)
    _jpg(tmp_path / "images" / "b.jpg", 16, 16)
    _jpg(tmp_path / "images" / "c.jpg", 16, 16)  # no mask: skipped
    ids = np.zeros((16, 16), np.uint8)
    ids[1:4, 1:4] = 1
    ids[8:12, 8:12] = 3
    ids[0, :] = 255
    write_palette_png(tmp_path / "masks" / "a.png", ids)
    for k, sl in ((1, np.s_[0:2, 0:2]), (2, np.s_[5:9, 5:9])):
        m = np.zeros((16, 16), np.uint8)
        m[sl] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"b_{k}.png")
    ds = InteractiveDataset(tmp_path)
    assert len(ds) == 2 and [p.name for p in ds.skipped] == ["c.jpg"]
    (pa, ma), (pb, mb) = list(ds)
    assert pa.name == "a.jpg" and [int(m.sum()) for m in ma] == [9, 16]
    assert pb.name == "b.jpg" and [int(m.sum()) for m in mb] == [4, 16]


def test_interactive_coco_polygons(tmp_path):
    _jpg(tmp_path / "images" / "x.jpg", 20, 20)
    coco = {"images": [{"id": 1, "file_name": "x.jpg", "height": 20, "width": 20}],
            "annotations": [{"id": 5, "image_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 7, 2, 7, 7, 2, 7]]},
                            {"id": 6, "image_id": 1, "iscrowd": 1, "segmentation": [[0, 0, 3, 0, 3, 3]]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    ds = InteractiveDataset(tmp_path / "instances.json")
    (path, masks), = list(ds)
    assert path.name == "x.jpg" and len(masks) == 1  # the crowd annotation is skipped
    assert masks[0].sum() == 36 and masks[0][2:8, 2:8].all()  # cv2.fillPoly includes the vertices' pixels


def test_interactive_coco_rle(tmp_path):
    rle_mod = pytest.importorskip("masklet.utils.rle")
    _jpg(tmp_path / "x.jpg", 10, 12)
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    coco = {"images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 12}],
            "annotations": [{"id": 1, "image_id": 1, "segmentation": rle_mod.mask_to_coco_rle(m)}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (_, masks), = list(InteractiveDataset(tmp_path))  # the folder's only .json is picked up
    assert len(masks) == 1 and np.array_equal(masks[0], m)


# --------------------------------------------------------------------------------------------------- report

def _rows():
    return per_object_table([
        ObjectScores("bear", 1, [1.0, 0.8, 0.6, 0.4], [1.0, 1.0, 0.5, 0.5], prompt_frame=0),
        ObjectScores("bear", 2, [0.5, 0.5], [float("nan"), 0.5], prompt_frame=2),
        ObjectScores("cat", 1, [0.9], [0.7]),
    ])


def test_tables_and_summary():
    rows = _rows()
    # DAVIS bins for 4 frames: linspace(1, 4, 5) = 1, 1.75, 2.5, 3.25, 4 -> rounded 1, 2, 3, 3, 4 -> edges
    # 0, 1, 2, 2, 3: first bin frames 0-1 = [1.0, 0.8] -> 0.9, last bin frames 2-3 = [0.6, 0.4] -> 0.5
    assert rows[0]["J-Mean"] == pytest.approx(0.7) and rows[0]["J-Decay"] == pytest.approx(0.4)
    assert rows[0]["F-Decay"] == pytest.approx(1.0 - 0.5)
    split = per_object_table([ObjectScores("bear", 1, [1.0, 0.8, 0.6, 0.4], [1.0, 1.0, 0.5, 0.5])], binning="split")
    assert split[0]["J-Decay"] == pytest.approx(0.6)  # one frame per bin: 1.0 - 0.4
    assert rows[0]["J&F-Mean"] == pytest.approx((0.7 + 0.75) / 2)
    assert rows[1]["F-Mean"] == pytest.approx(0.5)
    videos = per_video_table(rows)
    assert [v["video"] for v in videos] == ["bear", "cat"] and videos[0]["objects"] == 2
    assert videos[0]["J-Mean"] == pytest.approx((0.7 + 0.5) / 2)
    s = summary(rows)
    assert s["objects"] == 3 and s["videos"] == 2
    assert s["J-Mean"] == pytest.approx((0.7 + 0.5 + 0.9) / 3)  # over objects, not videos
    assert s["F-Mean"] == pytest.approx((0.75 + 0.5 + 0.7) / 3)
    assert s["J&F-Mean"] == pytest.approx((s["J-Mean"] + s["F-Mean"]) / 2)
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["video", "object", "frames"] and len({len(x) for x in lines[:2]}) == 1
    assert "0.700" in text


def test_csv_json_files(tmp_path):
    rows = _rows()
    rows[2]["J-Decay"] = float("nan")
    paths = write_vos_report(tmp_path / "out", rows)
    with open(paths["per_object"], newline="") as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == 3 and read[0]["video"] == "bear" and float(read[0]["J-Mean"]) == pytest.approx(0.7)
    assert read[2]["J-Decay"] == ""
    data = json.loads(paths["json"].read_text())
    assert set(data) == {"summary", "per_video", "per_object"}
    assert data["per_object"][2]["J-Decay"] is None
    assert data["summary"]["objects"] == 3
    write_json({"a": np.float32(0.5), "b": np.arange(2)}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 0.5, "b": [0, 1]}
    write_csv([{"a": 1}, {"a": 2, "b": "x"}], tmp_path / "y.csv")
    assert (tmp_path / "y.csv").read_text().splitlines() == ["a,b", "1,", "2,x"]


def test_plot_miou_curve(tmp_path):
    path = plot_miou_curve(np.linspace(0.55, 0.93, 20), tmp_path / "plots" / "curve.png", size=(640, 480))
    with Image.open(path) as img:
        assert img.size == (640, 480) and img.mode == "RGB"
        arr = np.asarray(img)
    assert (arr < 128).any() and (arr == 255).all(axis=2).mean() > 0.5  # something drawn on a white canvas
    two = plot_miou_curve({"a": [0.5, 0.9], "b": [0.6, 0.8]}, tmp_path / "two.png", size=(400, 300))
    with Image.open(two) as img:
        assert img.size == (400, 300)
