"""masklet.val.run end to end: VOS (J&F) and interactive (NoC) runs on tiny synthetic datasets built from the
shared bedroom frames, with the random-weight test model; a fake predictor that returns the ground truth
checks the scoring itself; malformed datasets fail with clear errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import data_file, tiny_sam2
from PIL import Image

import masklet.predictors.image as image_module
import masklet.predictors.video as video_module
from masklet.val import run, score, val_cli
from masklet.val.datasets import read_palette_png, write_palette_png
from masklet.val.metrics import region_similarity
from masklet.val.runner import click_session

W, H = 240, 135  # the 960x540 bedroom frames at a quarter of their size: cheap to track and score
VIDEOS = {"alpha": (0, 4), "beta": (20, 4)}  # name -> (first bedroom frame, number of frames)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_sam2()


def _frame(index: int) -> Image.Image:
    with Image.open(data_file(f"videos/bedroom_frames/{index:05d}.jpg")) as img:
        return img.convert("RGB").resize((W, H), Image.BILINEAR)


def _rect(t: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[30 + 2 * t:80 + 2 * t, 20 + 6 * t:90 + 6 * t] = True  # moves right and down
    return m


def _disk(t: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - 185 + 3 * t) ** 2 + (yy - 95) ** 2 <= 22 ** 2


def make_vos(root):
    """alpha: object 1 (moving rectangle) on all frames, object 2 (disk) from frame 2 on. beta: object 1 only,
    with a void band on frame 1."""
    for name, (first, n) in VIDEOS.items():
        for t in range(n):
            (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
            _frame(first + t).save(root / "JPEGImages" / name / f"{t:05d}.jpg", quality=90)
            lab = np.zeros((H, W), np.uint8)
            lab[_rect(t)] = 1
            if name == "alpha" and t >= 2:
                lab[_disk(t)] = 2
            if name == "beta" and t == 1:
                lab[:4, :] = 255
            write_palette_png(root / "Annotations" / name / f"{t:05d}.png", lab)
    return root


def gt_labels(root, video, t):
    return read_palette_png(root / "Annotations" / video / f"{t:05d}.png")


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------------- VOS

def test_vos_end_to_end(tmp_path, model, capsys):
    root = make_vos(tmp_path / "davis")
    out = tmp_path / "out"
    res = run(model=model, data=root, task="vos", save_dir=out, device="cpu", verbose=True)

    assert res["task"] == "vos" and res["save_dir"] == out
    for name in ("per_object.csv", "per_video.csv", "summary.csv", "results.json"):
        assert (out / name).is_file(), name
    assert [(r["video"], r["object"]) for r in res["per_object"]] == [("alpha", 1), ("alpha", 2), ("beta", 1)]
    assert [r["video"] for r in res["per_video"]] == ["alpha", "beta"]
    assert [r["prompt_frame"] for r in res["per_object"]] == [0, 2, 0]
    # a plain JPEGImages/Annotations folder is MOSE's layout: the "sav" protocol, annotated frames except the first
    # and the last (1 and 2 of 4), each object from its first appearance: object 2 of alpha appears on frame 2
    assert res["meta"]["protocol"] == "sav" and res["meta"]["layout"] == "mose"
    assert [r["frames"] for r in res["per_object"]] == [2, 1, 2]
    for row in res["per_object"] + res["per_video"] + [res["summary"]]:
        for col in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
            assert 0.0 <= row[col] <= 1.0, (row, col)
        for col in ("J-Decay", "F-Decay"):
            assert -1.0 <= row[col] <= 1.0
    s = res["summary"]
    assert s["videos"] == 2 and s["objects"] == 3
    assert s["J&F-Mean"] == pytest.approx((s["J-Mean"] + s["F-Mean"]) / 2)
    assert s["J-Mean"] == pytest.approx(np.mean([r["J-Mean"] for r in res["per_object"]]))

    # CSV / JSON hold the same tables
    assert len(_read_csv(out / "per_object.csv")) == 3 and len(_read_csv(out / "per_video.csv")) == 2
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"summary", "per_video", "per_object", "meta"}
    assert data["summary"]["J-Mean"] == pytest.approx(s["J-Mean"])
    assert data["meta"]["task"] == "vos" and data["meta"]["imgsz"] == 256 and data["meta"]["dtype"] == "float32"

    # palette PNGs: one per frame, the frame's size, only background and the video's object ids
    for name, (_, n) in VIDEOS.items():
        files = sorted((out / "masks" / name).glob("*.png"))
        assert [p.stem for p in files] == [f"{t:05d}" for t in range(n)]
        for p in files:
            with Image.open(p) as img:
                assert img.mode == "P" and img.size == (W, H)
            assert set(np.unique(read_palette_png(p))) <= ({0, 1, 2} if name == "alpha" else {0, 1})
    alpha = [read_palette_png(out / "masks" / "alpha" / f"{t:05d}.png") for t in range(4)]
    # object 2 is not predicted before its prompt frame, and on that frame its mask prompt is the output
    assert not (alpha[0] == 2).any() and not (alpha[1] == 2).any()
    assert region_similarity(alpha[2] == 2, gt_labels(root, "alpha", 2) == 2) > 0.9
    assert region_similarity(alpha[0] == 1, gt_labels(root, "alpha", 0) == 1) > 0.9

    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and "Per video" in printed and str(out) in printed

    # the saved palette PNGs, scored as existing predictions, give the run's own numbers
    again = score(root, out, save_dir=tmp_path / "again", verbose=False)
    assert again["per_object"] == res["per_object"] and again["meta"]["protocol"] == "sav"


class FakeVideoPredictor:
    """Stands in for VideoPredictor: returns the ground truth as logits (+10 inside, -10 outside) for every
    object on every frame from the start frame, and records the prompts it was given."""

    prompts: list = []

    def __init__(self, model, fill_hole_area=0, dtype=None, **_):
        self.root = None

    def init_state(self, frames):
        return {"frames": frames, "objects": []}

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        assert mask.shape == (state["frames"].height, state["frames"].width) and mask.dtype == bool
        state["objects"].append(obj_id)
        FakeVideoPredictor.prompts.append((state["frames"].name, frame_idx, obj_id, int(mask.sum())))

    def propagate_in_video(self, state, start_frame_idx=None, progress=True, **_):
        frames = state["frames"]
        ann_dir = frames.paths[0].parents[2] / "Annotations" / frames.name
        for t in range(start_frame_idx, len(frames)):
            labels = read_palette_png(ann_dir / f"{frames.frame_name(t)}.png")
            logits = torch.stack([torch.from_numpy(labels == o).float() * 20 - 10 for o in state["objects"]])
            yield t, list(state["objects"]), logits[:, None]

    def reset_state(self, state):
        state["objects"].clear()


def test_vos_perfect_prediction_scores_one(tmp_path, model, monkeypatch):
    root = make_vos(tmp_path / "davis")
    FakeVideoPredictor.prompts = []
    monkeypatch.setattr(video_module, "VideoPredictor", FakeVideoPredictor)
    res = run(model=model, data=root, save_dir=tmp_path / "out", verbose=False)
    # first-frame masks for every object, object 2 of alpha on frame 2 where it appears
    assert [p[:3] for p in FakeVideoPredictor.prompts] == [("alpha", 0, 1), ("alpha", 2, 2), ("beta", 0, 1)]
    for row in res["per_object"] + res["per_video"] + [res["summary"]]:
        assert row["J-Mean"] == 1.0 and row["F-Mean"] == 1.0 and row["J&F-Mean"] == 1.0
        assert row["J-Recall"] == 1.0 and row["F-Recall"] == 1.0
        assert row["J-Decay"] == 0.0 and row["F-Decay"] == 0.0
    for name, (_, n) in VIDEOS.items():
        for t in range(n):
            gt = gt_labels(root, name, t)
            pred = read_palette_png(tmp_path / "out" / "masks" / name / f"{t:05d}.png")
            assert np.array_equal(pred, np.where(gt == 255, 0, gt))  # void is not an object: written as background


def test_vos_overlap_goes_to_highest_logit_and_late_objects_start_empty():
    from masklet.val.runner import _label_map

    logits = torch.full((3, 1, 2, 3), -5.0)
    logits[0, 0, 0, :] = torch.tensor([1.0, 4.0, -1.0])
    logits[1, 0, 0, :] = torch.tensor([2.0, 3.0, -2.0])
    logits[2, 0, :, :] = 9.0  # object 7 is prompted on frame 5 only
    label = _label_map(logits, [1, 3, 7], {1: 0, 3: 0, 7: 5}, frame_idx=2)
    assert label.tolist() == [[3, 1, 0], [0, 0, 0]]
    assert _label_map(logits, [1, 3, 7], {1: 0, 3: 0, 7: 5}, frame_idx=5).tolist() == [[7, 7, 7], [7, 7, 7]]


def test_vos_default_save_dir_increments_and_cli(tmp_path, model, monkeypatch):
    root = make_vos(tmp_path / "davis")
    monkeypatch.setattr(video_module, "VideoPredictor", FakeVideoPredictor)
    monkeypatch.chdir(tmp_path)
    first = run(model=model, data=root, max_videos=1, max_frames=3, verbose=False, save_masks=False)
    assert first["save_dir"].resolve() == (tmp_path / "runs" / "val" / "vos").resolve()
    assert [r["video"] for r in first["per_video"]] == ["alpha"] and first["per_video"][0]["frames"] == 3
    assert not (first["save_dir"] / "masks").exists()
    second = val_cli({"model": model, "data": str(root), "max_videos": "1", "max_frames": "3", "verbose": "False"})
    assert second["save_dir"].resolve() == (tmp_path / "runs" / "val" / "vos2").resolve()
    with pytest.raises(ValueError, match="max_video.*did you mean max_videos"):
        val_cli({"model": model, "data": str(root), "max_video": 1})
    with pytest.raises(ValueError, match="needs model="):
        val_cli({"data": str(root)})
    with pytest.raises(ValueError, match="max_frames=x must be an integer"):
        val_cli({"model": model, "data": str(root), "max_frames": "x"})


def test_vos_model_by_name_and_imgsz(tmp_path, model, monkeypatch):
    import masklet.models.build as build
    import masklet.utils.downloads as downloads

    root = make_vos(tmp_path / "davis")
    monkeypatch.setattr(video_module, "VideoPredictor", FakeVideoPredictor)
    calls = []
    monkeypatch.setattr(downloads, "resolve_weights", lambda name: calls.append(name) or tmp_path / "w.pt")
    monkeypatch.setattr(build, "load_model", lambda path, device=None: calls.append((path, str(device))) or model)
    res = run(model="sam2.1_t.pt", data=root, max_videos=1, imgsz=192, device="cpu", save_dir=tmp_path / "o",
              verbose=False)
    assert calls == ["sam2.1_t.pt", (tmp_path / "w.pt", "cpu")]
    assert res["meta"]["model"] == "sam2.1_t.pt" and res["meta"]["imgsz"] == 192
    assert model.image_size == 256  # the model's own size is restored after the run
    with pytest.raises(ValueError, match="multiple of 64"):
        run(model=model, data=root, imgsz=100, verbose=False)
    with pytest.raises(TypeError, match="checkpoint name or path"):
        run(model=42, data=root, verbose=False)


# ------------------------------------------------------------------------------------------------------- errors

def test_vos_malformed_datasets(tmp_path, model):
    # missing annotation folder
    bad = tmp_path / "noann"
    (bad / "JPEGImages" / "v").mkdir(parents=True)
    _frame(0).save(bad / "JPEGImages" / "v" / "00000.jpg")
    with pytest.raises(FileNotFoundError, match="Annotations"):
        run(model=model, data=bad, verbose=False)
    # frames without annotations
    (bad / "Annotations").mkdir()
    with pytest.raises(ValueError, match="'v' has 1 frames .* but no annotations"):
        run(model=model, data=bad, verbose=False)
    # a label PNG that is not a label map: an anti-aliased greyscale mask has hundreds of values
    grey = np.tile(np.linspace(0, 254, W).astype(np.uint8), (H, 1))
    (bad / "Annotations" / "v").mkdir()
    Image.fromarray(grey).save(bad / "Annotations" / "v" / "00000.png")
    with pytest.raises(ValueError, match="distinct object ids.*label maps"):
        run(model=model, data=bad, verbose=False)
    # annotation of another size than its frame
    write_palette_png(bad / "Annotations" / "v" / "00000.png", np.ones((10, 10), np.uint8))
    with pytest.raises(ValueError, match="frame's size"):
        run(model=model, data=bad, verbose=False)
    # only background
    write_palette_png(bad / "Annotations" / "v" / "00000.png", np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="contains an object"):
        run(model=model, data=bad, verbose=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        run(model=model, data=tmp_path / "nowhere", verbose=False)
    with pytest.raises(ValueError, match="task='detect' is not a validation task"):
        run(model=model, data=bad, task="detect", verbose=False)
    with pytest.raises(ValueError, match="use max_samples"):
        run(model=model, data=bad, task="interactive", max_videos=2, verbose=False)


def test_interactive_data_given_to_vos_is_explained(tmp_path, model):
    make_interactive(tmp_path / "inter")
    with pytest.raises(FileNotFoundError, match="task='interactive'"):
        run(model=model, data=tmp_path / "inter", task="vos", verbose=False)


# ------------------------------------------------------------------------------------------------------- interactive

def make_interactive(root):
    """a.jpg with an instance-id PNG (rectangle = 1, disk = 2); b.jpg with one per-instance PNG."""
    (root / "images").mkdir(parents=True)
    _frame(0).save(root / "images" / "a.jpg", quality=90)
    _frame(30).save(root / "images" / "b.jpg", quality=90)
    ids = np.zeros((H, W), np.uint8)
    ids[_rect(0)] = 1
    ids[_disk(0)] = 2
    write_palette_png(root / "masks" / "a.png", ids)
    Image.fromarray(_rect(5).astype(np.uint8) * 255).save(root / "masks" / "b_1.png")
    return root


def test_interactive_end_to_end(tmp_path, model):
    root = make_interactive(tmp_path / "inter")
    out = tmp_path / "out"
    clicks = 4
    res = run(model=model, data=root, task="interactive", max_clicks=clicks, save_dir=out, verbose=False)
    assert res["task"] == "interactive"
    for name in ("per_sample.csv", "miou_curve.csv", "summary.csv", "results.json", "miou_curve.png"):
        assert (out / name).is_file(), name
    with Image.open(out / "miou_curve.png") as img:
        assert img.size == (640, 480)
    assert [r["sample"] for r in res["per_sample"]] == ["a/1", "a/2", "b/1"]
    assert len(res["miou_curve"]) == clicks and all(0.0 <= v <= 1.0 for v in res["miou_curve"])
    s = res["summary"]
    assert s["samples"] == 3
    for key in ("NoC@85", "NoC@90"):
        assert 1 <= s[key] <= clicks
        assert all(1 <= r[key] <= clicks for r in res["per_sample"])
    assert 0.0 <= s["AUC"] <= 1.0 and s["AUC"] == pytest.approx(np.mean(res["miou_curve"]))
    assert s["mIoU@1"] == pytest.approx(res["miou_curve"][0])
    assert s["mIoU@1"] <= s["mIoU@1-oracle"] <= 1.0  # the kept mask is one of the three the oracle picks from
    single = run(model=model, data=root, task="interactive", max_clicks=2, save_dir=tmp_path / "single",
                 verbose=False, multimask_first=False)["summary"]
    assert "mIoU@1-oracle" not in single  # one mask: nothing to choose from
    data = json.loads((out / "results.json").read_text())
    assert all(len(r["ious"]) == clicks for r in data["per_sample"])
    assert data["miou_curve"] == pytest.approx(res["miou_curve"])
    assert len(_read_csv(out / "miou_curve.csv")) == clicks and len(_read_csv(out / "per_sample.csv")) == 3


class FakeImagePredictor:
    """Records each predict call; predicts the ground truth cropped to the columns left of the last click + 40 px,
    so a few clicks are needed."""

    def __init__(self, gt):
        self.gt, self.calls = gt, []

    def predict(self, point_coords, point_labels, mask_input=None, multimask_output=True):
        self.calls.append((np.array(point_coords), np.array(point_labels), mask_input, multimask_output))
        mask = self.gt.copy()
        mask[:, int(point_coords[-1][0]) + 40:] = False
        n = 3 if multimask_output else 1
        masks = np.stack([mask] * n)
        iou = np.linspace(0.5, 0.9, n)[::-1]  # the first mask is the most confident
        low = np.stack([np.full((64, 64), float(len(self.calls)))] * n)
        return masks, iou, low


def test_click_session_protocol():
    gt = np.zeros((40, 200), bool)
    gt[5:35, 10:190] = True
    fake = FakeImagePredictor(gt)
    ious = click_session(fake, gt, max_clicks=6)
    n = len(fake.calls)
    assert 1 < n <= 6 and len(ious) == n
    assert [len(c[0]) for c in fake.calls] == list(range(1, n + 1))  # every round re-predicts with all clicks
    assert fake.calls[0][2] is None and fake.calls[0][3] is True  # first click: multimask, no mask input
    for k in range(1, n):
        assert fake.calls[k][3] is False
        assert fake.calls[k][2].shape == (1, 64, 64) and fake.calls[k][2][0, 0, 0] == k  # previous logits
    assert all(lbl == 1 for c in fake.calls for lbl in c[1])  # only missed regions: positive clicks
    assert ious == sorted(ious) and ious[-1] == 1.0  # a perfect mask ends the session early
    assert click_session(FakeImagePredictor(gt), gt, max_clicks=6, multimask_first=False)[0] > 0


class RankedFakePredictor(FakeImagePredictor):
    """Three different first-click masks: the most confident is the worst (a quarter of the object), the least
    confident the whole object."""

    def predict(self, point_coords, point_labels, mask_input=None, multimask_output=True):
        masks, iou, low = super().predict(point_coords, point_labels, mask_input, multimask_output)
        if multimask_output:
            masks = np.stack([self.gt.copy() for _ in range(3)])
            masks[0][:, 55:] = False  # ~1/4 of the 180 columns
            masks[1][:, 100:] = False  # ~1/2
        return masks, iou, low


def test_click_session_first_click_oracle():
    gt = np.zeros((40, 200), bool)
    gt[5:35, 10:190] = True
    first: list[float] = []
    ious = click_session(RankedFakePredictor(gt), gt, max_clicks=3, first_click_ious=first)
    assert first == pytest.approx([45 / 180, 90 / 180, 1.0])  # every mask scored, in the predictor's order
    assert ious[0] == pytest.approx(first[0])  # the protocol keeps the most confident one, not the best
    none: list[float] = []
    click_session(RankedFakePredictor(gt), gt, max_clicks=3, multimask_first=False, first_click_ious=none)
    assert none == []


def test_interactive_perfect_prediction(tmp_path, model, monkeypatch):
    root = make_interactive(tmp_path / "inter")
    # instance-id maps of the two images, in the dataset's order (a, b)
    id_maps = [read_palette_png(root / "masks" / "a.png"), (read_palette_png(root / "masks" / "b_1.png") > 0) * 1]

    class Perfect:
        """Predicts the ground-truth instance under the first click."""

        def __init__(self, net, dtype=None):
            self.images = -1

        def set_image(self, image):
            self.images += 1

        def reset_predictor(self):
            pass

        def predict(self, point_coords, point_labels, mask_input=None, multimask_output=True):
            ids = id_maps[self.images]
            x, y = (int(v) for v in point_coords[0])
            return (ids == ids[y, x])[None], np.ones(1), np.zeros((1, 64, 64))

    monkeypatch.setattr(image_module, "ImagePredictor", Perfect)
    res = run(model=model, data=root, task="interactive", max_clicks=5, save_dir=tmp_path / "out", verbose=False)
    assert res["summary"]["NoC@85"] == 1.0 and res["summary"]["NoC@90"] == 1.0
    assert res["summary"]["NoF@90"] == 0.0
    assert res["miou_curve"] == [1.0] * 5 and res["summary"]["AUC"] == 1.0 and res["summary"]["mIoU@5"] == 1.0
