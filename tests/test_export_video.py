"""OnnxVideoPredictor against the torch VideoPredictor on the small `sam2_test` variant: one interaction script
(clicks, a box, a correction, forward and reverse propagation, remove object, a mask prompt, reset) with every
returned mask compared."""
import numpy as np
import pytest
import torch
from conftest import data_file, tiny_sam2

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


def test_onnx_video_matches_torch(tmp_path):
    from masklet.onnx import OnnxVideoPredictor

    model = tiny_sam2()
    folder = masklet.export(model=model, imgsz=256, project=str(tmp_path), progress=False)
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


@pytest.mark.skipif(__import__("os").environ.get("MASKLET_SLOW_TESTS", "") in ("", "0"),
                    reason="replays the SAM 2.1 reference video script at 1024 px (minutes): MASKLET_SLOW_TESTS=1")
def test_reference_video_script(tmp_path):
    """The official predictor's SAM 2.1 interaction script replayed through OnnxVideoPredictor: every returned mask
    within the flip tolerance of tests/test_video_parity.py."""
    from conftest import load_fixture, reference_state_dict
    from test_video_parity import check_masks

    from masklet.export.exporter import export_model, write_metadata
    from masklet.models.build import load_model
    from masklet.onnx import OnnxVideoPredictor

    ref = load_fixture("sam2.1_hiera_t_video_case.pt")
    model = load_model(reference_state_dict())
    export_model(model, tmp_path, 1024, 17, progress=False)
    write_metadata(tmp_path, model, 1024, 17, False, None)
    frames = [read_image(data_file(f"videos/bedroom_frames/{i:05d}.jpg")) for i in range(8)]
    predictor = OnnxVideoPredictor(tmp_path, fill_hole_area=0, feature_cache=8)
    state = predictor.init_state(frames)
    for step in ref["steps"]:
        kind = step["step"]
        if kind == "add_points":
            _, ids, masks = predictor.add_new_points_or_box(state, step["frame_idx"], step["obj_id"],
                                                            points=step["points"], labels=step["labels"],
                                                            clear_old_points=step.get("clear_old_points", True))
            got = {None: (ids, masks)}
        elif kind == "add_box":
            _, ids, masks = predictor.add_new_points_or_box(state, step["frame_idx"], step["obj_id"], box=step["box"])
            got = {None: (ids, masks)}
        elif kind in ("propagate", "remove_object_then_propagate"):
            if kind != "propagate":
                predictor.remove_object(state, step["removed_obj_id"])
            got = {f: (ids, m) for f, ids, m in predictor.propagate_in_video(
                state, start_frame_idx=step.get("start_frame_idx"), reverse=step["reverse"], progress=False)}
        elif kind == "reset_then_add_mask":
            predictor.reset_state(state)
            r0, r1, c0, c1 = step["mask_box_rows_cols"]
            mask = np.zeros(tuple(ref["video_hw"]), dtype=bool)
            mask[r0:r1, c0:c1] = True
            _, ids, masks = predictor.add_new_mask(state, step["frame_idx"], step["obj_id"], mask)
            got = {None: (ids, masks)}
        else:
            raise AssertionError(f"unknown step {kind}")
        if None in got:
            assert list(got[None][0]) == step["out_obj_ids"]
            check_masks(torch.from_numpy(got[None][1]), step["masks"])
        else:
            assert list(got) == list(step["masks"])
            for frame_idx, record in step["masks"].items():
                check_masks(torch.from_numpy(got[frame_idx][1]), record)


def test_memory_bank_matches_torch_predictor():
    """The torch-free rules of masklet.predictors.memory_bank give the same plans as VideoPredictor._memory_plan
    (until the torch predictor calls them itself) for conditioning/tracked frames on both sides, with and
    without encoded memories, in both directions and for streams (no frame count)."""
    from types import SimpleNamespace

    from masklet.predictors import memory_bank
    from masklet.predictors.video import TrackedObject

    model = tiny_sam2()
    predictor = VideoPredictor(model)
    rng = np.random.default_rng(0)
    for trial in range(30):
        obj = TrackedObject(1)
        for t in rng.choice(40, size=3, replace=False):
            obj.cond[int(t)] = SimpleNamespace(memory=1)
        for t in rng.choice(40, size=25, replace=False):
            if int(t) not in obj.cond:
                obj.non_cond[int(t)] = SimpleNamespace(memory=None if rng.random() < 0.2 else 1)
        num_frames = None if trial % 3 == 0 else 40
        for frame_idx in (0, 5, 17, 39):
            for reverse in (False, True):
                want = predictor._memory_plan(obj, frame_idx, reverse, num_frames)
                got = memory_bank.memory_plan(obj.cond, obj.non_cond, frame_idx, reverse, num_frames,
                                              model.num_maskmem, predictor.max_obj_ptrs, model.config.sam2_1,
                                              lambda r: r.memory is not None)
                assert got == want
    assert list(memory_bank.propagation_order(3, None, 10, False)) == list(range(3, 10))
    assert list(memory_bank.propagation_order(3, 2, 10, True)) == [3, 2, 1]
    assert list(memory_bank.propagation_order(0, None, 10, True)) == []
    drop, drop_memory = memory_bank.unreachable(list(range(30)), 29, num_maskmem=7, max_obj_ptrs=16)
    assert drop == list(range(15)) and drop_memory == list(range(15, 24))
