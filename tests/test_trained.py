"""Behaviour with weights that mean something: `tests/assets/sam2_test_wide_synthetic.pt`, trained from random
initialisation by `python bench/train_synthetic.py` (issue 16), on held-out generated data (textured shapes over
the photos of ../shared/data, drawn from seeds the bench neither trains nor validates on). The same checks with
random weights of the same variant fail, so these tests measure what training taught the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, data_file

from masklet.models.build import build_model, load_model
from masklet.predictors.image import ImagePredictor
from masklet.predictors.video import VideoPredictor
from masklet.train.synthetic import load_backgrounds, occlusion_clip, shapes_image
from masklet.utils.masks import mask_iou
from masklet.val.metrics import next_click

ASSET = Path(__file__).resolve().parent / "assets" / "sam2_test_wide_synthetic.pt"
# measured with the committed checkpoint (1 thread): click mIoU 0.890 on 34 clicks (the clicked shape best covered in
# 100 % of them), front shape J 0.893, back shape J 0.606 before the occlusion and 0.628 after; random weights: 0.08
# and 0
MIN_CLICK_IOU = 0.80
MIN_FRONT_J = 0.82
MIN_REFOUND_J = 0.55

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def trained():
    return load_model(ASSET, device="cpu").eval()


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return build_model("sam2_test_wide").eval()


@pytest.fixture(scope="module")
def backgrounds():
    data_file("images")
    return load_backgrounds(DATA_DIR, frames_per_video=3)


def _click_results(model, backgrounds, images: int = 20) -> tuple[float, float]:
    """Mean IoU of the mask picked by predicted IoU after one click at the interior point farthest from the
    border of each shape, and how often that mask overlaps the clicked shape most (of all shapes)."""
    rng = np.random.default_rng(7)
    predictor = ImagePredictor(model)
    ious, picked = [], []
    for _ in range(images):
        image, ids = shapes_image(rng, backgrounds, 160, 160)
        predictor.set_image(image)
        for k in range(1, int(ids.max()) + 1):
            gt = ids == k
            x, y, _ = next_click(np.zeros_like(gt), gt, first=True)
            masks, scores, _ = predictor.predict(point_coords=[[x, y]], point_labels=[1], multimask_output=True)
            mask = masks[int(np.argmax(scores))]
            ious.append(mask_iou(mask, gt))
            picked.append(int(np.argmax([mask_iou(mask, ids == j) for j in range(1, int(ids.max()) + 1)])) + 1 == k)
    return float(np.mean(ious)), float(np.mean(picked))


def test_trained_checkpoint_loads_as_its_registered_variant(trained):
    assert trained.config.name == "sam2_test_wide"
    assert trained.image_size == 128
    assert ASSET.stat().st_size < 5e6  # small enough to keep in the repository


def test_a_click_segments_the_clicked_shape(trained, untrained, backgrounds):
    miou, picked = _click_results(trained, backgrounds)
    assert miou >= MIN_CLICK_IOU, f"held-out mIoU from one click {miou:.3f}"
    assert picked >= 0.9, f"the clicked shape was the best-covered one in only {picked:.0%} of clicks"
    random_miou, _ = _click_results(untrained, backgrounds, images=5)
    assert random_miou < 0.3, random_miou


def _track(model, frames: list[np.ndarray], labels: list[np.ndarray]) -> dict[int, list[np.ndarray]]:
    """Masks per object and frame with the DAVIS protocol: each object's ground-truth mask on frame 0."""
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    for obj in (1, 2):
        predictor.add_new_mask(state, 0, obj, labels[0] == obj)
    out: dict[int, list[np.ndarray]] = {1: [None] * len(frames), 2: [None] * len(frames)}
    for t, ids, masks in predictor.propagate_in_video(state):
        for i, obj in enumerate(ids):
            out[obj][t] = (masks[i, 0] > 0).numpy()
    return out


def _occlusion_scores(model, backgrounds, clips: int = 6) -> dict[str, float]:
    """Mean IoU of the front shape on frames 1-11, and of the back shape on frames where >= 80 % of it shows,
    before it passes behind the front one (at most a fifth of it visible) and after it comes out again."""
    rng = np.random.default_rng(11)
    front, before, after = [], [], []
    for _ in range(clips):
        frames, labels = occlusion_clip(rng, backgrounds, frames=12, h=160, w=160)
        masks = _track(model, frames, labels)
        visible = [(lab == 2).sum() for lab in labels]
        middle = int(np.argmin(visible))  # the back shape is (most) hidden here
        assert visible[middle] < 0.2 * max(visible), "the back shape passes behind the front one"
        for t in range(1, 12):
            front.append(mask_iou(masks[1][t], labels[t] == 1))
            if visible[t] >= 0.8 * max(visible):
                (before if t < middle else after).append(mask_iou(masks[2][t], labels[t] == 2))
    return {"front": float(np.mean(front)), "before": float(np.mean(before)), "after": float(np.mean(after))}


def test_tracking_follows_a_shape_through_an_occlusion_and_refinds_it(trained, untrained, backgrounds):
    scores = _occlusion_scores(trained, backgrounds)
    assert scores["front"] >= MIN_FRONT_J, scores
    # the back shape is tracked, lost from view behind the front one, and picked up again as well as before
    assert scores["after"] >= MIN_REFOUND_J and scores["before"] >= MIN_REFOUND_J, scores
    random_scores = _occlusion_scores(untrained, backgrounds, clips=2)
    assert max(random_scores.values()) < 0.3, random_scores
