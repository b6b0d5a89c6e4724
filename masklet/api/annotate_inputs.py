"""Inputs of `auto_annotate`: collecting images and videos, the default output folder, and matching label
entries to files. Split out of `masklet.api.annotate`."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.ordering import natural_sorted
from .annotate_sources import AnnotateWarning, _BoxSource, _CocoSource


@dataclass
class _Item:
    kind: str  # "image" or "video"
    path: Path


def _collect(data: Any) -> tuple[list[_Item], Path | None]:
    """The images and videos of `data`, and the path that names the default output folder (None for lists)."""
    from ..data.sources import open_source

    if isinstance(data, (str, Path)):
        paths, anchor = [data], Path(data).expanduser()
    elif isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, Path)) for d in data):
        paths, anchor = list(data), None
    else:
        raise TypeError(f"data must be a folder, an image or video file, a glob pattern, or a list of paths; got "
                        f"{type(data).__name__}" + (" (empty)" if isinstance(data, (list, tuple)) else "")
                        + ". Save in-memory images to files first: the labels are named after the files.")
    items: list[_Item] = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            sources = open_source(str(path))
        except FileNotFoundError as exc:
            if path.is_dir():
                subdirs = natural_sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
                hint = (f" It holds the folders {', '.join(subdirs[:5])}: pass the one with the images "
                        "(folders are not searched recursively)." if subdirs else "")
                raise FileNotFoundError(f"auto_annotate: {exc}.{hint}") from None
            raise
        for src in sources:
            if src.kind not in ("image", "video") or src.path is None:
                raise ValueError(f"auto_annotate takes image and video files, not streams or webcams: {src.name}")
            items.append(_Item(src.kind, Path(src.path)))
    return items, anchor


def _default_output_dir(data: Path) -> Path:
    """<data parent>/<data name>_auto_annotate_labels, as Ultralytics; a glob names it after its folder."""
    while any(c in data.name for c in "*?[") or data.name in ("", ".", ".."):
        data = data.parent if any(c in data.name for c in "*?[") else data.resolve()
    name = data.name if data.is_dir() else data.stem
    return data.parent / f"{name}_auto_annotate_labels"


def _output_names(items: list[_Item]) -> None:
    """Label files are named after the image stems: two inputs with the same stem would overwrite each other."""
    owners: dict[str, list[str]] = {}
    for item in items:
        owners.setdefault(item.path.stem, []).append(str(item.path))
    clashes = {stem: files for stem, files in owners.items() if len(files) > 1}
    if clashes:
        stem, files = next(iter(clashes.items()))
        raise ValueError(f"{len(clashes)} file name(s) would share a label file, e.g. {', '.join(files)} -> "
                         f"{stem}.txt; rename them or annotate them in separate runs")


def _check_entries(source: _BoxSource, items: list[_Item]) -> None:
    """Label entries that match no input: none at all means the labels belong to other images (an error); some
    (e.g. a labels folder shared by several splits) are reported and ignored."""
    if source.entries is None:
        return
    keys: set[str] = set()
    for item in items:
        keys.update(_keys(item))
    if isinstance(source, _CocoSource):
        keys |= {Path(k).stem for k in keys}
    unmatched = sorted(source.entries - keys)
    where = getattr(source, "folder", None) or getattr(source, "path", "")
    if source.entries and len(unmatched) == len(source.entries):
        raise ValueError(f"none of the {len(unmatched)} label entries in {where} matches an image or video of data "
                         f"(e.g. {', '.join(unmatched[:3])}); labels are matched to images by file stem "
                         "(truck.jpg <-> truck.txt). Check that data and det_model belong together.")
    if unmatched:
        suffix = " (labels of a video's first frame are named <video stem>_000000)" if any(
            i.kind == "video" for i in items) else ""
        warnings.warn(f"{len(unmatched)} label entr{'y' if len(unmatched) == 1 else 'ies'} in {where} match no image "
                      f"in data and are ignored: {', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
                      f"{suffix}", AnnotateWarning, stacklevel=3)


def _keys(item: _Item) -> list[str]:
    if item.kind == "video":
        return [f"{item.path.stem}_{0:06d}", item.path.stem]
    return [item.path.stem, item.path.name]
