"""Image predictor: a drop-in for the official `SAM2ImagePredictor` that works for every model family."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.preprocess import InputSpec, preprocess, resized_hw
from ..models.common import apply_compile_option
from .image_state import ImageState, PredictorStateError  # noqa: F401 - re-exported: it was defined here
from .precision import autocast, resolve_dtype
from .prompts import NORMALIZED_COORDS_HINT, PromptError, check_inside, official_prompts, to_model_frame


@dataclass
class EncodedImage:
    """Cached encoder output of one image: features for the decoder and its original size (h, w)."""

    features: Any  # model-specific ImageFeatures
    orig_hw: tuple[int, int]


def postprocess_masks(low_res: torch.Tensor, orig_hw: tuple[int, int], spec: InputSpec) -> torch.Tensor:
    """Low-resolution logits (B, M, h, w) -> logits at the original image size (B, M, H, W)."""
    low_res = low_res.float()
    if spec.resize == "longest":
        # SAM 1: back to the padded input size, drop the padding, then to the original size
        up = F.interpolate(low_res, (spec.size, spec.size), mode="bilinear", align_corners=False)
        rh, rw = resized_hw(*orig_hw, spec)
        return F.interpolate(up[..., :rh, :rw], orig_hw, mode="bilinear", align_corners=False)
    return F.interpolate(low_res, orig_hw, mode="bilinear", align_corners=False)


# full-resolution pixels upsampled at a time when only binary masks are wanted (~64 MB of float logits)
_UPSAMPLE_CHUNK_PIXELS = 1 << 24


def full_resolution_masks(low_res: torch.Tensor, orig_hw: tuple[int, int], spec: InputSpec,
                          threshold: float | None) -> torch.Tensor:
    """Low-res logits (B, M, h, w) -> (B, M, H, W) logits, or bool masks `logits > threshold` when a threshold
    is given. Binary masks are made a few at a time, so the float logits of a large batch (64 prompts x 3
    masks at 1200x1800 would be 1.7 GB) never exist all at once."""
    if threshold is None:
        return postprocess_masks(low_res, orig_hw, spec)
    b, m = low_res.shape[:2]
    flat = low_res.reshape(b * m, 1, *low_res.shape[2:])
    out = torch.empty((b * m, 1, *orig_hw), dtype=torch.bool, device=low_res.device)
    step = max(1, _UPSAMPLE_CHUNK_PIXELS // (orig_hw[0] * orig_hw[1]))
    for i in range(0, b * m, step):
        torch.gt(postprocess_masks(flat[i:i + step], orig_hw, spec), threshold, out=out[i:i + step])
    return out.reshape(b, m, *orig_hw)


class ImagePredictor(ImageState):
    """Predict masks for prompts on an image, reusing the image's features across prompts.

    Usage mirrors the official API::

        predictor = ImagePredictor(model)
        predictor.set_image(image)                       # HxWx3 uint8 RGB ndarray or PIL image
        masks, iou, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
    """

    def __init__(self, model: nn.Module, mask_threshold: float = 0.0, dtype: str | torch.dtype | None = None,
                 compile: bool = False) -> None:
        """dtype: "bfloat16" / "float16" run the image encoder under autocast (default float32, the exact path).
        compile: torch.compile the model's decoder and (float32) image trunk (`models.common.enable_compile`):
        faster from the second call on, the first call of each input shape compiles for about a minute on a
        CPU; the model stays compiled for later predictors."""
        apply_compile_option(model, compile)
        self.model = model
        self.mask_threshold = mask_threshold
        self.dtype = resolve_dtype(dtype)
        self._images: list[EncodedImage] = []
        self._is_batch = False

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def spec(self) -> InputSpec:
        return self.model.input_spec

    @property
    def orig_hw(self) -> list[tuple[int, int]]:
        return [img.orig_hw for img in self._images]

    @torch.inference_mode()
    def encode(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """Encode (H, W, 3) uint8 images; one batch through the encoder."""
        batch = torch.stack([preprocess(img, self.spec, self.device) for img in images]).to(self.model.dtype)
        with autocast(self.device, self.dtype):
            features = self.model.encode_image(batch)
        # the decoder is cheap and sensitive: it always runs in the model's own precision
        features = features.to(self.device, self.model.dtype)
        return [EncodedImage(features.select(i), img.shape[:2]) for i, img in enumerate(images)]

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding the decoder uses, (B, C, h, w)."""
        self._require(batch=self._is_batch)
        return torch.cat([self.model.image_embedding(img.features) for img in self._images])

    # ------------------------------------------------------------------ predict
    def predict(self, point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on the current image.

        point_coords (N, 2) or (B, N, 2) (x, y) pixels, point_labels (N,) / (B, N) with 1 = foreground and
        0 = background, box (4,) / (B, 4) xyxy, mask_input (1, 256, 256) / (B, 1, 256, 256) float low-res
        logits from a previous call, or a bool / 0-1 / 0-255 integer mask (H, W) / (B, H, W) of the image's size.
        B objects: each kind gives 1 or B entries, a single one is shared by all B objects (a box with B point
        sets, B boxes with one point set); different B's raise PromptError (a ValueError) naming the shapes.
        See `masklet.predictors.prompts` for the rules.
        Returns masks (C, H, W) (or (B, C, H, W) for B > 1 objects), iou_predictions (C,) / (B, C) and
        low_res_logits (C, 256, 256) / (B, C, 256, 256), with C = 3 if multimask_output else 1.
        """
        self._require(batch=False)
        masks, iou, low = self._predict_numpy(0, point_coords, point_labels, box, mask_input, multimask_output,
                                              return_logits, normalize_coords)
        return masks, iou, low

    def predict_batch(self, point_coords_batch: Sequence | None = None, point_labels_batch: Sequence | None = None,
                      box_batch: Sequence | None = None, mask_input_batch: Sequence | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      normalize_coords: bool = True) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """`predict` for each image of `set_image_batch`, with one prompt set per image (lists of what
        `predict` takes; each image's prompts follow `predict`'s shape and broadcasting rules). A PromptError
        names the image it is about."""
        self._require(batch=True)
        n = len(self._images)

        def per_image(values: Sequence | None, name: str) -> list:
            if values is None:
                return [None] * n
            if not isinstance(values, (list, tuple, np.ndarray, torch.Tensor)) or len(values) != n:
                got = f"{len(values)} entries" if hasattr(values, "__len__") else type(values).__name__
                raise PromptError(f"{name} must be a list with one entry per image ({n} images are set), got {got}")
            return list(values)

        pts, lbl = per_image(point_coords_batch, "point_coords_batch"), per_image(point_labels_batch, "point_labels_batch")
        boxes, masks_in = per_image(box_batch, "box_batch"), per_image(mask_input_batch, "mask_input_batch")
        out_masks, out_iou, out_low = [], [], []
        for i in range(n):
            try:
                m, s, low = self._predict_numpy(i, pts[i], lbl[i], boxes[i], masks_in[i], multimask_output,
                                                return_logits, normalize_coords)
            except PromptError as err:
                raise PromptError(f"image {i} of the batch: {err}") from None
            out_masks.append(m)
            out_iou.append(s)
            out_low.append(low)
        return out_masks, out_iou, out_low

    def _predict_numpy(self, index, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                       normalize_coords):
        mask_size = tuple(self.model_mask_input_size())
        image = self._images[index]
        prompts = official_prompts(point_coords, point_labels, box, mask_input, mask_size, image.orig_hw, self.spec)
        if prompts.empty:
            raise PromptError("no prompt given: pass point_coords with point_labels, a box, or a mask_input")
        if normalize_coords:
            check_inside(prompts, *image.orig_hw, NORMALIZED_COORDS_HINT)
        points, labels, boxes, masks = to_model_frame(prompts, image.orig_hw, self.spec, not normalize_coords,
                                                      self.device)
        out_masks, iou, low = self.predict_tensors(index, points, labels, boxes, masks, multimask_output,
                                                   return_logits)
        single = out_masks.shape[0] == 1

        def convert(t: torch.Tensor) -> np.ndarray:
            t = t if t.dtype == torch.bool else t.float()
            return (t[0] if single else t).cpu().numpy()

        return convert(out_masks), convert(iou), convert(low)

    def model_mask_input_size(self) -> tuple[int, int]:
        return self.model.prompt_encoder_mask_input_size()

    @torch.inference_mode()
    def predict_tensors(self, index: int, points: torch.Tensor | None, labels: torch.Tensor | None,
                        boxes: torch.Tensor | None, masks: torch.Tensor | None, multimask_output: bool = True,
                        return_logits: bool = False,
                        output_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tensor path (prompts already in model-input pixels): masks (B, C, H, W) (bool unless
        return_logits), iou (B, C), low-res logits (B, C, h, w) (SAM 2 clamps them to [-32, 32])."""
        image = self._images[index]
        dtype = self.model.dtype
        cast = (lambda t: None if t is None else t.to(dtype)) if dtype != torch.float32 else (lambda t: t)
        sparse, dense = self.model.encode_prompts(cast(points), labels, cast(boxes), cast(masks))
        out = self.model.decode(self.model.image_embedding(image.features), image.features.high_res, sparse, dense,
                                multimask_output)
        full = full_resolution_masks(out.masks, output_size or image.orig_hw, self.spec,
                                     None if return_logits else self.mask_threshold)
        clamp = getattr(self.model, "low_res_clamp", 32.0)
        low = out.masks.float() if clamp is None else torch.clamp(out.masks.float(), -clamp, clamp)
        return full, out.iou.float(), low
