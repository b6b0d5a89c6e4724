"""File order: every folder or glob that masklet lists is ordered here, the way people number their files.

Two rules, one per use:

* `natural_sorted` - lists of independent files (image folders and globs in `SAM(...)`, `auto_annotate`
  inputs, `val` dataset listings): runs of digits compare as numbers, the rest as case-insensitive text, so
  ``img2.jpg`` comes before ``img10.jpg``. Names equal under that rule (``1.jpg`` / ``01.jpg``, ``A.jpg`` /
  ``a.jpg``) are ordered by their exact text, so the order is always the same.
* `frame_order` - the frames of a video folder, where the order is time and a guess would silently scramble
  the video: the file stems must share one pattern (``frame_1`` ... ``frame_12``: the same text around the
  numbers) and no frame number may appear twice (``1.jpg`` and ``01.jpg``, or ``00001.jpg`` and
  ``00001.png``); otherwise a ValueError names the offending files. A folder whose names hold no digits at
  all is ordered alphabetically (case-insensitive).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

P = TypeVar("P", str, Path)

_DIGITS = re.compile(r"([0-9]+)")  # ASCII digits only: str.isdigit() would also take "²" and "٣"


def natural_key(name: str) -> tuple:
    """Sort key of a file name: text runs case-folded, digit runs as integers.

    The key alternates text and numbers, always starting with text, so any two keys compare without a
    str-vs-int TypeError: ``natural_key("frame_12.jpg") == ("frame_", 12, ".jpg")``.
    """
    parts = _DIGITS.split(name)
    return tuple(int(p) if k % 2 else p.casefold() for k, p in enumerate(parts))


def _name(item: str | Path) -> str:
    return item.name if isinstance(item, Path) else Path(item).name


def natural_sorted(items: Iterable[P]) -> list[P]:
    """Paths (or names) in natural order, folder by folder; names equal under the natural key by their exact text.

    ``["img10.png", "img2.png", "img1.png"] -> ["img1.png", "img2.png", "img10.png"]``. Each path component is
    compared naturally, so a recursive glob lists ``a/2.png, a/10.png, b/1.png``.
    """
    return sorted(items, key=lambda p: (tuple(natural_key(part) for part in Path(p).parts), str(p)))


def _pattern(stem: str) -> str:
    return _DIGITS.sub("#", stem).casefold()


def frame_order(files: Iterable[P]) -> list[P]:
    """The frame files of one video folder in time order, or a ValueError when the order would be a guess.

    Frames are ordered by the numbers in their stems (``frame_2`` before ``frame_10``; DAVIS's ``00000.jpg``,
    ``00001.jpg`` ... as usual). Raises ValueError when the stems follow more than one pattern
    (``frame_1.jpg`` next to ``img_1.jpg`` or ``cover.jpg``) or two files carry the same frame number
    (``1.jpg`` and ``01.jpg``; ``7.jpg`` and ``7.png``). Names without any digit are ordered alphabetically.
    """
    files = list(files)
    stems = {f: Path(_name(f)).stem for f in files}
    patterns: dict[str, list[P]] = {}
    for f in files:
        patterns.setdefault(_pattern(stems[f]), []).append(f)
    if len(patterns) > 1 and any(_DIGITS.search(p) for p in (stems[f] for f in files)):
        groups = sorted(patterns.items(), key=lambda kv: -len(kv[1]))
        listing = "; ".join(f"{pat!r}: {len(group)} file(s), e.g. "
                            + ", ".join(_name(g) for g in natural_sorted(group)[:3]) for pat, group in groups[:4])
        raise ValueError(
            f"cannot tell the frame order: the file names follow {len(patterns)} different patterns ({listing}; "
            "'#' stands for a number). Frames are ordered by the number in their names, so a frame folder must "
            "hold only the frames of one video, named alike (e.g. 00000.jpg, 00001.jpg, ... or frame_1.jpg, "
            "frame_2.jpg, ...). Move the other files out of the folder.")
    ordered = sorted(files, key=lambda f: (natural_key(stems[f]), _name(f)))
    for a, b in pairwise(ordered):
        if natural_key(stems[a]) == natural_key(stems[b]) and _DIGITS.search(stems[a]):
            raise ValueError(
                f"cannot tell the frame order: {_name(a)} and {_name(b)} carry the same frame number. Each frame "
                "number must appear once in a frame folder (rename one, or move the duplicate out; zero-padding "
                "such as 1.jpg / 01.jpg does not make two numbers different).")
    return ordered
