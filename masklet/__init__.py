"""masklet: segment and track anything with SAM 2 / SAM 2.1, SAM and MobileSAM in plain PyTorch.

    from masklet import SAM, SAM2VideoPredictor
    results = SAM("sam2.1_b.pt")("image.jpg", points=[900, 370], labels=[1])

Every public name is imported on first use, so `import masklet` stays light (no torch, no OpenCV).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# Demo material shipped with the package (Apache-2.0, from Meta's SAM 2 examples; see NOTICE): truck.jpg and
# bedroom.mp4 (2 s, 20 frames). `masklet predict` / `masklet track` use them when no source= is given.
ASSETS: Path = Path(__file__).parent / "assets"

# public name -> module that defines it
_LAZY = {
    "SAM": "masklet.api.sam",
    "SAM2VideoPredictor": "masklet.api.video",
    "Results": "masklet.api.results",
    "build_model": "masklet.models.build",
    "load_model": "masklet.models.build",
    "compile_model": "masklet.models.build",
    "ImagePredictor": "masklet.predictors.image",
    "VideoPredictor": "masklet.predictors.video",
    "AutomaticMaskGenerator": "masklet.predictors.everything",
    "auto_annotate": "masklet.api.annotate",
    "val": "masklet.val",
    "train": "masklet.train",
}



def _available(module: str) -> bool:
    # find_spec imports only the (empty) parent packages, not the module itself
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


# `from masklet import *` must not fail on a part that is not installed (yet)
__all__ = ["__version__", "ASSETS"] + [name for name, module in _LAZY.items() if _available(module)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'masklet' has no attribute {name!r}")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a missing dependency inside the module: show the real error
            raise
        raise ImportError(f"masklet.{name} is not available in this installation ({module} is missing)") from None
    # `val` and `train` are the packages themselves (masklet.train is callable); the rest attributes of modules
    value = mod if name in ("val", "train") else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
