"""Prompt encoder: points, boxes and low-resolution masks to sparse and dense embeddings."""
from __future__ import annotations

import torch
import torch.nn as nn

from .common import LayerNorm2d
from .position_encoding import PositionEmbeddingRandom

# point labels understood by the encoder
PAD_LABEL, NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Points are (B, N, 2) pixel coordinates in the model input frame with (B, N) labels; boxes are (B, 4)
    xyxy; masks are (B, 1, 4*h, 4*w) logits. Returns sparse (B, N', C) and dense (B, C, h, w) embeddings — dense is (1, C, h, w)
    without mask input (shared by all prompts).
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int],
                 mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: dict[tuple, torch.Tensor] = {}

    def set_input_size(self, size: int, stride: int = 16) -> None:
        """Follow a change of the model's square input size (the embedding grid is size / stride)."""
        embed = size // stride
        self.image_embedding_size = (embed, embed)
        self.input_image_size = (size, size)
        self.mask_input_size = (4 * embed, 4 * embed)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, C, h, w)."""
        w = self.pe_layer.positional_encoding_gaussian_matrix
        key = (w.device, w.dtype, w.data_ptr(), self.image_embedding_size)
        if key not in self._dense_pe:
            self._dense_pe = {key: self.pe_layer(self.image_embedding_size).unsqueeze(0)}
        return self._dense_pe[key]

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # to the pixel centre
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels.unsqueeze(-1)
        emb = torch.where(labels == PAD_LABEL, self.not_a_point_embed.weight.to(emb.dtype), emb)
        for label in range(4):
            emb = torch.where(labels == label, emb + self.point_embeddings[label].weight.to(emb.dtype), emb)
        return emb

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self.pe_layer.forward_with_coords((boxes + 0.5).reshape(-1, 2, 2), self.input_image_size)
        corners[:, 0, :] += self.point_embeddings[BOX_TOP_LEFT].weight[0]
        corners[:, 1, :] += self.point_embeddings[BOX_BOTTOM_RIGHT].weight[0]
        return corners

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if points is not None:
            batch, device = points[0].shape[0], points[0].device
        elif boxes is not None:
            batch, device = boxes.shape[0], boxes.device
        elif masks is not None:
            batch, device = masks.shape[0], masks.device
        else:
            batch, device = 1, self.no_mask_embed.weight.device
        parts = [torch.empty((batch, 0, self.embed_dim), device=device)]
        if points is not None:
            parts.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self.embed_boxes(boxes))
        sparse = torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            # one (1, C, h, w) map for every prompt: the decoder then computes the image side of its first
            # layer once per image instead of once per prompt
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return sparse, dense
