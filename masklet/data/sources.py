"""Where frames come from: random-access videos, unbounded streams and Ultralytics-style sources.

Three entry points, one per access pattern:

* `VideoFrames` (video_frames.py) - random access to a finite video (a folder of frames, a video file, or a
  list of arrays) for the interactive video predictor, decoded on demand into a small LRU cache with a
  prefetch thread (decoders in backends.py).
* `iter_stream` (streams.py) - one pass over anything that yields frames (webcam, stream URL, video file,
  folder, Python iterable), holding only the current frame (plus an optional bounded read-ahead queue).
* `open_source` / `iter_frames` (here) - the image-level API's inputs: paths, folders, globs, arrays,
  PIL images, lists of those, videos and webcams, expanded into `SourceItem`s that read lazily.

Every frame that leaves these modules is an (H, W, 3) uint8 RGB ndarray validated by `as_rgb_uint8`; image
files are read by `read_image` (images.py), folders and globs listed in `ordering.py`'s order. OpenCV is
imported only when a video or stream is opened. The names above stay importable from here.
"""
from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image

from masklet.data.files import (
    VIDEO_SUFFIXES,
    PathLike,
    is_image_file,
    is_url,
    is_video_file,
    suffixes_hint,
    visible_files,
)
from masklet.data.images import IMAGE_SUFFIXES, as_rgb_uint8, read_image
from masklet.data.ordering import frame_order, natural_sorted
from masklet.data.streams import iter_stream
from masklet.data.video_frames import CacheInfo, VideoFrames, VideoSource

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "CacheInfo",
    "Frame",
    "PathLike",
    "SourceItem",
    "SourceKind",
    "VideoFrames",
    "VideoSource",
    "frame_order",
    "iter_frames",
    "iter_stream",
    "natural_sorted",
    "open_source",
    "read_image",
]


class Frame(NamedTuple):
    """One frame of a source: unpacks as `(name, index, image)`."""

    name: str  # file path, URL, or a generated name ("image0", "camera0") for in-memory sources
    index: int  # frame number within its source item (0 for an image)
    image: np.ndarray  # (H, W, 3) uint8 RGB


SourceKind = Literal["image", "video", "stream"]


@dataclass(frozen=True)
class SourceItem:
    """One input of the image-level API: an image, a video file, or a live / one-shot stream.

    `path` is the file path or URL (None for in-memory inputs and webcams); `name` is always set.
    Nothing is decoded until `frames()` (or `read()` for an image) is called. An item made from a
    Python generator can be iterated once.
    """

    kind: SourceKind
    path: str | None
    name: str
    data: Any = field(default=None, repr=False, compare=False)  # in-memory image, webcam index, iterable

    def frames(self, *, read_ahead: int = 0) -> Iterator[Frame]:
        """The item's frames as `Frame(name, index, image)`, decoded lazily."""
        if self.kind == "image":
            yield Frame(self.name, 0, self.read())
            return
        target = self.data if self.data is not None else self.path
        for k, image in enumerate(iter_stream(target, read_ahead=read_ahead)):
            yield Frame(self.name, k, image)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def read(self) -> np.ndarray:
        """The image of an "image" item as (H, W, 3) uint8 RGB."""
        if self.kind != "image":
            raise ValueError(f"{self.name} is a {self.kind}, not an image: iterate item.frames() instead")
        return as_rgb_uint8(self.data if self.data is not None else self.path)

    def open_video(self, **kwargs: Any) -> VideoFrames:
        """A random-access `VideoFrames` for a "video" item (kwargs go to VideoFrames)."""
        if self.kind != "video":
            raise ValueError(f"{self.name} is a {self.kind}, not a video file")
        if isinstance(self.data, VideoFrames):
            return self.data
        return VideoFrames(self.path, **kwargs)


def _file_item(path: Path, strict: bool) -> SourceItem | None:
    if is_image_file(path):
        return SourceItem("image", str(path), str(path))
    if is_video_file(path):
        return SourceItem("video", str(path), str(path))
    if strict:
        suffix = path.suffix or "(no suffix)"
        raise ValueError(f"unsupported file type {suffix} for {path}: supported {suffixes_hint()}")
    return None


def _expand(source: Any, items: list[SourceItem], counter: dict[str, int]) -> None:
    def auto_name(prefix: str) -> str:
        k = counter.get(prefix, 0)
        counter[prefix] = k + 1
        return f"{prefix}{k}"

    if isinstance(source, bool):
        raise TypeError("a source cannot be a bool")
    if isinstance(source, int):
        items.append(SourceItem("stream", None, f"camera{source}", source))
        return
    if is_url(source):
        items.append(SourceItem("stream", source, source, source))
        return
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.exists():
            if path.is_dir():
                found = [item for p in natural_sorted(visible_files(path)) if (item := _file_item(p, False))]
                if not found:
                    raise FileNotFoundError(f"no images or videos in folder {path}: supported {suffixes_hint()}")
                items.extend(found)
            else:
                items.append(_file_item(path, strict=True))  # type: ignore[arg-type]
            return
        text = str(source)
        if isinstance(source, str) and text.isdigit():
            items.append(SourceItem("stream", None, f"camera{text}", int(text)))
            return
        if any(c in text for c in "*?["):
            matches = natural_sorted(Path(m) for m in glob.glob(text, recursive=True))
            found = [item for m in matches if m.is_file() and (item := _file_item(m, False))]
            if not found:
                what = f"{len(matches)} matches, none of them an image or video" if matches else "no files match"
                raise FileNotFoundError(f"glob pattern {text!r}: {what} (supported {suffixes_hint()})")
            items.extend(found)
            return
        raise FileNotFoundError(f"source not found: {path}. Check the path (relative paths start at {Path.cwd()}); "
                                f"supported {suffixes_hint()}")
    if isinstance(source, VideoFrames):
        items.append(SourceItem("video", str(source.path) if source.path else None, source.name, source))
        return
    if isinstance(source, np.ndarray):
        if source.ndim == 4:  # a batch of images
            for image in source:
                items.append(SourceItem("image", None, auto_name("image"), as_rgb_uint8(image)))
        else:
            items.append(SourceItem("image", None, auto_name("image"), as_rgb_uint8(source)))
        return
    if isinstance(source, Image.Image):
        path = getattr(source, "filename", "") or None  # set when PIL opened it from a file
        items.append(SourceItem("image", path, path or auto_name("image"), source))
        return
    if isinstance(source, (list, tuple)):
        for element in source:
            _expand(element, items, counter)
        return
    if isinstance(source, Iterable):
        items.append(SourceItem("stream", None, auto_name("stream"), source))
        return
    raise TypeError(f"unsupported source type {type(source).__name__}: pass an image or video path, a folder, a glob "
                    "pattern, a numpy array, a PIL image, a webcam index, a stream URL, or a list of these")


def open_source(source: Any) -> list[SourceItem]:
    """Expand an Ultralytics-style source into `SourceItem`s, without decoding anything.

    Accepted: an image or video file path; a folder (its images and videos, not recursive); a glob pattern
    ("data/*.jpg", "data/**/*.png"); folders and globs in natural order (`ordering.natural_sorted`: img2
    before img10); a numpy array ((H, W, 3) image or
    (N, H, W, 3) batch of images); a PIL image; a webcam index (0 or "0"); a stream URL; a `VideoFrames`;
    a generator / iterable of frames (one "stream" item); or a list / tuple of any of these. Missing
    files, empty folders, unmatched globs and unsupported suffixes raise with the supported suffixes.
    """
    items: list[SourceItem] = []
    _expand(source, items, {})
    if not items:
        raise ValueError("the source is empty: pass at least one image, video or stream")
    return items


def iter_frames(source: Any, *, read_ahead: int = 0) -> Iterator[Frame]:
    """Every frame of every item of `open_source(source)`, in order, as `Frame(name, index, image)`."""
    for item in open_source(source):
        yield from item.frames(read_ahead=read_ahead)
