"""OnnxVideoPredictor against the torch VideoPredictor on the small `sam2_test` variant: one interaction script
(clicks, a box, a correction, forward and reverse propagation, remove object, a mask prompt, reset) with every
returned mask compared."""
import numpy as np
import pytest
import torch
from conftest import SLOW_TESTS, data_file, tiny_sam2

import masklet
from masklet.data.images import read_image
from masklet.predictors.video import VideoPredictor

pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")


def script(predictor, frames):
    """Runs the interaction; returns every (label, masks) the predictor returned, masks as numpy."""
    out = []

    def keep(label, masks):
        out.append((label, masks.numpy() if isinstance(masks, torch.Tensor) else masks))

    state = predictor.init_state(frames)
    _, ids, m = predictor.add_new_points_or_box(state, 0, 1, points=[[300, 200]], labels=[1])
    keep("click", m)
    _, ids, m = predictor.add_new_points_or_box(state, 0, 2, box=[500, 150, 800, 450])
    keep("box", m)
    _, ids, m = predictor.add_new_points_or_box(state, 0, 1, points=[[350, 260]], labels=[0], clear_old_points=False)
    keep("second click", m)
    for f, _, m in predictor.propagate_in_video(state, progress=False):
        keep(f"forward {f}", m)
    _, ids, m = predictor.add_new_points_or_box(state, 3, 2, points=[[600, 300]], labels=[1])
    keep("correction", m)
    for f, _, m in predictor.propagate_in_video(state, start_frame_idx=5, reverse=True, progress=False):
        keep(f"reverse {f}", m)
    ids, updated = predictor.remove_object(state, 1)
    assert ids == [2]
    mask = np.zeros((frames[0].shape[0], frames[0].shape[1]), bool)
    mask[100:300, 150:400] = True
    _, ids, m = predictor.add_new_mask(state, 2, 3, mask)
    keep("mask", m)
    for f, _, m in predictor.propagate_in_video(state, start_frame_idx=2, max_frame_num_to_track=3, progress=False):
        keep(f"after mask {f}", m)
    predictor.reset_state(state)
    assert state.obj_ids == []
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model and its ONNX export folder (exported once for the module)."""
    model = tiny_sam2()
    return model, masklet.export(model=model, imgsz=256, project=str(tmp_path_factory.mktemp("onnx")), progress=False)


def test_onnx_video_matches_torch(exported):
    from masklet.onnx import OnnxVideoPredictor

    model, folder = exported
    frames = [read_image(data_file(f"videos/bedroom_frames/{i:05d}.jpg")) for i in range(6)]
    want = script(VideoPredictor(model, feature_cache=6), frames)
    got = script(OnnxVideoPredictor(folder, feature_cache=6), frames)
    assert [label for label, _ in got] == [label for label, _ in want]
    assert sum(int((w > 0).any()) for _, w in want) >= len(want) - 2  # objects are found: the comparison has content
    for (label, g), (_, w) in zip(got, want):
        assert g.shape == w.shape, label
        flipped = int(((g > 0) != (w > 0)).sum())
        assert flipped <= 1e-4 * g.size, f"{label}: {flipped} of {g.size} pixels differ"
        assert np.abs(g - w).max() <= 1e-2, label


@pytest.mark.parametrize("call, kw", [
    ("points", {"points": [[10, 10], [20, 20]], "labels": [1]}),
    ("points", {"points": [[[10, 10]], [[20, 20]]], "labels": [[1], [1]]}),
    ("points", {"points": [[10, 10]], "labels": [1], "box": [[0, 0, 5, 5], [1, 1, 6, 6]]}),
    ("points", {"points": [[5000, 10]], "labels": [1]}),
    ("points", {"box": [0, 0, 5, 5], "clear_old_points": False}),
    ("mask", {"mask": np.arange(40 * 48).reshape(40, 48) % 3}),
    ("mask", {"mask": np.full((40, 48), 0.3, np.float32)}),
    ("mask", {"mask": np.zeros((2, 40, 48), bool)}),
    ("mask", {"mask": np.zeros((41, 48), bool)}),
])
def test_onnx_video_prompt_errors_match_torch(exported, call, kw):
    """A bad prompt gets the same error from OnnxVideoPredictor as from VideoPredictor (the checks are shared in
    VideoObjects): a float mask of 0.3 or a label map is refused by both, not thresholded by one of them."""
    from masklet.onnx import OnnxVideoPredictor

    model, folder = exported
    frames = [np.zeros((40, 48, 3), np.uint8)] * 2
    errors = []
    for predictor in (VideoPredictor(model), OnnxVideoPredictor(folder)):
        state = predictor.init_state(frames)
        add = predictor.add_new_mask if call == "mask" else predictor.add_new_points_or_box
        with pytest.raises((ValueError, TypeError)) as err:
            add(state, 0, 1, **kw)
        errors.append((type(err.value), str(err.value)))
    assert errors[0] == errors[1]


@pytest.mark.skipif(not SLOW_TESTS,
                    reason="replays the SAM 2.1 reference video script at 1024 px (minutes): MASKLET_SLOW_TESTS=1")
def test_reference_video_script(tmp_path):
    """The official predictor's SAM 2.1 interaction script replayed through OnnxVideoPredictor: every returned mask
    within the flip tolerance of tests/test_video_parity.py (`video_replay.check_step`)."""
    from conftest import load_fixture, reference_state_dict
    from video_replay import check_step, replay_steps

    from masklet.export.exporter import export_model, write_metadata
    from masklet.models.build import load_model
    from masklet.onnx import OnnxVideoPredictor

    ref = load_fixture("sam2.1_hiera_t_video_case.pt")
    model = load_model(reference_state_dict())
    export_model(model, tmp_path, 1024, 17, progress=False)
    write_metadata(tmp_path, model, 1024, 17, False, None)
    frames = [read_image(data_file(f"videos/bedroom_frames/{i:05d}.jpg")) for i in range(8)]
    predictor = OnnxVideoPredictor(tmp_path, fill_hole_area=0, feature_cache=8)
    replay_steps(predictor, predictor.init_state(frames), ref["steps"], lambda _, step, got: check_step(step, got))


def test_memory_bank_plans_by_hand():
    """The torch-free memory-bank rules (masklet.predictors.memory_bank, used by both VideoPredictor and
    OnnxVideoPredictor) against plans worked out by hand from the official
    `_prepare_memory_conditioned_features`: num_maskmem 7, 16 pointers, a 10-frame video."""
    from masklet.predictors import memory_bank

    def has(result: bool) -> bool:  # a result "has a memory" when it is True
        return result

    def plan(cond, non_cond, frame_idx, reverse):
        mems, ptrs = memory_bank.memory_plan(cond, non_cond, frame_idx, reverse, 10, 7, 16, True, has)
        return [(a, b) for a, b, _ in mems], [(a, b) for a, b, _ in ptrs]

    # forward on frame 8, prompt on 0, frame 3's memory not encoded (its pointer still counts)
    mems, ptrs = plan({0: True}, {t: t != 3 for t in range(1, 10)}, 8, False)
    assert mems == [(0, 0), (1, 2), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert ptrs == [(8, 0), (1, 7), (2, 6), (3, 5), (4, 4), (5, 3), (6, 2), (7, 1)]
    # reverse on frame 2, prompt on 9: slots count from the later frames, pointer distance stays positive
    mems, ptrs = plan({9: True}, {t: True for t in range(3, 9)}, 2, True)
    assert mems == [(0, 9), (1, 8), (2, 7), (3, 6), (4, 5), (5, 4), (6, 3)]
    assert ptrs == [(7, 9), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (6, 8)]
    # a prompt on the far side of the tracked direction gives a memory but no pointer
    mems, ptrs = plan({9: True}, {}, 2, False)
    assert mems == [(0, 9)] and ptrs == []
    assert memory_bank.plan_key(memory_bank.memory_plan({0: True}, {}, 1, False, 10, 7, 16, True, has)) == \
        (((0, 0),), ((1, 0),))
    assert list(memory_bank.propagation_order(3, None, 10, False)) == list(range(3, 10))
    assert list(memory_bank.propagation_order(3, 2, 10, True)) == [3, 2, 1]
    assert list(memory_bank.propagation_order(0, None, 10, True)) == []


def test_onnx_video_predictor_never_imports_torch(tmp_path):
    """OnnxVideoPredictor (init, a click, propagation) in a fresh process that never loads torch: the video path
    of the [export] deployment needs only numpy and onnxruntime."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    folder = masklet.export(model=tiny_sam2(), imgsz=256, project=str(tmp_path), progress=False)
    code = (
        "import sys, numpy as np\n"
        "from masklet.onnx import OnnxVideoPredictor\n"
        f"p = OnnxVideoPredictor({str(folder)!r})\n"
        "rng = np.random.default_rng(0)\n"
        "frames = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8) for _ in range(3)]\n"
        "state = p.init_state(frames)\n"
        "_, ids, m = p.add_new_points_or_box(state, 0, 1, points=[[60, 45]], labels=[1])\n"
        "seen = [f for f, _, _ in p.propagate_in_video(state, progress=False)]\n"
        "assert list(ids) == [1] and m.shape == (1, 1, 90, 120) and seen == [0, 1, 2], (ids, m.shape, seen)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
