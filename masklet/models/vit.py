"""SAM 1's ViT image encoder (ViT-B / ViT-L / ViT-H), state_dict-compatible with the official checkpoints.

Structure (module names give the checkpoint keys with the ``image_encoder.`` prefix removed):

- ``patch_embed.proj``: 16x16 stride-16 convolution, 3 -> C channels, output kept channels-last (B, H, W, C).
- ``pos_embed``: absolute position embedding (1, 64, 64, C) for the 1024x1024 training size. For another
  input size (any multiple of 16, square or not) it is resampled to the token grid with bicubic
  interpolation (``align_corners=False``, no antialiasing); at 1024 it is used as is, bit for bit.
- ``blocks.i``: pre-norm transformer blocks (LayerNorm eps 1e-6). Blocks not in ``global_attn_indexes``
  attend inside non-overlapping 14x14 windows; the normalised tokens are zero-padded at the bottom/right
  to a window multiple (64 -> 70), the padded tokens take part in the attention as keys (no masking, as
  in the reference), and are cropped afterwards. Blocks in ``global_attn_indexes`` attend over the whole
  grid. Every attention adds the decomposed relative position bias (``rel_pos_h``, ``rel_pos_w``:
  (2*S-1, head_dim) tables for a window/grid side S; computed from the *unscaled* queries). When the
  attended grid side differs from the one the table was made for (global blocks at input sizes other
  than 1024), the table is resampled with linear interpolation to the needed length.
- ``neck``: 1x1 conv (no bias) -> LayerNorm2d -> 3x3 conv (no bias) -> LayerNorm2d, to 256 channels.

Attention runs through ``F.scaled_dot_product_attention`` with the relative position bias as an additive
float mask; the global blocks are processed in query chunks so the bias never exceeds a fixed budget.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

__all__ = ["ImageEncoderViT", "LayerNorm2d", "rel_pos_table"]

# Largest attention-bias mask (in elements) materialised at once by the global attention blocks.
_MASK_BUDGET = 1 << 26


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: (B, 3, H, W) -> channels-last tokens (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MLPBlock(nn.Module):
    """lin1 -> GELU -> lin2 on the last dimension."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def rel_pos_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C) table; it is resampled (linear interpolation, align_corners=False) to
    2 * max(q_size, k_size) - 1 entries when L differs. Returns (q_size, k_size, C).
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.t()[None], size=length, mode="linear")[0].t()
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    index = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[index.long()]


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative position bias over a (B, H, W, C) grid.

    input_size: the (H, W) grid the rel-pos tables are sized for: (window, window) for windowed
    blocks, the full token grid for global blocks.
    """

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        n = h * w
        # (3, B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        table_h = rel_pos_table(h, h, self.rel_pos_h)  # (H, H, hd)
        table_w = rel_pos_table(w, w, self.rel_pos_w)  # (W, W, hd)
        q_grid = q.reshape(b, self.num_heads, h, w, self.head_dim)
        # Bias from the unscaled queries: rel_h[b, n, y, x, ky] = q[y, x] . table_h[y, ky]
        rel_h = torch.einsum("bnyxc,ykc->bnyxk", q_grid, table_h)
        rel_w = torch.einsum("bnyxc,xkc->bnyxk", q_grid, table_w)

        rows = max(1, min(h, _MASK_BUDGET // max(1, b * self.num_heads * w * n)))
        outs = []
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            # Written into a contiguous buffer: a plain broadcast add may pick a strided output layout,
            # and the reshape to (B, heads, rows*W, N) would then copy the whole mask.
            mask = q.new_empty(b, self.num_heads, y1 - y0, w, h, w)
            torch.add(rel_h[:, :, y0:y1, :, :, None], rel_w[:, :, y0:y1, :, None, :], out=mask)
            mask = mask.view(b, self.num_heads, (y1 - y0) * w, n)
            q_rows = q[:, :, y0 * w:y1 * w]
            outs.append(F.scaled_dot_product_attention(q_rows, k, v, attn_mask=mask))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # (B, heads, N, hd)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, c)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWin, window, window, C) after zero-padding H, W to window multiples."""
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(x: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nWin, window, window, C) -> (B, H, W, C), padding cropped."""
    hp, wp = padded_hw
    h, w = hw
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.view(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w]
    return x.contiguous()


class Block(nn.Module):
    """Pre-norm transformer block on a (B, H, W, C) grid; window_size 0 means global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, (window_size, window_size) if window_size > 0 else grid_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM 1 ViT image encoder: (B, 3, H, W) normalised image -> (B, out_chans, H/16, W/16) embedding.

    H and W must be multiples of ``patch_size``; the official models are run at 1024x1024, which gives
    (B, 256, 64, 64). Other sizes resample ``pos_embed`` (bicubic) and the global blocks' rel-pos tables
    (linear); the windowed blocks are unchanged.
    """

    def __init__(self, depth: int, embed_dim: int, num_heads: int, global_attn_indexes: Sequence[int],
                 img_size: int = 1024, patch_size: int = 16, out_chans: int = 256, window_size: int = 14,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.global_attn_indexes = tuple(global_attn_indexes)
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, 0 if i in self.global_attn_indexes else window_size, (grid, grid))
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The absolute position embedding for an (h, w) token grid: (1, h, w, C)."""
        pos = self.pos_embed
        if pos.shape[1:3] == (h, w):
            return pos
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_chans, H/16, W/16)."""
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of {self.patch_size}")
        x = self.patch_embed(x)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))

