"""SAM 1 ViT and MobileSAM TinyViT image encoders: checkpoint layout and parity with the reference fixtures."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from conftest import reference_file

from masklet.models.sam1_variants import build_sam1_image_encoder, sam1_encoder_config
from masklet.models.tiny_vit import TinyViT
from masklet.models.vit import ImageEncoderViT, rel_pos_table

VARIANTS = ["sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam_vit_t"]
PREFIX = "image_encoder."

_MANIFEST: dict = {}


def manifest() -> dict:
    if not _MANIFEST:
        _MANIFEST.update(json.loads(reference_file("sam1_variants.json").read_text()))
    return _MANIFEST


def encoder_entries(variant: str) -> list:
    return [e for e in manifest()[variant]["state_dict"] if e[0].startswith(PREFIX)]


def random_weights_module():
    path = reference_file("random_weights.py")
    spec = importlib.util.spec_from_file_location("masklet_reference_random_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_matches_manifest(variant):
    entries = encoder_entries(variant)
    with torch.device("meta"):
        encoder = build_sam1_image_encoder(variant)
    got = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    want = {k[len(PREFIX):]: list(shape) for k, shape, _ in entries}
    assert set(got) == set(want), (sorted(set(got) - set(want))[:10], sorted(set(want) - set(got))[:10])
    assert {k: s for k, s in got.items() if s != want[k]} == {}
    dtypes = {k[len(PREFIX):]: dtype for k, _, dtype in entries}
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in encoder.state_dict().items()} == dtypes
    n_params = sum(p.numel() for p in encoder.parameters())
    n_float_entries = sum(math.prod(shape) for _, shape, dtype in entries if dtype.startswith("float"))
    n_running = sum(math.prod(shape) for k, shape, _ in entries if k.endswith(("running_mean", "running_var")))
    assert n_params == n_float_entries - n_running


def test_variant_aliases():
    assert sam1_encoder_config("vit_b") == sam1_encoder_config("sam_vit_b")
    assert sam1_encoder_config("vit_t") == sam1_encoder_config("mobile_sam_vit_t")
    cfg = sam1_encoder_config("vit_h")
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.global_attn_indexes) == (1280, 32, 16, (7, 15, 23, 31))
    with pytest.raises(KeyError):
        sam1_encoder_config("vit_x")


def test_attention_bias_index_is_not_persistent():
    with torch.device("meta"):
        encoder = build_sam1_image_encoder("mobile_sam_vit_t")
    assert not any("attention_bias_idxs" in k for k in encoder.state_dict())
    # First-appearance numbering of (|dy|, |dx|) offsets, as in the reference, for a 7x7 window.
    idx = TinyViT().layers[1].blocks[0].attn.attention_bias_idxs
    assert idx.shape == (49, 49) and int(idx.max()) == 48
    assert int(idx[0, 8]) == 8 and int(idx[8, 0]) == 8 and int(idx[3, 10]) == 1 * 7 + 0
    # A meta-device build filled with assign=True gets real index buffers back from reset_attention_bias_idxs.
    encoder.load_state_dict({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in encoder.state_dict().items()},
                            assign=True)
    encoder.reset_attention_bias_idxs()
    assert torch.equal(encoder.layers[1].blocks[0].attn.attention_bias_idxs, idx)
    assert not any(b.is_meta for b in encoder.buffers())


def test_rel_pos_table_indexing_and_resize():
    table = torch.arange(27.0)[:, None].repeat(1, 2)  # (2*14-1, 2)
    out = rel_pos_table(14, 14, table)
    assert out.shape == (14, 14, 2)
    assert out[0, 0, 0] == 13 and out[13, 0, 0] == 26 and out[0, 13, 0] == 0
    resized = rel_pos_table(7, 7, table)  # 27 -> 13 entries by linear interpolation
    # align_corners=False: entry i of the 13 samples reads source position (i + 0.5) * 27 / 13 - 0.5
    assert resized.shape == (7, 7, 2)
    assert resized[6, 0, 0].item() == pytest.approx(12.5 * 27 / 13 - 0.5, abs=1e-5)
    assert resized[3, 3, 0].item() == pytest.approx(6.5 * 27 / 13 - 0.5, abs=1e-5)


def test_vit_other_input_sizes():
    torch.manual_seed(0)
    encoder = ImageEncoderViT(depth=2, embed_dim=64, num_heads=2, global_attn_indexes=(1,), img_size=256).eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)
        assert encoder(torch.randn(2, 3, 160, 224)).shape == (2, 256, 10, 14)
        with pytest.raises(ValueError):
            encoder(torch.randn(1, 3, 100, 100))


def test_tiny_vit_other_input_size():
    encoder = TinyViT().eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 512, 512)).shape == (1, 256, 32, 32)

# Encoder parity with the fixtures (features of vit_b and tiny_vit) is tested end to end, through load_model
# and the image predictor, in test_sam1_parity.py.
