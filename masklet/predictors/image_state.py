"""Which image(s) an image predictor holds, shared by the torch `ImagePredictor` and the onnxruntime
`OnnxImagePredictor` (torch-free: the onnxruntime predictor must not import torch)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.images import ImageLike, as_rgb_uint8


class PredictorStateError(RuntimeError, ValueError):
    """The predictor was used in the wrong order (e.g. predict before set_image)."""


class ImageState:
    """set_image / set_image_batch / reset_predictor over `self.encode(list of HxWx3 uint8) -> list of records`,
    which the predictor class provides (one record per image, holding its features and original size)."""

    _images: list[Any]
    _is_batch: bool

    def encode(self, images: Sequence[np.ndarray]) -> list[Any]:  # pragma: no cover - provided by the predictor
        raise NotImplementedError

    @property
    def is_image_set(self) -> bool:
        return bool(self._images)

    def reset_predictor(self) -> None:
        """Forget the current image(s)."""
        self._images = []
        self._is_batch = False

    def set_image(self, image: ImageLike) -> None:
        """Compute the features of one image (HxWx3 uint8 RGB ndarray, PIL image, or path)."""
        self._images = self.encode([as_rgb_uint8(image)])
        self._is_batch = False

    def set_image_batch(self, images: Sequence[ImageLike]) -> None:
        """Compute the features of several images, for `predict_batch`. TypeError unless a non-empty list."""
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)) or not images:
            raise TypeError("set_image_batch expects a non-empty list of images (HxWx3 uint8 arrays or PIL images)")
        self._images = self.encode([as_rgb_uint8(img) for img in images])
        self._is_batch = True

    def _require(self, batch: bool) -> None:
        if not self._images:
            raise PredictorStateError("no image is set: call set_image(image) (or set_image_batch) before predicting")
        if batch and not self._is_batch:
            raise PredictorStateError("predict_batch needs set_image_batch(images) first")
        if not batch and self._is_batch:
            raise PredictorStateError("a batch of images is set: use predict_batch, or set_image for one image")
