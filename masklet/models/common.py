"""Small building blocks shared by several model components."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Type

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    """`num_layers` linear layers with an activation between them (state_dict keys `layers.i.*`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 activation: Type[nn.Module] = nn.ReLU, sigmoid_output: bool = False) -> None:
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MLPBlock(nn.Module):
    """Two-layer MLP with SAM 1's state_dict names (`lin1`, `lin2`)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, activation: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention on (B, heads, N, C) tensors (the fused kernel where one exists).

    A batch of 1 on either side (an image shared by B prompts, or B prompts attended by one image) is
    broadcast to the other's batch without copying.
    """
    batch = max(q.shape[0], k.shape[0])
    if q.shape[0] != batch:
        q = q.expand(batch, -1, -1, -1)
    if k.shape[0] != batch:
        k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
    return F.scaled_dot_product_attention(q, k, v)


@dataclass
class ImageFeatures:
    """Encoder output for B frames.

    embed (B, C, h, w): lowest-resolution feature; pos (B, C, h, w): its position encoding;
    high_res [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]: skip features already projected by conv_s0/conv_s1.
    """

    embed: torch.Tensor
    pos: torch.Tensor
    high_res: list[torch.Tensor]

    def select(self, index: int | slice | torch.Tensor) -> "ImageFeatures":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures(self.embed[index], self.pos[index], [f[index] for f in self.high_res])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ImageFeatures":
        return ImageFeatures(self.embed.to(device, dtype), self.pos.to(device, dtype),
                             [f.to(device, dtype) for f in self.high_res])
