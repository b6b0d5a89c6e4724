"""Writers of `auto_annotate`: YOLO segmentation label files and COCO JSON with RLE masks. Split out of
`masklet.api.annotate`."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from .annotate_sources import _BoxSource, _CocoSource, _Instance, _Stats

COCO_FILE = "annotations.json"


def _polygon_line(cls: int, mask: np.ndarray) -> str | None:
    """`cls x1 y1 x2 y2 ...` normalised, from the outer contour of the mask's largest component; None when it has
    fewer than 3 points (YOLO labels keep one polygon per object)."""
    from ..utils.masks import largest_polygon

    poly = largest_polygon(mask)
    if len(poly) < 3:
        return None
    h, w = mask.shape
    xy = (poly.astype(np.float64) / [w, h]).clip(0.0, 1.0)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1))


class _YoloWriter:
    def __init__(self, output_dir: Any, source: _BoxSource) -> None:  # a Path or a RunDir (made at first write)
        self.output_dir, self.source = output_dir, source

    def write(self, stem: str, hw: tuple[int, int], instances: Iterable[_Instance], stats: _Stats,
              **_: Any) -> None:
        lines = []
        for inst in instances:
            line = _polygon_line(self.source.output_class(inst.cls, "yolo"), inst.mask)
            if line is None:
                stats.unusable_masks += 1
                continue
            lines.append(line)
        stats.written += len(lines)
        # An image without objects still gets its (empty) file: YOLO reads it as background, and the folder then
        # shows which images were processed.
        (self.output_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))

    def close(self, stats: _Stats) -> None:
        pass


class _CocoWriter:
    def __init__(self, output_dir: Any, source: _BoxSource) -> None:  # a Path or a RunDir (made at first write)
        self.output_dir, self.source = output_dir, source
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.used_classes: set[int] = set()

    def write(self, stem: str, hw: tuple[int, int], instances: Iterable[_Instance], stats: _Stats,
              file_name: str = "", extra: dict | None = None) -> None:
        from ..utils.rle import mask_to_coco_rle

        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name or stem, "height": int(hw[0]),
                            "width": int(hw[1]), **(extra or {})})
        for inst in instances:
            ys, xs = np.nonzero(inst.mask.any(1))[0], np.nonzero(inst.mask.any(0))[0]
            if len(ys) == 0:
                stats.unusable_masks += 1
                continue
            category = self.source.output_class(inst.cls, "coco")
            self.used_classes.add(category)
            # bbox as pycocotools' toBbox: the pixel extent, so w = last - first + 1
            ann = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": int(category),
                   "segmentation": mask_to_coco_rle(inst.mask), "area": int(inst.mask.sum()),
                   "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)], "iscrowd": 0}
            if inst.score is not None:
                ann["score"] = float(inst.score)
            if inst.track_id is not None:
                ann["track_id"] = int(inst.track_id)
            self.annotations.append(ann)
            stats.written += 1

    def close(self, stats: _Stats) -> None:
        source = self.source
        if isinstance(source, _CocoSource) and source.categories:
            categories = [{k: v for k, v in c.items()} for c in source.categories]
            known = {int(c["id"]) for c in categories}
            categories += [{"id": c, "name": str(c)} for c in sorted(self.used_classes - known)]
        else:
            ids = sorted(set(source.names) | self.used_classes)
            categories = [{"id": c, "name": source.names.get(c, str(c))} for c in ids]
        doc = {"info": {"description": "masklet auto_annotate"}, "images": self.images,
               "annotations": self.annotations, "categories": categories}
        (self.output_dir / COCO_FILE).write_text(json.dumps(doc))
