"""What a path is (image, video, URL, folder of frames) and the small OpenCV helpers every frame reader shares."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from masklet.data.images import IMAGE_SUFFIXES, as_rgb_uint8
from masklet.data.ordering import frame_order

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
PathLike = str | Path


def import_cv2():
    # Imported lazily: cv2 is slow to import and image-only users never need it.
    import cv2

    return cv2


def suffixes_hint() -> str:
    return f"images: {', '.join(IMAGE_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)}"


def is_url(source: Any) -> bool:
    return isinstance(source, str) and "://" in source


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def visible_files(folder: Path) -> list[Path]:
    # Hidden files are skipped: macOS leaves "._00000.jpg" resource forks that carry an image suffix.
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in frame order (`frame_order`); a clear error when there are none."""
    visible = visible_files(folder)
    files = [p for p in visible if is_image_file(p)]
    if not files:
        videos = [p.name for p in visible if is_video_file(p)]
        hint = f" It holds video files ({', '.join(sorted(videos)[:3])}): pass one of them instead." if videos else ""
        raise FileNotFoundError(
            f"no image frames in folder {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)} "
            f"(e.g. 00000.jpg, 00001.jpg, ...).{hint}")
    return frame_order(files)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frame (BGR, BGRA or gray) -> validated RGB uint8."""
    cv2 = import_cv2()
    if frame.ndim == 3 and frame.shape[2] == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return as_rgb_uint8(frame)


def missing_error(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: {path}. Check the path (relative paths start at {Path.cwd()}).")
