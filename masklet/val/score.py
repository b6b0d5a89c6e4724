"""Score predictions that already exist - masklet's own or any other tracker's - against a VOS dataset, under the
benchmark's protocol (`masklet.val.protocols`), the way davis2017-evaluation and sav_benchmark score a results
folder.

Prediction layouts, chosen per video by what the folder holds:

* label maps (DAVIS, MOSE): <pred>/<video>/<frame>.png, palette or greyscale PNGs whose pixel value is the object
  id (0 background; a greyscale PNG holding only 0 and 255 is object 1, like the annotations).
* per-object (SA-V): <pred>/<video>/<object>/<frame>.png, one binary PNG per object (non-zero = the object),
  object folders named by id ("000" or "0" alike).

Frames are matched to the annotations by file name; only the scored frames need a prediction (extra PNGs, e.g.
the 24 fps frames between SA-V's 6 fps annotations, are ignored). A `masklet val` output folder can be given as
it is: its masks/ subfolder is used.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .datasets import MAX_OBJECTS, VOSDataset, VOSVideo, read_label_map, read_object_png
from .protocols import Prediction, VideoScorer, resolve_protocol
from .report import VOS_COLUMNS, ObjectScores, format_table, per_object_table, per_video_table, summary

PathLike = Union[str, os.PathLike]


class PredictionFolder:
    """A folder of predicted masks, one subfolder per video (see the module docstring for the layouts)."""

    def __init__(self, root: PathLike) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"prediction folder not found: {root} (relative paths start at {Path.cwd()})")
        # a `masklet val` run folder holds its PNGs in masks/ next to the CSV files
        if (root / "masks").is_dir() and (root / "results.json").is_file():
            root = root / "masks"
        self.root = root

    def video_dir(self, video: VOSVideo) -> Path:
        d = self.root / video.name
        if not d.is_dir():
            raise FileNotFoundError(f"no predictions for video {video.name!r}: {d} is missing. Predict every video of "
                                    "the dataset, or pick the predicted ones with videos=[...]")
        return d

    def per_object(self, video: VOSVideo) -> bool:
        d = self.video_dir(video)
        return any(p.is_dir() for p in d.iterdir())

    def object_dirs(self, video: VOSVideo) -> dict[int, Path]:
        out: dict[int, Path] = {}
        for p in sorted(self.video_dir(video).iterdir()):
            if p.is_dir():
                if not p.name.isdigit():
                    raise ValueError(f"prediction folder {p} is not named by an object id; per-object predictions "
                                     "go to <pred>/<video>/<object id>/<frame>.png")
                out[int(p.name)] = p
        return out

    def read(self, video: VOSVideo, frame_idx: int, objects: Optional[dict[int, Path]] = None) -> Prediction:
        """The prediction for one frame: a label map, or {object id: bool mask} when `objects` (the video's
        per-object prediction folders) is given. FileNotFoundError names a missing PNG."""
        stem = video.frame_names[frame_idx]
        hw = video.size
        if objects is None:
            path = self.video_dir(video) / f"{stem}.png"
            if not path.is_file():
                raise FileNotFoundError(f"prediction {path} not found: frame {stem} of {video.name!r} is scored, so it "
                                        "needs a predicted mask")
            return read_label_map(path, hw, video.frame_paths[frame_idx], what="prediction")
        masks: dict[int, np.ndarray] = {}
        for obj, folder in objects.items():
            path = folder / f"{stem}.png"
            if not path.is_file():
                raise FileNotFoundError(f"prediction {path} not found: frame {stem} of {video.name!r} is scored, so "
                                        f"object {folder.name} needs a predicted mask there")
            masks[obj] = read_object_png(path, hw, video.frame_paths[frame_idx], what="prediction")
        return masks


def score_video(video: VOSVideo, pred: PredictionFolder, protocol: str) -> list[ObjectScores]:
    """Per-object J and F of one video's predictions under `protocol`."""
    scorer = VideoScorer(video, protocol)
    objects = pred.object_dirs(video) if pred.per_object(video) else None
    if objects is None and video.per_object and 0 in video.object_ids:
        raise ValueError(f"video {video.name!r} has an object with id 0 ({video.object_dirs[0]}/), which a label-map "
                         "prediction cannot hold (0 is background); save the predictions per object: "
                         f"{pred.root / video.name}/<object>/<frame>.png")
    if objects is not None:
        missing = [o for o in video.object_ids if o not in objects]
        if missing:
            names = [video.object_dirs[o] if video.object_dirs else str(o) for o in missing]
            raise FileNotFoundError(f"no predictions for object(s) {', '.join(names)} of video {video.name!r}: "
                                    f"{pred.root / video.name} needs one folder per object, <object>/<frame>.png")
    for frame_idx in scorer.frames:
        scorer.add(frame_idx, pred.read(video, frame_idx, objects))
    return scorer.results()


def score(data: PathLike, pred: PathLike, protocol: Optional[str] = None, save_dir: Optional[PathLike] = None,
          verbose: bool = True, *, videos: Optional[Sequence[str]] = None, max_videos: Optional[int] = None,
          split: str = "val", max_objects: Optional[int] = MAX_OBJECTS) -> dict[str, Any]:
    """Score the predicted masks in `pred` against the VOS dataset `data` (no model is run).

    data: dataset root (DAVIS, MOSE or SA-V layout, see `VOSDataset`). pred: prediction folder (layouts in the
    module docstring; a `masklet val` output folder works as is). protocol: "davis" or "sav" (what each scores
    and how void counts: `masklet.val.protocols`); None picks the dataset layout's own. videos / max_videos pick
    videos; split selects the image-set list. save_dir: where per_object.csv, per_video.csv, summary.csv and
    results.json go (default runs/val/vos, vos2, ...).

    Returns the same dict as `masklet.val.run(task="vos")`: {"task", "summary", "per_video", "per_object",
    "save_dir", "files", "meta"}. Raises FileNotFoundError for a missing folder or PNG (named), ValueError for
    PNGs of the wrong size or kind and for an unknown protocol.
    """
    from .report import write_vos_report
    from .runner import _make_save_dir, _progress

    if not Path(data).exists():
        raise FileNotFoundError(f"dataset not found: {data} (relative paths start at {Path.cwd()})")
    folder = PredictionFolder(pred)
    dataset = VOSDataset(data, max_videos=max_videos, videos=videos, split=split, max_objects=max_objects)
    name = resolve_protocol(protocol, dataset)
    for video in dataset:
        video.validate()
        folder.video_dir(video)  # every video's folder is checked before any scoring
    scores: list[ObjectScores] = []
    for video in _progress(dataset, desc="videos", unit="video", disable=not verbose):
        scores.extend(score_video(video, folder, name))
    object_rows = per_object_table(scores, binning="davis")
    video_rows = [{"video": r["video"], "objects": r["objects"], "frames": len(dataset[r["video"]]),
                   **{c: r[c] for c in VOS_COLUMNS}} for r in per_video_table(object_rows)]
    summary_row = summary(object_rows)
    meta = {"task": "vos", "protocol": name, "layout": dataset.layout, "data": str(data), "pred": str(folder.root),
            "videos": dataset.names}
    out = _make_save_dir(save_dir, "vos")
    files = dict(write_vos_report(out, object_rows, video_rows, summary_row, meta))
    if verbose:
        print(format_table(video_rows, title=f"\nPer video ({name} protocol)"))
        print(format_table(summary_row, title=f"\nSummary ({folder.root} on {dataset.root})"))
        print(f"\nResults saved to {out}")
    return {"task": "vos", "summary": summary_row, "per_video": video_rows, "per_object": object_rows,
            "save_dir": out, "files": files, "meta": meta}
