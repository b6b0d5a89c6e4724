"""MobileSAM's TinyViT image encoder (``mobile_sam_vit_t``: TinyViT-5M with a SAM neck).

Module names give the official checkpoint keys with the ``image_encoder.`` prefix removed:

- ``patch_embed.seq``: Conv2d_BN(3, C0/2, 3x3, stride 2) -> GELU -> Conv2d_BN(C0/2, C0, 3x3, stride 2)
  (Conv2d_BN = ``c``: conv without bias, ``bn``: BatchNorm2d). 1024 -> 256x256 tokens.
- ``layers.0``: MBConv blocks (1x1 expand x4 -> GELU -> 3x3 depthwise -> GELU -> 1x1 project, residual,
  GELU) then ``downsample`` (patch merging).
- ``layers.1..3``: TinyViT blocks: windowed attention (the block's input zero-padded to a window
  multiple *before* the attention's own LayerNorm; padded tokens act as keys, unmasked, as in the
  reference) with learned per-head attention biases indexed by the |dy|, |dx| offset of two tokens in the
  window; residual; 3x3 depthwise ``local_conv`` (Conv2d_BN, no residual); pre-norm MLP with residual.
  ``attention_bias_idxs`` is a non-persistent buffer (not in the checkpoints), like the reference.
- Patch merging: Conv2d_BN 1x1 -> GELU -> depthwise Conv2d_BN 3x3 (stride 2, or 1 where MobileSAM uses 1:
  the merge into 320 channels) -> GELU -> Conv2d_BN 1x1. 256 -> 128 -> 64 -> 64 tokens per side.
- ``norm_head``/``head``: TinyViT's classifier head, kept only so the checkpoints load strictly; unused.
- ``neck``: as SAM's ViT neck, to 256 channels.

Note: ``attention_bias_idxs`` is computed at construction; a model built under ``torch.device("meta")``
and then filled with ``load_state_dict(..., assign=True)`` keeps meta index buffers — build on a real
device (or call ``reset_attention_bias_idxs()``) before running it.

BatchNorm uses its running statistics in eval mode (call ``.eval()``). LayerNorms use eps 1e-5, the neck's
LayerNorm2d eps 1e-6. Any input size whose token grids stay positive works; the official size is 1024.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .vit import LayerNorm2d

__all__ = ["TinyViT"]


class Conv2dBN(nn.Sequential):
    """Conv2d without bias (``c``) followed by BatchNorm2d (``bn``)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bn(self.c(x))
        # inference: BatchNorm folded into the conv, saving a pass over the (often 256x256) activation
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.c.weight * scale.view(-1, 1, 1, 1)
        return F.conv2d(x, weight, bn.bias - bn.running_mean * scale, self.c.stride, self.c.padding,
                        self.c.dilation, self.c.groups)


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, C, H/4, W/4) with two stride-2 3x3 Conv2d_BN."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block on (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden, 1)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        y = self.conv3(y)
        return self.act(x + y)


class PatchMerging(nn.Module):
    """(B, C, H, W) or tokens (B, H*W, C) -> tokens (B, H'*W', C_out), with H' = ceil(H / stride)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = Conv2dBN(dim, out_dim, 1)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.dim() == 3:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, hw[0], hw[1])
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on (B, C, H, W), then patch merging to tokens."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x, hw)


def attention_bias_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the per-head bias table: |dy| * window + |dx| for row-major tokens.

    This equals the reference's numbering of offsets by first appearance (the first query, at (0, 0),
    meets every offset in row-major order).
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Window attention with LayerNorm on the input and learned offset biases: (B', N, C) -> (B', N, C).

    The qkv projection is laid out per head as [q | k | v] (head-major), unlike SAM's ViT.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", attention_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = self.norm(x)
        qkv = self.qkv(x).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # (B', heads, N, hd) each
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm -> fc1 -> GELU -> fc2 on (..., C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention + depthwise local conv + MLP on tokens (B, H*W, C)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, n, c = x.shape
        ws = self.window_size
        shortcut = x
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = x.view(b, h, w, c)
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        nh, nw = hp // ws, wp // ws
        y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        if pad_h or pad_w:
            y = y[:, :h, :w]
        x = shortcut + y.reshape(b, n, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w))
        x = x.view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on tokens, then optional patch merging."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 local_conv_size: int, stride: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if stride is not None else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x, hw)
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        return x, hw


class TinyViT(nn.Module):
    """MobileSAM TinyViT encoder: (B, 3, H, W) normalised image -> (B, out_chans, H/16, W/16).

    At 1024x1024 the output is (B, 256, 64, 64). ``downsample_strides`` are the strides of the patch
    merging after stages 0, 1, 2 (MobileSAM: 2, 2, 1 — the merge into the last stage keeps the 64x64 grid).
    """

    def __init__(self, img_size: int = 1024, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 downsample_strides: Sequence[int] = (2, 2, 1), out_chans: int = 256) -> None:
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes)
                == len(downsample_strides) + 1):
            raise ValueError("embed_dims, depths, num_heads, window_sizes need one entry per stage and "
                             "downsample_strides one fewer")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        layers: list[nn.Module] = [
            ConvLayer(embed_dims[0], embed_dims[1], depths[0], mbconv_expand_ratio, downsample_strides[0])]
        for i in range(1, len(embed_dims)):
            last = i == len(embed_dims) - 1
            layers.append(BasicLayer(embed_dims[i], embed_dims[min(i + 1, len(embed_dims) - 1)], depths[i],
                                     num_heads[i], window_sizes[i], mlp_ratio, local_conv_size,
                                     None if last else downsample_strides[i]))
        self.layers = nn.ModuleList(layers)
        self.norm_head = nn.LayerNorm(embed_dims[-1])  # classifier head: in the checkpoints, unused
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def reset_attention_bias_idxs(self, device: torch.device | str | None = None) -> None:
        """Recompute the (non-persistent) attention-bias index buffers, e.g. after a meta-device build."""
        for module in self.modules():
            if isinstance(module, Attention):
                window = math.isqrt(module.attention_biases.shape[1])
                dev = device if device is not None else module.attention_biases.device
                module.attention_bias_idxs = attention_bias_index(window).to(dev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_chans, H/16, W/16) (for the MobileSAM strides)."""
        # channels-last through the convolutional stages: the strided, 1x1 and depthwise convs at 1/2 and 1/4
        # resolution run ~2x faster on CPU than in NCHW, and the tokens of the first transformer stage come out
        # contiguous
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        hw = (x.shape[2], x.shape[3])
        for layer in self.layers:
            x, hw = layer(x, hw)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])
        return self.neck(x)
