"""The original SAM (ViT-B/L/H) and MobileSAM (TinyViT): an image encoder with SAM's prompt encoder and mask
decoder. They expose the same interface as `SAM2Model` so every image-level predictor serves both families."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data.preprocess import SAM1_INPUT, InputSpec
from .common import ImageFeatures
from .mask_decoder import DecoderOutput, MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam1_variants import build_sam1_image_encoder
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class SAM1Config:
    name: str
    image_size: int = 1024
    family: str = "sam1"


class SAM1Model(nn.Module):
    """SAM 1 / MobileSAM with the official state_dict layout (`image_encoder.*`, `prompt_encoder.*`,
    `mask_decoder.*`). No memory: image prompts only."""

    family = "sam1"
    # SAM 1 returns its low-resolution logits unclamped
    low_res_clamp = None

    def __init__(self, name: str) -> None:
        super().__init__()
        self.config = SAM1Config(name)
        self.image_size = 1024
        self.image_encoder = build_sam1_image_encoder(name)
        self.prompt_encoder = PromptEncoder(256, (64, 64), (1024, 1024), mask_in_chans=16)
        self.mask_decoder = MaskDecoder(256, TwoWayTransformer(2, 256, 8, 2048, activation=nn.ReLU,
                                                               sam1_mlp_names=True))

    @property
    def input_spec(self) -> InputSpec:
        return SAM1_INPUT.with_size(self.image_size)

    @property
    def device(self) -> torch.device:
        return self.mask_decoder.iou_token.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mask_decoder.iou_token.weight.dtype

    def set_image_size(self, size: int) -> None:
        if size % 64 or size < 64:
            raise ValueError(f"imgsz must be a positive multiple of 64, got {size}")
        self.image_size = size
        self.prompt_encoder.set_input_size(size)

    def prompt_encoder_mask_input_size(self) -> tuple[int, int]:
        return self.prompt_encoder.mask_input_size

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """(B, 3, S, S) normalised, padded images -> features (B, 256, S/16, S/16)."""
        embed = self.image_encoder(images)
        return ImageFeatures(embed, self.prompt_encoder.get_dense_pe().expand(embed.shape[0], -1, -1, -1), [])

    def image_embedding(self, features: ImageFeatures) -> torch.Tensor:
        return features.embed

    def encode_prompts(self, points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None,
                       mask_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in model-input pixels -> (sparse (B, N, C), dense (B, C, h, w)); boxes use the box embedding."""
        if points is not None and boxes is not None and boxes.shape[0] != points.shape[0]:
            boxes = boxes.expand(points.shape[0], -1)
        return self.prompt_encoder((points, labels) if points is not None else None, boxes, mask_input)

    def decode(self, embedding: torch.Tensor, high_res: list[torch.Tensor], sparse: torch.Tensor,
               dense: torch.Tensor, multimask_output: bool) -> DecoderOutput:
        return self.mask_decoder(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)
