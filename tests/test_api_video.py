"""The Ultralytics SAM2VideoPredictor snippets, run unchanged against `masklet.SAM2VideoPredictor`.

Clips are the first one or two frames of bedroom.mp4 (960x540), so that a test costs a few encodings. The
exact `overrides` of the documentation (imgsz=1024) are used once; the other tests track at imgsz=512.
"""
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file, reference_file, write_clip

from masklet import SAM2VideoPredictor
from masklet.api.prompts import PromptError


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("masklet_home")
    shutil.copy(reference_file("sam2.1_hiera_t_random.pt"), home / "sam2_b.pt")
    return home


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    video = data_file("videos/bedroom.mp4")
    return {n: write_clip(video, folder / f"test{n}.mp4", n) for n in (1, 2)}


@pytest.fixture(scope="module")
def predictor(home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKLET_HOME", str(home))
        overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=512, model="sam2_b.pt", verbose=False)  # noqa: C408
        return SAM2VideoPredictor(overrides=overrides)


def test_docs_overrides_single_point(home, clips, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(home))
    overrides = dict(conf=0.25, task="segment", mode="predict", imgsz=1024, model="sam2_b.pt")  # noqa: C408 - the docs' form
    predictor = SAM2VideoPredictor(overrides=overrides)
    results = predictor(source=clips[1], points=[920, 470], labels=1)
    assert len(results) == 1
    r = results[0]
    assert r.frame == 0 and r.orig_shape == (540, 960) and r.path == clips[1]
    assert r.boxes.is_track and r.boxes.id.tolist() == [1] and r.boxes.cls.tolist() == [0]
    assert r.masks.data.shape == (1, 540, 960)
    assert predictor.model.image_size == 1024


def test_two_objects_tracked(predictor, clips):
    results = predictor(source=clips[2], points=[[920, 470], [909, 138]], labels=[1, 1])
    assert [r.frame for r in results] == [0, 1]
    for r in results:
        ids = r.boxes.id.tolist()
        assert set(ids) <= {1, 2} and ids == sorted(ids)
        assert r.boxes.cls.tolist() == [i - 1 for i in ids]  # class follows the object, not the row
        assert ((r.boxes.conf > 0) & (r.boxes.conf <= 1)).all()
    assert results[0].boxes.id.tolist() == [1, 2]
    # the wrapper is the official API: the same prompts by hand give the same frame-0 masks
    state = predictor.inference_state
    predictor.reset_state(state)
    predictor.add_new_points_or_box(state, 0, 1, points=[[920, 470]], labels=[1])
    _, ids, logits = predictor.add_new_points_or_box(state, 0, 2, points=[[909, 138]], labels=[1])
    assert ids == [1, 2]
    assert torch.equal(logits[:, 0] > 0, results[0].masks.data)


def test_one_object_two_points(predictor, clips):
    results = predictor(source=clips[1], points=[[[920, 470], [909, 138]]], labels=[[1, 1]])
    assert len(results) == 1 and results[0].boxes.id.tolist() == [1]


def test_one_object_with_negative_point(predictor, clips):
    results = predictor(source=clips[1], points=[[[920, 470], [909, 138]]], labels=[[1, 0]])
    assert len(results) == 1 and len(results[0]) <= 1
    state = predictor.inference_state
    predictor.reset_state(state)
    _, _, logits = predictor.add_new_points_or_box(state, 0, 1, points=[[920, 470], [909, 138]], labels=[1, 0])
    assert torch.equal((logits[:, 0] > 0)[logits[:, 0].flatten(1).gt(0).any(1)], results[0].masks.data)


def test_prompt_on_later_frame_and_save(predictor, clips, tmp_path):
    results = predictor(source=clips[2], bboxes=[600, 300, 900, 500], frame=1, save=True, save_txt=True,
                        project=tmp_path)
    assert [r.frame for r in results] == [0, 1]  # frame 0 comes from tracking backwards
    assert predictor.save_dir == tmp_path / "predict"  # named after mode="predict", as Ultralytics does
    cap = cv2.VideoCapture(str(tmp_path / "predict" / "test2.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    cap.release()
    assert (tmp_path / "predict" / "labels").is_dir()


def test_stream_and_masks_prompt(predictor, clips):
    frames = [cv2.cvtColor(cv2.imread(str(data_file("videos/bedroom_frames/00000.jpg"))), cv2.COLOR_BGR2RGB)]
    mask = np.zeros(frames[0].shape[:2], bool)
    mask[300:450, 600:850] = True
    gen = predictor(source=iter(frames), masks=mask, stream=True)
    results = list(gen)
    assert len(results) == 1 and results[0].boxes.id.tolist() == [1]
    assert results[0].path == "stream"


def test_bad_input(predictor, clips):
    with pytest.raises(PromptError, match="pass points"):
        predictor(source=clips[1])
    with pytest.raises(PromptError, match=r"labels shape \(1,\) does not match points shape \(2, 2\)"):
        predictor(source=clips[1], points=[[920, 470], [909, 138]], labels=[1])
    with pytest.raises(PromptError, match="outside the image, which is 960x540"):
        predictor(source=clips[1], points=[1920, 470])
    with pytest.raises(ValueError, match="frame=5 is outside the video, which has 1 frames"):
        predictor(source=clips[1], points=[920, 470], frame=5)
    with pytest.raises(FileNotFoundError, match="not found"):
        predictor(source="missing.mp4", points=[920, 470])
    with pytest.raises(TypeError, match="Did you mean 'imgsz'"):
        SAM2VideoPredictor(overrides={"imgsiz": 512, "model": predictor.model})
    with pytest.raises(TypeError, match="Did you mean 'vid_stride'"):
        predictor(source=clips[1], points=[920, 470], vid_strde=2)
    with pytest.raises(ValueError, match="multiple of 64"):
        predictor(source=clips[1], points=[920, 470], imgsz=1000)


def test_needs_sam2(predictor):
    class NotSam2(torch.nn.Module):
        family = "sam"

    with pytest.raises(ValueError, match="needs a SAM 2"):
        SAM2VideoPredictor(overrides={"model": NotSam2()})


def test_video_switches_from_overrides_and_call(home, clips, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(home))
    overrides = dict(model="sam2_b.pt", imgsz=512, verbose=False, non_overlap_masks=True,  # noqa: C408
                     add_all_frames_to_correct_as_cond=True)
    predictor = SAM2VideoPredictor(overrides=overrides)
    switches = predictor.video_predictor
    assert switches.non_overlap_masks and switches.add_all_frames_to_correct_as_cond
    assert not switches.clear_non_cond_mem_around_input and not switches.clear_non_cond_mem_for_multi_obj
    boxes = [[450, 200, 900, 520], [550, 250, 960, 540]]  # two objects over much the same region
    disjoint = predictor(source=clips[1], bboxes=boxes)[0].masks.data
    overlapping = predictor(source=clips[1], bboxes=boxes, non_overlap_masks=False)[0].masks.data
    assert not switches.non_overlap_masks  # a call's keywords override the constructor's
    assert len(disjoint) == len(overlapping) == 2
    assert (overlapping[0] & overlapping[1]).any() and not (disjoint[0] & disjoint[1]).any()
    with pytest.raises(TypeError, match="non_overlap_masks must be True or False"):
        predictor(source=clips[1], bboxes=boxes, non_overlap_masks="yes")
