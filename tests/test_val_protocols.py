"""The two VOS scoring protocols ("davis": davis2017-evaluation, "sav": sav_benchmark of the SAM 2 repository) on
tiny hand-made videos whose J and F are computed by hand, scoring existing prediction folders (`score`, `pred=`),
SA-V's per-object layout and layout detection."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from masklet.val import VideoScorer, VOSDataset, davis_object_ids, run, score, statistics, val_cli
from masklet.val.datasets import read_palette_png, write_palette_png


def _frames(root, video, n, hw, folder="JPEGImages", suffix=".jpg", step=1):
    d = root / folder / video
    d.mkdir(parents=True, exist_ok=True)
    for t in range(0, n, step):
        Image.fromarray(np.full((*hw, 3), 90, np.uint8)).save(d / f"{t:05d}{suffix}")


def make_video(root, video, labels, folder="Annotations", image_folder="JPEGImages"):
    """A video with one label map per frame (list of (H, W) arrays); frames are grey PNGs of the same size."""
    labels = [np.asarray(lab, np.uint8) for lab in labels]
    _frames(root, video, len(labels), labels[0].shape, folder=image_folder, suffix=".png")
    for t, lab in enumerate(labels):
        write_palette_png(root / folder / video / f"{t:05d}.png", lab)
    return root


def write_pred(root, video, labels):
    for t, lab in enumerate(labels):
        write_palette_png(root / video / f"{t:05d}.png", np.asarray(lab, np.uint8))
    return root


def scores(res):
    return {(r["video"], r["object"]): r for r in res["per_object"]}


# ------------------------------------------------------------------------------------------------------ void

def test_void_counts_as_background(tmp_path):
    # The smallest case: 3 frames of 2x2, only frame 1 is scored (first and last are left out).
    # GT [[1, 255], [0, 0]], prediction [[1, 1], [0, 0]]: the predicted void pixel is a false positive,
    # J = |{(0,0)}| / |{(0,0), (0,1)}| = 0.5 under both protocols.
    # F: gt boundary = {(0,0)} (differs from its right neighbour), predicted boundary = {(0,0), (0,1)} (differ
    # from the row below); tolerance ceil(0.008 * sqrt(8)) = 1 px, so every boundary pixel is matched: F = 1.
    gt = [[[1, 0], [0, 0]], [[1, 255], [0, 0]], [[1, 0], [0, 0]]]
    data = make_video(tmp_path / "data", "v", gt)
    pred = write_pred(tmp_path / "pred", "v", [[[1, 0], [0, 0]], [[1, 1], [0, 0]], [[1, 0], [0, 0]]])
    for protocol in ("davis", "sav"):
        res = score(data, pred, protocol=protocol, save_dir=tmp_path / protocol, verbose=False)
        (row,) = res["per_object"]
        assert row["frames"] == 1
        assert row["J-Mean"] == 0.5 and row["F-Mean"] == 1.0 and row["J&F-Mean"] == 0.75
        assert res["meta"]["protocol"] == protocol


# ------------------------------------------------------------------------------------------------------ objects

def _late_object_video(root):
    """5 frames of 1x4: object 1 at column 0 on every frame, object 2 at column 3 from frame 3 on."""
    labels = [[[1, 0, 0, 2 if t >= 3 else 0]] for t in range(5)]
    return make_video(root, "late", labels)


def test_late_object_missed_entirely(tmp_path):
    data = _late_object_video(tmp_path / "data")
    # object 1 predicted perfectly, object 2 never
    pred = write_pred(tmp_path / "pred", "late", [[[1, 0, 0, 0]]] * 5)
    # sav: object 2 is scored from its first appearance (frame 3) on; scored frames are 1..3, so only frame 3:
    # J = 0 (nothing predicted), F = 0 (recall 0) -> J = F = 0.0
    sav = scores(score(data, pred, protocol="sav", save_dir=tmp_path / "s", verbose=False))
    assert sav[("late", 2)]["frames"] == 1 and sav[("late", 2)]["J-Mean"] == 0.0 and sav[("late", 2)]["F-Mean"] == 0.0
    assert sav[("late", 1)]["frames"] == 3 and sav[("late", 1)]["J-Mean"] == 1.0
    # davis: id 2 is larger than any id on the first frame (the toolkit cannot score it); masklet scores it on
    # every scored frame like the others: frames 1, 2 (empty gt, empty prediction: 1) and 3 (0) -> 2/3
    davis = scores(score(data, pred, protocol="davis", save_dir=tmp_path / "d", verbose=False))
    assert davis[("late", 2)]["frames"] == 3 and davis[("late", 2)]["J-Mean"] == pytest.approx(2 / 3)


def test_sav_starts_an_object_at_its_first_predicted_frame(tmp_path):
    data = _late_object_video(tmp_path / "data")
    # object 2 predicted already on frame 2 (where it is not yet) and perfectly on frame 3: sav_benchmark scores
    # an object from the first scored frame on which it is in the ground truth or in the prediction:
    # frames 2 (J 0) and 3 (J 1) -> 0.5
    pred = write_pred(tmp_path / "pred", "late", [[[1, 0, 0, 2 if t >= 2 else 0]] for t in range(5)])
    sav = scores(score(data, pred, protocol="sav", save_dir=tmp_path / "s", verbose=False))
    assert sav[("late", 2)]["frames"] == 2 and sav[("late", 2)]["J-Mean"] == 0.5


def test_phantom_ids(tmp_path):
    # ids 1 and 3 on every frame, no 2. 4 frames of 1x4, scored frames 1 and 2.
    gt = [[[1, 0, 3, 0]]] * 4
    data = make_video(tmp_path / "data", "ph", gt)
    # object 1 perfect; object 3 found on frame 1, missed on frame 2; a stray pixel of id 2 on frame 1
    pred = write_pred(tmp_path / "pred", "ph", [[[1, 0, 3, 0]], [[1, 2, 3, 0]], [[1, 0, 0, 0]], [[1, 0, 3, 0]]])
    davis = score(data, pred, protocol="davis", save_dir=tmp_path / "d", verbose=False)
    rows = scores(davis)
    # davis scores ids 1..3: object 2 has an empty gt everywhere, so the stray pixel makes frame 1 J = 0 and
    # frame 2 (nothing predicted) J = 1 -> 0.5; object 3: [1, 0] -> 0.5
    assert sorted(o for _, o in rows) == [1, 2, 3]
    assert rows[("ph", 2)]["J-Mean"] == 0.5 and rows[("ph", 3)]["J-Mean"] == 0.5 and rows[("ph", 1)]["J-Mean"] == 1.0
    assert davis["summary"]["J-Mean"] == pytest.approx(2 / 3)
    # sav scores the ids in the ground truth only: 1 and 3 -> (1 + 0.5) / 2
    sav = score(data, pred, protocol="sav", save_dir=tmp_path / "s", verbose=False)
    assert sorted(o for _, o in scores(sav)) == [1, 3] and sav["summary"]["J-Mean"] == 0.75
    # without the stray pixel the phantom object is a free J = F = 1 under davis
    write_pred(tmp_path / "pred", "ph", [[[1, 0, 3, 0]], [[1, 0, 3, 0]], [[1, 0, 0, 0]], [[1, 0, 3, 0]]])
    rows = scores(score(data, pred, protocol="davis", save_dir=tmp_path / "d2", verbose=False))
    assert rows[("ph", 2)]["J-Mean"] == 1.0 and rows[("ph", 2)]["F-Mean"] == 1.0


def test_object_only_on_the_skipped_first_frame(tmp_path):
    # object 2 is annotated on frame 0 only: sav never scores it; davis (id <= the first frame's largest) scores
    # it on frames 1 and 2, where an empty prediction is right (J = 1)
    gt = [[[1, 2, 0]], [[1, 0, 0]], [[1, 0, 0]], [[1, 0, 0]]]
    data = make_video(tmp_path / "data", "v", gt)
    pred = write_pred(tmp_path / "pred", "v", gt)
    video = VOSDataset(data)[0]
    assert davis_object_ids(video) == [1, 2]
    sav = score(data, pred, protocol="sav", save_dir=tmp_path / "s", verbose=False)
    assert sorted(o for _, o in scores(sav)) == [1]
    rows = scores(score(data, pred, protocol="davis", save_dir=tmp_path / "d", verbose=False))
    assert rows[("v", 2)]["J-Mean"] == 1.0 and rows[("v", 2)]["frames"] == 2


def test_two_frame_video_scores_both_frames(tmp_path):
    # neither official tool can score a 2-frame video (first and last leave nothing); masklet scores both
    gt = [[[1, 0]], [[1, 1]]]
    data = make_video(tmp_path / "data", "two", gt)
    pred = write_pred(tmp_path / "pred", "two", [[[1, 0]], [[1, 0]]])
    assert VOSDataset(data)[0].scored_frames() == [0, 1]
    for protocol in ("davis", "sav"):
        (row,) = score(data, pred, protocol=protocol, save_dir=tmp_path / protocol, verbose=False)["per_object"]
        assert row["frames"] == 2 and row["J-Mean"] == 0.75  # J = 1 and 1/2


def test_greyscale_0_255_annotations_and_predictions(tmp_path):
    # DAVIS 2016-style 0/255 greyscale masks are object 1, for annotations and predictions alike
    for t in range(3):
        m = np.zeros((2, 3), np.uint8)
        m[0, : t + 1] = 255
        _frames(tmp_path / "data", "g", 3, (2, 3), suffix=".png")
        (tmp_path / "data" / "Annotations" / "g").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(tmp_path / "data" / "Annotations" / "g" / f"{t:05d}.png")
        (tmp_path / "pred" / "g").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(tmp_path / "pred" / "g" / f"{t:05d}.png")
    (row,) = score(tmp_path / "data", tmp_path / "pred", save_dir=tmp_path / "o", verbose=False)["per_object"]
    assert row["object"] == 1 and row["J-Mean"] == 1.0 and row["F-Mean"] == 1.0


def test_scorer_feeds_frames_in_order_and_all_of_them(tmp_path):
    data = _late_object_video(tmp_path / "data")
    video = VOSDataset(data)[0]
    scorer = VideoScorer(video, "sav")
    assert scorer.frames == [1, 2, 3] and not scorer.wants(0) and not scorer.wants(4)
    scorer.add(0, np.zeros((1, 4), np.uint8))  # not a scored frame: ignored
    scorer.add(2, {1: np.array([[True, False, False, False]])})
    with pytest.raises(ValueError, match="in frame order"):
        scorer.add(1, np.zeros((1, 4), np.uint8))
    with pytest.raises(ValueError, match="no prediction was scored for frames"):
        scorer.results()
    with pytest.raises(ValueError, match="prediction is 2x1 but the annotation is 4x1"):
        VideoScorer(video, "davis").add(1, np.zeros((1, 2), np.uint8))


# ------------------------------------------------------------------------------------------------------ decay

def test_decay_over_256_frames_uses_the_right_frames():
    # 300 frames: J = 1 on frames 0..75, 0 afterwards. Bins: round(linspace(1, 300, 5)) - 1 = 0, 75, 150, 224,
    # 299 (inclusive), so the first bin (0..75) averages 1 and the last (224..299) 0: decay = 1.
    values = np.where(np.arange(300) <= 75, 1.0, 0.0)
    assert statistics(values)["decay"] == 1.0
    # The DAVIS toolkit stores these edges as uint8: 299 wraps to 43, its last bin is values[224:44] (empty),
    # so its decay is NaN here; masklet keeps the integer edges.
    edges = np.round(np.linspace(1, 300, 5) + 1e-10) - 1
    assert edges.astype(np.uint8)[-1] == 43 and len(values[int(edges[3]):43 + 1]) == 0
    assert math.isfinite(statistics(np.linspace(1, 0, 1000))["decay"])


# ------------------------------------------------------------------------------------------------------ layouts

def test_layout_detection_picks_the_protocol(tmp_path):
    gt = [[[1, 0]], [[1, 0]], [[1, 0]]]
    flat = make_video(tmp_path / "mose", "v", gt)
    assert VOSDataset(flat).layout == "mose"
    davis = make_video(tmp_path / "davis", "v", gt, folder="Annotations/480p", image_folder="JPEGImages/480p")
    assert VOSDataset(davis).layout == "davis"  # a resolution folder (or ImageSets/2017) is DAVIS's layout
    pred = write_pred(tmp_path / "pred", "v", gt)
    assert score(davis, pred, save_dir=tmp_path / "a", verbose=False)["meta"]["protocol"] == "davis"
    assert score(flat, pred, save_dir=tmp_path / "b", verbose=False)["meta"]["protocol"] == "sav"
    assert score(flat, pred, protocol="DAVIS", save_dir=tmp_path / "c", verbose=False)["meta"]["protocol"] == "davis"
    with pytest.raises(ValueError, match="protocol='youtube' is not a scoring protocol"):
        score(flat, pred, protocol="youtube", verbose=False)


def make_sav(root):
    """SA-V val layout: JPEGImages_24fps (8 frames of 2x4), Annotations_6fps every 2nd frame (0, 2, 4, 6),
    objects 000 (left half, always) and 001 (overlapping it, the left column, from frame 4 on), sav_val.txt."""
    _frames(root, "sav_1", 8, (2, 4), folder="JPEGImages_24fps")
    for t in range(0, 8, 2):
        a = np.zeros((2, 4), np.uint8)
        a[:, :2] = 1
        write_palette_png(root / "Annotations_6fps" / "sav_1" / "000" / f"{t:05d}.png", a)
        b = np.zeros((2, 4), np.uint8)
        if t >= 4:
            b[:, 0] = 1
        write_palette_png(root / "Annotations_6fps" / "sav_1" / "001" / f"{t:05d}.png", b)
    (root / "sav_val.txt").write_text("sav_1\n")
    return root


def test_sav_per_object_layout(tmp_path):
    data = make_sav(tmp_path / "sav_val")
    ds = VOSDataset(data)
    video = ds[0]
    assert ds.layout == "sav" and video.per_object and video.object_dirs == {0: "000", 1: "001"}
    assert video.annotated_frames == [0, 2, 4, 6] and video.scored_frames() == [2, 4]
    assert video.prompt_frames() == {0: 0, 1: 4}
    gt4 = video.gt_objects(4)
    assert (gt4[0] & gt4[1]).sum() == 2  # the objects overlap: no single label map
    with pytest.raises(ValueError, match="one PNG per object"):
        video.read_annotation(4)
    # per-object predictions: object 000 perfect; object 001 predicted as the whole left half on frame 4:
    # J = 2 / 4. Frames between the annotated ones are not needed.
    for t in (2, 4):
        a = np.zeros((2, 4), np.uint8)
        a[:, :2] = 1
        write_palette_png(tmp_path / "pred" / "sav_1" / "000" / f"{t:05d}.png", a)
        write_palette_png(tmp_path / "pred" / "sav_1" / "1" / f"{t:05d}.png", a * (t >= 4))
    res = score(data, tmp_path / "pred", save_dir=tmp_path / "out", verbose=False)
    assert res["meta"]["protocol"] == "sav" and res["meta"]["layout"] == "sav"
    rows = scores(res)
    assert rows[("sav_1", 0)]["J-Mean"] == 1.0 and rows[("sav_1", 0)]["frames"] == 2
    # object 001 first appears on frame 4: scored there only
    assert rows[("sav_1", 1)]["frames"] == 1 and rows[("sav_1", 1)]["J-Mean"] == 0.5
    # an object folder whose masks are all empty is not an object; a predicted object folder missing is an error
    write_palette_png(data / "Annotations_6fps" / "sav_1" / "002" / "00000.png", np.zeros((2, 4), np.uint8))
    assert VOSDataset(data)[0].object_ids == [0, 1]
    (tmp_path / "pred" / "sav_1" / "1").rename(tmp_path / "pred" / "sav_1" / "x1")
    with pytest.raises(ValueError, match="x1 is not named by an object id"):
        score(data, tmp_path / "pred", verbose=False)
    (tmp_path / "pred" / "sav_1" / "x1").rename(tmp_path / "labels_tmp")
    with pytest.raises(FileNotFoundError, match="no predictions for object.s. 001 of video 'sav_1'"):
        score(data, tmp_path / "pred", verbose=False)
    (tmp_path / "labels_tmp").rename(tmp_path / "pred" / "sav_1" / "1")
    # a label-map prediction cannot hold object 000 (0 is background)
    write_pred(tmp_path / "labels", "sav_1", [np.zeros((2, 4))] * 8)
    with pytest.raises(ValueError, match="id 0 .*per object"):
        score(data, tmp_path / "labels", verbose=False)
    # a per-object PNG with several values is refused, as sav_benchmark does
    write_palette_png(tmp_path / "pred" / "sav_1" / "000" / "00002.png", np.array([[0, 1, 2, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="holds 3 distinct values"):
        score(data, tmp_path / "pred", verbose=False)


# ------------------------------------------------------------------------------------------------------ pred=

def test_score_errors(tmp_path):
    gt = [[[1, 0]], [[1, 0]], [[1, 0]]]
    data = make_video(tmp_path / "data", "v", gt)
    make_video(data, "w", gt)
    pred = write_pred(tmp_path / "pred", "v", gt)
    with pytest.raises(FileNotFoundError, match="no predictions for video 'w'.*videos="):
        score(data, pred, verbose=False)
    assert score(data, pred, videos=["v"], save_dir=tmp_path / "o", verbose=False)["summary"]["J-Mean"] == 1.0
    (pred / "v" / "00001.png").unlink()
    with pytest.raises(FileNotFoundError, match="00001.png not found: frame 00001 of 'v' is scored"):
        score(data, pred, videos=["v"], verbose=False)
    write_palette_png(pred / "v" / "00001.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="prediction .*00001.png is 3x3 .*frame's size"):
        score(data, pred, videos=["v"], verbose=False)
    with pytest.raises(FileNotFoundError, match="prediction folder not found"):
        score(data, tmp_path / "nowhere", verbose=False)
    with pytest.raises(ValueError, match="either model= .* or pred="):
        run(model="sam2.1_t.pt", data=data, pred=pred, verbose=False)
    with pytest.raises(ValueError, match="model= is required .*or pred="):
        run(data=data, verbose=False)


def test_val_cli_pred_and_protocol(tmp_path, capsys):
    from masklet.cli import main

    data = _late_object_video(tmp_path / "data")
    pred = write_pred(tmp_path / "pred", "late", [[[1, 0, 0, 0]]] * 5)
    out = tmp_path / "out"
    assert main(["val", f"data={data}", f"pred={pred}", "protocol=sav", f"save_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "sav protocol" in printed
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["J-Mean"] == 0.5  # object 1: 1.0, object 2: 0.0
    res = val_cli({"data": str(data), "pred": str(pred), "protocol": "davis", "save_dir": str(tmp_path / "o2"),
                   "verbose": "False"})
    assert res["summary"]["J-Mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert main(["val", f"data={data}", f"pred={pred}", "protocol=other"]) == 2
    assert "not a scoring protocol" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ run + score

class GroundTruthPredictor:
    """Stands in for VideoPredictor: logits +10 inside each prompted object's ground truth, -10 outside, on every
    annotated frame (the previous annotation in between)."""

    video = None

    def __init__(self, model, fill_hole_area=0, dtype=None, **_):
        pass

    def init_state(self, frames):
        return {"frames": frames, "objects": []}

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        state["objects"].append(obj_id)

    def propagate_in_video(self, state, start_frame_idx=None, progress=True, **_):
        import torch

        video = GroundTruthPredictor.video
        last = None
        for t in range(start_frame_idx, len(state["frames"])):
            if t in video.annotated_frames:
                last = t
            masks = [video.gt_mask(last, o) for o in state["objects"]]
            logits = torch.stack([torch.from_numpy(m).float() * 20 - 10 for m in masks])
            yield t, list(state["objects"]), logits[:, None]

    def reset_state(self, state):
        pass


def test_run_on_sav_layout_writes_per_object_masks_that_score_the_same(tmp_path, monkeypatch):
    import torch
    from conftest import tiny_sam2

    import masklet.predictors.video as video_module

    data = make_sav(tmp_path / "sav_val")
    GroundTruthPredictor.video = VOSDataset(data)[0]
    monkeypatch.setattr(video_module, "VideoPredictor", GroundTruthPredictor)
    torch.manual_seed(0)
    res = run(model=tiny_sam2(), data=data, save_dir=tmp_path / "out", verbose=False)
    assert res["meta"]["protocol"] == "sav"
    assert all(r["J-Mean"] == 1.0 and r["F-Mean"] == 1.0 for r in res["per_object"])
    # per-object PNGs for every frame, in the annotations' folder names; object 001 empty before its prompt
    masks = tmp_path / "out" / "masks" / "sav_1"
    assert sorted(p.name for p in masks.iterdir()) == ["000", "001"]
    assert len(list((masks / "001").glob("*.png"))) == 8 and not read_palette_png(masks / "001" / "00002.png").any()
    assert (read_palette_png(masks / "001" / "00004.png") > 0).sum() == 2
    again = score(data, tmp_path / "out", save_dir=tmp_path / "again", verbose=False)  # the run folder as it is
    assert again["per_object"] == [{k: v for k, v in r.items()} for r in res["per_object"]]

