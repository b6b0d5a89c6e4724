"""Frame decoders for random access ("backends"): a folder of frames, a list of arrays, a video file."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from masklet.data.files import bgr_to_rgb, frame_files, import_cv2
from masklet.data.images import as_rgb_uint8, read_image


class _Backend:
    """Decodes frame i. Not thread-safe: the loader serialises every call."""

    length: int = 0
    fps: float | None = None
    in_memory: bool = False  # frames already in RAM: no cache, no prefetch thread
    seeks_backwards: bool = False  # going back costs a seek (video files): read reverse in blocks

    def read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def frame_name(self, index: int) -> str:
        return f"{index:05d}"

    def close(self) -> None:
        pass


class _FolderBackend(_Backend):
    def __init__(self, folder: Path):
        self.folder = folder
        self.files = frame_files(folder)
        self.length = len(self.files)
        self.size: tuple[int, int] | None = None

    def read(self, index: int) -> np.ndarray:
        frame = read_image(self.files[index])  # names the file when it is corrupt
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise ValueError(
                f"frame {index} ({self.files[index]}) is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self.size[1]}x{self.size[0]}: every frame of a folder must have the same size")
        return frame

    def frame_name(self, index: int) -> str:
        return self.files[index].stem


class _ArrayBackend(_Backend):
    in_memory = True

    def __init__(self, frames: Sequence[Any]):
        if len(frames) == 0:
            raise ValueError("the list of frames is empty: pass at least one (H, W, 3) uint8 RGB array")
        checked = []
        for k, frame in enumerate(frames):
            if not isinstance(frame, (np.ndarray, Image.Image)):
                raise TypeError(f"frame {k} is a {type(frame).__name__}; a frame list must hold (H, W, 3) uint8 RGB "
                                "numpy arrays (or PIL images). For frame files, pass their folder.")
            try:
                frame = as_rgb_uint8(frame)
            except ValueError as exc:
                raise ValueError(f"frame {k}: {exc}") from None
            if checked and frame.shape != checked[0].shape:
                h, w = checked[0].shape[:2]
                raise ValueError(f"frame {k} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is {w}x{h}: "
                                 "every frame of a video must have the same size (resize them first)")
            checked.append(frame)
        self.frames = checked
        self.length = len(checked)

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]


class _VideoFileBackend(_Backend):
    """A video file read through cv2.VideoCapture, seeking only when reading in order would cost more."""

    seeks_backwards = True
    _MAX_BLIND_SKIP = 32  # forward gap read frame by frame when keyframe positions are unknown

    def __init__(self, path: Path):
        cv2 = import_cv2()
        self.path = path
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise ValueError(
                f"cannot open video {path}: empty or corrupt video file, or a codec this OpenCV build cannot "
                "decode. Re-encode it (e.g. `ffmpeg -i in.mov -c:v libx264 out.mp4`) or extract the frames "
                "into a folder of JPEGs (00000.jpg, 00001.jpg, ...).")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and np.isfinite(fps) else None
        self.keyframes: np.ndarray | None = None
        self.length = self._count_frames()
        if self.length <= 0:
            self.cap.release()
            raise ValueError(f"video {path} has zero frames: empty or corrupt video file")
        self.pos: int | None = 0  # index of the frame the next cap.read() returns; None = unknown
        self.size: tuple[int, int] | None = None

    def _count_frames(self) -> int:
        # CAP_PROP_FRAME_COUNT is estimated from duration x fps for some containers (mkv, webm) and can be
        # off. Counting demuxed packets (raw mode, no decoding) is exact and takes milliseconds; it also
        # finds the keyframes, which tells `read` when a seek is cheaper than reading on.
        cv2 = import_cv2()
        raw = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        try:
            if raw.isOpened() and raw.set(cv2.CAP_PROP_FORMAT, -1):
                count, keys = 0, []
                has_key = getattr(cv2, "CAP_PROP_LRF_HAS_KEY_FRAME", None)
                while raw.grab():
                    if has_key is not None and raw.get(has_key):
                        keys.append(count)
                    count += 1
                if keys and keys[0] == 0:
                    self.keyframes = np.asarray(keys)
                return count
        finally:
            raw.release()
        header = round(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if header > 0:
            return header
        # No packet access and no header count: decode once to count (slow, but only for odd files).
        count = 0
        while self.cap.grab():
            count += 1
        self.cap.release()
        self.cap = cv2.VideoCapture(str(self.path))
        return count

    def _seek_is_cheaper(self, index: int) -> bool:
        if self.pos is None or index < self.pos:
            return True
        if self.keyframes is None:
            return index - self.pos > self._MAX_BLIND_SKIP
        # A seek decodes from the last keyframe at or before `index`; reading on decodes from `pos`.
        last_key = self.keyframes[np.searchsorted(self.keyframes, index, side="right") - 1]
        return last_key > self.pos

    def read(self, index: int) -> np.ndarray:
        cv2 = import_cv2()
        if index != self.pos:
            if self._seek_is_cheaper(index):
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            else:
                for _ in range(index - self.pos):
                    if not self.cap.grab():
                        self.pos = None
                        raise self._decode_error(index)
            self.pos = index
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            self.pos = None
            raise self._decode_error(index)
        self.pos = index + 1
        frame = bgr_to_rgb(bgr)
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise ValueError(f"frame {index} of {self.path} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is "
                             f"{self.size[1]}x{self.size[0]}: videos that change resolution are not supported; "
                             "re-encode it at one size")
        return frame

    def _decode_error(self, index: int) -> ValueError:
        return ValueError(f"cannot decode frame {index} of {self.path} ({self.length} frames): the file is corrupt "
                          "or truncated there. Re-encode it or extract its frames into a folder of JPEGs.")

    def close(self) -> None:
        self.cap.release()
