"""Every model variant as a small frozen config. Values follow Meta's official configs."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SAM2Config:
    """Hyper-parameters of a SAM 2 / SAM 2.1 model."""

    name: str
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    sam2_1: bool = True  # 2.1: object pointers get a projected, signed temporal encoding; no-object spatial memory
    image_size: int = 1024
    d_model: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    memory_layers: int = 4
    memory_ffn_dim: int = 2048
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    max_obj_ptrs_in_encoder: int = 16
    family: str = field(default="sam2", init=False)

    @property
    def backbone_channel_list(self) -> list[int]:
        return [self.embed_dim * 2 ** i for i in range(len(self.stages))][::-1]

    @property
    def feature_stride(self) -> int:
        return 16


def _hiera(name: str, size: str, sam2_1: bool) -> SAM2Config:
    trunks = {
        "t": dict(stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
        "s": dict(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
        "b+": dict(embed_dim=112, num_heads=2),
        "l": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                  window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8)),
    }
    return SAM2Config(name=name, sam2_1=sam2_1, **trunks[size])


SAM2_VARIANTS: dict[str, SAM2Config] = {}
for _version, _is21 in (("sam2", False), ("sam2.1", True)):
    for _size in ("t", "s", "b+", "l"):
        _name = f"{_version}_hiera_{_size}"
        SAM2_VARIANTS[_name] = _hiera(_name, _size, _is21)

# Tiny test variant: the full architecture at small widths and a 256 px input, for fast unit tests.
SAM2_VARIANTS["sam2_test"] = SAM2Config(
    name="sam2_test", embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,), window_spec=(8, 4, 4, 2),
    window_pos_embed_bkg_spatial_size=(4, 4), image_size=256, d_model=32, mem_dim=16, memory_layers=2,
    memory_ffn_dim=64, decoder_mlp_dim=64, decoder_heads=2)
# sam2_test at d_model 64 (8 channels in the decoder's upscaled mask embedding instead of 4) and a 128 px input:
# trained from random weights by bench/train_synthetic.py (issue 16), it learns the synthetic shapes task much
# better than d_model 32 at about the same cost per step; tests/assets/sam2_test_wide_synthetic.pt holds them.
SAM2_VARIANTS["sam2_test_wide"] = replace(SAM2_VARIANTS["sam2_test"], name="sam2_test_wide", image_size=128, d_model=64,
                                          decoder_mlp_dim=128, memory_ffn_dim=128)

ALIASES = {
    "sam2_t": "sam2_hiera_t", "sam2_s": "sam2_hiera_s", "sam2_b": "sam2_hiera_b+", "sam2_l": "sam2_hiera_l",
    "sam2.1_t": "sam2.1_hiera_t", "sam2.1_s": "sam2.1_hiera_s", "sam2.1_b": "sam2.1_hiera_b+",
    "sam2.1_l": "sam2.1_hiera_l",
    "sam2_hiera_tiny": "sam2_hiera_t", "sam2_hiera_small": "sam2_hiera_s", "sam2_hiera_base_plus": "sam2_hiera_b+",
    "sam2_hiera_large": "sam2_hiera_l", "sam2.1_hiera_tiny": "sam2.1_hiera_t", "sam2.1_hiera_small": "sam2.1_hiera_s",
    "sam2.1_hiera_base_plus": "sam2.1_hiera_b+", "sam2.1_hiera_large": "sam2.1_hiera_l",
    "sam_b": "sam_vit_b", "sam_l": "sam_vit_l", "sam_h": "sam_vit_h", "mobile_sam": "mobile_sam_vit_t",
    "sam_vit_b_01ec64": "sam_vit_b", "sam_vit_l_0b3195": "sam_vit_l", "sam_vit_h_4b8939": "sam_vit_h",
}

SAM1_VARIANT_NAMES = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam_vit_t")


def all_variant_names() -> list[str]:
    return list(SAM2_VARIANTS) + list(SAM1_VARIANT_NAMES)


def canonical_variant(name: str) -> str:
    """Map a variant name or alias (`sam2.1_b`, `sam2.1_hiera_base_plus`, `sam_b`, ...) to its canonical name."""
    key = name.strip()
    for suffix in (".pt", ".pth"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    key = ALIASES.get(key, key)
    if key in SAM2_VARIANTS or key in SAM1_VARIANT_NAMES:
        return key
    known = all_variant_names() + list(ALIASES)
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model variant {name!r}.{hint} Known variants: {', '.join(all_variant_names())}")


def get_sam2_config(name: str) -> SAM2Config:
    key = canonical_variant(name)
    if key not in SAM2_VARIANTS:
        raise ValueError(f"{name!r} is not a SAM 2 variant")
    return SAM2_VARIANTS[key]
