"""auto_annotate: box sources -> SAM masks -> YOLO segmentation labels / COCO JSON, videos with tracking, bad input.

Encoding is the expensive part on CPU: the reference tiny checkpoint (1024 px) encodes only the two photos of the
end-to-end test, once each (its features are cached, so the direct ImagePredictor comparison costs no second
encode); everything else uses the 256 px test variant on downscaled copies.
"""
from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file, recording_retain, reference_file, tiny_sam2, write_clip
from PIL import Image

from masklet.api.annotate import (
    ANNOTATE_ARGS,
    AnnotateWarning,
    DetectorUnavailableError,
    annotate_cli,
    auto_annotate,
)
from masklet.models.build import load_model
from masklet.predictors.image import ImagePredictor
from masklet.utils.masks import mask_iou, polygons_to_mask
from masklet.utils.rle import coco_rle_to_mask

PHOTOS = ("truck.jpg", "groceries.jpg")
SMALL = (240, 160)  # (w, h) of the downscaled copies used with the fast test model


# ---------------------------------------------------------------------------------------------- fixtures
def cache_encoder(model):
    """Memoise the model's image encoder on the input tensor: two predictors on the same image then share one
    encode (the encoder is deterministic, so this only saves time)."""
    original = model.encode_image
    cache = {}

    def encode_image(x):
        key = (tuple(x.shape), x.dtype, hash(x.detach().cpu().numpy().tobytes()))
        if key not in cache:
            cache[key] = original(x)
        return cache[key]

    model.encode_image = encode_image
    return model


@pytest.fixture(scope="module")
def ref_model():
    return cache_encoder(load_model(reference_file("sam2.1_hiera_t_random.pt")))


@pytest.fixture(scope="module")
def tiny():
    return tiny_sam2(seed=3)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(data_file(f"images/{name}"), folder / name)
    return folder


@pytest.fixture
def small(tmp_path):
    """Downscaled copies of the photos (240x160), for the fast model."""
    folder = tmp_path / "small"
    folder.mkdir()
    for name in PHOTOS:
        Image.open(data_file(f"images/{name}")).convert("RGB").resize(SMALL).save(folder / name)
    return folder


def write_labels(folder, labels: dict[str, list[str]]):
    folder.mkdir(exist_ok=True)
    for stem, lines in labels.items():
        (folder / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
    return folder


def read_yolo(path, w, h):
    """[(cls, polygon (K, 2) pixels)] of a YOLO segmentation label file."""
    out = []
    for line in path.read_text().splitlines():
        values = line.split()
        xy = np.asarray(values[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
        out.append((int(values[0]), xy))
    return out


def largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a mask with its holes filled (flood fill of the background from the
    border), computed independently of masklet.utils.masks."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert n > 1, "empty mask"
    comp = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    padded = np.pad(~comp, 1, constant_values=True).astype(np.uint8)
    flood = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, flood, (0, 0), 2)
    return (padded[1:-1, 1:-1] != 2)


# ---------------------------------------------------------------------------------------------- end to end
def test_yolo_label_folder_to_segmentation_labels(ref_model, photos, tmp_path):
    boxes = {"truck": [(3, [0.5, 0.55, 0.6, 0.5]), (7, [0.2, 0.3, 0.2, 0.3])],
             "groceries": [(0, [0.4, 0.6, 0.3, 0.4])]}
    labels = write_labels(tmp_path / "labels", {s: [f"{c} " + " ".join(map(str, b)) for c, b in v]
                                                 for s, v in boxes.items()})
    out = auto_annotate(photos, det_model=labels, sam_model=ref_model, verbose=False)
    assert out == tmp_path / "images_auto_annotate_labels"
    assert sorted(p.name for p in out.iterdir()) == ["groceries.txt", "truck.txt"]
    predictor = ImagePredictor(ref_model)
    for name in PHOTOS:
        stem = name.rsplit(".", 1)[0]
        image = np.array(Image.open(photos / name).convert("RGB"))
        h, w = image.shape[:2]
        rows = read_yolo(out / f"{stem}.txt", w, h)
        assert [c for c, _ in rows] == [c for c, _ in boxes[stem]]  # labels are ground truth: order kept
        xyxy = np.asarray([[cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2] for _, (cx, cy, bw, bh)
                           in boxes[stem]]) * [w, h, w, h]
        predictor.set_image(image)
        masks, _, _ = predictor.predict(box=xyxy, multimask_output=False)
        masks = masks.reshape(len(xyxy), -1, h, w)[:, 0]
        for (cls, poly), mask in zip(rows, masks):
            assert len(poly) >= 3 and (poly >= 0).all() and (poly[:, 0] <= w).all() and (poly[:, 1] <= h).all()
            iou = mask_iou(polygons_to_mask([poly], h, w), largest_component_filled(mask))
            assert iou > 0.9, (stem, cls, iou)


def test_callable_detector_filters_and_coco_output(tiny, small):
    calls = []

    def detector(image):
        calls.append(image.shape)
        assert image.dtype == np.uint8 and image.shape == (SMALL[1], SMALL[0], 3)
        boxes = torch.tensor([[10, 10, 120, 100], [12, 11, 121, 99],  # a duplicate, removed by NMS
                              [130, 40, 230, 150], [5, 5, 50, 50],    # the last is below conf
                              [60, 60, 200, 140]], dtype=torch.float32)
        return boxes, torch.tensor([2, 2, 5, 2, 9]), torch.tensor([0.9, 0.8, 0.7, 0.1, 0.6])

    detector.names = {2: "car", 5: "bus", 9: "light"}
    out = auto_annotate(small, det_model=detector, sam_model=tiny, format="coco", classes=[2, 5], verbose=False,
                        output_dir=small.parent / "coco")
    assert len(calls) == 2
    doc = json.loads((out / "annotations.json").read_text())
    assert {img["file_name"] for img in doc["images"]} == set(PHOTOS)
    sizes = {img["id"]: (img["height"], img["width"]) for img in doc["images"]}
    assert all(hw == (SMALL[1], SMALL[0]) for hw in sizes.values())
    anns = doc["annotations"]
    # per image: box 0 (class 2, 0.9) and box 2 (class 5, 0.7); the duplicate, the low score and class 9 are gone
    assert len(anns) == 4
    for image_id in sizes:
        mine = [a for a in anns if a["image_id"] == image_id]
        assert [(a["category_id"], a["score"]) for a in mine] == [(2, pytest.approx(0.9)), (5, pytest.approx(0.7))]
    for a in anns:
        mask = coco_rle_to_mask(a["segmentation"])
        assert mask.shape == sizes[a["image_id"]]
        assert a["area"] == int(mask.sum()) > 0
        ys, xs = np.nonzero(mask)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["iscrowd"] == 0 and "track_id" not in a
        assert isinstance(a["segmentation"]["counts"], str)
    assert {c["id"]: c["name"] for c in doc["categories"]} == detector.names

    # the same run as YOLO labels: one line per kept box, class first
    out = auto_annotate(small, det_model=detector, sam_model=tiny, classes=[2, 5], verbose=False,
                        output_dir=small.parent / "yolo")
    for name in PHOTOS:
        rows = read_yolo(out / name.replace(".jpg", ".txt"), *SMALL)
        assert [c for c, _ in rows] == [2, 5]


def test_files_are_annotated_with_freed_memory_kept(tiny, small, monkeypatch):
    # file after file frees and reallocates the same buffers: on a CPU the loop over the files runs under
    # utils.allocator.retain_freed_memory, entered once, left before the labels are written
    import masklet.api.annotate as annotate_module

    log = recording_retain(monkeypatch, annotate_module)
    seen = []

    def detector(image):
        seen.append(list(log))
        return torch.tensor([[10.0, 10.0, 120.0, 100.0]]), torch.tensor([0]), torch.tensor([0.9])

    auto_annotate(small, det_model=detector, sam_model=tiny, verbose=False)
    assert seen == [[True]] * len(PHOTOS) and log == [True, "end"]


def test_coco_boxes_become_segmentation(tiny, small, tmp_path):
    images = [{"id": 10, "file_name": "val/truck.jpg", "width": SMALL[0], "height": SMALL[1]},
              {"id": 11, "file_name": "groceries.jpg", "width": SMALL[0], "height": SMALL[1]}]
    anns = [{"id": 1, "image_id": 10, "category_id": 5, "bbox": [20, 20, 100, 80], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 9, "bbox": [120, 30, 100, 100], "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 5, "bbox": [0, 0, 240, 160], "iscrowd": 1},  # crowd: skipped
            {"id": 4, "image_id": 11, "category_id": 9, "bbox": [50, 40, 60, 60], "iscrowd": 0}]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"images": images, "annotations": anns,
                                 "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]}))
    out = auto_annotate(small, det_model=boxes, sam_model=tiny, verbose=False, output_dir=tmp_path / "yolo")
    # COCO category ids 5, 9 -> YOLO classes 0, 1
    assert [c for c, _ in read_yolo(out / "truck.txt", *SMALL)] == [0, 1]
    assert [c for c, _ in read_yolo(out / "groceries.txt", *SMALL)] == [1]
    out = auto_annotate(small, det_model=boxes, sam_model=tiny, format="coco", verbose=False,
                        output_dir=tmp_path / "coco")
    doc = json.loads((out / "annotations.json").read_text())
    assert sorted(a["category_id"] for a in doc["annotations"]) == [5, 9, 9]  # the dataset's own ids
    assert doc["categories"] == [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]


def test_segment_everything_gives_class_zero(tiny, small):
    pytest.importorskip("masklet.predictors.everything", reason="the automatic mask generator is not available")
    permissive = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    out = auto_annotate(small / "truck.jpg", det_model=None, sam_model=tiny, amg_args=permissive, max_det=5,
                        verbose=False)
    assert out == small / "truck_auto_annotate_labels"
    rows = read_yolo(out / "truck.txt", *SMALL)
    assert 0 < len(rows) <= 5
    assert {c for c, _ in rows} == {0}
    with pytest.raises(ValueError, match="amg_args"):
        auto_annotate(small / "truck.jpg", det_model=None, sam_model=tiny, amg_args={"no_such_option": 1},
                      verbose=False)


def test_video_ids_persist(tiny, tmp_path):
    clip = Path(write_clip(data_file("videos/bedroom.mp4"), tmp_path / "clip.mp4", 3, size=(320, 180)))
    calls = []

    def detector(image):
        calls.append(image.shape)
        return np.array([[20, 20, 120, 150], [180, 30, 300, 170]]), np.array([4, 1]), np.array([0.9, 0.8])

    out = auto_annotate(clip, det_model=detector, sam_model=tiny, verbose=False)
    assert len(calls) == 1  # boxes come from the first frame only; the tracker does the rest
    assert out == tmp_path / "clip_auto_annotate_labels"
    assert sorted(p.name for p in out.iterdir()) == [f"clip_{k:06d}.txt" for k in range(3)]
    for k in range(3):
        assert [c for c, _ in read_yolo(out / f"clip_{k:06d}.txt", 320, 180)] == [4, 1]

    out = auto_annotate(clip, det_model=detector, sam_model=tiny, format="coco", verbose=False,
                        output_dir=tmp_path / "coco")
    doc = json.loads((out / "annotations.json").read_text())
    assert [(img["file_name"], img["video"], img["frame_index"]) for img in doc["images"]] == [
        (f"clip_{k:06d}.jpg", "clip.mp4", k) for k in range(3)]
    tracks = {}
    for a in doc["annotations"]:
        tracks.setdefault(a["track_id"], []).append((a["image_id"], a["category_id"]))
        assert coco_rle_to_mask(a["segmentation"]).shape == (180, 320)
    assert sorted(tracks) == [1, 2]
    assert [c for _, c in tracks[1]] == [4, 4, 4] and [c for _, c in tracks[2]] == [1, 1, 1]
    assert sorted(i for i, _ in tracks[1]) == [img["id"] for img in doc["images"]]


def test_ultralytics_adapter(tiny, small, monkeypatch):
    """The YOLO path with a stand-in `ultralytics` module: BGR input, detector arguments passed through."""
    seen = {}

    class FakeBoxes:
        xyxy = torch.tensor([[10.0, 10.0, 100.0, 90.0]])
        cls = torch.tensor([3.0])
        conf = torch.tensor([0.8])

    class FakeYOLO:
        names = {3: "cat"}

        def __init__(self, weights):
            seen["weights"] = weights

        def predict(self, image, **kwargs):
            seen["kwargs"], seen["image"] = kwargs, image
            return [types.SimpleNamespace(boxes=FakeBoxes())]

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=FakeYOLO))
    out = auto_annotate(small / "truck.jpg", det_model="yolo11n.pt", sam_model=tiny, imgsz=320, conf=0.3,
                        verbose=False)
    assert seen["weights"] == "yolo11n.pt"
    assert {k: seen["kwargs"][k] for k in ("conf", "iou", "imgsz", "max_det", "classes")} == {
        "conf": 0.3, "iou": 0.45, "imgsz": 320, "max_det": 300, "classes": None}
    rgb = np.asarray(Image.open(small / "truck.jpg").convert("RGB"))
    assert np.array_equal(seen["image"], rgb[..., ::-1])
    assert [c for c, _ in read_yolo(out / "truck.txt", *SMALL)] == [3]


def test_cli_entry(tiny, small, tmp_path):
    labels = write_labels(tmp_path / "labels", {"truck": ["1 0.5 0.5 0.5 0.5"]})
    out = annotate_cli({"data": str(small / "truck.jpg"), "det_model": str(labels), "sam_model": tiny,
                        "output_dir": str(tmp_path / "cli"), "verbose": False, "classes": 1})
    assert [c for c, _ in read_yolo(out / "truck.txt", *SMALL)] == [1]
    with pytest.raises(ValueError, match="Did you mean det_model="):
        annotate_cli({"data": str(small), "det_modle": str(labels)})
    with pytest.raises(ValueError, match="data= is required"):
        annotate_cli({"det_model": str(labels)})
    assert set(ANNOTATE_ARGS) >= {"data", "det_model", "sam_model", "conf", "iou", "imgsz", "max_det", "classes",
                                  "output_dir", "format", "device"}


# ---------------------------------------------------------------------------------------------- bad input
def test_empty_folder(tmp_path, tiny):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images or videos"):
        auto_annotate(tmp_path / "empty", det_model=None, sam_model=tiny, verbose=False)
    (tmp_path / "dataset" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds the folders images"):
        auto_annotate(tmp_path / "dataset", det_model=None, sam_model=tiny, verbose=False)


def test_label_files_that_match_no_image(tiny, small, tmp_path):
    labels = write_labels(tmp_path / "labels", {"truck": ["0 0.5 0.5 0.3 0.3"], "missing_image": ["1 0.5 0.5 0.2 0.2"]})
    with pytest.warns(AnnotateWarning, match="1 label entry .* match no image .*missing_image"):
        out = auto_annotate(small, det_model=labels, sam_model=tiny, verbose=False, output_dir=tmp_path / "o1")
    # groceries has no label file: background, an empty label file
    assert (out / "groceries.txt").read_text() == ""
    assert len((out / "truck.txt").read_text().splitlines()) == 1
    other = write_labels(tmp_path / "other", {"cat1": ["0 0.5 0.5 0.3 0.3"], "cat2": ["0 0.5 0.5 0.3 0.3"]})
    with pytest.raises(ValueError, match="none of the 2 label entries .* matches an image"):
        auto_annotate(small, det_model=other, sam_model=tiny, verbose=False, output_dir=tmp_path / "o2")
    bad = write_labels(tmp_path / "bad", {"truck": ["0 0.5 0.5 0.3"]})
    with pytest.raises(ValueError, match=r"truck.txt:1: 4 numbers"):
        auto_annotate(small, det_model=bad, sam_model=tiny, verbose=False, output_dir=tmp_path / "o3")


def test_class_filter_that_removes_everything_warns(tiny, small, tmp_path):
    labels = write_labels(tmp_path / "labels", {"truck": ["0 0.5 0.5 0.3 0.3"], "groceries": ["2 0.5 0.5 0.3 0.3"]})
    with pytest.warns(AnnotateWarning, match=r"wrote no annotations: classes=\[7\] removed all 2 boxes; the classes "
                                             r"found were \[0, 2\]"):
        out = auto_annotate(small, det_model=labels, sam_model=tiny, classes=[7], verbose=False,
                            output_dir=tmp_path / "out")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"truck.txt": "", "groceries.txt": ""}
    with pytest.warns(AnnotateWarning, match="no boxes"):
        auto_annotate(small, det_model=lambda image: (np.zeros((0, 4)), []), sam_model=tiny, verbose=False,
                      output_dir=tmp_path / "none")


def test_unknown_detector_without_ultralytics(tiny, small, monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError
    with pytest.raises(DetectorUnavailableError, match="pip install ultralytics") as info:
        auto_annotate(small, det_model="my_detector.pt", sam_model=tiny, verbose=False)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)
    assert not (small.parent / "small_auto_annotate_labels").exists()  # failed before writing anything
    with pytest.raises(FileNotFoundError, match="COCO JSON not found"):
        auto_annotate(small, det_model="no_such_boxes.json", sam_model=tiny, verbose=False)


def test_bad_arguments(tiny, small):
    def bad_detector(image):
        return np.zeros((2, 3)), [0, 1]

    with pytest.raises(ValueError, match=r"boxes of shape \(2, 3\)"):
        auto_annotate(small, det_model=bad_detector, sam_model=tiny, verbose=False)
    with pytest.raises(ValueError, match="2 boxes but 1 classes"):
        auto_annotate(small, det_model=lambda im: (np.zeros((2, 4)), [0]), sam_model=tiny, verbose=False)
    with pytest.raises(ValueError, match="format must be one of yolo, coco"):
        auto_annotate(small, det_model=None, sam_model=tiny, format="voc")
    with pytest.raises(ValueError, match="conf must be"):
        auto_annotate(small, det_model=None, sam_model=tiny, conf=2)
    with pytest.raises(ValueError, match="classes must be"):
        auto_annotate(small, det_model=None, sam_model=tiny, classes=["car"])
    with pytest.raises(TypeError, match="sam_model must be"):
        auto_annotate(small, det_model=None, sam_model=3)
    with pytest.raises(ValueError, match="output_dir is required"):
        auto_annotate([small / "truck.jpg"], det_model=None, sam_model=tiny)
