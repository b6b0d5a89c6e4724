"""`OnnxImagePredictor`: `ImagePredictor`'s methods and return values on exported graphs, onnxruntime and numpy.

Prompts are validated by the same functions as the torch predictor (masklet.predictors.prompts); what the
torch model does around its decoder (boxes as corner points, the padding point, the multimask choice and
SAM 2's dynamic multimask-via-stability, upsampling to the image) is done here in numpy.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.preprocess import InputSpec, resized_hw
from ..predictors.image_state import ImageState, PredictorStateError
from ..predictors.prompts import NORMALIZED_COORDS_HINT, PromptError, check_inside, model_frame_arrays, official_prompts
from .ops import resize_bilinear
from .session import ExportedModel, load_exported

PAD_LABEL, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 2, 3


def input_spec(meta: dict[str, Any]) -> InputSpec:
    return InputSpec(meta["image_size"], meta["resize"], meta["resample"], tuple(meta["mean"]), tuple(meta["std"]))


def preprocess_numpy(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """`masklet.data.preprocess.preprocess` in numpy: (H, W, 3) uint8 RGB -> (3, size, size) float32."""
    height, width = image.shape[:2]
    out_h, out_w = resized_hw(height, width, spec)
    if spec.resample == "torch-bilinear":
        x = image.astype(np.float32) / np.float32(255.0)
        if (out_h, out_w) != (height, width):
            x = resize_bilinear(x, (out_h, out_w), axes=(0, 1), antialias=True)
    else:
        pil_filter = Image.BICUBIC if spec.resample == "pil-bicubic" else Image.BILINEAR
        x = np.asarray(Image.fromarray(image).resize((out_w, out_h), pil_filter)).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = ((x - mean) / std).transpose(2, 0, 1)
    if (out_h, out_w) != (spec.size, spec.size):
        x = np.pad(x, ((0, 0), (0, spec.size - out_h), (0, spec.size - out_w)))
    return np.ascontiguousarray(x, dtype=np.float32)


def decoder_points(points: np.ndarray | None, labels: np.ndarray | None, boxes: np.ndarray | None,
                   sam2: bool) -> tuple[np.ndarray, np.ndarray]:
    """Model-frame prompts -> the decoder graph's (B, N, 2) float32 points and (B, N) int64 labels.

    Boxes become their two corners with labels 2 and 3: before the clicks for SAM 2 (`SAM2Model.encode_prompts`),
    after them for SAM 1 (its prompt encoder). The padding point the torch prompt encoder appends when no box
    goes through its box path is appended here (always for SAM 2, whose boxes are points).
    """
    batch = max([a.shape[0] for a in (points, boxes) if a is not None] or [1])
    parts_xy, parts_lbl = [], []
    if points is not None:
        parts_xy.append(np.broadcast_to(points, (batch, *points.shape[1:])))
        parts_lbl.append(np.broadcast_to(labels, (batch, labels.shape[1])))
    if boxes is not None:
        corners = np.broadcast_to(boxes.reshape(-1, 2, 2), (batch, 2, 2))
        corner_labels = np.broadcast_to(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]]), (batch, 2))
        at = 0 if sam2 else len(parts_xy)
        parts_xy.insert(at, corners)
        parts_lbl.insert(at, corner_labels)
    if (sam2 and (points is not None or boxes is not None)) or (points is not None and boxes is None):
        parts_xy.append(np.zeros((batch, 1, 2)))
        parts_lbl.append(np.full((batch, 1), PAD_LABEL))
    if not parts_xy:  # a mask prompt alone: no sparse prompt at all
        return np.zeros((batch, 0, 2), np.float32), np.zeros((batch, 0), np.int64)
    return (np.concatenate(parts_xy, axis=1).astype(np.float32),
            np.concatenate(parts_lbl, axis=1).astype(np.int64))


def stability_scores(mask_logits: np.ndarray, delta: float) -> np.ndarray:
    """IoU of the masks thresholded at +delta and -delta (`MaskDecoder.stability_scores`), (B, M)."""
    flat = mask_logits.reshape(*mask_logits.shape[:2], -1)
    inter = (flat > delta).sum(-1).astype(np.float32)
    union = (flat > -delta).sum(-1).astype(np.float32)
    return np.where(union > 0, inter / np.maximum(union, 1), np.float32(1.0))


def select_masks(masks: np.ndarray, iou: np.ndarray, multimask_output: bool, dynamic: bool, delta: float = 0.05,
                 thresh: float = 0.98) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All tokens' (B, 4, h, w) masks and (B, 4) IoU -> the returned masks, IoU and chosen token per row (B,).

    multimask: tokens 1-3; else SAM 2's dynamic choice (token 0 when its mask is stable, else the best of 1-3 by
    predicted IoU; `MaskDecoder._dynamic_multimask`) or token 0.
    """
    rows = np.arange(masks.shape[0])
    if multimask_output:
        return masks[:, 1:], iou[:, 1:], np.argmax(iou[:, 1:], axis=-1) + 1
    if not dynamic:
        return masks[:, :1], iou[:, :1], np.zeros(len(rows), np.int64)
    best = np.argmax(iou[:, 1:], axis=-1) + 1
    stable = stability_scores(masks[:, :1], delta)[:, 0] >= thresh
    token = np.where(stable, 0, best)
    return masks[rows, token][:, None], iou[rows, token][:, None], token


def postprocess_numpy(low_res: np.ndarray, orig_hw: tuple[int, int], spec: InputSpec) -> np.ndarray:
    """`masklet.predictors.image.postprocess_masks` in numpy: (B, M, h, w) logits -> (B, M, H, W)."""
    if spec.resize == "longest":
        up = resize_bilinear(low_res, (spec.size, spec.size))
        rh, rw = resized_hw(*orig_hw, spec)
        return resize_bilinear(up[..., :rh, :rw], orig_hw)
    return resize_bilinear(low_res, orig_hw)


class OnnxImagePredictor(ImageState):
    """`masklet.predictors.image.ImagePredictor` on an exported folder (image_encoder.onnx, prompt_decoder.onnx).

    model: the folder written by `masklet.export` (or an `ExportedModel`). providers: onnxruntime execution
    providers (default CPU). Usage and returns are those of `ImagePredictor`::

        predictor = OnnxImagePredictor("runs/export/sam2.1_hiera_t")
        predictor.set_image(image)
        masks, iou, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
    """

    def __init__(self, model: str | Path | ExportedModel, mask_threshold: float = 0.0,
                 providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.model = load_exported(model, providers=providers, threads=threads)
        self.meta = self.model.meta
        self.spec = input_spec(self.meta)
        self.mask_threshold = mask_threshold
        self._images: list[dict[str, Any]] = []
        self._is_batch = False

    # ------------------------------------------------------------------ state
    @property
    def orig_hw(self) -> list[tuple[int, int]]:
        return [img["orig_hw"] for img in self._images]

    def encode(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Run the encoder graph on (H, W, 3) uint8 images, one at a time (the graph takes batch 1)."""
        out = []
        for img in images:
            x = preprocess_numpy(img, self.spec)[None]
            features = self.model.run("image_encoder", {"image": x})
            features["orig_hw"] = img.shape[:2]
            out.append(features)
        return out

    def get_image_embedding(self) -> np.ndarray:
        """The image embedding the decoder uses, (B, C, h, w)."""
        self._require(batch=self._is_batch)
        return np.concatenate([img["image_embed"] for img in self._images])

    # ------------------------------------------------------------------ predict
    def predict(self, point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on the current image; arguments, shapes and errors as `ImagePredictor.predict`:
        masks (C, H, W) bool (logits with return_logits) or (B, C, H, W), iou (C,) / (B, C), low-res logits
        (C, h, w) / (B, C, h, w), C = 3 with multimask_output else 1."""
        self._require(batch=False)
        return self._predict(0, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                             normalize_coords)

    def predict_batch(self, point_coords_batch: Sequence | None = None, point_labels_batch: Sequence | None = None,
                      box_batch: Sequence | None = None, mask_input_batch: Sequence | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      normalize_coords: bool = True) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """`predict` for each image of `set_image_batch`, one prompt set per image (lists)."""
        self._require(batch=True)
        n = len(self._images)

        def per_image(values: Sequence | None, name: str) -> list:
            if values is None:
                return [None] * n
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries but {n} images are set")
            return list(values)

        args = [per_image(point_coords_batch, "point_coords_batch"), per_image(point_labels_batch, "point_labels_batch"),
                per_image(box_batch, "box_batch"), per_image(mask_input_batch, "mask_input_batch")]
        outs = [self._predict(i, *(a[i] for a in args), multimask_output, return_logits, normalize_coords)
                for i in range(n)]
        return [o[0] for o in outs], [o[1] for o in outs], [o[2] for o in outs]

    def _predict(self, index, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                 normalize_coords):
        mask_size = tuple(self.meta["mask_input_size"])
        prompts = official_prompts(point_coords, point_labels, box, mask_input, mask_size)
        if prompts.empty:
            raise ValueError("no prompt given: pass point_coords with point_labels, a box, or a mask_input")
        image = self._images[index]
        if normalize_coords:
            check_inside(prompts, *image["orig_hw"], NORMALIZED_COORDS_HINT)
        points, labels, boxes = model_frame_arrays(prompts, image["orig_hw"], self.spec, not normalize_coords)
        masks, iou = self.decode(image, points, labels, boxes, prompts.masks, multimask_output)
        full = postprocess_numpy(masks, image["orig_hw"], self.spec)
        if not return_logits:
            full = full > self.mask_threshold
        clamp = self.meta.get("low_res_clamp")
        low = masks if clamp is None else np.clip(masks, -clamp, clamp)
        single = full.shape[0] == 1
        pick = (lambda a: a[0]) if single else (lambda a: a)
        return pick(full), pick(iou.astype(np.float32)), pick(low.astype(np.float32))

    def decode(self, image: dict[str, Any], points, labels, boxes, mask_input,
               multimask_output: bool) -> tuple[np.ndarray, np.ndarray]:
        """Decoder graph + mask choice: (B, C, h, w) low-res logits and (B, C) IoU predictions."""
        out = self.run_decoder(image, points, labels, boxes, mask_input)
        sam2 = self.model.is_sam2
        masks, iou, _ = select_masks(out["masks"], out["iou_predictions"], multimask_output, sam2,
                                     self.meta.get("stability_delta", 0.05), self.meta.get("stability_thresh", 0.98))
        return masks, iou

    def run_decoder(self, image: dict[str, Any], points, labels, boxes, mask_input,
                    embed: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The prompt_decoder graph for B prompt sets (model-frame arrays); all tokens' outputs."""
        sam2 = self.model.is_sam2
        coords, lbls = decoder_points(points, labels, boxes, sam2)
        batch = max(coords.shape[0], 1 if mask_input is None else mask_input.shape[0])
        if coords.shape[0] != batch:
            coords = np.broadcast_to(coords, (batch, *coords.shape[1:]))
            lbls = np.broadcast_to(lbls, (batch, lbls.shape[1]))
        size = tuple(self.meta["mask_input_size"])
        has_mask = np.array([0.0 if mask_input is None else 1.0], np.float32)
        masks_in = np.zeros((batch, 1, *size), np.float32) if mask_input is None else mask_input.astype(np.float32)
        if masks_in.shape[0] != batch:
            masks_in = np.broadcast_to(masks_in, (batch, *masks_in.shape[1:]))

        def tile(a: np.ndarray) -> np.ndarray:
            return a if a.shape[0] == batch else np.broadcast_to(a, (batch, *a.shape[1:]))

        feeds = {"image_embed": tile(image["image_embed"] if embed is None else embed),
                 "point_coords": coords, "point_labels": lbls, "mask_input": masks_in, "has_mask_input": has_mask}
        if sam2:
            feeds["high_res_feats_0"] = tile(image["high_res_feats_0"])
            feeds["high_res_feats_1"] = tile(image["high_res_feats_1"])
        feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        return self.model.run("prompt_decoder", feeds)


__all__ = [
    "OnnxImagePredictor",
    "PredictorStateError",
    "PromptError",
    "decoder_points",
    "input_spec",
    "postprocess_numpy",
    "preprocess_numpy",
    "select_masks",
]
