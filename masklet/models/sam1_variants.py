"""Image-encoder hyper-parameters of the SAM 1 (ViT-B/L/H) and MobileSAM (TinyViT) variants.

Variant names follow ``sam1_variants.json``: ``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``,
``mobile_sam_vit_t``; the short names ``vit_b``, ``vit_l``, ``vit_h``, ``vit_t`` are accepted too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .tiny_vit import TinyViT
from .vit import ImageEncoderViT

__all__ = [
    "SAM1_ENCODER_CONFIGS",
    "TinyViTEncoderConfig",
    "ViTEncoderConfig",
    "build_sam1_image_encoder",
    "canonical_sam1_variant",
    "sam1_encoder_config",
]


@dataclass(frozen=True)
class ViTEncoderConfig:
    """Arguments of `ImageEncoderViT`."""

    depth: int
    embed_dim: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    out_chans: int = 256
    window_size: int = 14
    mlp_ratio: float = 4.0

    def build(self) -> ImageEncoderViT:
        return ImageEncoderViT(**asdict(self))


@dataclass(frozen=True)
class TinyViTEncoderConfig:
    """Arguments of `TinyViT` (MobileSAM's ``mobile_sam_vit_t`` defaults)."""

    img_size: int = 1024
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    downsample_strides: tuple[int, ...] = (2, 2, 1)
    out_chans: int = 256

    def build(self) -> TinyViT:
        return TinyViT(**asdict(self))


SAM1_ENCODER_CONFIGS: dict[str, ViTEncoderConfig | TinyViTEncoderConfig] = {
    "sam_vit_b": ViTEncoderConfig(depth=12, embed_dim=768, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "sam_vit_l": ViTEncoderConfig(depth=24, embed_dim=1024, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "sam_vit_h": ViTEncoderConfig(depth=32, embed_dim=1280, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "mobile_sam_vit_t": TinyViTEncoderConfig(),
}

_ALIASES = {"vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h", "vit_t": "mobile_sam_vit_t",
            "mobile_sam": "mobile_sam_vit_t"}


def canonical_sam1_variant(name: str) -> str:
    """Manifest name of a SAM 1 / MobileSAM variant (accepts the short aliases)."""
    key = _ALIASES.get(name, name)
    if key not in SAM1_ENCODER_CONFIGS:
        raise KeyError(f"unknown SAM 1 variant {name!r}; known: {sorted(SAM1_ENCODER_CONFIGS)} "
                       f"(aliases {sorted(_ALIASES)})")
    return key


def sam1_encoder_config(variant_name: str) -> ViTEncoderConfig | TinyViTEncoderConfig:
    """The image-encoder configuration of a variant."""
    return SAM1_ENCODER_CONFIGS[canonical_sam1_variant(variant_name)]


def build_sam1_image_encoder(variant_name: str) -> nn.Module:
    """A freshly initialised image encoder of the variant; load ``image_encoder.*`` weights into it.

    Output for a 1024x1024 input: (B, 256, 64, 64). Build under ``with torch.device("meta"):`` to get
    the structure without allocating memory.
    """
    return sam1_encoder_config(variant_name).build()
