"""ONNX export of SAM 2 / SAM 2.1 / SAM / MobileSAM (`masklet.export(...)`, `masklet export ...`).

Needs the [export] extra (onnx, onnxruntime): pip install 'masklet[export]'. Imported lazily.
"""
from __future__ import annotations

from masklet._lazy import lazy_exports

_EXPORTS = {
    "exporter": ["export", "export_model", "check_export_args", "ExportError", "EXPORT_FORMATS", "MIN_OPSET",
                 "DEFAULT_OPSET", "export_cli", "EXPORT_KEYS"],
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = _names
