"""SAM 1 (ViT-B) and MobileSAM through the shared image predictor: parity with the reference fixtures."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import data_file, load_fixture, reference_file

from masklet.models.build import build_model, load_model
from masklet.predictors.image import ImagePredictor

FIXTURES = ["mobile_sam_vit_t_image_case.pt", "sam_vit_b_image_case.pt"]
PROMPTS = ["point", "points_pos_neg", "box", "box_and_point", "point_and_mask_input"]


def rebuild_weights(variant: str, seed: int) -> dict:
    spec = importlib.util.spec_from_file_location("random_weights", reference_file("random_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = json.loads(reference_file("sam1_variants.json").read_text())
    built = module.build(manifest[variant]["state_dict"], seed)
    return {k: v.float() if v.is_floating_point() else v for k, v in built.items()}


@pytest.fixture(scope="module", params=FIXTURES)
def run(request):
    ref = load_fixture(request.param)
    model = load_model(rebuild_weights(ref["variant"], int(ref["seed"])))
    assert model.config.name == ref["variant"]  # family and variant inferred from the weights
    predictor = ImagePredictor(model)
    predictor.set_image(data_file("images/truck.jpg"))
    return ref, predictor


def test_input(run):
    from conftest import compare_probe

    from masklet.data.images import read_image
    from masklet.data.preprocess import preprocess

    ref, predictor = run
    x = preprocess(read_image(data_file("images/truck.jpg")), predictor.model.input_spec)[None]
    compare_probe(x, ref["input"], rel=1e-5)


def test_features(run):
    ref, predictor = run
    got = predictor.get_image_embedding()
    assert (got - ref["features"]).abs().max() <= 1e-4 * ref["features"].abs().mean()


@pytest.mark.parametrize("name", PROMPTS)
def test_prompt_case(run, name):
    ref, predictor = run
    case = ref["prompts"][name]
    kwargs = dict(case["kwargs"])
    if "mask_input" in case:
        kwargs["mask_input"] = case["mask_input"]
    masks, iou, low = predictor.predict(**kwargs, return_logits=True)
    assert np.abs(iou - case["iou_predictions"].numpy()).max() <= 1e-4
    assert np.abs(low - case["low_res_logits"].numpy()).max() <= 1e-3
    positive = np.unpackbits(case["masks"]["positive_packed"].numpy())[: masks.size].astype(bool)
    assert list(masks.shape) == list(case["masks"]["shape"])
    assert int((positive != (masks.reshape(-1) > 0)).sum()) <= 1e-4 * masks.size


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam_vit_t"])
def test_manifest(name):
    manifest = json.loads(reference_file("sam1_variants.json").read_text())[name]
    with torch.device("meta"):
        model = build_model(name, device="meta")
    expected = {k: tuple(s) for k, s, _ in manifest["state_dict"]}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_video_needs_sam2():
    from masklet.predictors.video import VideoPredictor

    with torch.device("meta"):
        model = build_model("mobile_sam", device="meta")
    with pytest.raises(ValueError, match="SAM 2"):
        VideoPredictor(model)
