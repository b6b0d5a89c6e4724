"""Validation: DAVIS J&F for video object segmentation and NoC / mIoU-vs-clicks for interactive segmentation.

`masklet.val.run(model=..., data=..., task="vos" | "interactive")` evaluates a model end to end (see
`masklet.val.runner`); `masklet.val.score(data=..., pred=...)` scores predicted masks that already exist.
Submodules: `metrics` (J, F, statistics, click protocol), `protocols` (the DAVIS and SA-V/MOSE scoring rules),
`datasets` (DAVIS / MOSE / SA-V layouts and interactive datasets, palette PNGs), `score` (prediction folders),
`report` (tables, CSV/JSON, plot) and `runner` (`run`, `val_cli`).
Names are resolved lazily so that importing `masklet.val` does not import torch, cv2 or read anything.
"""
from __future__ import annotations

from masklet._lazy import lazy_exports

_EXPORTS = {
    "metrics": ["region_similarity", "boundary_f_measure", "boundary_precision_recall", "boundary_map", "disk",
                "boundary_tolerance", "score_sequence", "statistics", "next_click", "noc", "miou_curve", "auc",
                "interactive_summary"],
    "datasets": ["VOSDataset", "VOSVideo", "InteractiveDataset", "write_palette_png", "read_palette_png",
                 "read_label_map", "read_object_png", "davis_palette", "VOID_LABEL", "MAX_OBJECTS", "LAYOUTS"],
    "protocols": ["PROTOCOLS", "VideoScorer", "davis_object_ids", "default_protocol", "check_protocol"],
    "score": ["score", "score_video", "PredictionFolder"],
    "report": ["ObjectScores", "object_row", "per_object_table", "per_video_table", "summary", "interactive_table",
               "format_table", "print_table", "write_csv", "write_json", "write_vos_report",
               "write_interactive_report", "plot_miou_curve", "VOS_COLUMNS"],
    "runner": ["run", "val_cli", "click_session", "VAL_KEYS", "VAL_HELP"],
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = _names
