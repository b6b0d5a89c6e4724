"""Parity of the SAM 2 / SAM 2.1 image path with the official implementation (reference fixtures).

Each intermediate is its own test, so a failure says where the computation diverges.
"""
import numpy as np
import pytest
import torch
from conftest import compare_probe, data_file, load_fixture, reference_state_dict
from video_replay import check_masks

from masklet.data.images import read_image
from masklet.data.preprocess import preprocess
from masklet.models.build import load_model
from masklet.predictors.image import ImagePredictor

CASES = {"sam2.1_hiera_t": ("sam2.1_hiera_t_image_case.pt", False), "sam2_hiera_t": ("sam2_hiera_t_image_case.pt", True)}
PROMPTS = ["point", "point_single", "points_pos_neg", "box", "box_and_point", "boxes_batch", "point_and_mask_input"]


@pytest.fixture(scope="module", params=list(CASES))
def run(request):
    fixture_name, sam2_0 = CASES[request.param]
    ref = load_fixture(fixture_name)
    model = load_model(reference_state_dict(sam2_0))
    assert model.config.name == request.param  # variant inferred from the weights
    image = read_image(data_file("images/truck.jpg"))
    x = preprocess(image, model.input_spec)[None]
    with torch.inference_mode():
        trunk = model.image_encoder.trunk(x)
        fpn, pos = model.image_encoder.neck(trunk)
    predictor = ImagePredictor(model)
    predictor.set_image(image)
    return dict(ref=ref, model=model, x=x, trunk=trunk, fpn=fpn[:-1], pos=pos[:-1], predictor=predictor)


def test_input(run):
    compare_probe(run["x"], run["ref"]["input"], rel=1e-6)


@pytest.mark.parametrize("level", range(4))
def test_trunk_stage(run, level):
    compare_probe(run["trunk"][level], run["ref"]["trunk"][level])


@pytest.mark.parametrize("level", range(3))
def test_neck_level(run, level):
    compare_probe(run["fpn"][level], run["ref"]["backbone_fpn"][level])


@pytest.mark.parametrize("level", range(3))
def test_position_encoding(run, level):
    compare_probe(run["pos"][level], run["ref"]["vision_pos_enc"][level])


@pytest.mark.parametrize("level", range(2))
def test_high_res_features(run, level):
    compare_probe(run["predictor"]._images[0].features.high_res[level], run["ref"]["high_res_feats"][level])


def test_image_embed(run):
    ref = run["ref"]["image_embed"]
    got = run["predictor"].get_image_embedding()
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().mean()


@pytest.mark.parametrize("name", PROMPTS)
def test_prompt_case(run, name):
    case = run["ref"]["prompts"][name]
    kwargs = dict(case["kwargs"])
    if "mask_input" in kwargs:
        kwargs["mask_input"] = case["mask_input"]
    masks, iou, low = run["predictor"].predict(**kwargs, return_logits=True)
    assert iou.shape == tuple(case["iou_predictions"].shape)
    assert low.shape == tuple(case["low_res_logits"].shape)
    assert np.abs(iou - case["iou_predictions"].numpy()).max() <= 1e-4
    assert np.abs(low - case["low_res_logits"].numpy()).max() <= 1e-3
    check_masks(masks, case["masks"])  # shape, sampled logits within 1e-3, at most 0.01 % of pixels flipped
    # the boolean output is the thresholded logits
    binary, _, _ = run["predictor"].predict(**kwargs)
    assert binary.dtype == bool and np.array_equal(binary, masks > 0)
