"""Fine-tuning SAM 2: `masklet.train(model=..., data=..., epochs=...)` and `masklet train key=value ...`.

Submodules: `loss` (the official training loss), `prompts` (prompt simulation), `forward` (the training
forward passes over the model's own pieces), `data` (datasets and augmentation), `optim` (AdamW groups and
schedule), `trainer` (the loop, DDP, checkpoints, metrics). Names are resolved lazily; the package itself is
callable, so `masklet.train(...)` works however it was imported.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from masklet._lazy import lazy_exports

_EXPORTS = {
    "trainer": ["train", "train_cli", "Trainer", "TRAIN_KEYS", "plot_metrics"],
    "loss": ["SAM2Loss"],
    "prompts": ["PromptRecipe", "box_prompt", "error_click", "plan_clip"],
    "data": ["Augment", "ImageTrainDataset", "VideoTrainDataset", "YoloSegFolder", "detect_format"],
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = _names


class _CallableModule(types.ModuleType):
    """`import masklet.train` binds the package where `masklet.train` (the function) is expected: calling the
    package runs the function."""

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        return self.train(**kwargs)


sys.modules[__name__].__class__ = _CallableModule
