"""Reading and validating images: every image that enters masklet goes through `as_rgb_uint8`."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ImageLike = Union[str, Path, np.ndarray, Image.Image]


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array, with a clear error when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image; pass one image file, or a folder as a video/source")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: the file is corrupt or not an image ({exc}). "
                         f"Supported formats: {', '.join(IMAGE_SUFFIXES)}") from None


def as_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Validate and convert an image to an (H, W, 3) uint8 RGB ndarray.

    Accepts a path, a PIL image, or an ndarray of shape (H, W, 3) (or (H, W) grayscale) with dtype uint8.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a path, a PIL.Image or an HxWx3 uint8 numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image array must have shape (H, W, 3) (RGB), got {tuple(image.shape)}; "
                         "for a CHW array use image.transpose(1, 2, 0)")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise ValueError(f"image array must be uint8 with values 0-255, got dtype {image.dtype}; "
                         "convert with (image * 255).clip(0, 255).astype(np.uint8) if it holds 0-1 floats")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)
