"""Checkpoint names, the local cache, and downloading.

Every accepted checkpoint name (Ultralytics-style short names such as `sam2.1_b.pt` and the official file
names such as `sam2.1_hiera_base_plus.pt`) maps to one canonical file name (the official one, which is what
the URL serves) and its URL. Files live in `cache_dir()`: `$MASKLET_HOME` if set, else `~/.cache/masklet`.
"""
from __future__ import annotations

import difflib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "VARIANTS",
    "WEIGHTS",
    "UnknownWeightsError",
    "cache_dir",
    "download",
    "resolve_weights",
    "variant_for_name",
]

_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM1_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_MOBILE_SAM_URL = "https://github.com/ultralytics/assets/releases/download/v8.2.0/mobile_sam.pt"

_HIERA = {"t": "tiny", "s": "small", "b": "base_plus", "l": "large"}
_HIERA_VARIANT = {"t": "t", "s": "s", "b": "b+", "l": "l"}
_SAM1_FILES = {"b": "sam_vit_b_01ec64.pth", "l": "sam_vit_l_0b3195.pth", "h": "sam_vit_h_4b8939.pth"}


def _build_tables() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    weights: dict[str, tuple[str, str]] = {}
    variants: dict[str, str] = {}
    for version, base in (("sam2", _SAM2_URL), ("sam2.1", _SAM21_URL)):
        for short, size in _HIERA.items():
            canonical = f"{version}_hiera_{size}.pt"
            variant = f"{version}_hiera_{_HIERA_VARIANT[short]}"
            for name in (f"{version}_{short}.pt", canonical):
                weights[name] = (canonical, base + canonical)
                variants[name] = variant
    for short, canonical in _SAM1_FILES.items():
        for name in (f"sam_{short}.pt", canonical):
            weights[name] = (canonical, _SAM1_URL + canonical)
            variants[name] = f"sam_vit_{short}"
    weights["mobile_sam.pt"] = ("mobile_sam.pt", _MOBILE_SAM_URL)
    variants["mobile_sam.pt"] = "mobile_sam_vit_t"
    return weights, variants


# WEIGHTS: accepted file name -> (canonical file name, download URL).
# VARIANTS: accepted file name -> model variant id ("sam2.1_hiera_b+", "sam_vit_h", "mobile_sam_vit_t", ...).
# Built from literals only: no file system or environment access at import.
WEIGHTS: dict[str, tuple[str, str]]
VARIANTS: dict[str, str]
WEIGHTS, VARIANTS = _build_tables()


class UnknownWeightsError(FileNotFoundError, ValueError):
    """A checkpoint name that is neither an existing file nor a known name (catchable as either base)."""


def variant_for_name(name: str | os.PathLike) -> str | None:
    """Model variant id of a checkpoint name or path, judged by its file name; None when unknown."""
    return VARIANTS.get(Path(name).name)


def cache_dir() -> Path:
    """Folder where checkpoints are looked up and downloaded: `$MASKLET_HOME`, else `~/.cache/masklet`.

    Read on every call, so changing the variable takes effect immediately. The folder is not created here.
    """
    env = os.environ.get("MASKLET_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "masklet"


def _unknown_name_message(name: str) -> str:
    known = sorted(WEIGHTS)
    close = difflib.get_close_matches(Path(name).name, known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"Checkpoint {name!r} is not an existing file and not a known checkpoint name.{hint} "
        f"Known names: {', '.join(known)}."
    )


def resolve_weights(name_or_path: str | os.PathLike, download: bool = True) -> Path:
    """Local path of a checkpoint, downloading it if needed.

    Order: (1) `name_or_path` itself when it is an existing file; (2) for a known file name (any directory
    part is ignored), `cache_dir()/<name>` then `cache_dir()/<canonical name>`; (3) with `download=True`,
    fetch the URL into `cache_dir()/<canonical name>`.
    Raises `UnknownWeightsError` (a FileNotFoundError and a ValueError) for a missing file whose name is not
    known, `FileNotFoundError` when the file is known but absent and `download=False`, and `RuntimeError`
    when the download fails.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = path.name
    if name not in WEIGHTS:
        raise UnknownWeightsError(_unknown_name_message(str(name_or_path)))
    canonical, url = WEIGHTS[name]
    folder = cache_dir()
    for candidate in dict.fromkeys((folder / name, folder / canonical)):
        if candidate.is_file():
            return candidate
    dest = folder / canonical
    if not download:
        raise FileNotFoundError(
            f"Checkpoint {name!r} is not in the cache and downloading is disabled. Download {url} and place it "
            f"at {dest} (the folder is set by the MASKLET_HOME environment variable)."
        )
    # The `download` parameter shadows the function; fetch it from the module namespace, which also lets
    # callers and tests swap the downloader.
    globals()["download"](url, dest)
    return dest


def download(url: str, dest: str | os.PathLike, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` with a progress bar; the file appears only when it is complete.

    Data streams into a temporary file beside `dest` that is renamed over `dest` atomically once the whole
    body has arrived (and its size equals Content-Length when the server sends one), so an interrupted
    download never leaves a partial checkpoint behind. `timeout` (s) applies to connecting and to each read.
    On any failure the temporary file is removed and a RuntimeError names the URL, the path to place the
    file at by hand, and the MASKLET_HOME variable.
    """
    from tqdm.auto import tqdm  # only needed when something is actually downloaded

    dest = Path(dest)
    tmp_path: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(url, headers={"User-Agent": "masklet"})
        # A fresh opener reads the proxy settings of the environment at call time, not at first use.
        opener = urllib.request.build_opener()
        with opener.open(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            expected = int(length_header) if length_header and length_header.isdigit() else None
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            tmp_path = Path(tmp_name)
            received = 0
            with os.fdopen(fd, "wb") as out, tqdm(
                total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                disable=not progress, leave=False,
            ) as bar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        # http.client returns b"" instead of raising when the connection drops early, so a short body
        # can only be detected by comparing with the announced length.
        if expected is not None and received != expected:
            raise OSError(f"connection closed after {received} of {expected} bytes")
        os.replace(tmp_path, dest)
        tmp_path = None
        return dest
    except BaseException as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit: cleaned up, let them through unchanged
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        elif isinstance(exc, urllib.error.URLError):
            reason = str(exc.reason)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise RuntimeError(
            f"Could not download {url} ({reason}). Download it by hand and place it at {dest}, "
            f"or set the MASKLET_HOME environment variable to a folder that holds {dest.name}."
        ) from None
