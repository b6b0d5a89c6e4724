"""Results: Ultralytics-compatible attributes, drawing, and label files that round-trip to the masks."""
import json

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file

from masklet.api.results import Boxes, Masks, Results, results_from_masks
from masklet.data.images import read_image
from masklet.utils.masks import mask_iou, polygons_to_mask

H, W = 300, 450


def _shapes() -> np.ndarray:
    """Two realistic object masks (N, H, W): a car-like outline and an ellipse with a hole."""
    car = np.zeros((H, W), np.uint8)
    body = np.array([[40, 200], [60, 150], [130, 140], [170, 95], [290, 95], [330, 140], [400, 150], [415, 200],
                     [380, 215], [340, 215], [320, 240], [290, 240], [270, 215], [150, 215], [130, 240],
                     [100, 240], [80, 215]], np.int32)
    cv2.fillPoly(car, [body], 1)
    blob = np.zeros((H, W), np.uint8)
    cv2.ellipse(blob, (330, 60), (70, 35), 15, 0, 360, 1, -1)
    cv2.circle(blob, (330, 60), 8, 0, -1)
    return np.stack([car, blob]).astype(bool)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rgb = read_image(data_file("images/truck.jpg"))
    return np.ascontiguousarray(cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def result(image) -> Results:
    return results_from_masks(image, "some/dir/truck.jpg", torch.from_numpy(_shapes()), torch.tensor([0.9, 0.75]))


def test_attributes(result, image):
    assert result.orig_shape == (H, W) and result.path == "some/dir/truck.jpg"
    assert np.array_equal(result.orig_img, image[..., ::-1])  # BGR like Ultralytics
    assert result.names == {0: "0", 1: "1"}
    assert len(result) == 2
    assert result.masks.data.shape == (2, H, W) and result.masks.data.dtype == torch.bool
    assert result.boxes.data.shape == (2, 6)
    assert result.boxes.conf.tolist() == pytest.approx([0.9, 0.75])
    assert result.boxes.cls.tolist() == [0, 1]
    assert result.boxes.id is None and not result.boxes.is_track
    assert set(result.speed) == {"preprocess", "inference", "postprocess"}


def test_boxes_are_tight_around_masks(result):
    masks = _shapes()
    ys, xs = np.nonzero(masks[0])
    assert result.boxes.xyxy[0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    x1, y1, x2, y2 = result.boxes.xyxy[0].tolist()
    assert result.boxes.xywh[0].tolist() == pytest.approx([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    assert result.boxes.xyxyn[0].tolist() == pytest.approx([x1 / W, y1 / H, x2 / W, y2 / H])
    assert result.boxes.xywhn.shape == (2, 4)


def test_polygons(result):
    xy, xyn = result.masks.xy, result.masks.xyn
    assert len(xy) == 2 and all(p.ndim == 2 and p.shape[1] == 2 and p.dtype == np.float32 for p in xy)
    for p, pn in zip(xy, xyn):
        assert np.allclose(pn * [W, H], p, atol=1e-3)
        assert (pn >= 0).all() and (pn <= 1).all()
    for k, mask in enumerate(_shapes()):
        # the outer polygon covers the hole of the ellipse, which is small
        assert mask_iou(polygons_to_mask([xy[k]], H, W), mask) > 0.95


def test_save_txt_round_trip(result, tmp_path):
    path = result.save_txt(tmp_path / "labels" / "truck.txt")
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 2
    for k, line in enumerate(lines):
        values = line.split()
        assert int(values[0]) == k
        coords = np.array(values[1:], dtype=np.float64).reshape(-1, 2)
        assert (coords >= 0).all() and (coords <= 1).all()
        rasterised = polygons_to_mask([coords * [W, H]], H, W)
        assert mask_iou(rasterised, _shapes()[k]) > 0.9
    # appends, as Ultralytics does for a video's frames written to one file
    result.save_txt(path)
    with open(path) as f:
        assert len(f.read().splitlines()) == 4


def test_save_txt_conf_and_track_id(image, tmp_path):
    r = results_from_masks(image, "v.mp4", torch.from_numpy(_shapes()), torch.tensor([0.5, 0.25]), ids=[7, 9],
                           frame=3)
    assert r.boxes.is_track and r.boxes.id.tolist() == [7, 9] and r.boxes.data.shape == (2, 7)
    r.save_txt(tmp_path / "a.txt", save_conf=True)
    rows = [line.split() for line in (tmp_path / "a.txt").read_text().splitlines()]
    assert [float(row[-2]) for row in rows] == [0.5, 0.25] and [int(row[-1]) for row in rows] == [7, 9]
    assert (len(rows[0]) - 3) % 2 == 0  # cls, pairs, conf, id


def test_plot(result, image):
    plotted = result.plot()
    assert plotted.shape == (H, W, 3) and plotted.dtype == np.uint8
    masks_only = result.plot(boxes=False)
    union = _shapes().any(0)
    changed = (masks_only != result.orig_img).any(-1)
    assert changed[union].mean() > 0.95  # the masks are coloured
    assert not changed[~union].any()  # nothing else is touched without boxes
    boxes_only = result.plot(masks=False)
    assert not (boxes_only != result.orig_img).any(-1)[union & ~(plotted != masks_only).any(-1)].any()
    assert (result.plot(masks=False, boxes=False) == result.orig_img).all()
    assert result.plot(pil=True).size == (W, H)
    assert (result.orig_img == image[..., ::-1]).all()  # plot does not draw on the original


def test_plot_colours_follow_track_ids(image):
    masks = torch.from_numpy(_shapes())
    a = results_from_masks(image, "v.mp4", masks, ids=[1, 2]).plot(boxes=False)
    b = results_from_masks(image, "v.mp4", masks[1:], ids=[2]).plot(boxes=False)
    blob = _shapes()[1]
    assert (a[blob] == b[blob]).all()


def test_save(result, tmp_path):
    out = result.save(tmp_path / "out" / "plot.png")
    written = cv2.imread(out)
    assert written.shape == (H, W, 3) and (written == result.plot()).all()
    with pytest.raises(ValueError, match="image suffix"):
        result.save(tmp_path / "plot.nope")


def test_indexing_and_iteration(result):
    first = result[0]
    assert isinstance(first, Results) and len(first) == 1
    assert first.masks.data.shape == (1, H, W) and first.boxes.data.shape == (1, 6)
    assert torch.equal(result[-1].masks.data[0], result.masks.data[1])
    assert [len(r) for r in result] == [1, 1]
    assert len(result[torch.tensor([True, False])]) == 1
    assert len(result[0:2]) == 2
    with pytest.raises(IndexError):
        result[2]


def test_summary_and_json(result):
    summary = result.summary()
    assert [s["class"] for s in summary] == [0, 1]
    assert summary[0]["confidence"] == pytest.approx(0.9)
    assert set(summary[0]["box"]) == {"x1", "y1", "x2", "y2"}
    assert len(summary[0]["segments"]["x"]) == len(result.masks.xy[0])
    norm = result.summary(normalize=True)
    assert 0 <= norm[0]["box"]["x2"] <= 1
    assert json.loads(result.to_json()) == json.loads(json.dumps(summary))
    assert result.tojson() == result.to_json()


def test_cpu_numpy(result):
    n = result.numpy()
    assert isinstance(n.masks.data, np.ndarray) and isinstance(n.boxes.data, np.ndarray)
    assert len(n.masks.xy) == 2 and n.boxes.xywh.shape == (2, 4)
    assert torch.equal(result.cpu().masks.data, result.masks.data)
    assert json.loads(n.to_json()) == json.loads(result.to_json())


def test_empty_results(image, tmp_path):
    r = results_from_masks(image, "x.jpg", torch.zeros(0, H, W, dtype=torch.bool))
    assert len(r) == 0 and list(r) == [] and r.summary() == []
    assert (r.plot() == r.orig_img).all()
    r.save_txt(tmp_path / "e.txt")
    assert not (tmp_path / "e.txt").exists()
    assert r.verbose() == "(no masks)"


def test_show_without_display_is_a_clear_error(result, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="cannot show images.*save"):
        result.show()


def test_classes_reexported():
    import masklet

    assert masklet.Results is Results
    assert Boxes(torch.zeros(6), (2, 2)).data.shape == (1, 6)
    assert len(Masks(torch.zeros(3, 2, 2, dtype=torch.bool), (2, 2))) == 3
    with pytest.raises(ValueError, match=r"\(N, 6\) or \(N, 7\)"):
        Boxes(torch.zeros(2, 5), (2, 2))
