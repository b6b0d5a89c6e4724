"""glibc heap settings for CPU training and tracking loops.

A training step allocates and frees the same few-MB activations every step. glibc serves blocks above its
mmap threshold with fresh mappings, and hands the top of the heap back to the kernel once more than its
trim threshold is free, so every step pays page faults to map and zero that memory again: ~3,800 faults
and ~10 % of a `sam2_test_wide` image step at 128 px on a 2-core VM (~4 µs a fault), ~4,000-6,000 per
video step. Keeping freed memory in the heap makes the next step reuse it. Video tracking repeats the same
way per frame (SAM 2.1 tiny at 1024 px: ~2.9 M faults in 7 frames, 0.7 M with the settings). Only glibc
(Linux) has these settings; elsewhere nothing changes.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator
from functools import lru_cache

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_MMAP_MAX = 32 * 1024 * 1024  # the largest mmap threshold glibc accepts on 64-bit
_TRIM_OFF = 2**31 - 1
# the settings are process-wide: blocks nest (tracking inside a training run's validation) and may run in
# several threads (the app), so only the outermost block applies and restores them
_lock = threading.Lock()
_depth = 0
_applied = False


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both must exist)
    except (OSError, AttributeError):
        return None
    return libc


def trim_allocator() -> bool:
    """Hand glibc's free heap pages back to the kernel (malloc_trim), e.g. before reading the resident memory
    still in use. False where unavailable (not glibc: macOS, Windows, musl)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@contextlib.contextmanager
def retain_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, glibc keeps freed memory for reuse: blocks up to 32 MB come from the heap rather
    than from fresh mappings, and the heap is not trimmed. Afterwards the free pages are handed back
    (malloc_trim) and the heap is trimmed past 64 MB free, where glibc's adaptive thresholds settle after
    freeing 32 MB blocks (setting a threshold ends its adaptation). Yields whether the settings applied
    (False off glibc or when `enabled` is False). The process's resident memory stays at its peak meanwhile.
    Blocks may nest and overlap across threads: the settings hold until the last open block ends."""
    global _depth, _applied
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_OFF))
        applied = _applied
    try:
        yield applied
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_MAX)
                libc.malloc_trim(0)
