"""Mask decoder: two-way transformer over image and prompt tokens, upscaling and hypernetwork heads."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from .common import MLP, LayerNorm2d, bf16_twin, compiled_call
from .transformer import TwoWayTransformer

# prompts per decoder call on a CPU: this many image-token elements in total (4 prompts at 1024 px)
CPU_DECODER_CHUNK_ELEMENTS = 4 * 256 * 64 * 64
# rows of image tokens upscaled at a time on a CPU: this many elements per band (4 rows of 4 prompts at 1024 px)
CPU_UPSCALE_BAND_ELEMENTS = 4 * 256 * 64 * 4


@dataclass
class DecoderOutput:
    """masks (B, M, 4h, 4w) logits; iou (B, M); tokens (B, M', C) output mask tokens used as object pointers;
    object_score_logits (B, 1)."""

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    """SAM / SAM 2 mask decoder. The SAM 2 additions (high-resolution skip features, object-score head,
    dynamic multimask selection by stability, sigmoid IoU) are switched by flags."""

    COMPILABLE = (torch.float32, torch.bfloat16)  # common.enable_compile may compile the upscaling

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256, use_high_res_features: bool = False,
                 iou_prediction_use_sigmoid: bool = False, pred_obj_scores: bool = False,
                 pred_obj_scores_mlp: bool = False, use_multimask_token_for_obj_ptr: bool = False,
                 dynamic_multimask_via_stability: bool = False, dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98) -> None:
        super().__init__()
        c = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, c)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(c, c, 1, 3) if pred_obj_scores_mlp else nn.Linear(c, 1)
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = dynamic_multimask_stability_delta
        self.stability_thresh = dynamic_multimask_stability_thresh

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool,
                high_res_features: list[torch.Tensor] | None = None) -> DecoderOutput:
        """image_embeddings (1 or B, C, h, w) and dense (1 or B, C, h, w) are broadcast over the B prompts; sparse
        (B, N, C)."""
        masks, iou, mask_tokens_out, obj_logits = self._predict_in_chunks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features)
        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._dynamic_multimask(masks, iou)
        else:
            masks, iou = masks[:, 0:1], iou[:, 0:1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            tokens = mask_tokens_out[:, 1:]
        else:
            tokens = mask_tokens_out[:, 0:1]
        return DecoderOutput(masks, iou, tokens, obj_logits)

    def _predict_in_chunks(self, image_embeddings, image_pe, sparse, dense, high_res_features):
        # On a CPU the decoder is bound by memory traffic: each prompt carries (C, h, w) image tokens and a
        # (C/8, 4h, 4w) upscaled map, so a large batch spills out of the caches (64 prompts at 1024 px ran
        # 1.8x slower per prompt than 4). Decode a few prompts at a time there; GPUs take the whole batch.
        batch = sparse.shape[0]
        tokens_per_prompt = image_embeddings.shape[1] * image_embeddings.shape[2] * image_embeddings.shape[3]
        chunk = max(1, CPU_DECODER_CHUNK_ELEMENTS // tokens_per_prompt)
        if sparse.device.type != "cpu" or batch <= chunk:
            return self._predict(image_embeddings, image_pe, sparse, dense, high_res_features)

        def rows(t: torch.Tensor, start: int) -> torch.Tensor:
            return t if t.shape[0] == 1 else t[start:start + chunk]

        parts = [self._predict(rows(image_embeddings, i), image_pe, sparse[i:i + chunk], rows(dense, i),
                               None if high_res_features is None else [rows(f, i) for f in high_res_features])
                 for i in range(0, batch, chunk)]
        return tuple(torch.cat(p, dim=0) for p in zip(*parts))

    def _predict(self, image_embeddings, image_pe, sparse, dense, high_res_features):
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            weights.insert(0, self.obj_score_token.weight)
        first = 1 if self.pred_obj_scores else 0
        output_tokens = torch.cat(weights, dim=0).to(sparse.dtype)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
        # src stays (1, C, h, w) when every prompt shares it; the transformer broadcasts it over the prompts
        src = image_embeddings + dense
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        # Under bfloat16 inference the transformer ran as a bfloat16 copy (it and the upscaling are the
        # decoder's cost); the small heads (hypernetworks, IoU, object score) stay in the weights' precision:
        # predicted IoU is compared with thresholds such as 0.8, where bfloat16 has steps of 0.004.
        heads_dtype = self.iou_token.weight.dtype
        exact_heads = (torch.autocast(hs.device.type, enabled=False) if hs.dtype != heads_dtype
                       else contextlib.nullcontext())
        hs = hs.to(heads_dtype)
        b = src.shape[0]
        iou_token_out = hs[:, first, :]
        mask_tokens_out = hs[:, first + 1: first + 1 + self.num_mask_tokens, :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        with exact_heads:
            hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :])
                                    for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
            iou = self.iou_prediction_head(iou_token_out)
            if self.pred_obj_scores:
                obj_logits = self.pred_obj_score_head(hs[:, 0, :])
            else:
                obj_logits = 10.0 * iou.new_ones(iou.shape[0], 1)
        masks = self._upscale_to_masks(src, hyper_in, high_res_features)
        return masks, iou, mask_tokens_out, obj_logits

    def _upscale_to_masks(self, src: torch.Tensor, hyper_in: torch.Tensor,
                          high_res_features: list[torch.Tensor] | None) -> torch.Tensor:
        """Image tokens (B, C, h, w) and hypernetwork weights (B, M, C/8) -> mask logits (B, M, 4h, 4w)."""
        upscaling = self.output_upscaling
        feat_s0 = feat_s1 = None
        if self.use_high_res_features and high_res_features is not None:
            feat_s0, feat_s1 = high_res_features
        twin = bf16_twin(upscaling)
        if twin is not None:
            # bfloat16 inference: the memory-bound upscaling on bfloat16 maps, logits back in float32
            with torch.autocast(src.device.type, enabled=False):
                masks = compiled_call(self, MaskDecoder._upscale_bands, twin, src.to(torch.bfloat16),
                                      hyper_in.to(torch.bfloat16),
                                      None if feat_s0 is None else feat_s0.to(torch.bfloat16),
                                      None if feat_s1 is None else feat_s1.to(torch.bfloat16))
            return masks.to(hyper_in.dtype)
        return compiled_call(self, MaskDecoder._upscale_bands, upscaling, src, hyper_in, feat_s0, feat_s1)

    @staticmethod
    def _upscale_bands(upscaling: nn.Sequential, src: torch.Tensor, hyper_in: torch.Tensor,
                       feat_s0: torch.Tensor | None, feat_s1: torch.Tensor | None) -> torch.Tensor:
        dc1, ln1, act1, dc2, act2 = upscaling
        b, c, h, w = src.shape
        # Every step from here to the masks is per pixel or a 2x2 stride-2 transposed conv, so a band of rows of
        # src gives the matching band of the masks. On a CPU a band stays in cache through all steps instead of
        # each step streaming (B, C/8, 4h, 4w) maps through memory.
        band = h if src.device.type != "cpu" else max(1, CPU_UPSCALE_BAND_ELEMENTS // (b * c * w))
        bands = []
        for r in range(0, h, band):
            x = dc1(src[:, :, r:r + band])
            if feat_s1 is not None:
                x += feat_s1[:, :, 2 * r:2 * (r + band)]
            x = dc2(act1(ln1(x)))
            if feat_s0 is not None:
                x += feat_s0[:, :, 4 * r:4 * (r + band)]
            x = act2(x)
            bands.append((hyper_in @ x.flatten(2)).view(b, -1, x.shape[2], x.shape[3]))
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta, (B, M)."""
        flat = mask_logits.flatten(-2)
        inter = (flat > self.stability_delta).sum(-1).float()
        union = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(union > 0, inter / union, torch.ones_like(inter))

    def _dynamic_multimask(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # single-mask output when it is stable, else the best of the three multimask outputs
        multi_masks, multi_iou = masks[:, 1:], iou[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(multi_iou.shape[0], device=iou.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, 0:1], iou[:, 0:1]
        stable = self.stability_scores(single_masks) >= self.stability_thresh
        out_masks = torch.where(stable[..., None, None].expand_as(single_masks), single_masks, best_masks)
        out_iou = torch.where(stable.expand_as(single_iou), single_iou, best_iou)
        return out_masks, out_iou
