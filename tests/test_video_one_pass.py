"""One-pass tracking keeps only what tracking onwards can read (as track_stream does) and returns the same masks:
the predictor's `propagate_in_video(one_pass=True)`, the Ultralytics-style call (file and folder, with a reverse
pass), `masklet track`, auto_annotate on a video and val's VOS runs."""
import cv2
import numpy as np
import pytest
import torch
from conftest import data_file, tiny_sam2

import masklet.predictors.video as video_module
from masklet.data.images import read_image
from masklet.predictors.video import VideoPredictor

NUM_FRAMES = 40  # more than max_obj_ptrs (16) frames on both sides of PROMPT_FRAME: pruning has work to do
PROMPT_FRAME = 20
H, W = 136, 240  # the bedroom frames at a quarter size (even sides for the lossless video codec)
SHORT = 22  # frames of the entry-point runs: past max_obj_ptrs, so pruning shows


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def model():
    return tiny_sam2(seed=5)


@pytest.fixture(scope="module")
def frames():
    out = []
    for i in range(NUM_FRAMES):
        image = read_image(data_file(f"videos/bedroom_frames/{i % 50:05d}.jpg"))
        out.append(cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA))
    return out


def write_folder(path, frames):
    path.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(path / f"{i:05d}.png"), frame[:, :, ::-1])  # lossless: the same pixels as `frames`
    return path


def write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (W, H))  # lossless
    for frame in frames:
        writer.write(frame[:, :, ::-1])
    writer.release()
    return path


@pytest.fixture(scope="module")
def folder(frames, tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("frames") / "clip", frames)


@pytest.fixture(scope="module")
def video_file(frames, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi", frames)


POINTS = [[52, 88], [140, 50]]  # two objects, one click each


def prompted(model, frames, frame=0):
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    for k, p in enumerate(POINTS):
        predictor.add_new_points_or_box(state, frame, k + 1, points=[p], labels=[1])
    return predictor, state


def full_run(model, frames, frame):
    """The masks of every frame with nothing pruned: reverse pass from `frame`, then forward."""
    predictor, state = prompted(model, frames, frame)
    out = {}
    if frame > 0:
        out.update({f: m for f, _, m in predictor.propagate_in_video(state, frame, reverse=True, progress=False)})
    out.update({f: m for f, _, m in predictor.propagate_in_video(state, frame, progress=False)})
    return out, state


def bounded(state, model) -> tuple[int, int]:
    """(most tracked results, most memories) any object holds."""
    results = max(len(obj.non_cond) for obj in state.objects)
    memories = max(sum(r.memory is not None for r in obj.non_cond.values()) for obj in state.objects)
    return results, memories


@pytest.fixture(scope="module")
def expected(model, frames):
    out, state = full_run(model, frames, PROMPT_FRAME)
    assert bounded(state, model)[0] == NUM_FRAMES - 1  # the interactive path keeps every frame
    assert all((m > 0).any() for m in out.values())  # objects present: the comparisons are not of empty masks
    return out


def test_one_pass_same_masks_flat_state(model, frames, expected):
    predictor, state = prompted(model, frames, PROMPT_FRAME)
    got, sizes = {}, []
    for reverse in (True, False):
        for f, ids, m in predictor.propagate_in_video(state, PROMPT_FRAME, reverse=reverse, progress=False,
                                                      one_pass=True):
            got[f] = m
            sizes.append(bounded(state, model))
    assert sorted(got) == list(range(NUM_FRAMES))
    for f in range(NUM_FRAMES):
        assert torch.equal(got[f], expected[f]), f
    # pointers of the last max_obj_ptrs - 1 frames (+ those the forward pass reads back from the prompted frame)
    assert max(s[0] for s in sizes) <= 2 * (predictor.max_obj_ptrs - 2) + 1
    assert max(s[1] for s in sizes) <= 2 * (model.num_maskmem - 2) + 1
    end = bounded(state, model)
    assert end[0] <= predictor.max_obj_ptrs - 2 + 1 and end[1] <= model.num_maskmem - 2 + 1


def test_forward_one_pass_matches_stream(model, frames):
    frames = frames[:SHORT]
    predictor, state = prompted(model, frames)
    one_pass = [m for _, _, m in predictor.propagate_in_video(state, progress=False, one_pass=True)]
    streamer = VideoPredictor(model)
    stream = [m for _, _, m in streamer.track_stream(
        iter(frames), prompts={0: [video_module.ObjectPrompt(k + 1, points=[p], labels=[1])
                                   for k, p in enumerate(POINTS)]})]
    assert len(one_pass) == SHORT
    assert all(torch.equal(a, b) for a, b in zip(one_pass, stream))
    # the same pruning rule: what is left after the last frame is the same
    assert bounded(state, model) == bounded(streamer.stream_state, model) == (predictor.max_obj_ptrs - 1,
                                                                              model.num_maskmem - 1)


def test_pruned_state_refuses_more_work(model, frames):
    predictor, state = prompted(model, frames[:6])
    list(predictor.propagate_in_video(state, progress=False, one_pass=True))
    with pytest.raises(RuntimeError, match="one_pass=True.*reset_state"):
        predictor.add_new_points_or_box(state, 3, 1, points=[[50, 50]], labels=[0])
    with pytest.raises(RuntimeError, match="one_pass=True"):
        next(predictor.propagate_in_video(state, progress=False))
    with pytest.raises(RuntimeError, match="one_pass=True"):
        predictor.add_new_mask(state, 3, 1, np.ones((H, W), bool))
    predictor.reset_state(state)
    predictor.add_new_points_or_box(state, 0, 1, points=[POINTS[0]], labels=[1])
    assert len(list(predictor.propagate_in_video(state, progress=False))) == 6


# ---------------------------------------------------------------------------------------------- entry points
class StateProbe:
    """Records, for every frame each propagation yields, how much tracking state the predictor holds."""

    def __init__(self, monkeypatch):
        self.calls, self.sizes, self.switches = [], [], []
        original = VideoPredictor.propagate_in_video
        probe = self

        def propagate(predictor, state, *args, **kwargs):
            probe.calls.append(kwargs.get("one_pass", False))
            probe.switches.append(predictor.clear_non_cond_mem_around_input)
            for item in original(predictor, state, *args, **kwargs):
                probe.sizes.append(bounded(state, predictor.model))
                yield item

        monkeypatch.setattr(VideoPredictor, "propagate_in_video", propagate)

    def assert_flat(self, frames_seen, results=15, memories=6):
        """Forward passes hold the last 15 frames' pointers and 6 memories (max_obj_ptrs 16, num_maskmem 7);
        a reverse pass also what the forward pass from the prompted frame will read (up to twice that)."""
        assert self.calls and all(self.calls), self.calls  # every propagation was a one-pass one
        assert len(self.sizes) >= frames_seen
        most = max(s[0] for s in self.sizes), max(s[1] for s in self.sizes)
        assert most[0] <= results and most[1] <= memories, most
        assert most[0] < frames_seen - 1  # the full state would hold every tracked frame


@pytest.fixture(scope="module")
def home(tmp_path_factory, model):
    home = tmp_path_factory.mktemp("home")
    torch.save({"model": model.state_dict()}, home / "sam2.1_t.pt")
    return home


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_api_call_one_pass(kind, model, frames, folder, video_file, expected, home, monkeypatch):
    from masklet import SAM2VideoPredictor
    from masklet.data.sources import VideoFrames

    monkeypatch.setenv("MASKLET_HOME", str(home))
    source = folder if kind == "folder" else video_file
    with VideoFrames(str(source)) as decoded:  # the reader gives back the very pixels of `frames`
        assert all(np.array_equal(decoded[i], frames[i]) for i in range(NUM_FRAMES))
    reference = expected
    probe = StateProbe(monkeypatch)
    predictor = SAM2VideoPredictor(overrides=dict(model="sam2.1_t.pt", imgsz=256, verbose=False))  # noqa: C408
    results = list(predictor(source=str(source), points=POINTS, labels=[1, 1], frame=PROMPT_FRAME, stream=True))
    assert [r.frame for r in results] == list(range(NUM_FRAMES))
    for r in results:
        want = reference[r.frame][:, 0] > 0
        keep = want.flatten(1).any(1)
        assert r.boxes.id.tolist() == [i + 1 for i in range(len(POINTS)) if keep[i]]
        assert torch.equal(r.masks.data.cpu().bool(), want[keep].cpu()), r.frame
    probe.assert_flat(NUM_FRAMES, results=29, memories=11)
    with pytest.raises(RuntimeError, match="one_pass"):
        predictor.add_new_points_or_box(predictor.inference_state, 3, 1, points=[[50, 50]], labels=[1])


def test_cli_track_one_pass(frames, home, monkeypatch, tmp_path):
    from masklet.cli import main

    folder = write_folder(tmp_path / "clip", frames[:SHORT])
    monkeypatch.setenv("MASKLET_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    probe = StateProbe(monkeypatch)
    main(["track", f"source={folder}", "points=[52,88]", "labels=[1]", "imgsz=256", "save=False", "verbose=False",
          "model=sam2.1_t.pt", "clear_non_cond_mem_around_input=True"])
    probe.assert_flat(SHORT)
    assert probe.switches == [True]  # the official switches reach the predictor from the command line


def test_auto_annotate_video_one_pass(model, frames, tmp_path, monkeypatch):
    from masklet.api.annotate import auto_annotate

    data = tmp_path / "videos"
    data.mkdir()
    write_video(data / "clip.avi", frames[:SHORT])
    probe = StateProbe(monkeypatch)

    def boxes(image):
        return np.array([[20.0, 60.0, 90.0, 120.0]]), np.array([0])

    out = auto_annotate(data, det_model=boxes, sam_model=model, output_dir=tmp_path / "labels", verbose=False)
    probe.assert_flat(SHORT)
    labelled = [f for f in out.glob("*.txt") if f.read_text().strip()]
    assert len(labelled) > SHORT // 2  # the tracked object is written on its frames


def test_val_vos_one_pass(model, frames, tmp_path, monkeypatch):
    from PIL import Image

    from masklet.val import run
    from masklet.val.datasets import write_palette_png

    root = tmp_path / "davis"
    (root / "JPEGImages" / "v").mkdir(parents=True)
    for i, frame in enumerate(frames[:SHORT]):
        Image.fromarray(frame).save(root / "JPEGImages" / "v" / f"{i:05d}.jpg")
        label = np.zeros((H, W), np.uint8)
        label[60:120, 20:90] = 1
        write_palette_png(root / "Annotations" / "v" / f"{i:05d}.png", label)
    probe = StateProbe(monkeypatch)
    res = run(model=model, data=root, save_dir=tmp_path / "out", verbose=False)
    probe.assert_flat(SHORT - 1)
    assert res["summary"]["J&F-Mean"] > 0
