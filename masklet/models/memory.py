"""SAM 2's video half: the memory encoder (mask + features -> memory) and memory attention."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LayerNorm2d, bf16_twin, run_twin
from .position_encoding import PositionEmbeddingSine
from .transformer import RoPEAttention


class MaskDownSampler(nn.Module):
    """Strided convs (LayerNorm2d + GELU between) reducing a mask by `total_stride` to `embed_dim` channels."""

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 total_stride: int = 16) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        layers: list[nn.Module] = []
        in_ch = 1
        for _ in range(num_layers):
            out_ch = in_ch * stride ** 2
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding), LayerNorm2d(out_ch), nn.GELU()]
            in_ch = out_ch
        layers.append(nn.Conv2d(in_ch, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder:
            if isinstance(layer, nn.Conv2d) and layer.in_channels > 1:
                # from the second conv on, channels-last: oneDNN's conv backward runs 1.2-1.7x faster on these
                # small-channel maps of many masks and LayerNorm2d fuses (training: 8 masks per frame). The first
                # conv and norm, with 1 and 4 channels, are faster in NCHW.
                x = x.contiguous(memory_format=torch.channels_last)
            x = layer(x)
        return x


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """forward(pix_feat (B, C, h, w), mask logits (B, 1, 16h, 16w)) -> (memory (B, mem_dim, h, w), pos (B, mem_dim, h, w))."""

    def __init__(self, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, num_layers=2)
        self.position_encoding = PositionEmbeddingSine(out_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor,
                skip_mask_sigmoid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)  # channels-last, and so is everything up to the output
        x = self.pix_feat_proj(pix_feat.contiguous(memory_format=torch.channels_last)) + masks
        x = self.out_proj(self.fuser(x)).contiguous()  # callers get NCHW, as from the official encoder
        return x, self.position_encoding(x)


class MemoryAttentionLayer(nn.Module):
    """Self-attention (RoPE) on the current frame, cross-attention (RoPE) to memories, then an MLP."""

    def __init__(self, d_model: int = 256, kv_dim: int = 64, dim_feedforward: int = 2048, num_heads: int = 1,
                 rope_theta: float = 10000.0) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, num_heads, kv_in_dim=kv_dim, rope_theta=rope_theta,
                                              rope_k_repeat=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                num_k_exclude_rope: int = 0) -> torch.Tensor:
        x = self.norm1(tgt)
        tgt = tgt + self.self_attn(x, x, x)
        x = self.norm2(tgt)
        # position encodings go on the keys only (pos_enc_at_cross_attn_keys=True, queries=False)
        tgt = tgt + self.cross_attn_image(x, memory + pos, memory, num_k_exclude_rope=num_k_exclude_rope)
        x = self.norm3(tgt)
        return tgt + self.linear2(F.relu(self.linear1(x)))


class MemoryAttention(nn.Module):
    """Conditions current-frame features on the memory bank.

    curr (B, HW, C), curr_pos (B, HW, C), memory (B, M, mem_dim), memory_pos (B, M, mem_dim), batch first;
    the last `num_obj_ptr_tokens` memory tokens are object pointers (no RoPE). Returns (B, HW, C).
    """

    def __init__(self, d_model: int = 256, kv_dim: int = 64, num_layers: int = 4, dim_feedforward: int = 2048,
                 num_heads: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, kv_dim, dim_feedforward, num_heads)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        twin = bf16_twin(self)  # bfloat16 inference: run the bfloat16 copy (see common.bf16_twin)
        if twin is not None:
            return run_twin(twin, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens)
        x = curr + 0.1 * curr_pos  # pos_enc_at_input
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_k_exclude_rope=num_obj_ptr_tokens)
        return self.norm(x)
