"""Attention layers: the two-way transformer of the mask decoder and (RoPE) attention of the memory."""
from __future__ import annotations

from typing import Type

import torch
import torch.nn as nn

from .common import MLP, MLPBlock, attention, bf16_twin, compiled_call, run_twin
from .position_encoding import apply_rope, axial_rope_tables

# RoPEAttention: the value projection after the attention where that is narrower (switch for bench/levers.py)
LATE_VALUE_PROJECTION = True


class Attention(nn.Module):
    """Multi-head attention with optional down-projection of the internal width (`downsample_rate`).

    q (B, Nq, C), k and v (B, Nk, kv_in_dim) -> (B, Nq, C).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: int | None = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        return self.out_proj(self._merge(attention(q, k, v)))


class RoPEAttention(Attention):
    """Attention with 2-D axial rotary position encoding on a square grid of queries.

    Keys repeat the query grid (`rope_k_repeat`: several memory frames of the same size); the last
    `num_k_exclude_rope` keys (object pointers) get no rotation.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: int | None = None,
                 rope_theta: float = 10000.0, rope_k_repeat: bool = False) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _rope(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n, device)
        if key not in self._tables:
            side = int(round(n ** 0.5))
            if side * side != n:
                raise ValueError(f"RoPE attention needs a square grid of queries, got {n} tokens")
            # built outside inference mode: a table first made under a predictor's or `val`'s inference_mode
            # would otherwise make later training of the same model fail ("Inference tensors cannot be saved")
            with torch.inference_mode(False), torch.no_grad():
                self._tables[key] = axial_rope_tables(self.internal_dim // self.num_heads, side, side,
                                                      self.rope_theta, device)
        return self._tables[key]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        # Memory cross-attention: values come from 64-channel memories and are projected to 256. A softmax row
        # sums to 1, so softmax(.) (m Wv^T + bv) = (softmax(.) m) Wv^T + bv: attending over the memories
        # themselves and projecting after is the same product with a 4x narrower second matrix product
        # (one head; the attention over 7 memory frames is most of a video frame).
        late_v = LATE_VALUE_PROJECTION and self.num_heads == 1 and v.shape[-1] < self.internal_dim
        q, k = self._heads(self.q_proj(q)), self._heads(self.k_proj(k))
        v = v.unsqueeze(1) if late_v else self._heads(self.v_proj(v))
        cos, sin = self._rope(q.shape[-2], q.device)
        q = apply_rope(q, cos, sin)
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope > 0:
            k_rope = k[:, :, :num_k_rope]
            if num_k_rope != q.shape[-2]:
                if not self.rope_k_repeat or num_k_rope % q.shape[-2]:
                    raise ValueError("keys with RoPE must repeat the query grid")
                reps = num_k_rope // q.shape[-2]
                cos_k, sin_k = cos.repeat(reps, 1), sin.repeat(reps, 1)
            else:
                cos_k, sin_k = cos, sin
            k = torch.cat([apply_rope(k_rope, cos_k, sin_k), k[:, :, num_k_rope:]], dim=2)
        out = self._merge(attention(q, k, v))
        return self.out_proj(self.v_proj(out) if late_v else out)


class TwoWayAttentionBlock(nn.Module):
    """Tokens attend to themselves and to the image; then the image attends to the tokens."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, activation: Type[nn.Module],
                 attention_downsample_rate: int, skip_first_layer_pe: bool, sam1_mlp_names: bool) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = (MLPBlock(embedding_dim, mlp_dim, activation) if sam1_mlp_names
                    else MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation))
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """forward(image (1 or B, C, h, w), image_pe (1, C, h, w), tokens (B, N, C)) -> (tokens (B, N, C), image (B, hw, C)).

    An image of batch 1 is shared by all B token sets: the first layer projects it once and it becomes
    prompt-dependent only after the first image-to-token attention.
    """

    COMPILABLE = (torch.float32, torch.bfloat16)  # common.enable_compile may compile it

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: Type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 sam1_mlp_names: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0), sam1_mlp_names=sam1_mlp_names)
            for i in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        twin = bf16_twin(self)  # bfloat16 inference: run the bfloat16 copy (see common.bf16_twin)
        if twin is not None:
            return run_twin(twin, image, image_pe, tokens)
        return compiled_call(self, TwoWayTransformer._forward, self, image, image_pe, tokens)

    def _forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                 tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries, keys = tokens, image
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, image_pe)
        q, k = queries + tokens, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
