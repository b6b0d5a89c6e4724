"""Reading and validating images: every image that enters masklet goes through `as_rgb_uint8`.

`read_image` is the one reader of image files (predict, folders, frame folders, auto_annotate, val). It
returns what an image viewer shows, as OpenCV's ``cv2.imread(path, cv2.IMREAD_COLOR)`` (which Ultralytics
uses) returns it, in RGB order:

* EXIF orientation is applied (a phone photo taken upright is upright).
* Alpha is dropped, not composited: the stored colour of each pixel is kept (RGBA, LA, PA, palette
  transparency), as OpenCV and Ultralytics do.
* 16-bit images (``I;16*`` greyscale, 16-bit RGB/RGBA PNGs) keep their high byte: ``v >> 8``, so 0..65535 maps
  onto 0..255 (65535 -> 255, 32768 -> 128), as ``cv2.imread`` does for 16-bit PNG.
* 32-bit integer (``I``) images are taken as 16-bit data (how Pillow holds 16-bit greyscale): clipped to
  0..65535, then ``v >> 8``.
* Float (``F``) images are taken as 0..1 intensities, as OpenCV shows and converts float images:
  ``rint(v * 255)`` clipped to 0..255, NaN -> 0.
* Bilevel ``1`` -> 0/255; ``L`` and ``P`` (palette) -> grey / palette colour; ``CMYK``, ``YCbCr``, ``LAB``,
  ``HSV`` -> Pillow's RGB conversion. Multi-frame files (animated WebP, multi-page TIFF) give their first frame.

What cannot be read (missing, a folder, empty, not an image, truncated or corrupt) raises an error that
names the file and the problem.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ImageLike = str | Path | np.ndarray | Image.Image

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# Modes Pillow converts to RGB by a fixed formula that matches OpenCV's reading (alpha dropped, palette looked up).
_PILLOW_TO_RGB = ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode as an (H, W, 3) uint8 RGB array, by the rules in this module's docstring.

    Orientation is not touched here (`read_image` applies the file's EXIF orientation first). Raises ValueError
    for a mode with no RGB meaning.
    """
    mode = img.mode
    if mode == "RGB":
        return np.array(img)  # one copy (convert() would make a second)
    if mode in _SIXTEEN_BIT:
        grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
    elif mode == "I":
        grey = (np.clip(np.asarray(img), 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
    elif mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.rint(np.clip(values * 255.0, 0.0, 255.0)).astype(np.uint8)
        if values.size and values.max() > 1.0:
            warnings.warn(f"float image with values up to {values.max():g}: float images are read as 0..1 "
                          "intensities (as OpenCV shows them), so values above 1 become 255. Divide it by its "
                          "range first if it holds another scale.", stacklevel=3)
    elif mode in ("La", "RGBa"):
        # premultiplied alpha: undo it (Pillow's RGBA conversion), then drop alpha like the others
        return np.array(img.convert("RGBA" if mode == "RGBa" else "LA").convert("RGB"))
    elif mode in _PILLOW_TO_RGB:
        return np.array(img.convert("RGB"))
    else:
        raise ValueError(f"unsupported image mode {mode!r}: masklet reads {', '.join(_PILLOW_TO_RGB + _SIXTEEN_BIT)}, "
                         "I and F images; convert it to RGB first")
    return np.repeat(grey[:, :, None], 3, axis=2)


def _read_error(path: Path, problem: str) -> ValueError:
    return ValueError(f"cannot read image {path}: {problem}. Supported formats: {', '.join(IMAGE_SUFFIXES)} "
                      "(anything Pillow opens)")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array, as an image viewer shows it.

    Rules (orientation, alpha, bit depth, modes): see the module docstring. Raises FileNotFoundError for a
    missing file, IsADirectoryError for a folder and ValueError, naming the file, for an empty, unreadable,
    truncated or corrupt one.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image; pass one image file, or a folder as a video/source")
    if path.stat().st_size == 0:
        raise _read_error(path, "the file is empty (0 bytes)")
    try:
        img = Image.open(path)  # reads the header only
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            head = f.read(8)
        raise _read_error(path, f"not an image file (it starts with bytes {head!r})") from None
    except Image.DecompressionBombError as exc:
        raise _read_error(path, f"too large ({exc})") from None
    with img:
        try:
            img.load()  # decode now, so a truncated or corrupt file fails here
        except (OSError, SyntaxError, EOFError, ValueError) as exc:
            # Pillow reports cut data as OSError("image file is truncated ..."), bad PNG chunks as SyntaxError
            raise _read_error(path, f"the file is truncated or corrupt ({type(exc).__name__}: {exc})") from None
        # a malformed EXIF block is ignored: the pixels are shown as stored, as viewers do
        with contextlib.suppress(Exception):
            ImageOps.exif_transpose(img, in_place=True)
        try:
            return pil_to_rgb(img)
        except ValueError as exc:
            raise _read_error(path, str(exc)) from None


def as_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Validate and convert an image to an (H, W, 3) uint8 RGB ndarray.

    Accepts a path (read by `read_image`), a PIL image of any mode (converted by `pil_to_rgb`; an in-memory
    image is taken as its pixels, without EXIF rotation), or an ndarray of shape (H, W, 3) / (H, W, 4) (alpha
    dropped) / (H, W) grayscale with dtype uint8.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
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
