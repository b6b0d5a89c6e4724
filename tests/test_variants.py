"""Every variant's state_dict matches the official manifest; checkpoints load in any form."""
import json

import pytest
import torch
from conftest import reference_file

from masklet.models.build import build_model, infer_variant, load_model
from masklet.models.variants import SAM2_VARIANTS, canonical_variant

OFFICIAL = [n for n in SAM2_VARIANTS if not n.startswith("sam2_test")]  # the test variants are ours


@pytest.fixture(scope="module")
def manifest():
    return json.loads(reference_file("variants.json").read_text())


@pytest.mark.parametrize("name", OFFICIAL)
def test_manifest(manifest, name):
    with torch.device("meta"):
        model = build_model(name, device="meta")
    expected = {k: tuple(shape) for k, shape, _ in manifest[name]["state_dict"]}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(got) == set(expected), (set(expected) - set(got), set(got) - set(expected))
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == manifest[name]["num_parameters"]


@pytest.mark.parametrize("name", OFFICIAL)
def test_variant_inferred_from_weights(manifest, name):
    state = {k: torch.empty(shape, device="meta") for k, shape, _ in manifest[name]["state_dict"]}
    assert infer_variant(state) == name


def test_aliases():
    assert canonical_variant("sam2.1_b.pt") == "sam2.1_hiera_b+"
    assert canonical_variant("sam2_hiera_large") == "sam2_hiera_l"
    assert canonical_variant("sam2_t") == "sam2_hiera_t"


def test_unknown_variant_suggests():
    with pytest.raises(ValueError, match="sam2.1_hiera_t"):
        build_model("sam2.1_hiera_tt")


def _tiny_model():
    torch.manual_seed(0)
    model = build_model("sam2_test")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p).mul_(0.1).half().float())  # exactly representable in float16
    return model


def test_load_round_trip(tmp_path):
    model = _tiny_model()
    sd = model.state_dict()
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}}, tmp_path / "a.pt")
    torch.save({k: v.float() for k, v in sd.items()}, tmp_path / "b.pt")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = model.encode_image(x).embed
        for name in ("a.pt", "b.pt"):
            loaded = load_model(tmp_path / name)
            assert loaded.config.name == "sam2_test"
            assert next(loaded.parameters()).dtype == torch.float32
            assert torch.equal(loaded.encode_image(x).embed, ref)


def test_foreign_checkpoint_lists_keys(tmp_path):
    torch.save({"model": {"backbone.conv.weight": torch.zeros(3, 3)}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_model(tmp_path / "x.pt")


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_model(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_mismatched_variant(tmp_path):
    sd = _tiny_model().state_dict()
    with pytest.raises(ValueError, match="does not match variant"):
        load_model(sd, variant="sam2.1_hiera_t")


def test_compile_falls_back_to_eager(monkeypatch):
    from masklet.models.build import compile_model

    model = _tiny_model()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = model.encode_image(x).embed

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    status = compile_model(model, ("image_encoder", "memory_attention"))
    assert status == {"image_encoder": "compiled", "memory_attention": "compiled"}
    with pytest.warns(UserWarning, match="running it eagerly"), torch.no_grad():
        got = model.encode_image(x).embed
    assert torch.equal(got, expected)
    assert set(model.state_dict()) == set(_tiny_model().state_dict())
