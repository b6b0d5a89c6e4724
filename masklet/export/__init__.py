"""ONNX export of SAM 2 / SAM 2.1 / SAM / MobileSAM: `masklet.export(model=..., format="onnx")`, `masklet export ...`.

Needs the [export] extra (onnx, onnxruntime): pip install 'masklet[export]'. Names are imported lazily. The
package itself is callable, so `masklet.export(...)` is the export function even once this package is
imported (a package and a function cannot share the name `masklet.export` otherwise).
"""
from __future__ import annotations

import sys
import types
from typing import Any

from masklet._lazy import lazy_exports

_EXPORTS = {
    "exporter": ["export", "export_model", "check_export_args", "ExportError", "EXPORT_FORMATS", "MIN_OPSET",
                 "DEFAULT_OPSET", "export_cli", "EXPORT_KEYS"],
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = _names


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .exporter import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
