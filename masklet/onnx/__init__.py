"""Predictors that run exported graphs (`masklet.export(...)`) on onnxruntime and numpy only: torch is never
imported. Needs onnxruntime: pip install 'masklet[export]'.

    from masklet.onnx import OnnxImagePredictor
    predictor = OnnxImagePredictor("runs/export/sam2.1_hiera_t")
    predictor.set_image(image)
    masks, iou, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
"""
from __future__ import annotations

from masklet._lazy import lazy_exports

_EXPORTS = {
    "session": ["ExportedModel", "load_exported"],
    "image": ["OnnxImagePredictor", "preprocess_numpy"],
    "video": ["OnnxVideoPredictor"],
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = _names
