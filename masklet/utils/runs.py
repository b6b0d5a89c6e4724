"""Output folders of runs: nothing a user wrote before is overwritten without asking.

Every writer (`SAM.predict(save=True)`, `SAM2VideoPredictor(save=True)`, `auto_annotate`, `masklet val`) asks
`RunDir` for its folder. The folder is named at the start of the run (`runs/segment/predict`, then `predict2`,
`predict3`, ... when taken, as Ultralytics does) but created only when the first file is written, so a run
that fails before writing anything leaves no empty folder behind.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutputExistsError", "RunDir", "increment_path"]

_MAX_TRIES = 100000


class OutputExistsError(FileExistsError, ValueError):
    """An explicitly named output folder already holds files and `exist_ok` is False (a FileExistsError and a
    ValueError, so the command line reports it as bad input)."""


def _taken(path: Path) -> bool:
    return path.exists()


def increment_path(path: str | os.PathLike, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """`path` if it is free (or exist_ok), else path2, path3, ... (runs/segment/predict -> predict2).

    A file path keeps its suffix (labels.json -> labels2.json). With mkdir=True the folder is created
    atomically, so two runs started together get different folders.
    """
    path = Path(path)
    if exist_ok:
        if mkdir:
            path.mkdir(parents=True, exist_ok=True)
        return path
    suffix = path.suffix if path.is_file() else ""
    stem = path.with_suffix("") if suffix else path
    for n in range(1, _MAX_TRIES):
        candidate = path if n == 1 else Path(f"{stem}{sep}{n}{suffix}")
        if mkdir:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        elif not _taken(candidate):
            return candidate
    raise RuntimeError(f"no free name for {path} (tried up to {stem}{sep}{_MAX_TRIES - 1})")


class RunDir:
    """The output folder of one run, created lazily on the first write.

    mode "increment" (default folders such as runs/segment/predict): the first free one of path, path2,
    path3, ...; "refuse" (a folder the user named): path itself, and an OutputExistsError at once when it
    already holds files; exist_ok=True: path itself, files of the same name are replaced.
    `path` is the folder the run will write to (re-checked at `ensure()`, so two runs started together still get
    different folders); `ensure()` creates it and returns it; `created` tells whether anything was written.
    """

    def __init__(self, path: str | os.PathLike, exist_ok: bool = False, mode: str = "increment",
                 what: str = "output folder", hint: str = "exist_ok=True") -> None:
        if mode not in ("increment", "refuse"):
            raise ValueError(f"mode must be 'increment' or 'refuse', got {mode!r}")
        self.requested = Path(path).expanduser()
        self.exist_ok, self.mode = bool(exist_ok), mode
        self.created = False
        if self.exist_ok:
            self.path = self.requested
        elif mode == "refuse":
            if self.requested.is_file():
                raise OutputExistsError(f"{what} {self.requested} is a file; name a folder")
            if self.requested.is_dir() and any(self.requested.iterdir()):
                raise OutputExistsError(
                    f"{what} {self.requested} already exists and holds files; masklet does not overwrite them. "
                    f"Choose another folder, delete it, or pass {hint} to write into it (files of the same name "
                    "are replaced)")
            self.path = self.requested
        else:
            self.path = increment_path(self.requested)

    def ensure(self) -> Path:
        """Create the folder (once) and return it."""
        if self.created:
            return self.path
        if self.exist_ok or self.mode == "refuse":
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            # another run may have taken the name since it was chosen: take the next free one atomically
            self.path = increment_path(self.requested, mkdir=True)
        self.created = True
        return self.path

    def __truediv__(self, other: str) -> Path:
        return self.ensure() / other

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, created={self.created})"
