"""`VideoFrames`: random access to a finite video, decoded on demand into a small LRU cache, with a background
thread that decodes ahead in the direction the caller is moving. A video is never decoded whole into memory."""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from masklet.data.backends import _ArrayBackend, _Backend, _FolderBackend, _VideoFileBackend
from masklet.data.files import VIDEO_SUFFIXES, PathLike, is_image_file, is_url, is_video_file, missing_error


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

    `source` is a folder of JPEG/PNG frames (in the order of the numbers in their names, DAVIS's 00000.jpg
    or frame_1.jpg ... frame_12.jpg; ambiguous names raise, see `masklet.data.ordering.frame_order`), a video
    file (mp4, avi, mov, mkv, webm, m4v via OpenCV), or a sequence of (H, W, 3) uint8 RGB arrays (or a
    (T, H, W, 3) array).

    `frames[i]` returns frame i as an (H, W, 3) uint8 RGB ndarray. At most `cache_size` decoded frames
    are kept (least recently used are dropped); a daemon thread decodes up to `prefetch` frames ahead in
    the direction of access while the caller computes (`prefetch` is capped at about two thirds of
    `cache_size`, so read-ahead never evicts frames the caller has not reached; 0 disables the thread).
    The returned array is shared with the cache: copy it before modifying it in place. Thread-safe. Close
    it (or use `with`) to stop the thread and release the file; it is also closed when garbage-collected.

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
        if is_url(source):
            raise ValueError(f"a stream URL ({source}) has no random access: read it with iter_stream(url)")
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise missing_error(path, "video")
            self.path = path
            if path.is_dir():
                return _FolderBackend(path)
            if is_video_file(path):
                return _VideoFileBackend(path)
            if is_image_file(path):
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
