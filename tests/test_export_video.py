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
