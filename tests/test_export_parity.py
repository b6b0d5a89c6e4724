"""Exported graphs run by OnnxImagePredictor against the reference image cases of the official implementation
(same tolerances as tests/test_image_parity.py), and the int8 encoder against float32.

The reference tiny model is exported at 1024 px once per module (about a minute on 2 cores). SAM 2.0 and SAM 1
ViT-B repeat the check with MASKLET_SLOW_TESTS=1.
"""
import shutil

import numpy as np
import pytest
import torch
from conftest import SLOW_TESTS as SLOW
from conftest import data_file, load_fixture, reference_state_dict

from masklet.data.images import read_image
from masklet.models.build import load_model

pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")

CASES = {"sam2.1_hiera_t": "sam2.1_hiera_t_image_case.pt", "mobile_sam": "mobile_sam_vit_t_image_case.pt"}
if SLOW:
    CASES.update({"sam2_hiera_t": "sam2_hiera_t_image_case.pt", "sam_vit_b": "sam_vit_b_image_case.pt"})


def _model(name: str, ref: dict):
    if name.startswith("sam2"):
        return load_model(reference_state_dict(sam2_0=name == "sam2_hiera_t"))
    from test_sam1_parity import rebuild_weights

    return load_model(rebuild_weights(ref["variant"], int(ref["seed"])))


def _export(model, folder):
    from masklet.export.exporter import export_model, write_metadata

    folder.mkdir()
    export_model(model, folder, 1024, 17, graphs=("image_encoder", "prompt_decoder"), progress=False)
    write_metadata(folder, model, 1024, 17, False, None)
    return folder


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory):
    from masklet.onnx import OnnxImagePredictor

    ref = load_fixture(CASES[request.param])
    folder = _export(_model(request.param, ref), tmp_path_factory.mktemp("ref") / request.param)
    predictor = OnnxImagePredictor(folder)
    predictor.set_image(read_image(data_file("images/truck.jpg")))
    return ref, predictor, folder


def _kwargs(case: dict) -> dict:
    kwargs = dict(case["kwargs"])
    if "mask_input" in kwargs or "mask_input" in case:
        kwargs["mask_input"] = case["mask_input"]
    return kwargs


def test_image_embedding(run):
    ref, predictor, _ = run
    want = ref["image_embed"] if "image_embed" in ref else ref["features"]
    got = predictor.get_image_embedding()
    assert got.shape == tuple(want.shape)
    assert np.abs(got - want.numpy()).max() <= 1e-4 * float(want.abs().mean())


def test_prompt_cases(run):
    ref, predictor, _ = run
    for name, case in ref["prompts"].items():
        masks, iou, low = predictor.predict(**_kwargs(case), return_logits=True)
        assert list(masks.shape) == list(case["masks"]["shape"]), name
        assert np.abs(iou - case["iou_predictions"].numpy()).max() <= 1e-4, name
        assert np.abs(low - case["low_res_logits"].numpy()).max() <= 1e-3, name
        probe = case["masks"].get("logits")
        if probe is not None:
            got = torch.from_numpy(masks).reshape(-1)[probe["sample_index"]]
            assert (got - probe["sample"]).abs().max() <= 1e-3, name
        positive = np.unpackbits(case["masks"]["positive_packed"].numpy())[: masks.size].astype(bool)
        flipped = int((positive != (masks.reshape(-1) > 0)).sum())
        assert flipped <= 1e-4 * masks.size, f"{name}: {flipped} of {masks.size} mask pixels differ"


# int8 guard. Measured on the reference tiny SAM 2.1 (random weights), truck.jpg, the 7 reference prompt cases
# (12 masks): mask IoU int8 vs float32 min 0.826 (a small 4% mask, points_pos_neg), mean 0.953. Random weights
# quantize worse than trained ones (no learned structure for the per-tensor activation scales to fit); the guard
# sits a little under the measurement so a real regression (a wrong scale, a broken graph: IoU near 0) fails.
INT8_MIN_IOU, INT8_MEAN_IOU = 0.78, 0.93


def test_int8_encoder_mask_iou(run, tmp_path):
    from masklet.export.exporter import quantize_encoder
    from masklet.onnx import OnnxImagePredictor

    ref, fp32, folder = run
    if folder.name != "sam2.1_hiera_t":
        pytest.skip("the int8 guard is measured on the SAM 2.1 reference model")
    q = tmp_path / "int8"
    shutil.copytree(folder, q)
    quantize_encoder(q)
    int8 = OnnxImagePredictor(q)
    int8.set_image(read_image(data_file("images/truck.jpg")))
    ious = []
    for case in ref["prompts"].values():
        a = fp32.predict(**_kwargs(case))[0].reshape(-1, *fp32.orig_hw[0])
        b = int8.predict(**_kwargs(case))[0].reshape(-1, *fp32.orig_hw[0])
        ious += list((a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1))
    print(f"int8 vs float32 mask IoU: min {min(ious):.4f} mean {np.mean(ious):.4f} over {len(ious)} masks")
    assert min(ious) >= INT8_MIN_IOU and np.mean(ious) >= INT8_MEAN_IOU, ious
