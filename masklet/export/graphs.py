"""The exported graphs as small torch modules around a loaded model (their forward is what ONNX records).

Each wrapper reuses the model's own layers; only the memory attention's cross-attention is written out here,
in a form whose shapes follow the inputs (number of memory frames and object pointers free), because the
model's `RoPEAttention` repeats its RoPE tables by a Python count that a traced graph would freeze.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.position_encoding import apply_rope, axial_rope_tables
from ..models.sam2 import sine_pe_1d


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(prompt encoder, mask decoder) of either family."""
    if getattr(model, "family", None) == "sam2":
        return model.sam_prompt_encoder, model.sam_mask_decoder
    return model.prompt_encoder, model.mask_decoder


class ImageEncoderGraph(nn.Module):
    """image (1, 3, S, S) normalised -> image_embed (1, C, h, w) (what the image decoder reads: SAM 2 adds its
    no-memory embedding), high_res_feats_0 (1, C/8, 4h, 4w), high_res_feats_1 (1, C/4, 2h, 2w), and for SAM 2
    vision_features (1, C, h, w) (before the no-memory embedding: the input of memory attention / encoder)
    and vision_pos_enc (1, C, h, w)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sam2 = getattr(model, "family", None) == "sam2"

    def forward(self, image: torch.Tensor):
        features = self.model.encode_image(image)
        if not self.sam2:
            return (features.embed,)
        embed = self.model.image_embedding(features)
        return embed, features.high_res[0], features.high_res[1], features.embed, features.pos


class PromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder for B prompt sets of N points, every mask token's output.

    Inputs: image_embed (1, C, h, w) (or memory-conditioned features (B, C, h, w)), for SAM 2 high_res_feats_0/1,
    point_coords (B, N, 2) float in model-input pixels, point_labels (B, N) int64 (-1 padding, 0 negative,
    1 positive, 2/3 box corners: the client appends the padding point the torch prompt encoder adds),
    mask_input (B, 1, 4h, 4w) low-res logits, has_mask_input (1,) float 0/1.
    Outputs: masks (B, M, 4h, 4w) logits of all M = 4 tokens (token 0 the single-mask output), iou_predictions
    (B, M), and for SAM 2 object_score_logits (B, 1) and obj_ptr (B, M, C): each token's object pointer
    (obj_ptr_proj of the token, replaced by the no-object pointer where the object score is <= 0).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sam2 = getattr(model, "family", None) == "sam2"
        self.prompt_encoder, self.decoder = _parts(model)

    def forward(self, image_embed, *rest):
        if self.sam2:
            high_res_0, high_res_1, point_coords, point_labels, mask_input, has_mask_input = rest
            high_res = [high_res_0, high_res_1]
        else:
            point_coords, point_labels, mask_input, has_mask_input = rest
            high_res = None
        pe = self.prompt_encoder
        sparse = pe.embed_points(point_coords, point_labels, pad=False)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = torch.where(has_mask_input.reshape(1, 1, 1, 1) > 0, pe.mask_downscaling(mask_input), no_mask)
        masks, iou, tokens, obj_logits = self.decoder._predict(image_embed, pe.get_dense_pe(), sparse, dense,
                                                               high_res)
        if not self.sam2:
            return masks, iou
        present = (obj_logits > 0).unsqueeze(-1)
        obj_ptr = torch.where(present, self.model.obj_ptr_proj(tokens), self.model.no_obj_ptr.unsqueeze(0))
        return masks, iou, obj_logits, obj_ptr


class MaskPromptGraph(nn.Module):
    """What SAM 2 needs to take a mask prompt as a frame's output (`SAM2Model.mask_as_output`) besides the
    decoder: mask (B, 1, S, S) 0/1 -> mask_for_decoder (B, 1, 4h, 4w) (the learned `mask_downsample` conv), and
    the model's no-object pointer no_obj_ptr (B, C) for objects whose mask is empty."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mask):
        # expanded to the input's batch: a constant output would lose its name in the exported graph
        return self.model.mask_downsample(mask), self.model.no_obj_ptr.expand(mask.shape[0], -1)


class MemoryEncoderGraph(nn.Module):
    """SAM 2's memory of B objects on one frame.

    Inputs: vision_features (1, C, h, w); mask_logits (B, 1, 4h, 4w) low-res logits (upsampled here to S x S as
    the torch predictor does); object_score_logits (B, 1); binarize (1,) float: 1 = memory from the mask
    thresholded at 0 (prompted frames), 0 = from its sigmoid. Outputs: maskmem_features (B, mem_dim, h, w)
    (the no-object embedding added for absent objects, SAM 2.1) and maskmem_pos_enc (1, mem_dim, h, w).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, vision_features, mask_logits, object_score_logits, binarize):
        size = self.model.image_size
        high = F.interpolate(mask_logits, size=(size, size), mode="bilinear", align_corners=False)
        mask = torch.where(binarize.reshape(1, 1, 1, 1) > 0, (high > 0).float(), torch.sigmoid(high))
        memory, pos = self.model.memory_encoder(vision_features, mask * 20.0 - 10.0, skip_mask_sigmoid=True)
        if self.model.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()
            memory = memory + absent[..., None, None] * self.model.no_obj_embed_spatial[..., None, None]
        return memory, pos[:1]


def _heads(attn: nn.Module, x):
    """(B, N, heads * d) -> (B, heads, N, d) with the token count left free (-1), so that an empty set of
    object pointers (N = 0) reshapes too."""
    d = attn.internal_dim // attn.num_heads
    return x.reshape(x.shape[0], -1, attn.num_heads, d).transpose(1, 2)


def _self_attention(attn: nn.Module, x, cos, sin):
    """`RoPEAttention` of the frame on itself, with the RoPE tables given (not looked up by traced size)."""
    q = apply_rope(_heads(attn, attn.q_proj(x)), cos, sin)
    k = apply_rope(_heads(attn, attn.k_proj(x)), cos, sin)
    out = F.scaled_dot_product_attention(q, k, _heads(attn, attn.v_proj(x)))
    return attn.out_proj(attn._merge(out))


def _cross_attention(attn: nn.Module, q_in, mem_keys, ptr_keys, values, cos, sin, key_bias=None):
    """`RoPEAttention` with rope_k_repeat written shape-generically: memory keys (B, F*hw, mem_dim) of F frames
    are rotated frame by frame, pointer keys (B, P, mem_dim) are not (k_proj is per token, so projecting the
    two groups apart equals projecting their concatenation)."""
    q = apply_rope(_heads(attn, attn.q_proj(q_in)), cos, sin)
    k_mem = _heads(attn, attn.k_proj(mem_keys))
    b, heads, _, d = k_mem.shape
    k_mem = apply_rope(k_mem.reshape(b, heads, -1, cos.shape[0], d), cos, sin).reshape(b, heads, -1, d)
    k = torch.cat([k_mem, _heads(attn, attn.k_proj(ptr_keys))], dim=2)
    v = _heads(attn, attn.v_proj(values))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
    return attn.out_proj(attn._merge(out))


class MemoryAttentionGraph(nn.Module):
    """SAM 2's memory attention: frame features conditioned on a memory bank of F frames and P object pointers.

    Inputs: vision_features, vision_pos_enc (1, C, h, w); memory (B, F, mem_dim, h, w) the memories (in the
    order conditioning frames, then recent ones); memory_tpos (F,) int64 their temporal slot t_pos
    (0 = conditioning frame, 1..num_maskmem-1 for recent frames, as in `SAM2Model.attend_memory`);
    obj_ptrs (B, P, C) object pointers; obj_ptr_tpos (P,) float their signed temporal distances divided by
    (max pointers - 1) (SAM 2.1; ignored by SAM 2.0). With `padded`, also memory_valid (B, F) and
    obj_ptr_valid (B, P) float 0/1 masks of a fixed-size bank. Output: pix_feat (B, C, h, w).
    """

    def __init__(self, model: nn.Module, padded: bool = False) -> None:
        super().__init__()
        self.model = model
        self.padded = padded
        # constant tables as (persistent) buffers: the tracer stores a plain tensor once per use (33 copies of the RoPE
        # tables made the tiny model's graph 158 MB), a buffer once
        side = model.image_size // 16
        cross = model.memory_attention.layers[0].cross_attn_image
        cos, sin = axial_rope_tables(cross.internal_dim // cross.num_heads, side, side, cross.rope_theta)
        self.register_buffer("rope_cos", cos)
        self.register_buffer("rope_sin", sin)
        grid = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, side, side))
        self.register_buffer("grid_pos", grid.flatten(2).transpose(1, 2).contiguous())

    def forward(self, vision_features, vision_pos_enc, memory, memory_tpos, obj_ptrs, obj_ptr_tpos, *valid):
        m = self.model
        b, _, mem_dim, h, w = memory.shape
        c = vision_features.shape[1]
        # memories and their position encodings (the sine encoding of the grid, the same for every frame)
        mem_tokens = memory.flatten(3).transpose(2, 3)  # (B, F, hw, mem_dim)
        grid_pos = self.grid_pos  # (1, hw, mem_dim)
        tpos = m.maskmem_tpos_enc[m.num_maskmem - memory_tpos - 1].reshape(1, -1, 1, mem_dim)
        mem_pos = grid_pos.unsqueeze(1) + tpos
        mem_tokens = mem_tokens.reshape(b, -1, mem_dim)
        mem_pos = mem_pos.expand(b, -1, -1, -1).reshape(b, -1, mem_dim)
        # object pointers split into C / mem_dim tokens each, with their temporal encodings
        split = c // mem_dim
        if m.config.sam2_1:
            ptr_pos = m.obj_ptr_tpos_proj(sine_pe_1d(obj_ptr_tpos, dim=c))  # (P, mem_dim)
        else:
            ptr_pos = obj_ptr_tpos.unsqueeze(-1) * 0.0 + obj_ptrs.new_zeros(1, mem_dim)
        ptr_tokens = obj_ptrs.reshape(b, -1, split, mem_dim).reshape(b, -1, mem_dim)
        ptr_pos = ptr_pos.unsqueeze(1).expand(-1, split, -1).reshape(1, -1, mem_dim).expand(b, -1, -1)
        values = torch.cat([mem_tokens, ptr_tokens], dim=1)
        key_bias = None
        if self.padded:
            memory_valid, ptr_valid = valid
            valid_keys = torch.cat([memory_valid.unsqueeze(-1).expand(-1, -1, h * w).reshape(b, -1),
                                    ptr_valid.unsqueeze(-1).expand(-1, -1, split).reshape(b, -1)], dim=1)
            key_bias = ((1.0 - valid_keys) * -1e9).reshape(b, 1, 1, -1)
        curr = vision_features.flatten(2).transpose(1, 2).expand(b, -1, -1)
        curr_pos = vision_pos_enc.flatten(2).transpose(1, 2).expand(b, -1, -1)
        attention = m.memory_attention
        x = curr + 0.1 * curr_pos
        cos, sin = self.rope_cos, self.rope_sin
        for layer in attention.layers:
            y = layer.norm1(x)
            x = x + _self_attention(layer.self_attn, y, cos, sin)
            y = layer.norm2(x)
            x = x + _cross_attention(layer.cross_attn_image, y, mem_tokens + mem_pos, ptr_tokens + ptr_pos, values,
                                     cos, sin, key_bias)
            y = layer.norm3(x)
            x = x + layer.linear2(F.relu(layer.linear1(y)))
        x = attention.norm(x)
        return x.transpose(1, 2).reshape(b, c, h, w)
