"""Hiera: the hierarchical vision transformer trunk of SAM 2's image encoder."""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import MLP, attention, bf16_twin, compiled_call, run_twin


# Hiera module -> ((size, dtype, device, parameter storage and versions), its interpolated position embedding)
_POS_EMBED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * num_windows, window, window, C), padding H and W up to a multiple of window."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: (B * num_windows, window, window, C) -> (B, H, W, C)."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :]
    return x


def pool_hw(x: torch.Tensor, pool: nn.Module | None) -> torch.Tensor:
    """Apply a 2-D pooling to a channels-last (B, H, W, C) tensor.

    A max pool whose kernel equals its stride (Hiera's 2x2 query pooling) is an elementwise maximum of the
    strided views of the channels-last tensor: the same values as `nn.MaxPool2d` (floor mode drops the odd
    last row / column), without the two layout changes around a channels-first pooling. Elementwise maxima
    rather than `amax` over the window dims: the CPU reduction over two non-adjacent dims ran at ~2 GB/s
    (43 ms against 5 ms for a (1, 256, 256, 192) tensor; ~6% of a float32 encode at 1024 px, issue 19)."""
    if pool is None:
        return x
    if isinstance(pool, nn.MaxPool2d) and _is_plain_pool(pool):
        k = pool.stride if isinstance(pool.stride, tuple) else (pool.stride, pool.stride)
        b, h, w, c = x.shape
        h2, w2 = h // k[0], w // k[1]
        x = x[:, :h2 * k[0], :w2 * k[1]] if (h % k[0] or w % k[1]) else x
        windows = x.reshape(b, h2, k[0], w2, k[1], c)
        rows = windows[:, :, 0]
        for i in range(1, k[0]):
            rows = torch.maximum(rows, windows[:, :, i])
        out = rows[:, :, :, 0]
        for j in range(1, k[1]):
            out = torch.maximum(out, rows[:, :, :, j])
        return out
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _is_plain_pool(pool: nn.MaxPool2d) -> bool:
    pair = _pair
    return (pair(pool.kernel_size) == pair(pool.stride) and pair(pool.padding) == (0, 0)
            and pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices)


class MultiScaleAttention(nn.Module):
    """Attention whose queries may be max-pooled (the first block of each stage halves the resolution)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_pool is not None:
            q = pool_hw(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    """Hiera block: (windowed) attention + MLP, optionally changing width and pooling the resolution."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 q_stride: tuple[int, int] | None = None, window_size: int = 0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.window_size = window_size
        self.q_stride = q_stride
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = pool_hw(self.proj(x), self.pool)
        window = self.window_size
        if window > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded_hw = window_partition(x, window)
        x = self.attn(x)
        if self.q_stride:
            # queries were pooled: the windows shrank by the stride
            window = self.window_size // self.q_stride[0]
            hw = (shortcut.shape[1], shortcut.shape[2])
            padded_hw = tuple(s + (window - s % window) % window for s in hw) if window > 0 else hw
        if self.window_size > 0:
            x = window_unpartition(x, window, padded_hw, hw)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution; returns channels-last (B, H/4, W/4, C)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """Hiera trunk. forward((B, 3, S, S)) -> 4 feature maps, highest resolution first:
    (B, C, S/4, S/4), (B, 2C, S/8, S/8), (B, 4C, S/16, S/16), (B, 8C, S/32, S/32)."""

    COMPILABLE = (torch.float32,)  # common.enable_compile: float32 only (see there)

    def __init__(self, embed_dim: int = 96, num_heads: int = 1, stages: tuple[int, ...] = (2, 3, 16, 3),
                 global_att_blocks: tuple[int, ...] = (12, 16, 20), window_spec: tuple[int, ...] = (8, 4, 14, 7),
                 window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14), q_pool: int = 3,
                 q_stride: tuple[int, int] = (2, 2), dim_mul: float = 2.0, head_mul: float = 2.0) -> None:
        super().__init__()
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        stage = 1
        blocks = []
        for i in range(sum(stages)):
            dim_out = embed_dim
            # the first block of a stage still uses the previous stage's window size
            window = 0 if i in global_att_blocks else window_spec[stage - 1]
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            blocks.append(MultiScaleBlock(embed_dim, dim_out, num_heads,
                                          q_stride=q_stride if i in q_pool_blocks else None, window_size=window))
            embed_dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        # inference reuses the interpolated embedding (a bicubic resize of the whole grid: ~1% of a float32
        # encode at 1024 px); keyed on the parameters' versions, so loading or training weights invalidates it
        # (kept outside the module's __dict__: the bfloat16 twin, a deep copy, must not carry a float32 copy)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._interpolated_pos_embed(h, w)
        key = (h, w, self.pos_embed.dtype, self.pos_embed.device, self.pos_embed.data_ptr(), self.pos_embed._version,
               self.pos_embed_window.data_ptr(), self.pos_embed_window._version)
        cached = _POS_EMBED_CACHE.get(self)
        if cached is None or cached[0] != key:
            cached = (key, self._interpolated_pos_embed(h, w))
            _POS_EMBED_CACHE[self] = cached
        return cached[1]

    def _interpolated_pos_embed(self, h: int, w: int) -> torch.Tensor:
        # float32 whatever the weights: bicubic interpolation in bfloat16 is a slow scalar kernel on CPU
        pos = F.interpolate(self.pos_embed.float(), size=(h, w), mode="bicubic")
        win = self.pos_embed_window.float()
        reps = (-(-h // win.shape[2]), -(-w // win.shape[3]))
        pos = pos + win.tile(1, 1, *reps)[:, :, :h, :w]
        return pos.permute(0, 2, 3, 1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        twin = bf16_twin(self)  # bfloat16 inference: run the bfloat16 copy (see common.bf16_twin)
        if twin is not None:
            return run_twin(twin, x)
        return compiled_call(self, Hiera._forward, self, x)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
