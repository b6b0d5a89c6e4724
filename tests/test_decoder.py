"""The CPU fast paths of the mask decoder (prompt chunks, row-banded upscaling, an image side shared by all
prompts) and of the image predictor's full-resolution masks must give what one plain batched pass gives."""
import pytest
import torch

import masklet.models.mask_decoder as mask_decoder
from masklet.models.build import build_model


@pytest.fixture(scope="module")
def sam2_test():
    torch.manual_seed(0)
    model = build_model("sam2_test").eval()
    with torch.inference_mode():
        features = model.encode_image(torch.randn(1, 3, model.image_size, model.image_size))
    return model, features


def _decode(model, features, points, labels, mask_input, image_batch: int = 1):
    sparse, dense = model.encode_prompts(points, labels, None, mask_input)
    embedding = model.image_embedding(features)
    high_res = features.high_res
    if image_batch > 1:  # one image embedding per prompt (as in batched video objects)
        embedding = embedding.expand(image_batch, -1, -1, -1).clone()
        high_res = [f.expand(image_batch, -1, -1, -1).clone() for f in high_res]
    return model.decode(embedding, high_res, sparse, dense, multimask_output=True)


def _prompts(n: int, size: int, with_masks: bool):
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(n, 2, 2, generator=generator) * size
    labels = torch.tensor([[1, 0]] * n, dtype=torch.int32)
    masks = torch.randn(n, 1, size // 4, size // 4, generator=generator) if with_masks else None
    return points, labels, masks


@pytest.mark.parametrize("with_masks", [False, True], ids=["no_mask_input", "mask_input"])
@pytest.mark.parametrize("image_batch", [1, 9], ids=["shared_image", "image_per_prompt"])
def test_chunks_and_bands_match_one_pass(sam2_test, monkeypatch, with_masks, image_batch):
    model, features = sam2_test
    points, labels, masks = _prompts(9, model.image_size, with_masks)
    with torch.inference_mode():
        monkeypatch.setattr(mask_decoder, "CPU_DECODER_CHUNK_ELEMENTS", 1 << 40)
        monkeypatch.setattr(mask_decoder, "CPU_UPSCALE_BAND_ELEMENTS", 1 << 40)
        whole = _decode(model, features, points, labels, masks, image_batch)
        # chunks of 2 prompts (the last one a single prompt) and bands of 3 token rows (the last one shorter)
        tokens = model.image_embedding(features)[0].numel()
        monkeypatch.setattr(mask_decoder, "CPU_DECODER_CHUNK_ELEMENTS", 2 * tokens)
        rows = features.embed.shape[-1] * features.embed.shape[1]
        monkeypatch.setattr(mask_decoder, "CPU_UPSCALE_BAND_ELEMENTS", 2 * 3 * rows)
        split = _decode(model, features, points, labels, masks, image_batch)
    assert split.masks.shape == whole.masks.shape == (9, 3, model.image_size // 4, model.image_size // 4)
    for name in ("masks", "iou", "tokens", "object_score_logits"):
        torch.testing.assert_close(getattr(split, name), getattr(whole, name), rtol=1e-5, atol=1e-5)


def test_every_prompt_decodes_as_if_alone(sam2_test):
    """A batch with a shared image equals decoding each prompt on its own."""
    model, features = sam2_test
    points, labels, _ = _prompts(5, model.image_size, False)
    with torch.inference_mode():
        batch = _decode(model, features, points, labels, None)
        for i in range(5):
            alone = _decode(model, features, points[i:i + 1], labels[i:i + 1], None)
            torch.testing.assert_close(batch.masks[i:i + 1], alone.masks, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(batch.iou[i:i + 1], alone.iou, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["sam2_test", "mobile_sam_vit_t"])
def test_binary_masks_upsampled_in_chunks_match_one_pass(monkeypatch, family):
    import masklet.predictors.image as image

    spec = build_model(family).input_spec
    low = torch.randn(3, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    hw = (100, 150)
    expected = image.postprocess_masks(low, hw, spec) > 0.5
    monkeypatch.setattr(image, "_UPSAMPLE_CHUNK_PIXELS", 4 * hw[0] * hw[1])  # chunks of 4 and 2 masks
    got = image.full_resolution_masks(low, hw, spec, 0.5)
    assert got.dtype == torch.bool and got.shape == (3, 2, *hw)
    assert torch.equal(got, expected)
    torch.testing.assert_close(image.full_resolution_masks(low, hw, spec, None), image.postprocess_masks(low, hw, spec))


def test_bfloat16_decoder_runs_a_bf16_copy_and_keeps_heads_in_float32(sam2_test):
    """Under CPU bfloat16 autocast in inference the decoder's transformer and upscaling run as bfloat16 copies
    (made once, rebuilt when the weights change); outputs are float32 and close to the float32 decoder."""
    model, features = sam2_test
    points, labels, _ = _prompts(3, model.image_size, False)
    with torch.inference_mode():
        exact = _decode(model, features, points, labels, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = _decode(model, features, points, labels, None)
            again = _decode(model, features, points, labels, None)
    decoder = model.sam_mask_decoder
    twin = decoder.transformer.__dict__["_bf16_twin"][1]
    assert next(twin.parameters()).dtype == torch.bfloat16
    assert next(decoder.transformer.parameters()).dtype == torch.float32  # the model itself is untouched
    assert "_bf16_twin" not in str(list(decoder.state_dict()))
    assert fast.masks.dtype == fast.iou.dtype == torch.float32
    torch.testing.assert_close(again.masks, fast.masks, rtol=0, atol=0)
    scale = exact.masks.abs().mean()
    assert (fast.masks - exact.masks).abs().mean() < 0.05 * scale
    assert (fast.iou - exact.iou).abs().max() < 0.05
    # changed weights make a new copy; with gradients on (training) the float32 module runs itself
    with torch.no_grad():
        decoder.transformer.layers[0].norm1.weight.mul_(1.0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        _decode(model, features, points, labels, None)
    assert decoder.transformer.__dict__["_bf16_twin"][1] is not twin
    from masklet.models.common import bf16_twin

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bf16_twin(decoder.transformer) is None  # grad enabled
