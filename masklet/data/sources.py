"""Where frames come from: random-access videos, unbounded streams and Ultralytics-style sources.

Three entry points, one per access pattern:

* `VideoFrames` - random access to a finite video (a folder of frames, a video file, or a list of
  arrays) for the interactive video predictor. Frames are decoded on demand into a small LRU cache,
  with a background thread that decodes ahead in the direction the caller is moving. A video is never
  decoded whole into memory.
* `iter_stream` - one pass over anything that yields frames (webcam, stream URL, video file, folder,
  Python iterable), holding only the current frame (plus an optional bounded read-ahead queue).
* `open_source` / `iter_frames` - the image-level API's inputs: paths, folders, globs, arrays,
  PIL images, lists of those, videos and webcams, expanded into `SourceItem`s that read lazily.

Every frame that leaves this module is an (H, W, 3) uint8 RGB ndarray validated by `as_rgb_uint8`.
OpenCV is imported only when a video or stream is opened.
"""
from __future__ import annotations

import glob
import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image

from masklet.data.images import IMAGE_SUFFIXES, as_rgb_uint8, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
PathLike = str | Path


def _cv2():
    # Imported lazily: cv2 is slow to import and image-only users never need it.
    import cv2

    return cv2


def _suffixes_hint() -> str:
    return f"images: {', '.join(IMAGE_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)}"


def _is_url(source: Any) -> bool:
    return isinstance(source, str) and "://" in source


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _visible_files(folder: Path) -> list[Path]:
    # Hidden files are skipped: macOS leaves "._00000.jpg" resource forks that carry an image suffix.
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def _sort_frame_files(files: list[Path]) -> list[Path]:
    """Frame order: by the integer in the stem when every stem is one (00000.jpg, 1.jpg, 10.jpg), else by name."""
    if files and all(p.stem.isdigit() for p in files):
        return sorted(files, key=lambda p: (int(p.stem), p.name))
    return sorted(files, key=lambda p: p.name)


def _frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in frame order; a clear error when there are none."""
    visible = _visible_files(folder)
    files = [p for p in visible if _is_image_file(p)]
    if not files:
        videos = [p.name for p in visible if _is_video_file(p)]
        hint = f" It holds video files ({', '.join(sorted(videos)[:3])}): pass one of them instead." if videos else ""
        raise FileNotFoundError(
            f"no image frames in folder {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)} "
            f"(e.g. 00000.jpg, 00001.jpg, ...).{hint}")
    return _sort_frame_files(files)


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frame (BGR, BGRA or gray) -> validated RGB uint8."""
    cv2 = _cv2()
    if frame.ndim == 3 and frame.shape[2] == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return as_rgb_uint8(frame)


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: {path}. Check the path (relative paths start at {Path.cwd()}).")


# ----------------------------------------------------------------------------------------------------
# Random access: decoders ("backends") and the cached, prefetching VideoFrames on top of them.
# ----------------------------------------------------------------------------------------------------


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
        self.files = _frame_files(folder)
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
        cv2 = _cv2()
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
        cv2 = _cv2()
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
        cv2 = _cv2()
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
        frame = _bgr_to_rgb(bgr)
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


class CacheInfo(NamedTuple):
    """Statistics of the `VideoFrames` frame cache."""

    hits: int  # frames served from the cache (prefetched or read before)
    misses: int  # frames the caller had to wait to decode itself
    maxsize: int
    currsize: int
    indices: tuple[int, ...]  # cached frame indices, least recently used first


class _FrameLoader:
    """The cache, the decoder lock and the prefetch thread of one VideoFrames.

    Kept apart from VideoFrames so the thread holds no reference to it: a VideoFrames the caller forgot
    to close can still be garbage-collected, and its finalizer stops the thread.
    """

    def __init__(self, backend: _Backend, cache_size: int, prefetch: int, name: str):
        self.backend = backend
        self.length = backend.length
        self.cache_size = cache_size
        # Keep room in the cache for the current frame and the frames ahead, so prefetching never
        # evicts a frame the caller has not reached yet.
        self.prefetch = min(prefetch, (cache_size - 1) * 2 // 3)
        self.reverse_block = max(self.prefetch, cache_size - 1 - self.prefetch // 2)
        self.name = name
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cond = threading.Condition()
        self.decode_lock = threading.Lock()  # lock order: decode_lock, then cond
        self.pending: set[int] = set()  # frames the prefetch thread has promised to decode
        self.last: int | None = None
        self.direction = 1
        self.generation = 0
        self.closed = False
        self.thread: threading.Thread | None = None
        self.hits = 0
        self.misses = 0

    # -- caller side ------------------------------------------------------------------------------

    def get(self, index: int) -> np.ndarray:
        if self.backend.in_memory:
            if self.closed:
                raise ValueError("this VideoFrames is closed; open the video again")
            return self.backend.read(index)
        with self.cond:
            self._check_open()
            self._note_access(index)
            while True:
                frame = self.cache.get(index)
                if frame is not None:
                    self.cache.move_to_end(index)
                    self.hits += 1
                    return frame
                if index not in self.pending:
                    break
                self.cond.wait()
                self._check_open()
            self.misses += 1
        with self.decode_lock:
            with self.cond:
                self._check_open()
                frame = self.cache.get(index)
                if frame is not None:
                    return frame
                block = self._miss_block(index)
                self.pending.update(block)
            try:
                for j in block[:-1]:
                    try:
                        before = self.backend.read(j)
                    except Exception:
                        break  # the requested frame is decoded alone below and reports its own error
                    with self.cond:
                        self._insert(j, before)
                frame = self.backend.read(index)
                with self.cond:
                    self._insert(index, frame)
            finally:
                with self.cond:
                    self.pending.difference_update(block)
                    self.cond.notify_all()
        return frame

    def _miss_block(self, index: int) -> list[int]:
        """What the caller decodes on a miss, ending with `index` (called with cond held)."""
        if not (self.backend.seeks_backwards and self.direction < 0):
            return [index]
        # Stepping backwards through a video file faster than the prefetch thread: one seek for a block,
        # rather than a seek for this frame now and another for the prefetch thread's block.
        start = max(0, index - self.reverse_block + 1)
        return [j for j in range(start, index) if j not in self.cache and j not in self.pending] + [index]

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("this VideoFrames is closed; open the video again")

    def _note_access(self, index: int) -> None:
        if self.last is not None:
            step = index - self.last
            # Small steps set the direction; a jump keeps it (a reverse propagation starts with a jump).
            if step != 0 and abs(step) <= max(2, self.prefetch):
                self.direction = 1 if step > 0 else -1
        self.last = index
        self.generation += 1
        if self.prefetch > 0 and self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"masklet-prefetch[{self.name}]", daemon=True)
            self.thread.start()
        self.cond.notify_all()

    def _insert(self, index: int, frame: np.ndarray) -> None:
        self.pending.discard(index)
        if not self.closed:
            self.cache[index] = frame
            self.cache.move_to_end(index)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        self.cond.notify_all()

    # -- prefetch thread --------------------------------------------------------------------------

    def _plan(self) -> list[int]:
        """Frames to decode next, in decoding order (called with cond held)."""
        last, step = self.last, self.direction
        if last is None:
            return []

        def known(j: int) -> bool:
            return j in self.cache or j in self.pending

        if step > 0 or not self.backend.seeks_backwards:
            plan = []
            for k in range(1, self.prefetch + 1):
                j = last + step * k
                if not 0 <= j < self.length:
                    break
                if not known(j):
                    plan.append(j)
            return plan
        # Reverse over a video file: every backward read is a seek that decodes from the previous keyframe,
        # so decode a whole block in forward order with one seek, and only when the run of frames ready
        # below the caller gets short.
        hi = last - 1
        while hi >= 0 and known(hi):
            hi -= 1
        if hi < 0 or last - 1 - hi >= max(1, self.prefetch // 2):
            return []
        return [j for j in range(max(0, hi - self.reverse_block + 1), hi + 1) if not known(j)]

    def _still_wanted(self, index: int, direction: int) -> bool:
        # Abandon a plan when the caller turned around or jumped away from it.
        return (not self.closed and self.direction == direction and self.last is not None
                and abs(index - self.last) <= self.reverse_block + self.prefetch + 1)

    def _run(self) -> None:
        seen = -1
        while True:
            with self.cond:
                while not self.closed and self.generation == seen:
                    self.cond.wait()
                if self.closed:
                    return
                seen = self.generation
                direction = self.direction
                plan = self._plan()
                self.pending.update(plan)
            for k, index in enumerate(plan):
                frame = None
                with self.decode_lock:
                    with self.cond:
                        wanted = self._still_wanted(index, direction)
                        cached = index in self.cache  # a caller decoded it meanwhile
                    if wanted and not cached:
                        try:
                            frame = self.backend.read(index)
                        except Exception:
                            frame = None  # left to the caller: it decodes this frame itself and gets the message
                with self.cond:
                    if frame is not None:
                        self._insert(index, frame)
                    elif wanted and cached:
                        self.pending.discard(index)
                    else:
                        self.pending.difference_update(plan[k:])
                        self.cond.notify_all()
                        break

    # -- shutdown ---------------------------------------------------------------------------------

    def close(self) -> None:
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.pending.clear()
            self.cache.clear()
            self.cond.notify_all()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        with self.decode_lock:
            self.backend.close()


VideoSource = PathLike | Sequence[np.ndarray] | np.ndarray


class VideoFrames:
    """Random access to the frames of a finite video, decoded on demand.

    `source` is a folder of JPEG/PNG frames (ordered by the integer in the file stem when every stem is
    an integer, like DAVIS's 00000.jpg, else by name), a video file (mp4, avi, mov, mkv, webm, m4v via
    OpenCV), or a sequence of (H, W, 3) uint8 RGB arrays (or a (T, H, W, 3) array).

    `frames[i]` returns frame i as an (H, W, 3) uint8 RGB ndarray. At most `cache_size` decoded frames
    are kept (least recently used are dropped); a daemon thread decodes up to `prefetch` frames ahead in
    the direction of access while the caller computes (`prefetch` is capped at about two thirds of
    `cache_size`, so read-ahead never evicts frames the caller has not reached; 0 disables the thread). The returned array is shared with the cache:
    copy it before modifying it in place. Thread-safe. Close it (or use `with`) to stop the thread and
    release the file; it is also closed when garbage-collected.

    Reading a video file backwards costs one seek per block of frames, and a seek decodes from the
    previous keyframe: on files with sparse keyframes a larger `cache_size` makes reverse passes faster.
    """

    def __init__(self, source: VideoSource, *, cache_size: int = 16, prefetch: int = 8,
                 fps: float | None = None):
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (0 disables the prefetch thread), got {prefetch}")
        self.path: Path | None = None
        backend = self._open_backend(source)
        self.name: str = self.path.name if self.path is not None else "frames"
        self._loader = _FrameLoader(backend, cache_size, prefetch, self.name)
        self._finalizer = weakref.finalize(self, self._loader.close)
        self._fps = fps if fps is not None else backend.fps
        try:
            # Decoding frame 0 gives the true size (after any rotation metadata) and fails early on
            # a file that opens but does not decode.
            first = self._loader.get(0)
        except BaseException:
            self.close()
            raise
        self._height, self._width = first.shape[:2]

    def _open_backend(self, source: VideoSource) -> _Backend:
        if isinstance(source, int):  # bool included
            raise ValueError(f"a webcam ({source}) has no random access: read it with iter_stream({source})")
        if _is_url(source):
            raise ValueError(f"a stream URL ({source}) has no random access: read it with iter_stream(url)")
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise _missing(path, "video")
            self.path = path
            if path.is_dir():
                return _FolderBackend(path)
            if _is_video_file(path):
                return _VideoFileBackend(path)
            if _is_image_file(path):
                raise ValueError(f"{path} is a single image, not a video: pass the folder that holds the frames "
                                 "(00000.jpg, 00001.jpg, ...) or a video file")
            raise ValueError(f"unsupported video file {path}: expected a folder of frames or a file ending in "
                             f"{', '.join(VIDEO_SUFFIXES)}")
        if isinstance(source, np.ndarray):
            if source.ndim != 4:
                raise ValueError(f"an array video must have shape (T, H, W, 3), got {tuple(source.shape)}; "
                                 "for one image use the image predictor")
            return _ArrayBackend(list(source))
        if isinstance(source, Sequence):
            return _ArrayBackend(source)
        raise TypeError(f"cannot read a video from a {type(source).__name__}: pass a folder of frames, a video "
                        "file path, or a list of (H, W, 3) uint8 RGB arrays")

    # -- sequence protocol ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._loader.length

    def __getitem__(self, index: int) -> np.ndarray:
        if isinstance(index, slice):
            raise TypeError("VideoFrames does not support slices (that would decode many frames at once); "
                            "index frames one at a time")
        try:
            i = index.__index__()
        except AttributeError:
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}") from None
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame index {index} out of range: {self.name} has {n} frames (valid: 0 to {n - 1}, "
                             f"or -{n} to -1)")
        return self._loader.get(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    # -- properties -------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def fps(self) -> float | None:
        """Frames per second from the video file, the `fps` argument, or None when unknown."""
        return self._fps

    @property
    def closed(self) -> bool:
        return self._loader.closed

    @property
    def prefetch_thread(self) -> threading.Thread | None:
        """The background decoding thread (None until the first read, or when prefetching is off)."""
        return self._loader.thread

    def frame_name(self, index: int) -> str:
        """A name for frame `index`: the file stem for a folder of frames, else the zero-padded index."""
        return self._loader.backend.frame_name(index)

    def cache_info(self) -> CacheInfo:
        """What the frame cache holds now, and how often it was hit."""
        with self._loader.cond:
            loader = self._loader
            return CacheInfo(loader.hits, loader.misses, loader.cache_size, len(loader.cache), tuple(loader.cache))

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the prefetch thread, drop the cache and release the file. Idempotent."""
        self._finalizer()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fps = f", fps={self.fps:g}" if self.fps else ""
        state = ", closed" if self.closed else ""
        return f"VideoFrames({self.name!r}, {len(self)} frames, {self.width}x{self.height}{fps}{state})"


# ----------------------------------------------------------------------------------------------------
# One pass: streams.
# ----------------------------------------------------------------------------------------------------


def _capture_frames(cap: Any, what: str, must_have_frames: bool) -> Iterator[np.ndarray]:
    try:
        count = 0
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            count += 1
            yield _bgr_to_rgb(bgr)
        if must_have_frames and count == 0:
            raise ValueError(f"{what} has zero frames: empty or corrupt video file")
    finally:
        cap.release()


def _open_capture(target: int | str, what: str, hint: str) -> Any:
    cap = _cv2().VideoCapture(target)
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
    if _is_url(source):
        cap = _open_capture(source, f"stream {source}",
                            "check the URL, the network, and that this OpenCV build supports the protocol")
        return _capture_frames(cap, f"stream {source}", must_have_frames=False)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise _missing(path, "stream source")
        if path.is_dir():
            return _folder_frames(_frame_files(path))
        if _is_video_file(path):
            cap = _open_capture(str(path), f"video {path}",
                                "empty or corrupt video file, or a codec this OpenCV build cannot decode")
            return _capture_frames(cap, f"video {path}", must_have_frames=True)
        if _is_image_file(path):
            return _validated([path])
        raise ValueError(f"unsupported file {path}: supported {_suffixes_hint()}")
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


# ----------------------------------------------------------------------------------------------------
# Image-level API sources.
# ----------------------------------------------------------------------------------------------------


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
    if _is_image_file(path):
        return SourceItem("image", str(path), str(path))
    if _is_video_file(path):
        return SourceItem("video", str(path), str(path))
    if strict:
        suffix = path.suffix or "(no suffix)"
        raise ValueError(f"unsupported file type {suffix} for {path}: supported {_suffixes_hint()}")
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
    if _is_url(source):
        items.append(SourceItem("stream", source, source, source))
        return
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.exists():
            if path.is_dir():
                found = [item for p in _sort_frame_files(_visible_files(path)) if (item := _file_item(p, False))]
                if not found:
                    raise FileNotFoundError(f"no images or videos in folder {path}: supported {_suffixes_hint()}")
                items.extend(found)
            else:
                items.append(_file_item(path, strict=True))  # type: ignore[arg-type]
            return
        text = str(source)
        if isinstance(source, str) and text.isdigit():
            items.append(SourceItem("stream", None, f"camera{text}", int(text)))
            return
        if any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            found = [item for m in matches if m.is_file() and (item := _file_item(m, False))]
            if not found:
                what = f"{len(matches)} matches, none of them an image or video" if matches else "no files match"
                raise FileNotFoundError(f"glob pattern {text!r}: {what} (supported {_suffixes_hint()})")
            items.extend(found)
            return
        raise FileNotFoundError(f"source not found: {path}. Check the path (relative paths start at {Path.cwd()}); "
                                f"supported {_suffixes_hint()}")
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

    Accepted: an image or video file path; a folder (its images and videos, not recursive, ordered like
    frames); a glob pattern ("data/*.jpg", "data/**/*.png"); a numpy array ((H, W, 3) image or
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
