"""`compile=True`: torch.compile (inductor) of the mask decoder and the float32 Hiera trunk
(`masklet.models.common.enable_compile`), measured in bench/compiled.py and bench/everything.py --compile.

Compiled code must give the eager results: the small `sam2_test` variant (256 px) is compiled for real here
(float32 image predictor, ~1-2 min of C++ builds on a loaded 2-core machine); the bfloat16 segment-everything
path compiled runs with MASKLET_SLOW_TESTS=1. The cheap tests check the plumbing with a stand-in compiler.
"""

import numpy as np
import pytest
import torch
from conftest import SLOW_TESTS as SLOW
from conftest import data_file, tiny_sam2

from masklet.data.images import read_image
from masklet.models import common
from masklet.predictors.image import ImagePredictor


@pytest.fixture(scope="module")
def picture():
    return read_image(data_file("images/truck.jpg"))[::4, ::4].copy()


@pytest.fixture
def counting_compiler(monkeypatch):
    """torch.compile replaced by a wrapper that counts the calls it compiles (runs them eagerly)."""
    calls = []

    def fake_compile(fn, **kwargs):
        def run(*args):
            calls.append(fn.__qualname__)
            return fn(*args)
        return run

    monkeypatch.setattr(common, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_enable_compile_marks_decoder_and_trunk():
    model = tiny_sam2()
    marked = common.enable_compile(model)
    assert sorted(marked) == ["image_encoder.trunk", "sam_mask_decoder", "sam_mask_decoder.transformer"]
    assert common.enable_compile(model, on=False) == marked
    assert not any(m.__dict__.get(common.COMPILE_ATTR) for m in model.modules())


def test_compiled_paths_are_taken_in_inference_only(counting_compiler, picture):
    model = tiny_sam2().eval()
    predictor = ImagePredictor(model, compile=True)
    predictor.set_image(picture)
    predictor.predict(point_coords=[[100, 80]], point_labels=[1])
    assert set(counting_compiler) == {"Hiera._forward", "TwoWayTransformer._forward", "MaskDecoder._upscale_bands"}
    counting_compiler.clear()
    with torch.no_grad():  # the bfloat16 twins: the trunk's stays eager, the decoder's transformer compiles
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = model.encode_image(torch.zeros(1, 3, model.image_size, model.image_size))
            assert "Hiera._forward" not in counting_compiler
            sparse, dense = model.encode_prompts(torch.full((1, 1, 2), 30.0), torch.ones(1, 1, dtype=torch.int32),
                                                 None, None)
            model.decode(model.image_embedding(features), features.high_res, sparse, dense, True)
    assert set(counting_compiler) == {"TwoWayTransformer._forward", "MaskDecoder._upscale_bands"}
    counting_compiler.clear()
    model.encode_image(torch.zeros(1, 3, model.image_size, model.image_size))  # grad enabled: eager (training)
    assert counting_compiler == []


def test_compile_failure_warns_and_runs_eagerly(monkeypatch, picture):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(common, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = tiny_sam2().eval()
    eager = ImagePredictor(model)
    eager.set_image(picture)
    expected = eager.predict(point_coords=[[100, 80]], point_labels=[1], return_logits=True)[0]
    predictor = ImagePredictor(model, compile=True)
    with pytest.warns(RuntimeWarning, match="torch.compile failed for Hiera.*no C.. compiler"):
        predictor.set_image(picture)
    assert not model.image_encoder.trunk.__dict__[common.COMPILE_ATTR]  # given up: no second attempt
    with pytest.warns(RuntimeWarning, match="TwoWayTransformer"):
        got = predictor.predict(point_coords=[[100, 80]], point_labels=[1], return_logits=True)[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_compile_must_be_a_bool(value):
    with pytest.raises(ValueError, match="compile must be True or False"):
        ImagePredictor(tiny_sam2(), compile=value)


def test_compiled_image_predictor_matches_eager(picture):
    """Real inductor compile of the sam2_test trunk and decoder (float32): masks and scores as eager."""
    torch._dynamo.reset()
    model = tiny_sam2().eval()
    prompts = [dict(point_coords=[[100, 80]], point_labels=[1]), dict(box=[[40, 30, 200, 150]]),
               dict(box=[[40, 30, 200, 150], [100, 60, 300, 200]], multimask_output=False)]
    eager = ImagePredictor(model)
    eager.set_image(picture)
    expected = [eager.predict(**p, return_logits=True) for p in prompts]
    compiled = ImagePredictor(model, compile=True)
    compiled.set_image(picture)
    for p, (logits, iou, low) in zip(prompts, expected):
        got_logits, got_iou, got_low = compiled.predict(**p, return_logits=True)
        np.testing.assert_allclose(got_low, low, atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(got_iou, iou, atol=1e-5)
        assert ((got_logits > 0) != (logits > 0)).mean() < 1e-4
    # compiled, not fallen back to eager (a failed compile clears the mark and warns)
    assert all(m.__dict__[common.COMPILE_ATTR] for m in (model.image_encoder.trunk, model.sam_mask_decoder,
                                                          model.sam_mask_decoder.transformer))
    common.enable_compile(model, on=False)


@pytest.mark.skipif(not SLOW, reason="compiles the bfloat16 decoder (minutes on 2 cores): MASKLET_SLOW_TESTS=1")
def test_compiled_bf16_segment_everything_matches_eager(picture):
    from masklet.predictors.everything import AutomaticMaskGenerator

    torch._dynamo.reset()
    model = tiny_sam2().eval()
    settings = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, dtype="bfloat16")
    eager = AutomaticMaskGenerator(model, **settings).generate(picture)
    compiled = AutomaticMaskGenerator(model, **settings, compile=True).generate(picture)
    assert len(compiled) == len(eager) > 0
    ious = [np.logical_and(a["segmentation"], b["segmentation"]).sum()
            / max(1, np.logical_or(a["segmentation"], b["segmentation"]).sum()) for a, b in zip(eager, compiled)]
    assert min(ious) > 0.99, ious
    assert model.sam_mask_decoder.transformer._bf16_twin[1].__dict__[common.COMPILE_ATTR]
    common.enable_compile(model, on=False)
