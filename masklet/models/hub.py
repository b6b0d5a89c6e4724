"""The one way from "name, path or module" to a model, with one device rule.

    from masklet.models.hub import get_model
    model, path = get_model("sam2.1_t.pt")              # $MASKLET_HOME/sam2.1_hiera_tiny.pt, downloaded if missing
    model, path = get_model("ckpt/my_finetune.pt", device="cuda:1")
    model, path = get_model(sam_object.model)            # an already built model: kept where it is

`masklet.load_model`, `SAM`, `SAM2VideoPredictor`, `auto_annotate`, `masklet val` and the command line all go
through `get_model`, so a name that works in one works in all of them.

Device rule (`select_device`): device=None (or "") keeps a given module where it is and puts a model loaded from
a checkpoint on the first GPU when CUDA is available, else on the CPU; otherwise "cpu", "cuda", "cuda:N", N or
"0,1" (= cuda:N / the first), "mps" or a torch.device.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["VariantNameWarning", "default_device", "get_model", "read_checkpoint", "select_device"]


class VariantNameWarning(UserWarning):
    """A checkpoint whose file name is a known name of one variant holds the weights of another."""


def default_device() -> torch.device:
    """Where a model loaded from a checkpoint goes when no device is asked for: cuda:0 if available, else cpu."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def select_device(device: Any, current: torch.device | None = None) -> torch.device:
    """Ultralytics-style device spec -> torch.device: None / "" (keep `current`, else `default_device()`), "cpu",
    "cuda", "cuda:1", 0 / "0" (= cuda:0), "0,1" (the first), "mps", or a torch.device.

    Raises ValueError naming the problem when the device does not exist on this machine.
    """
    if device is None or device == "":
        return current if current is not None else default_device()
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device).strip().lower().replace(" ", "")
        if isinstance(device, (int, np.integer)) and not isinstance(device, bool) or text.split(",")[0].isdigit():
            dev = torch.device(f"cuda:{text.split(',')[0]}")
        else:
            try:
                dev = torch.device(text)
            except RuntimeError:
                raise ValueError(f"device={device!r} is not a device: use cpu, cuda, cuda:N, N (a GPU index) or "
                                 "mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} asks for a GPU but CUDA is not available (torch "
                             f"{torch.__version__}); use device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available on this machine; use device=cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"device={device!r} is not supported: use cpu, cuda, cuda:N or mps")
    return dev


# file signatures of things people pass by mistake: (offset, magic bytes, what it is)
_MAGIC = (
    (0, b"\xff\xd8\xff", "a JPEG image"), (0, b"\x89PNG", "a PNG image"), (0, b"GIF8", "a GIF image"),
    (0, b"BM", "a BMP image"), (0, b"II*\x00", "a TIFF image"), (0, b"MM\x00*", "a TIFF image"),
    (8, b"WEBP", "a WebP image"), (4, b"ftyp", "an MP4 / MOV video"), (0, b"\x1a\x45\xdf\xa3", "a Matroska video"),
    (0, b"RIFF", "a RIFF file (AVI video / WAV audio)"), (0, b"%PDF", "a PDF document"),
    (0, b"\x08", "an ONNX model or another protobuf file"), (0, b"\x89HDF", "an HDF5 (Keras) file"),
    (0, b"version https://git-lfs", "a Git LFS pointer (run `git lfs pull` to fetch the file itself)"),
    (0, b"<", "an HTML / XML page (a failed download?)"),
)
_EXPECTED = ("expected a SAM 2 / SAM 2.1 / SAM / MobileSAM checkpoint: a .pt / .pth file saved with torch.save "
             "holding {'model': state_dict} or a bare state_dict, such as Meta's sam2.1_hiera_tiny.pt (name one, "
             "e.g. model=sam2.1_t.pt, to download it)")


def _sniff(path: Path) -> str | None:
    """What the file is when it is clearly not a PyTorch checkpoint (zip archive or pickle); None otherwise."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file (0 bytes; an interrupted download? delete it and download again)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip format / legacy pickle
        return None
    for offset, magic, what in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return what
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "not a zip archive or pickle as torch.save writes them"


def read_checkpoint(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with errors that say what the file is not and what was
    expected (never torch's advice to load with weights_only=False, which would run pickled code).

    Raises ValueError for a file that is not a checkpoint, holds pickled objects other than tensors, or is cut.
    """
    path = Path(path)
    what = _sniff(path)
    if what is not None:
        raise ValueError(f"cannot read checkpoint {path}: it is not a PyTorch checkpoint but {what}; masklet "
                         f"{_EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for corrupt / unsafe files
        text = str(exc)
        if "weights_only" in text or "Weights only" in text or type(exc).__name__ == "UnpicklingError":
            detail = next((line.strip() for line in text.splitlines()
                           if line.strip().startswith(("Unsupported global", "Unsupported operand"))), "")
            raise ValueError(f"cannot read checkpoint {path}: it is not a plain checkpoint of tensors: it holds pickled Python objects that "
                             f"masklet will not load{f' ({detail})' if detail else ''}; masklet reads checkpoints "
                             f"with weights_only=True so that no code inside a file runs; it {_EXPECTED}. If you trust the file, re-save its weights: "
                             "torch.save({'model': model.state_dict()}, 'weights.pt')") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {path} ({first}): the file is incomplete or damaged; delete it "
                         "and download it again") from None


def _caller_level() -> int:
    """`stacklevel` that attributes a warning to the first caller outside masklet (SAM(...), load_model(...) in the
    user's code), however deep inside masklet it is raised."""
    import sys

    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_name_matches(path: Path, variant: str) -> None:
    """Warn when a known checkpoint file name (sam2.1_l.pt, sam2.1_hiera_large.pt, ...) holds another variant."""
    from ..utils.downloads import variant_for_name
    from .variants import canonical_variant

    named = variant_for_name(path.name)
    if named is None:
        return
    try:
        named = canonical_variant(named)
    except ValueError:  # a name whose variant is not built here
        return
    if named != variant:
        warnings.warn(f"{path.name} is the file name of {named}, but {path} holds {variant} weights; loading it as "
                      f"{variant} (the variant is read from the weights, not from the name). Rename the file to "
                      f"avoid confusion.", VariantNameWarning, stacklevel=_caller_level())


def get_model(model: Any, device: Any = None, download: bool = True) -> tuple[nn.Module, Path | None]:
    """(model in eval mode, checkpoint path or None) from a checkpoint name or path, a loaded masklet model, or an
    object holding one in `.model` (masklet.SAM, SAM2VideoPredictor, an Ultralytics-style wrapper).

    Names: `sam2.1_t.pt` ... `sam2.1_l.pt`, `sam2_*.pt`, `sam_b/l/h.pt`, `mobile_sam.pt` and Meta's file names
    (`sam2.1_hiera_tiny.pt`, ...) are found as given, then in `$MASKLET_HOME` under the given and the official
    name, then downloaded there (download=False: FileNotFoundError instead). Any other existing file works; its
    variant is read from the weights. device: see `select_device` (None: a given module stays where it is, a
    loaded checkpoint goes to the first GPU if any).

    Raises UnknownWeightsError (FileNotFoundError and ValueError) for a missing file with an unknown name,
    ValueError for a file that is not a checkpoint or not a known SAM variant, TypeError for other objects.
    """
    if isinstance(model, nn.Module):
        net = model
    elif isinstance(model, (str, os.PathLike)):
        from ..utils.downloads import resolve_weights
        from .build import load_model

        path = resolve_weights(model) if download else resolve_weights(model, download=False)
        return load_model(path, device=select_device(device)), path
    elif isinstance(getattr(model, "model", None), nn.Module):
        net = model.model
    else:
        raise TypeError(f"model must be a checkpoint name or path (e.g. 'sam2.1_b.pt') or a loaded masklet model, "
                        f"got {type(model).__name__}")
    current = getattr(net, "device", None)
    if not isinstance(current, torch.device):
        current = next(iter(net.parameters()), torch.empty(0)).device
    dev = select_device(device, current)
    if dev != current:
        net.to(dev)
    return net.eval(), None
