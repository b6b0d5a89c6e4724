"""Scoring protocols of the video object segmentation benchmarks: which objects are scored on which frames, and
how void pixels count. The per-frame J and F arithmetic is shared (`masklet.val.metrics`); the protocols differ
only in these rules, which were read from the official evaluators:

* ``"davis"`` - davis2017-evaluation (semi-supervised), behind the DAVIS 2017 val/test-dev J&F tables.
  Objects: ids 1..M, M = the largest id on the first annotated frame, including "phantom" ids in that range
  that are not annotated anywhere (ids 1 and 3 without 2 score object 2 too: its ground truth is empty, so an
  empty prediction scores J = F = 1 on every frame and one covering anything scores 0 there). Frames: every
  annotated frame except the first and the last, for every object, also the frames before an object appears
  (empty ground truth: an empty prediction scores 1 there). Void (255): background. The toolkit sets void pixels
  to 0 before it splits the objects, so the void mask it passes to J and F is always empty: a prediction over
  void is a false positive in J, and its border is a boundary in F.
* ``"sav"`` - sav_benchmark.py of the SAM 2 repository (adapted from vos-benchmark), behind the SA-V val/test
  and MOSE tables. Objects: the ids present in the ground truth on at least one scored frame; phantom ids are
  not scored, nor is an object annotated only on the first (or last) annotated frame. Frames: the annotated
  frames except the first and the last (per object folder in the SA-V layout); each object from the first of
  them on which it appears in the ground truth *or* in the prediction, to the last. So an object that appears
  late and is missed entirely scores J = F = 0, not the 1's of the frames before it appears. Void: there is no
  void in SA-V or MOSE; a 255 in a label map is background here (sav_benchmark itself would score it as an
  object with id 255). The official tool prints J, F and J&F only; masklet adds recall and decay over the
  same frames.

Both: J&F = (J + F) / 2, dataset means are over all objects of all videos (not per video first).

Cases the official tools cannot score get one documented behaviour here:

* a video with 1 or 2 annotated frames (dropping the first and last leaves nothing) is scored on all of them;
* DAVIS 2016-style greyscale 0/255 masks are object 1, in annotations and predictions alike (the DAVIS toolkit
  turns 255 into background and finds no object);
* under "davis", an id that first appears after the first annotated frame with a larger id than any on it is
  scored on every scored frame like the others (the toolkit ignores it, and stops with an error when a
  prediction holds it); so is an object whose id the predictions never hold (the toolkit stops when the largest
  predicted id differs from M, e.g. when the last object is lost on every scored frame);
* an SA-V object folder whose masks are all empty is not an object (sav_benchmark stops on it), under either
  protocol; under "sav" an object annotated only on the first or last annotated frame is not scored either
  (sav_benchmark skips it with label maps and stops on it with per-object folders).

Decay: masklet's `statistics` bins frames with integer indices; the DAVIS toolkit's `db_statistics` stores
its bin edges as uint8, which wraps past frame 255, so its decay for objects scored on 256+ frames is NaN or
comes from the wrong frames. masklet's is the intended one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Union

import numpy as np

from .metrics import boundary_f_measure, region_similarity
from .report import ObjectScores

if TYPE_CHECKING:
    from .datasets import VOSDataset, VOSVideo

PROTOCOLS = ("davis", "sav")
Prediction = Union[np.ndarray, Mapping[int, np.ndarray]]


def check_protocol(protocol: Optional[str]) -> Optional[str]:
    """A protocol name, lower-cased; None stays None (detect it). ValueError for anything else."""
    if protocol is None:
        return None
    name = str(protocol).strip().lower()
    if name not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not a scoring protocol: use 'davis' (DAVIS 2017 tables: ids 1..max "
                         "of the first frame, all frames, void = background) or 'sav' (SA-V and MOSE tables: each "
                         "object from its first appearance), or leave it out to detect it from the dataset layout")
    return name


def default_protocol(dataset: "VOSDataset") -> str:
    """The protocol of the benchmark whose layout `dataset` has: "davis" for the DAVIS layout (a resolution folder
    such as JPEGImages/480p, or ImageSets/2017), "sav" for SA-V (per-object PNG folders, JPEGImages_24fps,
    sav_<split>.txt) and MOSE-style plain JPEGImages/ + Annotations/ folders."""
    return "davis" if dataset.layout == "davis" else "sav"


def resolve_protocol(protocol: Optional[str], dataset: "VOSDataset") -> str:
    return check_protocol(protocol) or default_protocol(dataset)


def davis_object_ids(video: "VOSVideo") -> list[int]:
    """Objects the "davis" protocol scores: 1..(largest id on the first annotated frame), phantom ids included,
    plus any id first appearing later (which the toolkit cannot score). Per-object (SA-V) videos: their objects."""
    if video.per_object:
        return video.object_ids
    on_first = video.gt_objects(video.annotated_frames[0])
    top = max(on_first, default=0)
    return sorted(set(range(1, top + 1)) | set(video.object_ids))


class VideoScorer:
    """Per-frame J and F of one video under one protocol, fed one predicted frame at a time in frame order.

    `add(frame_idx, prediction)` takes an (H, W) label map (object ids) or {object id: (H, W) bool mask}
    (objects missing from the dict predicted empty); frames outside `frames` are ignored, so a caller may feed
    every frame. `results()` returns the per-object `ObjectScores` (ValueError when a scored frame was never
    fed). J and F are computed on raw masks: void counts as background under both protocols.
    """

    def __init__(self, video: "VOSVideo", protocol: str = "davis", bound_th: float = 0.008) -> None:
        self.video, self.bound_th = video, bound_th
        self.protocol = check_protocol(protocol) or "davis"
        self.frames = video.scored_frames()
        self._wanted = set(self.frames)
        candidates = davis_object_ids(video) if self.protocol == "davis" else video.object_ids
        self.objects = candidates
        # davis: every object from the first scored frame; sav: from its first appearance (gt or prediction)
        self._started: set[int] = set(candidates) if self.protocol == "davis" else set()
        self._in_gt: set[int] = set()
        self.first_scored: dict[int, int] = {}
        self._j: dict[int, list[float]] = {o: [] for o in candidates}
        self._f: dict[int, list[float]] = {o: [] for o in candidates}
        self._fed: list[int] = []

    def wants(self, frame_idx: int) -> bool:
        return frame_idx in self._wanted

    def add(self, frame_idx: int, prediction: Prediction) -> None:
        if frame_idx not in self._wanted:
            return
        if self._fed and frame_idx <= self._fed[-1]:
            raise ValueError(f"video {self.video.name!r}: frame {frame_idx} fed after frame {self._fed[-1]}; feed "
                             "each scored frame once, in frame order")
        gt = self.video.gt_objects(frame_idx)
        hw = next(iter(gt.values())).shape if gt else None
        label = None
        if isinstance(prediction, np.ndarray):
            label = prediction
            if label.ndim != 2:
                raise ValueError(f"a predicted label map must be (H, W), got shape {label.shape}")
            hw_pred = label.shape
        else:
            hw_pred = next((np.shape(m) for m in prediction.values()), None)
        if hw is None:
            hw = hw_pred or self.video.gt_mask(frame_idx, self.objects[0]).shape
        if hw_pred is not None and tuple(hw_pred) != tuple(hw):
            raise ValueError(f"video {self.video.name!r}, frame {self.video.frame_names[frame_idx]}: the prediction is "
                             f"{hw_pred[1]}x{hw_pred[0]} but the annotation is {hw[1]}x{hw[0]} (WxH); predictions "
                             "must have the annotation's size")
        empty = np.zeros(hw, dtype=bool)

        def pred_mask(obj: int) -> np.ndarray:
            if label is not None:
                return label == obj
            m = prediction.get(obj)  # type: ignore[union-attr]
            return empty if m is None else np.asarray(m, dtype=bool)

        preds = {o: pred_mask(o) for o in self.objects}
        if self.protocol == "sav":
            self._in_gt.update(o for o in gt if o in self._j)
            self._started.update(o for o in self.objects if o in gt or preds[o].any())
        for obj in self.objects:
            if obj not in self._started:
                continue
            self.first_scored.setdefault(obj, frame_idx)
            target = gt.get(obj, empty)
            self._j[obj].append(region_similarity(preds[obj], target))
            self._f[obj].append(boundary_f_measure(preds[obj], target, self.bound_th))
        self._fed.append(frame_idx)

    def results(self) -> list[ObjectScores]:
        missing = [f for f in self.frames if f not in set(self._fed)]
        if missing:
            names = [self.video.frame_names[i] for i in missing[:5]]
            raise ValueError(f"video {self.video.name!r}: no prediction was scored for frames {names}"
                             f"{' ...' if len(missing) > 5 else ''}; every scored frame needs one")
        objects = self.objects if self.protocol == "davis" else [o for o in self.objects if o in self._in_gt]
        known = set(self.video.object_ids)
        return [ObjectScores(self.video.name, obj, self._j[obj], self._f[obj],
                             prompt_frame=self.video.first_appearance(obj) if obj in known else None)
                for obj in objects]
