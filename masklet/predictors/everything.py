"""Automatic mask generation ("segment everything"): the official SAM 2 automatic mask generator, faster on CPU.

The generator prompts the model with a regular grid of single foreground points, optionally over a pyramid of
overlapping image crops, filters the candidate masks by predicted IoU, stability and crop-edge contact, removes
duplicates with box NMS and returns one record per mask, exactly as `SAM2AutomaticMaskGenerator` does.

Why it is faster: the official generator upsamples every candidate's low-resolution logits (256 x 256) to the
crop size (e.g. 1200 x 1800) and runs the stability score, thresholding, box extraction and run-length
encoding on those full-resolution tensors: 3072 candidates for a 32 x 32 grid. Here, with identical results:

* The predicted-IoU filter runs first, on the decoder's output.
* Candidates are screened at low resolution. Bilinear upsampling gives every full-resolution pixel a value
  between the min and max of the four logits of one low-res "cell", so a cell whose four logits are clearly
  above (or below) a threshold has all its pixels above (or below) it. That gives each candidate's exact box
  (only the few undecided cells beyond the extent of the sure ones are interpolated, with the float32
  arithmetic of PyTorch's CPU kernel, checked bit for bit against `F.interpolate` at run time, with a plain
  upsampling fallback where it differs) and bounds on the two stability counts, which settle the stability
  filter for all but the masks whose bounds straddle the threshold; those are upsampled for real.
* Box NMS runs on those boxes; only its survivors are upsampled (`F.interpolate`, a few at a time) for their
  exact stability score and mask, which are stored bit-packed until output.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import ImageLike, as_rgb_uint8
from ..data.preprocess import resized_hw
from ..utils.boxes import batched_nms, box_area, box_xyxy_to_xywh, is_box_near_crop_edge, masks_to_boxes
from ..utils.masks import remove_small_regions
from ..utils.rle import masks_to_rle_uncompressed
from .everything_grids import build_all_layer_point_grids, build_point_grid, generate_crop_boxes
from .everything_masks import (
    _cat,
    _compress_rle,
    _count_true,  # noqa: F401 - re-exported (tests)
    _fill_low_res,
    _filter,
    _gather,
    _PackedMasks,
    _stability,
    _Upsampler,
    calculate_stability_score,
)
from .image import ImagePredictor
from .precision import autocast

__all__ = [
    "AutomaticMaskGenerator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "generate_crop_boxes",
]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class AutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts (SAM 2's automatic mask generator).

    Arguments and defaults are those of the official `SAM2AutomaticMaskGenerator`:

    points_per_side: grid points along each side (points_per_side**2 prompts on the whole image); exclusive
        with point_grids. points_per_batch: prompts decoded at once. pred_iou_thresh: keep masks whose
        predicted IoU is above this (0 disables). stability_score_thresh: keep masks whose stability score
        (IoU of the masks binarised at mask_threshold +/- stability_score_offset) is at least this (0 disables).
        mask_threshold: logit threshold of the masks. box_nms_thresh: box IoU above which a mask with a lower
        predicted IoU is a duplicate. crop_n_layers: also run on 2**i x 2**i overlapping crops for i = 1..n;
        crop_nms_thresh: duplicates across crops (masks of smaller crops win); crop_overlap_ratio: overlap of
        the first layer's crops, as a fraction of the short side; crop_n_points_downscale_factor: layer i uses
        points_per_side / factor**i points per side. point_grids: explicit normalised grids (N_i, 2) in [0, 1],
        one per layer. min_mask_region_area: with SAM 2, holes and islands of at most this many pixels are
        removed from the low-resolution masks before upsampling (the image predictor's max_hole_area /
        max_sprinkle_area; see `fill_small_regions`); with SAM 1 models, the SAM 1 post-processing (hole and
        island removal on the full masks, then NMS) runs instead. output_mode: "binary_mask" (HxW bool
        arrays), "uncompressed_rle" or "coco_rle" (compressed COCO RLE with str counts). use_m2m: refine each
        mask once by feeding it back as a mask prompt. multimask_output: 3 masks per point (else 1).

    Extra keyword-only options: progress shows a tqdm progress bar over the point batches of each crop (off
    by default, for library use). fill_small_regions (SAM 2 only): whether min_mask_region_area removes small
    holes and islands from the low-res masks (True, what the official generator does on a GPU with SAM 2's
    CUDA extension), or has no effect (False, the default: the official generator skips the step with a
    warning wherever the extension is missing, CPU included, and the reference outputs were made so; a
    warning says so when min_mask_region_area > 0). fast=False upsamples every candidate to full resolution
    instead of screening at low resolution (same results, slower; for checking). dtype: "bfloat16" / "float16"
    run the image encoder under autocast (as `ImagePredictor(dtype=...)`); "bfloat16" also runs the decoder's
    transformer and upscaling in bfloat16 (prompt encoder and IoU / hypernetwork heads stay float32).
    compile=True: torch.compile the decoder (and the float32 image trunk), see `ImagePredictor`.

    `generate(image)` returns a list of dicts with keys segmentation, area, bbox (XYWH), predicted_iou,
    point_coords ([[x, y]]), stability_score and crop_box (XYWH), in the official order. After a call,
    `timings` holds the wall seconds spent encoding crops, decoding prompts and post-processing ("encode",
    "decode", "postprocess"; "<stage>_cpu" is the process CPU time, less sensitive to a busy machine), and
    `num_candidates` the number of masks decoded.

    Memory: the low-res logits (256 KB each) of the candidates of one crop that pass the filters are kept
    until the crop's NMS; the kept masks are stored bit-packed (H * W / 8 bytes each) until output.
    """

    def __init__(self, model: nn.Module, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: str = "binary_mask", use_m2m: bool = False,
                 multimask_output: bool = True, *, progress: bool = False, fill_small_regions: bool = False,
                 fast: bool = True, dtype: str | torch.dtype | None = None, compile: bool = False) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side and point_grids must be given (got "
                             f"points_per_side={points_per_side!r} and point_grids "
                             f"{'set' if point_grids is not None else 'None'}); pass points_per_side=None with "
                             "point_grids")
        if not isinstance(crop_n_layers, (int, np.integer)) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be an integer >= 0, got {crop_n_layers!r}")
        if not isinstance(crop_n_points_downscale_factor, (int, np.integer)) or crop_n_points_downscale_factor < 1:
            raise ValueError(f"crop_n_points_downscale_factor must be an integer >= 1, got "
                             f"{crop_n_points_downscale_factor!r}")
        if points_per_side is not None:
            if not isinstance(points_per_side, (int, np.integer)) or points_per_side < 1:
                raise ValueError(f"points_per_side must be a positive integer, got {points_per_side!r}")
            if int(points_per_side / crop_n_points_downscale_factor ** crop_n_layers) < 1:
                raise ValueError(f"points_per_side={points_per_side} leaves no points in crop layer {crop_n_layers}"
                                 f" with crop_n_points_downscale_factor={crop_n_points_downscale_factor}")
            self.point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                           crop_n_points_downscale_factor)
        else:
            grids = []
            for k, grid in enumerate(point_grids):
                g = np.asarray(grid, dtype=np.float64)
                if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] == 0:
                    raise ValueError(f"point_grids[{k}] must be an array (N, 2) of (x, y) in [0, 1], got shape "
                                     f"{g.shape}")
                if not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
                    raise ValueError(f"point_grids[{k}] must hold normalised coordinates in [0, 1]")
                grids.append(g)
            if len(grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids has {len(grids)} grid(s) but crop_n_layers={crop_n_layers} needs "
                                 f"{crop_n_layers + 1} (one per layer, layer 0 = the whole image)")
            self.point_grids = grids
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")
        if not isinstance(points_per_batch, (int, np.integer)) or points_per_batch < 1:
            raise ValueError(f"points_per_batch must be a positive integer, got {points_per_batch!r}")
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("stability_score_offset", stability_score_offset), ("mask_threshold", mask_threshold),
                            ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh),
                            ("crop_overlap_ratio", crop_overlap_ratio)):
            if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area!r}")
        for name in ("encode_prompts", "decode", "image_embedding", "input_spec"):
            if not hasattr(model, name):
                raise TypeError(f"model must be a masklet SAM / SAM 2 model (from masklet.models.build.load_model),"
                                f" got {type(model).__name__} without {name!r}")
        if min_mask_region_area > 0 and not fill_small_regions and getattr(model, "family", "sam2") == "sam2":
            warnings.warn("min_mask_region_area has no effect unless fill_small_regions=True: the official SAM 2 "
                          "generator removes small regions with a CUDA extension and skips the step without it, "
                          "so by default masklet reproduces its CPU results", UserWarning, stacklevel=2)
        self.model = model
        self.predictor = ImagePredictor(model, mask_threshold=mask_threshold, dtype=dtype, compile=compile)
        self.decoder_dtype = torch.bfloat16 if self.predictor.dtype == torch.bfloat16 else torch.float32
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.progress = progress
        self.fill_small_regions = fill_small_regions
        self.fast = fast
        self.timings: dict[str, float] = {}
        self.num_candidates = 0

    @property
    def is_sam2(self) -> bool:
        return getattr(self.model, "family", "sam2") == "sam2"

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Add the wall and CPU seconds of the block to timings[name] and timings[name + "_cpu"]."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - wall
            self.timings[name + "_cpu"] = self.timings.get(name + "_cpu", 0.0) + time.process_time() - cpu

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def generate(self, image: ImageLike) -> list[dict[str, Any]]:
        """Masks for the whole image (HxWx3 uint8 RGB array, PIL image or path).

        Returns one dict per mask: segmentation ((H, W) bool array, or an RLE dict per output_mode), area (int
        pixels), bbox [x, y, w, h] (ints, inclusive pixel extent: w = x_last - x_first), predicted_iou,
        point_coords [[x, y]] (the prompt, original pixels), stability_score and crop_box [x, y, w, h].
        """
        if isinstance(image, torch.Tensor):
            raise TypeError("generate expects an HxWx3 uint8 RGB numpy array, a PIL image or a path, not a "
                            "torch.Tensor; use tensor.permute(1, 2, 0).cpu().numpy() for a (3, H, W) uint8 tensor")
        image = as_rgb_uint8(image)
        self.timings = {k: 0.0 for k in ("encode", "decode", "postprocess", "encode_cpu", "decode_cpu",
                                         "postprocess_cpu")}
        self.num_candidates = 0
        data = self._generate_masks(image)
        with self._stage("postprocess"):
            if not self.is_sam2 and self.min_mask_region_area > 0:
                data = self._postprocess_small_regions(data, self.min_mask_region_area,
                                                       max(self.box_nms_thresh, self.crop_nms_thresh))
            return self._records(data)

    # ------------------------------------------------------------------ stages
    def _generate_masks(self, image: np.ndarray) -> dict[str, Any]:
        orig_hw = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
        parts = [self._process_crop(image, box, layer, orig_hw) for box, layer in zip(crop_boxes, layer_idxs)]
        with self._stage("postprocess"):
            data = _cat(parts)
            if len(crop_boxes) > 1 and len(data["iou"]):
                # prefer masks from smaller crops
                scores = 1 / box_area(data["crop_boxes"])
                keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]),
                                   self.crop_nms_thresh)
                data = _filter(data, keep)
        return data

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer_idx: int,
                      orig_hw: tuple[int, int]) -> dict[str, Any]:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_hw = crop.shape[:2]
        with self._stage("encode"):
            self.predictor.set_image(crop)

        # (x, y) pixels of the crop, float64 as the official code
        points_for_image = self.point_grids[layer_idx] * np.array(crop_hw)[None, ::-1]
        batches = range(0, len(points_for_image), self.points_per_batch)
        if self.progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc=f"crop {crop_box}", unit="batch", leave=False)
        upsampler = None
        parts = []
        for s in batches:
            part, upsampler = self._process_batch(points_for_image[s:s + self.points_per_batch], crop_hw, crop_box,
                                                  orig_hw, upsampler)
            parts.append(part)
        self.predictor.reset_predictor()

        with self._stage("postprocess"):
            lows = [part.pop("low") for part in parts]  # concatenated only for the survivors
            data = _cat(parts)
            keep = batched_nms(data["boxes"].float(), data["iou"], torch.zeros_like(data["boxes"][:, 0]),
                               self.box_nms_thresh)
            data = _filter(data, keep)
            # Only the survivors are upsampled for real: exact stability counts and the full mask.
            thr, off = self.mask_threshold, self.stability_score_offset
            counts, masks = upsampler.exact(_gather(lows, keep), [thr + off, thr - off], thr, want_masks=True)
            data["stability"] = _stability(counts.to(torch.int32))
            oh, ow = orig_hw
            if (x0, y0, x1, y1) != (0, 0, ow, oh):
                masks = F.pad(masks, (x0, ow - x1, y0, oh - y1), value=False)
            data["masks"] = _PackedMasks.from_bool(masks)
            data["boxes"] = data["boxes"] + torch.tensor([x0, y0, x0, y0], dtype=data["boxes"].dtype)
            data["points"] = data["points"] + torch.tensor([x0, y0], dtype=torch.float64)
            data["crop_boxes"] = torch.tensor([crop_box] * len(data["iou"]), dtype=torch.long).reshape(-1, 4)
        return data

    def _to_model_frame(self, points: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
        """Crop pixels (N, 2) float64 -> model-input pixels (N, 2) float64, with the official arithmetic
        (normalised by the crop size, times the input resolution for SAM 2; the resize factor for SAM 1)."""
        spec = self.predictor.spec
        h, w = crop_hw
        out = points.clone()
        if spec.resize == "square":
            out[:, 0] = out[:, 0] / w
            out[:, 1] = out[:, 1] / h
            return out * spec.size
        rh, rw = resized_hw(h, w, spec)
        out[:, 0] = out[:, 0] * (rw / w)
        out[:, 1] = out[:, 1] * (rh / h)
        return out

    def _decode(self, points: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
                multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder on the current image for B prompts: points (B, 1, 2) model-input pixels, labels (B, 1) int32,
        mask_input (B, 1, h, w) or None -> low-res logits (B, C, h, w) float32 on the CPU, *not* clamped (the
        official generator upsamples the unclamped logits), and predicted IoU (B, C)."""
        model, device = self.model, self.predictor.device
        features = self.predictor._images[0].features
        if model.dtype != torch.float32:
            points = points.to(model.dtype)
            mask_input = None if mask_input is None else mask_input.to(model.dtype)
        sparse, dense = model.encode_prompts(points.to(device), labels.to(device), None,
                                             None if mask_input is None else mask_input.to(device))
        # segment everything is all decoder: in bfloat16 its transformer and upscaling run in bfloat16 too (the
        # accuracy guard in tests/test_precision.py covers it); the prompt encoder and the heads stay float32
        with autocast(device, self.decoder_dtype):
            out = model.decode(model.image_embedding(features), features.high_res, sparse, dense, multimask)
        return out.masks.float().cpu(), out.iou.float().cpu()

    def _process_batch(self, points: np.ndarray, crop_hw: tuple[int, int], crop_box: list[int],
                       orig_hw: tuple[int, int], upsampler: _Upsampler | None) -> tuple[dict[str, Any], _Upsampler]:
        with self._stage("decode"):
            points_t = torch.as_tensor(points, dtype=torch.float64)
            in_points = self._to_model_frame(points_t, crop_hw)
            labels = torch.ones(in_points.shape[0], 1, dtype=torch.int32)
            low, iou = self._decode(in_points[:, None, :], labels, None, self.multimask_output)
            n_out = low.shape[1]
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            points_t = points_t.repeat_interleave(n_out, dim=0)
            self.num_candidates += low.shape[0]
            if self.use_m2m:
                low, iou = self._refine_with_m2m(self._to_model_frame(points_t, crop_hw), low.clamp(-32.0, 32.0))

        with self._stage("postprocess"):
            data: dict[str, Any] = {"low": low, "iou": iou, "points": points_t}
            if self.pred_iou_thresh > 0.0:
                data = _filter(data, data["iou"] > self.pred_iou_thresh)
            if self.is_sam2 and self.fill_small_regions and self.min_mask_region_area > 0:
                data["low"] = _fill_low_res(data["low"], self.mask_threshold, self.min_mask_region_area)
            if upsampler is None:
                upsampler = _Upsampler(tuple(low.shape[-2:]), crop_hw, self.predictor.spec, self.fast)
            thr, off = self.mask_threshold, self.stability_score_offset
            # Exact boxes, and bounds on the stability counts when they filter, without upsampling (see
            # _Upsampler); the survivors of NMS get exact counts later.
            filtering = self.stability_score_thresh > 0.0
            bounds, data["boxes"] = upsampler.screen(data["low"], [thr + off, thr - off] if filtering else [], thr)
            if filtering:
                data = self._filter_stability(data, bounds, upsampler)
            oh, ow = orig_hw
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, ow, oh])
            if not bool(keep.all()):
                data = _filter(data, keep)
        return data, upsampler

    def _filter_stability(self, data: dict[str, Any], bounds: torch.Tensor, upsampler: _Upsampler) -> dict[str, Any]:
        """Keep the masks whose stability score is >= the threshold, from count bounds (M, 2, 2).

        stability = inter / union (int32 -> float32 division, as the official code) is monotone in both counts,
        so its value lies between those of the bounds; only masks whose range straddles the threshold are
        upsampled for exact counts."""
        t = self.stability_score_thresh
        b32 = bounds.to(torch.int32)
        lowest = _stability(torch.stack([b32[:, 0, 0], b32[:, 1, 1]], 1))
        highest = _stability(torch.stack([b32[:, 0, 1], b32[:, 1, 0]], 1))
        exact = (bounds[:, :, 0] == bounds[:, :, 1]).all(1)
        # NaN (0 / 0) compares False both ways: exact NaN fails the filter, as in the official code
        undecided = ~exact & ~(lowest >= t) & (highest >= t)
        if bool(undecided.any()):
            idx = undecided.nonzero().flatten()
            thr, off = self.mask_threshold, self.stability_score_offset
            counts, _ = upsampler.exact(data["low"][idx], [thr + off, thr - off], thr, want_masks=False)
            lowest[idx] = _stability(counts.to(torch.int32))
        return _filter(data, lowest >= t)

    def _refine_with_m2m(self, in_points: torch.Tensor, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-decode each mask (M, h, w) with its own point (M, 2) and itself as mask prompt, single-mask output
        (the official `refine_with_m2m`, batched by points_per_batch) -> logits (M, h, w), IoU (M,)."""
        masks, ious = [], []
        labels = torch.ones(in_points.shape[0], 1, dtype=torch.int32)
        for s in range(0, in_points.shape[0], self.points_per_batch):
            e = s + self.points_per_batch
            low, iou = self._decode(in_points[s:e, None, :], labels[s:e], low_res[s:e, None], False)
            masks.append(low[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(masks), torch.cat(ious)

    @staticmethod
    def _postprocess_small_regions(data: dict[str, Any], min_area: int, nms_thresh: float) -> dict[str, Any]:
        """SAM 1's post-processing: fill small holes, then remove small islands of each mask; masks that changed
        get their boxes recomputed and lose ties in a new NMS against unchanged ones."""
        n = len(data["iou"])
        if n == 0:
            return data
        masks = data["masks"].to_bool()
        new_masks, scores = [], []
        for mask in masks:
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(mask)
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        new = torch.from_numpy(np.stack(new_masks))
        boxes = masks_to_boxes(new)
        keep = batched_nms(boxes.float(), torch.tensor(scores), torch.zeros_like(boxes[:, 0]), nms_thresh)
        changed = [int(i) for i in keep if scores[int(i)] == 0.0]
        if changed:
            replaced = masks.copy()
            for i in changed:
                replaced[i] = new_masks[i]
                data["boxes"][i] = boxes[i]
            data["masks"] = _PackedMasks.from_bool(torch.from_numpy(replaced))
        return _filter(data, keep)

    def _records(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        n = len(data["iou"])
        if n == 0:
            return []
        packed: _PackedMasks = data["masks"]
        areas = packed.areas()
        if self.output_mode == "binary_mask":
            segmentations = list(packed.to_bool())
        else:
            segmentations = []
            for s in range(0, n, 16):
                rles = masks_to_rle_uncompressed(torch.from_numpy(packed.to_bool(slice(s, s + 16))))
                if self.output_mode == "coco_rle":
                    rles = [_compress_rle(r) for r in rles]
                segmentations.extend(rles)
        boxes = box_xyxy_to_xywh(data["boxes"]).tolist()
        crops = box_xyxy_to_xywh(data["crop_boxes"]).tolist()
        ious, stab, points = data["iou"].tolist(), data["stability"].tolist(), data["points"].tolist()
        return [{"segmentation": segmentations[k], "area": int(areas[k]), "bbox": boxes[k],
                 "predicted_iou": ious[k], "point_coords": [points[k]], "stability_score": stab[k],
                 "crop_box": crops[k]} for k in range(n)]
