"""The Ultralytics SAM 2 documentation snippets, run unchanged against `masklet.SAM`, plus bad input.

The checkpoint files are the reference random tiny weights under the snippets' names: the variant is read
from the contents, so `sam2.1_b.pt` here is a tiny model. The image is encoded once; every later prompt on
the same image reuses its features.
"""
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import data_file, recording_retain, reference_file, small_checkpoint_home, write_clip

from masklet import SAM
from masklet.api.prompts import PromptError


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("masklet_home")
    for name in ("sam2.1_b.pt", "sam2_b.pt"):
        shutil.copy(reference_file("sam2.1_hiera_t_random.pt"), home / name)
    return home


@pytest.fixture(scope="module")
def small_home(tmp_path_factory):
    return small_checkpoint_home(tmp_path_factory.mktemp("masklet_small_home"))


@pytest.fixture(scope="module")
def model(home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKLET_HOME", str(home))
        model = SAM("sam2.1_b.pt")
    return model


@pytest.fixture(scope="module")
def truck():
    return str(data_file("images/truck.jpg"))


@pytest.fixture(scope="module")
def box_results(model, truck):
    """Snippet: results = model("path/to/image.jpg", bboxes=[100, 100, 200, 200])."""
    return model(truck, bboxes=[100, 100, 200, 200])


def _best(model, **prompts):
    """The official image-predictor answer on the image the model holds (features are shared)."""
    masks, iou, _ = model.predictor.predict(multimask_output=False, **prompts)
    return torch.from_numpy(masks.astype(bool)), iou


# ---------------------------------------------------------------------------------------------- snippets
def test_load_and_info(model, capsys):
    assert model.variant == "sam2.1_hiera_t"  # read from the contents, not from the name sam2.1_b.pt
    layers, params, grads, gflops = model.info()
    out = capsys.readouterr().out
    assert "summary" in out and f"{params:,} parameters" in out and "GFLOPs" in out
    assert layers == len(list(model.model.modules()))
    assert params == grads == sum(p.numel() for p in model.model.parameters())
    assert 50 < gflops < 2000
    assert model.info(verbose=False) == (layers, params, grads, gflops)  # cached, quiet
    assert capsys.readouterr().out == ""


def test_bboxes(box_results, model, truck):
    assert isinstance(box_results, list) and len(box_results) == 1
    r = box_results[0]
    assert r.path == truck and r.orig_shape == (1200, 1800) and len(r) == 1
    expected, iou = _best(model, box=[100, 100, 200, 200])
    assert torch.equal(r.masks.data, expected)
    assert r.boxes.conf.tolist() == pytest.approx(iou.tolist(), abs=1e-6)
    assert all(v is not None and v >= 0 for v in r.speed.values())


def test_single_point_uses_last_source(box_results, model, truck):
    results = model(points=[900, 370], labels=[1])
    assert len(results) == 1 and results[0].path == truck and len(results[0]) == 1
    assert torch.equal(results[0].masks.data, _best(model, point_coords=[[900, 370]], point_labels=[1])[0])


def test_two_objects(box_results, model):
    r = model(points=[[400, 370], [900, 370]], labels=[1, 1])[0]
    assert len(r) == 2 and r.boxes.cls.tolist() == [0, 1]
    for k, xy in enumerate(([400, 370], [900, 370])):
        single = _best(model, point_coords=[xy], point_labels=[1])[0][0]
        # two prompts decode as one batch: matrix products of another shape may round differently (seen with
        # one thread), so a few of the 2.16 M pixels sitting on the threshold may flip
        flipped = (r.masks.data[k] != single).sum().item()
        assert flipped <= 20, f"object {k}: {flipped} pixels differ from the single-prompt mask"


def test_one_object_two_points(box_results, model):
    r = model(points=[[[400, 370], [900, 370]]], labels=[[1, 1]])[0]
    assert len(r) == 1
    assert torch.equal(r.masks.data, _best(model, point_coords=[[400, 370], [900, 370]], point_labels=[1, 1])[0])


def test_negative_point(box_results, model):
    r = model(points=[[[400, 370], [900, 370]]], labels=[[1, 0]])[0]
    assert len(r) == 1
    assert torch.equal(r.masks.data, _best(model, point_coords=[[400, 370], [900, 370]], point_labels=[1, 0])[0])


def test_source_with_point(box_results, model, truck):
    r = model(truck, points=[150, 150], labels=[1])[0]
    assert len(r) == 1 and r.path == truck
    assert r.speed["inference"] < 60_000
    assert torch.equal(r.masks.data, _best(model, point_coords=[[150, 150]], point_labels=[1])[0])


def test_segment_everything_video(small_home, tmp_path, monkeypatch):
    """Snippet: model("path/to/video.mp4") - no prompts: segment everything, one Results per frame."""
    monkeypatch.setenv("MASKLET_HOME", str(small_home))
    clip = write_clip(data_file("videos/bedroom.mp4"), tmp_path / "video.mp4", 1, size=(320, 180))
    model = SAM("sam2.1_b.pt")
    results = model(clip)
    assert len(results) == 1 and results[0].frame == 0 and results[0].orig_shape == (180, 320)
    assert results[0].masks is not None and results[0].masks.data.shape[1:] == (180, 320)


# ---------------------------------------------------------------------------------------------- more behaviour
def test_everything_options_and_save_video(small_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(small_home))
    clip = write_clip(data_file("videos/bedroom.mp4"), tmp_path / "clip.mp4", 2, size=(160, 90))
    model = SAM("sam2.1_b.pt")
    (tmp_path / "runs" / "predict").mkdir(parents=True)  # taken: this run must go to predict2
    results = model(clip, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, conf=0.0,
                    save=True, save_txt=True, project=tmp_path / "runs", verbose=False)
    assert [r.frame for r in results] == [0, 1]
    assert all(len(r) > 0 and r.boxes.conf.min() >= 0 for r in results)
    out = tmp_path / "runs" / "predict2"
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (160, 90)
    cap.release()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["clip_0.txt", "clip_1.txt"]
    with pytest.raises(TypeError, match="Did you mean 'points_per_side'"):
        model(clip, points_per_sid=4)


def test_stream_returns_generator_and_sources(model, truck, tmp_path):
    image = cv2.imread(truck)[..., ::-1].copy()
    gen = model([image, truck], points=[900, 370], stream=True, verbose=False)
    assert not isinstance(gen, list)
    results = list(gen)
    assert [r.path for r in results] == ["image0", truck]
    assert torch.equal(results[0].masks.data, results[1].masks.data)  # same pixels, same features
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(image).save(folder / "a.png")
    assert [r.path for r in model(str(folder), points=[900, 370], verbose=False)] == [str(folder / "a.png")]


def test_multimask_and_mask_prompt(box_results, model, truck):
    r = model(truck, points=[900, 370], multimask_output=True, verbose=False)[0]
    assert len(r) == 3
    low = model.predictor.predict(point_coords=[[900, 370]], point_labels=[1], multimask_output=False)[2]
    r = model(points=[900, 370], masks=low, verbose=False)[0]
    expected, _ = _best(model, point_coords=[[900, 370]], point_labels=[1], mask_input=low)
    assert torch.equal(r.masks.data, expected)
    # an image-size binary mask is accepted too
    r = model(truck, masks=box_results[0].masks.data[0].numpy(), verbose=False)[0]
    assert len(r) == 1


def test_imgsz(model, truck):
    r = model(truck, points=[900, 370], imgsz=512, verbose=False)[0]
    assert model.model.image_size == 512 and len(r) == 1
    with pytest.raises(ValueError, match="multiple of 64"):
        model(truck, points=[900, 370], imgsz=500)
    with pytest.raises(ValueError, match="square"):
        model(truck, points=[900, 370], imgsz=[512, 768])
    model(truck, points=[900, 370], verbose=False)  # back to the native size
    assert model.model.image_size == 1024


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_prompts(box_results, model, truck):
    with pytest.raises(PromptError, match=r"labels shape \(1,\) does not match points shape \(2, 2\)"):
        model(truck, points=[[400, 370], [900, 370]], labels=[1])
    with pytest.raises(PromptError, match="labels were given without points"):
        model(truck, labels=[1])
    with pytest.raises(PromptError, match=r"bboxes must be \[x1, y1, x2, y2\].*got shape \(3,\)"):
        model(truck, bboxes=[100, 100, 200])
    with pytest.raises(PromptError, match=r"point \[5000.0, 10.0\] is outside the image, which is 1800x1200"):
        model(truck, points=[5000, 10])
    with pytest.raises(PromptError, match=r"masks must be"):
        model(truck, masks=np.zeros((1, 1, 64, 64)))


def test_bad_source_and_options(model, truck):
    with pytest.raises(FileNotFoundError, match="source not found: nope/missing.jpg"):
        model("nope/missing.jpg", points=[1, 1])
    with pytest.raises(TypeError, match="Did you mean 'imgsz'"):
        model(truck, points=[1, 1], imgsize=512)
    with pytest.raises(ValueError, match="vid_stride"):
        model(truck, points=[1, 1], vid_stride=0)
    with pytest.raises(ValueError, match="task='segment'"):
        model(truck, points=[1, 1], task="detect")
    with pytest.raises(ValueError, match="device="):
        model(truck, points=[1, 1], device="tpu")
    with pytest.raises(ValueError, match="no source"):
        SAM(model.model)(points=[1, 1])


def test_unknown_model_name(home, monkeypatch):
    monkeypatch.setenv("MASKLET_HOME", str(home))
    with pytest.raises(FileNotFoundError, match="Did you mean 'sam2.1_b.pt'"):
        SAM("sam2.1_bb.pt")


def test_local_path_any_name(tmp_path, home):
    path = tmp_path / "my weights.bin"
    shutil.copy(home / "sam2_b.pt", path)
    assert SAM(str(path)).variant == "sam2.1_hiera_t"


def test_stream_validates_at_call(model, truck):
    with pytest.raises(PromptError):
        model(truck, points=[1, 2, 3], stream=True)



def test_predict_loop_keeps_freed_memory_until_the_stream_ends(small_home, monkeypatch):
    # image after image frees and reallocates the same buffers: on a CPU the whole predict loop runs under
    # utils.allocator.retain_freed_memory, entered once and left when the stream is exhausted
    import masklet.api.sam as api_sam

    monkeypatch.setenv("MASKLET_HOME", str(small_home))
    model = SAM("sam2.1_b.pt")
    log = recording_retain(monkeypatch, api_sam)
    images = [np.random.default_rng(k).integers(0, 255, (40, 60, 3), dtype=np.uint8) for k in range(3)]
    during = [list(log) for _ in model(images, points=[[20, 20]], labels=[1], stream=True, verbose=False)]
    assert during == [[True]] * 3 and log == [True, "end"]
