"""An exported model folder: its metadata and one onnxruntime session per graph, opened on first use."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXTRA_HINT = "pip install 'masklet[export]'"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"the ONNX predictors need onnxruntime, which is not installed: {EXTRA_HINT}") from None
    return onnxruntime


class ExportedModel:
    """metadata.json and the graphs of a folder written by `masklet.export`.

    providers: onnxruntime execution providers (default CPU); threads: intra-op threads (default onnxruntime's).
    Raises FileNotFoundError when the folder or a needed graph is missing.
    """

    def __init__(self, folder: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "metadata.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: pass the folder written by masklet.export(...) "
                                    "(e.g. runs/export/sam2.1_hiera_t)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.threads = threads
        self._sessions: dict[str, Any] = {}

    @property
    def is_sam2(self) -> bool:
        return self.meta["family"] == "sam2"

    def session(self, name: str):
        if name not in self._sessions:
            ort = _onnxruntime()
            path = self.folder / f"{name}.onnx"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: the export folder is incomplete (re-run masklet export)")
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            options.log_severity_level = 3  # shape-merge notices of the exporter's graphs are not the user's business
            self._sessions[name] = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._sessions[name]

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run graph `name` on numpy inputs; returns {output name: array}."""
        sess = self.session(name)
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))


def load_exported(folder: str | Path | ExportedModel, **kwargs: Any) -> ExportedModel:
    return folder if isinstance(folder, ExportedModel) else ExportedModel(folder, **kwargs)
