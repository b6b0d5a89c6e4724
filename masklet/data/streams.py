"""One pass over anything that yields frames (webcam, stream URL, video file, folder, Python iterable), holding
only the current frame plus an optional bounded read-ahead queue."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from masklet.data.files import (
    bgr_to_rgb,
    frame_files,
    import_cv2,
    is_image_file,
    is_url,
    is_video_file,
    missing_error,
    suffixes_hint,
)
from masklet.data.images import as_rgb_uint8, read_image
from masklet.data.video_frames import VideoFrames


def _capture_frames(cap: Any, what: str, must_have_frames: bool) -> Iterator[np.ndarray]:
    try:
        count = 0
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            count += 1
            yield bgr_to_rgb(bgr)
        if must_have_frames and count == 0:
            raise ValueError(f"{what} has zero frames: empty or corrupt video file")
    finally:
        cap.release()


def _open_capture(target: int | str, what: str, hint: str) -> Any:
    cap = import_cv2().VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"cannot open {what}: {hint}")
    return cap


def _folder_frames(files: list[Path]) -> Iterator[np.ndarray]:
    for path in files:
        yield read_image(path)


def _validated(frames: Iterable[Any]) -> Iterator[np.ndarray]:
    for k, frame in enumerate(frames):
        try:
            yield as_rgb_uint8(frame)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"frame {k} of the stream: {exc}") from None


def _stream_frames(source: Any) -> Iterator[np.ndarray]:
    """Opens `source` now (so bad sources fail at the call) and returns a lazy frame iterator."""
    if isinstance(source, bool):
        raise TypeError("a stream source cannot be a bool; pass a webcam index such as 0")
    if isinstance(source, int):
        cap = _open_capture(source, f"camera {source}",
                            "no such device, or it is in use by another program (on Linux, list cameras with "
                            "`ls /dev/video*`)")
        return _capture_frames(cap, f"camera {source}", must_have_frames=False)
    if is_url(source):
        cap = _open_capture(source, f"stream {source}",
                            "check the URL, the network, and that this OpenCV build supports the protocol")
        return _capture_frames(cap, f"stream {source}", must_have_frames=False)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise missing_error(path, "stream source")
        if path.is_dir():
            return _folder_frames(frame_files(path))
        if is_video_file(path):
            cap = _open_capture(str(path), f"video {path}",
                                "empty or corrupt video file, or a codec this OpenCV build cannot decode")
            return _capture_frames(cap, f"video {path}", must_have_frames=True)
        if is_image_file(path):
            return _validated([path])
        raise ValueError(f"unsupported file {path}: supported {suffixes_hint()}")
    if isinstance(source, VideoFrames):
        return iter(source)
    if isinstance(source, np.ndarray):
        return _validated(source if source.ndim == 4 else [source])
    if isinstance(source, Image.Image):
        return _validated([source])
    if isinstance(source, Iterable):
        return _validated(source)
    raise TypeError(f"cannot stream frames from a {type(source).__name__}: pass a webcam index, a stream URL, a "
                    "video file, a folder of frames, or an iterable of (H, W, 3) uint8 RGB arrays")


_END = object()


def _read_ahead(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Decode up to `size` frames ahead in a daemon thread; the queue bounds the memory."""
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # releases a capture in this thread, where it is used

    # The thread starts on the first next(): a never-iterated result leaks nothing.
    thread = threading.Thread(target=produce, name="masklet-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                if not thread.is_alive() and q.empty():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def iter_stream(source: Any, *, read_ahead: int = 0) -> Iterator[np.ndarray]:
    """Frames of `source` in order, one at a time, as (H, W, 3) uint8 RGB arrays.

    `source`: a webcam index (int), a stream URL ("rtsp://...", "http://..."), a video file (read
    sequentially), a folder of frames, an image file, a `VideoFrames`, a (T, H, W, 3) array, or any
    iterable / generator of frames (arrays, PIL images or image paths). Live sources are read until they
    end. Nothing is buffered beyond the current frame, except with `read_ahead > 0`: then a daemon
    thread decodes up to that many frames ahead into a bounded queue (stopped when the iterator is
    closed or exhausted). The source is opened at the call, so a bad path fails here, not at the
    first `next()`.
    """
    if read_ahead < 0:
        raise ValueError(f"read_ahead must be >= 0, got {read_ahead}")
    frames = _stream_frames(source)
    if read_ahead == 0:
        return frames
    return _read_ahead(frames, read_ahead)
