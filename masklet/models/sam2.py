"""SAM 2 / SAM 2.1: image encoder, prompt encoder, mask decoder and the memory that tracks objects in video.

The model is stateless: per-frame tracking state (memories, object pointers) is passed in and returned by
the video predictor, which owns it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.preprocess import SAM2_INPUT, InputSpec
from .common import MLP, ImageFeatures
from .hiera import Hiera
from .mask_decoder import DecoderOutput, MaskDecoder
from .memory import MemoryAttention, MemoryEncoder
from .neck import FpnNeck, ImageEncoder
from .prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PromptEncoder
from .transformer import TwoWayTransformer
from .variants import SAM2Config

# logit given to masks of objects judged absent; large negative so that sigmoid is ~0
NO_OBJ_SCORE = -1024.0


@dataclass
class FrameOutput:
    """One frame's tracking output for B objects.

    low_res_masks (B, 1, 4h, 4w) and high_res_masks (B, 1, S, S) logits; obj_ptr (B, C);
    object_score_logits (B, 1); memory (B, mem_dim, h, w) and memory_pos (B, mem_dim, h, w) once encoded.
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    memory: torch.Tensor | None = None
    memory_pos: torch.Tensor | None = None


def sine_pe_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine/cosine encoding of (N,) positions -> (N, dim)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    pe = positions.unsqueeze(-1) / dim_t
    return torch.cat([pe.sin(), pe.cos()], dim=-1)


class SAM2Model(nn.Module):
    """SAM 2 / SAM 2.1 with the official state_dict layout (official checkpoints load with strict=True)."""

    family = "sam2"

    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        self.config = config
        c, mem_dim = config.d_model, config.mem_dim
        self.hidden_dim, self.mem_dim = c, mem_dim
        self.image_size = config.image_size
        self.num_maskmem = config.num_maskmem
        trunk = Hiera(config.embed_dim, config.num_heads, config.stages, config.global_att_blocks, config.window_spec,
                      config.window_pos_embed_bkg_spatial_size)
        self.image_encoder = ImageEncoder(trunk, FpnNeck(c, trunk.channel_list), scalp=1)
        self.memory_attention = MemoryAttention(c, mem_dim, config.memory_layers, config.memory_ffn_dim)
        self.memory_encoder = MemoryEncoder(c, mem_dim)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim)) if config.sam2_1 else None
        embed_size = config.image_size // config.feature_stride
        self.sam_prompt_encoder = PromptEncoder(c, (embed_size, embed_size), (config.image_size, config.image_size))
        self.sam_mask_decoder = MaskDecoder(
            c, TwoWayTransformer(2, c, config.decoder_heads, config.decoder_mlp_dim), iou_head_hidden_dim=c,
            use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
            pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True, dynamic_multimask_via_stability=True)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj = nn.Linear(c, mem_dim) if config.sam2_1 else nn.Identity()

    # ------------------------------------------------------------------ images
    @property
    def input_spec(self) -> InputSpec:
        return SAM2_INPUT.with_size(self.image_size)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.no_mem_embed.dtype

    def set_image_size(self, size: int) -> None:
        """Run at another input size (a multiple of 64); position encodings adapt to the feature size."""
        if size % 64 or size < 64:
            raise ValueError(f"imgsz must be a positive multiple of 64, got {size}")
        self.image_size = size
        self.sam_prompt_encoder.set_input_size(size)

    def prompt_encoder_mask_input_size(self) -> tuple[int, int]:
        return self.sam_prompt_encoder.mask_input_size

    def encode_image(self, images: torch.Tensor, frozen_backbone: bool = False) -> ImageFeatures:
        """(B, 3, S, S) normalised images -> ImageFeatures. `frozen_backbone` (training with the image encoder
        frozen) runs the image encoder without autograd; the high-res projections conv_s0 / conv_s1 belong to
        the mask decoder and keep theirs."""
        with torch.no_grad() if frozen_backbone else contextlib.nullcontext():
            features, pos = self.image_encoder(images)
        high_res = [self.sam_mask_decoder.conv_s0(features[0]), self.sam_mask_decoder.conv_s1(features[1])]
        return ImageFeatures(features[-1], pos[-1], high_res)

    def image_embedding(self, features: ImageFeatures) -> torch.Tensor:
        """The embedding the image predictor decodes from: no memory, so the `no_mem_embed` is added."""
        return features.embed + self.no_mem_embed.view(1, -1, 1, 1)

    def encode_prompts(self, points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None,
                       mask_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in model-input pixels -> (sparse (B, N, C), dense (B, C, h, w)).

        points (B, N, 2), labels (B, N), boxes (B, 4) xyxy, mask_input (B, 1, 4h, 4w). SAM 2 feeds boxes as
        two corner points (labels 2 and 3) placed before the clicks.
        """
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], device=boxes.device,
                                         dtype=torch.int32).expand(corners.shape[0], 2)
            if points is not None:
                if corners.shape[0] != points.shape[0]:
                    corners = corners.expand(points.shape[0], -1, -1)
                    corner_labels = corner_labels.expand(points.shape[0], -1)
                points = torch.cat([corners, points], dim=1)
                labels = torch.cat([corner_labels, labels.to(torch.int32)], dim=1)
            else:
                points, labels = corners, corner_labels
        prompt_points = (points, labels) if points is not None else None
        return self.sam_prompt_encoder(prompt_points, None, mask_input)

    def decode(self, embedding: torch.Tensor, high_res: list[torch.Tensor], sparse: torch.Tensor,
               dense: torch.Tensor, multimask_output: bool) -> DecoderOutput:
        """Mask decoder on one image embedding (1 or B, C, h, w) for B prompt sets."""
        return self.sam_mask_decoder(embedding, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                     multimask_output, high_res_features=high_res)

    # ------------------------------------------------------------------ video
    def _sam_heads(self, pix_feat: torch.Tensor, high_res: list[torch.Tensor], points: torch.Tensor | None,
                   labels: torch.Tensor | None, mask_inputs: torch.Tensor | None,
                   multimask_output: bool) -> tuple[FrameOutput, torch.Tensor, torch.Tensor]:
        """Decode masks for B objects from memory-conditioned features (B, C, h, w)."""
        batch = pix_feat.shape[0]
        if points is None:
            points = pix_feat.new_zeros(batch, 1, 2)
            labels = -torch.ones(batch, 1, dtype=torch.int32, device=pix_feat.device)
        if mask_inputs is not None and mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_inputs = F.interpolate(mask_inputs.float(), size=self.sam_prompt_encoder.mask_input_size,
                                        mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder((points, labels), None, mask_inputs)
        out = self.decode(pix_feat, high_res, sparse, dense, multimask_output)
        is_present = out.object_score_logits > 0
        low_multi = torch.where(is_present[:, None, None], out.masks, NO_OBJ_SCORE).float()
        token = out.tokens[:, 0]
        low = low_multi
        if multimask_output:
            best = torch.argmax(out.iou, dim=-1)
            rows = torch.arange(batch, device=pix_feat.device)
            low = low_multi[rows, best].unsqueeze(1)
            if out.tokens.shape[1] > 1:
                token = out.tokens[rows, best]
        # only the chosen mask at full size (the official code upsamples all M and then picks one)
        high = F.interpolate(low, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        obj_ptr = self.obj_ptr_proj(token)
        presence = is_present.float()
        obj_ptr = presence * obj_ptr + (1 - presence) * self.no_obj_ptr
        return FrameOutput(low, high, obj_ptr, out.object_score_logits), out.iou, low_multi

    def mask_as_output(self, pix_feat: torch.Tensor, high_res: list[torch.Tensor],
                       mask_inputs: torch.Tensor) -> FrameOutput:
        """A mask prompt is taken as the output itself (B, 1, S, S) binary mask -> scaled logits."""
        out_scale, out_bias = 20.0, -10.0
        masks = mask_inputs.float()
        high = masks * out_scale + out_bias
        low = F.interpolate(high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        decoded, _, _ = self._sam_heads(pix_feat, high_res, None, None, self.mask_downsample(masks), False)
        present = torch.any(masks.flatten(1) > 0.0, dim=1)[..., None].float()
        obj_ptr = present * decoded.obj_ptr + (1 - present) * self.no_obj_ptr
        return FrameOutput(low, high, obj_ptr, out_scale * present + out_bias)

    def encode_memory(self, features: ImageFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor,
                      binarize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of B objects: features (B, C, h, w) fused with their masks (B, 1, S, S)."""
        if binarize:
            mask_for_mem = (high_res_masks > 0).float()
        else:
            mask_for_mem = torch.sigmoid(high_res_masks)
        mask_for_mem = mask_for_mem * 20.0 - 10.0
        memory, pos = self.memory_encoder(features.embed, mask_for_mem.to(features.embed.dtype), skip_mask_sigmoid=True)
        if self.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()
            memory = memory + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return memory, pos

    def object_pointer_tokens(self, rel_positions: list[int], ptrs: torch.Tensor,
                              max_ptrs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers (N, B, C) at signed temporal distances -> memory tokens and their position encodings,
        each (N * C/mem_dim, B, mem_dim)."""
        n, batch, c = ptrs.shape
        if self.config.sam2_1:
            pos = torch.tensor(rel_positions, device=ptrs.device, dtype=torch.float32)
            pos = self.obj_ptr_tpos_proj(sine_pe_1d(pos / (max_ptrs - 1), dim=c).to(ptrs.dtype))
            pos = pos.unsqueeze(1).expand(-1, batch, self.mem_dim)
        else:
            pos = ptrs.new_zeros(n, batch, self.mem_dim)
        split = c // self.mem_dim
        if split > 1:
            ptrs = ptrs.reshape(n, batch, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pos = pos.repeat_interleave(split, dim=0)
        return ptrs, pos

    def attend_memory(self, features: ImageFeatures, memories: list[tuple[int, torch.Tensor, torch.Tensor]],
                      obj_ptrs: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Condition frame features on memories.

        features: this frame (its embed (1 or B, C, h, w) broadcast over B objects); memories: (t_pos, memory
        (B, mem_dim, h, w), memory_pos) with t_pos 0 for conditioning frames and 1..num_maskmem-1 for recent
        ones; obj_ptrs: tokens and positions from `object_pointer_tokens`. Returns (B, C, h, w).
        """
        _, c, h, w = features.embed.shape
        mem_tokens, mem_pos = [], []
        for t_pos, memory, memory_pos in memories:
            mem_tokens.append(memory.flatten(2).permute(2, 0, 1))
            enc = memory_pos.flatten(2).permute(2, 0, 1) + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1]
            mem_pos.append(enc)
        num_ptr_tokens = 0
        if obj_ptrs is not None:
            mem_tokens.append(obj_ptrs[0])
            mem_pos.append(obj_ptrs[1])
            num_ptr_tokens = obj_ptrs[0].shape[0]
        memory = torch.cat(mem_tokens, dim=0).transpose(0, 1)
        memory_pos = torch.cat(mem_pos, dim=0).transpose(0, 1)
        batch = memory.shape[0]
        curr = features.embed.flatten(2).transpose(1, 2).expand(batch, -1, -1)
        curr_pos = features.pos.flatten(2).transpose(1, 2).expand(batch, -1, -1)
        out = self.memory_attention(curr, curr_pos, memory.to(curr.dtype), memory_pos.to(curr.dtype), num_ptr_tokens)
        return out.transpose(1, 2).reshape(batch, c, h, w)

    def track_frame(self, features: ImageFeatures, pix_feat: torch.Tensor | None, points: torch.Tensor | None,
                    labels: torch.Tensor | None, mask_inputs: torch.Tensor | None, multimask_output: bool,
                    prev_mask_logits: torch.Tensor | None = None) -> FrameOutput:
        """One tracking step for B objects, before memory encoding.

        pix_feat: memory-conditioned features (B, C, h, w) from `attend_memory`, or None for a frame without
        memory (the no-memory embedding is added). A mask prompt (B, 1, S, S) is taken as the output.
        """
        batch = points.shape[0] if points is not None else (
            mask_inputs.shape[0] if mask_inputs is not None else pix_feat.shape[0])
        high_res = [f.expand(batch, -1, -1, -1) if f.shape[0] != batch else f for f in features.high_res]
        if mask_inputs is not None:
            base = features.embed.expand(batch, -1, -1, -1)
            return self.mask_as_output(base, high_res, mask_inputs)
        if pix_feat is None:
            pix_feat = self.image_embedding(features).expand(batch, -1, -1, -1)
        out, _, _ = self._sam_heads(pix_feat, high_res, points, labels, prev_mask_logits, multimask_output)
        return out
