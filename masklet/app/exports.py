"""Export the app's annotations (COCO RLE, YOLO-seg, DAVIS palette PNGs, annotated MP4) and import them back.

Objects keep their ids across formats: COCO `track_id`, the DAVIS palette index, and the line order of YOLO files
recorded in `objects.json` next to them. Class labels become COCO categories / YOLO class indices in order of
first use.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..utils.masks import largest_polygon, polygons_to_mask
from ..utils.rle import coco_rle_to_mask, mask_to_coco_rle
from ..val.datasets import write_palette_png
from .project import write_json_atomic
from .session import Annotator, AppError

FORMATS = ("coco", "yolo", "davis", "mp4")
MAX_IMPORT_MEMBERS = 100_000


def _labels(objects: list[dict]) -> list[str]:
    labels: list[str] = []
    for obj in objects:
        if obj["label"] not in labels:
            labels.append(obj["label"])
    return labels


def _annotated(annotator: Annotator):
    """(frame, object, bool mask) for every stored non-empty mask, in frame then object order."""
    _, record = annotator._require_media()
    for t in sorted(record.frames):
        for obj in record.state["objects"]:
            mask = annotator.mask_array(t, obj["id"])
            if mask is not None and mask.any():
                yield t, obj, mask


def export(annotator: Annotator, fmt: str) -> Path:
    """Write the open media's annotations in `fmt` under PROJECT/exports/<media>/; returns the file or folder."""
    if fmt not in FORMATS:
        raise AppError(422, f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    with annotator.lock:
        media, _ = annotator._require_media()
        out = annotator.project.export_dir(media.rel)
        return {"coco": _coco, "yolo": _yolo, "davis": _davis, "mp4": _mp4}[fmt](annotator, out)


def _coco(annotator: Annotator, out: Path) -> Path:
    media, record = annotator._require_media()
    labels = _labels(record.state["objects"])
    images = [{"id": t + 1, "file_name": media.frame_name(t) + (".jpg" if media.kind == "video" else media.path.suffix),
               "height": media.height, "width": media.width, "frame_index": t} for t in range(media.num_frames)]
    anns = []
    for t, obj, mask in _annotated(annotator):
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        entry = record.frames[t][str(obj["id"])]
        anns.append({"id": len(anns) + 1, "image_id": t + 1, "category_id": labels.index(obj["label"]) + 1,
                     "segmentation": mask_to_coco_rle(mask), "area": int(mask.sum()),
                     "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)],
                     "iscrowd": 0, "track_id": obj["id"], "score": entry.get("score"), "source": entry.get("source")})
    doc = {"info": {"description": f"masklet app: {media.rel}", "video": media.rel if media.kind == "video" else None},
           "images": images, "annotations": anns,
           "categories": [{"id": i + 1, "name": name} for i, name in enumerate(labels)],
           "objects": record.state["objects"]}
    path = out / "coco.json"
    write_json_atomic(path, doc)
    return path


def _yolo(annotator: Annotator, out: Path) -> Path:
    media, record = annotator._require_media()
    folder = out / "yolo"
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    labels = _labels(record.state["objects"])
    lines: dict[int, list[str]] = {t: [] for t in range(media.num_frames)}
    order: dict[int, list[int]] = {t: [] for t in range(media.num_frames)}
    for t, obj, mask in _annotated(annotator):
        poly = largest_polygon(mask)
        if len(poly) < 3:
            continue
        xy = (poly.astype(np.float64) / [media.width, media.height]).clip(0, 1).reshape(-1)
        lines[t].append(f"{labels.index(obj['label'])} " + " ".join(f"{v:.6f}" for v in xy))
        order[t].append(obj["id"])
    for t, rows in lines.items():
        (folder / "labels" / f"{media.frame_name(t)}.txt").write_text("".join(r + "\n" for r in rows))
    (folder / "classes.txt").write_text("".join(name + "\n" for name in labels))
    write_json_atomic(folder / "objects.json", {"objects": record.state["objects"],
                                                "lines": {media.frame_name(t): ids for t, ids in order.items() if ids}})
    return folder


def _davis(annotator: Annotator, out: Path) -> Path:
    media, _ = annotator._require_media()
    folder = out / "davis" / Path(media.rel).stem
    folder.mkdir(parents=True, exist_ok=True)
    label_maps: dict[int, np.ndarray] = {}
    for t, obj, mask in _annotated(annotator):
        label_maps.setdefault(t, np.zeros((media.height, media.width), dtype=np.uint8))[mask] = obj["id"]
    for t in range(media.num_frames):
        label = label_maps.get(t, np.zeros((media.height, media.width), dtype=np.uint8))
        write_palette_png(folder / f"{media.frame_name(t)}.png", label)
    return folder


def _mp4(annotator: Annotator, out: Path) -> Path:
    import cv2

    from .session import overlay_rgba

    media, _ = annotator._require_media()
    path = out / f"{Path(media.rel).stem}_annotated.mp4"
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(media.fps or 1.0),
                             (media.width, media.height))
    if not writer.isOpened():
        raise AppError(500, "OpenCV cannot write MP4 (mp4v) files on this machine")
    try:
        for t in range(media.num_frames):
            frame = media.frame(t).astype(np.float32)
            over = overlay_rgba(annotator, t, alpha=128)
            a = over[..., 3:4].astype(np.float32) / 255.0
            blended = (frame * (1 - a) + over[..., :3] * a).astype(np.uint8)
            writer.write(cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------- import
def _frame_index(annotator: Annotator) -> dict[str, int]:
    media, _ = annotator._require_media()
    names = {media.frame_name(t): t for t in range(media.num_frames)}
    if media.kind == "image":
        names[media.path.name] = 0
    return names


def _match(names: dict[str, int], file_name: str) -> int | None:
    base = Path(file_name).name
    return names.get(base, names.get(Path(base).stem))


def read_import(annotator: Annotator,
                files: dict[str, bytes]) -> tuple[dict[int, dict[int, np.ndarray]], dict[int, dict]]:
    """Parse uploaded/imported files (name -> bytes) into ({frame: {obj_id: mask}}, {obj_id: object fields}).

    Accepted: a COCO JSON (ours or any with RLE/polygon segmentations whose file names are the frame names), DAVIS
    palette PNGs named by frame, or YOLO-seg .txt files named by frame (with classes.txt / objects.json)."""
    media, _ = annotator._require_media()
    h, w = media.height, media.width
    names = _frame_index(annotator)
    masks: dict[int, dict[int, np.ndarray]] = {}
    objects: dict[int, dict] = {}
    jsons = {n: b for n, b in files.items() if n.endswith(".json") and Path(n).name != "objects.json"}
    pngs = {n: b for n, b in files.items() if n.lower().endswith(".png")}
    txts = {n: b for n, b in files.items() if n.endswith(".txt") and Path(n).name != "classes.txt"}
    if jsons:
        for name, data in jsons.items():
            try:
                doc = json.loads(data)
                cats = {c["id"]: c["name"] for c in doc.get("categories", [])}
                images = {im["id"]: im for im in doc["images"]}
                known = {o["id"]: o for o in doc.get("objects", []) if isinstance(o, dict) and "id" in o}
                for k, ann in enumerate(doc["annotations"]):
                    t = _match(names, images[ann["image_id"]]["file_name"])
                    if t is None:
                        continue
                    oid = int(ann.get("track_id", k + 1))
                    seg = ann["segmentation"]
                    if isinstance(seg, dict):
                        if list(seg["size"]) != [h, w]:
                            raise AppError(422, f"{name}: mask size {seg['size']} is not the media's {[h, w]}")
                        m = coco_rle_to_mask(seg)
                    else:
                        m = polygons_to_mask([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg], h, w)
                    masks.setdefault(t, {})[oid] = masks.get(t, {}).get(oid, np.zeros((h, w), bool)) | m
                    objects.setdefault(oid, known.get(oid, {"label": cats.get(ann.get("category_id"), "object")}))
            except AppError:
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                raise AppError(422, f"{name} is not a COCO annotation file this app can read ({type(exc).__name__}: "
                                    f"{exc}); expected {{'images': [...], 'annotations': [...], 'categories': [...]}}"
                               ) from None
    elif pngs:
        from PIL import Image

        for name, data in pngs.items():
            t = _match(names, name)
            if t is None:
                continue
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if img.mode not in ("P", "L"):
                        raise ValueError(f"it is a {img.mode} image, not palette/greyscale")
                    label = np.asarray(img, dtype=np.uint8)
            except (OSError, ValueError) as exc:
                raise AppError(422, f"{name} is not a palette PNG of object ids: {exc}") from None
            if label.shape != (h, w):
                raise AppError(422, f"{name} is {label.shape[1]}x{label.shape[0]}, the media is {w}x{h}")
            for oid in np.unique(label):
                if 0 < oid < 255:
                    masks.setdefault(t, {})[int(oid)] = label == oid
                    objects.setdefault(int(oid), {})
    elif txts:
        classes = next((b.decode().split() for n, b in files.items() if Path(n).name == "classes.txt"), [])
        side = next((json.loads(b) for n, b in files.items() if Path(n).name == "objects.json"), {})
        known = {o["id"]: o for o in side.get("objects", [])}
        for name, data in txts.items():
            t = _match(names, name)
            if t is None:
                continue
            ids = side.get("lines", {}).get(Path(name).stem)
            for k, line in enumerate(data.decode().splitlines()):
                parts = line.split()
                if len(parts) < 7:
                    continue
                try:
                    cls, xy = int(parts[0]), np.asarray([float(v) for v in parts[1:]]).reshape(-1, 2) * [w, h]
                except ValueError:
                    raise AppError(422, f"{name} line {k + 1} is not 'class x1 y1 x2 y2 ...'") from None
                oid = int(ids[k]) if ids and k < len(ids) else k + 1
                masks.setdefault(t, {})[oid] = polygons_to_mask([xy], h, w)
                objects.setdefault(oid, known.get(oid, {"label": classes[cls] if cls < len(classes) else str(cls)}))
    if not masks:
        raise AppError(422, "nothing to import: no COCO JSON, DAVIS PNG or YOLO .txt whose names match this media's "
                            "frames")
    return masks, objects


def unpack(filename: str, data: bytes, max_bytes: int) -> dict[str, bytes]:
    """An uploaded file as {name: bytes}; a .zip is read in memory (never extracted), with its total size capped."""
    if not filename.lower().endswith(".zip"):
        return {Path(filename).name: data}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if len(infos) > MAX_IMPORT_MEMBERS or sum(i.file_size for i in infos) > max_bytes:
                raise AppError(413, f"{filename} unpacks to more than the upload limit ({max_bytes // 1_000_000} MB)")
            return {i.filename: zf.read(i) for i in infos}
    except zipfile.BadZipFile:
        raise AppError(422, f"{filename} is not a valid zip file") from None


def apply_import(annotator: Annotator, masks: dict[int, dict[int, np.ndarray]], objects: dict[int, dict]) -> dict:
    """Replace the open media's annotation by the imported masks (one undo step). Each object's first annotated
    frame becomes its mask prompt, so tracking and corrections continue from there."""
    from .session import COLORS, _entry

    with annotator.lock:
        annotator._require_idle()
        _, record = annotator._require_media()
        if any(not 0 < oid < 255 for oid in objects):
            raise AppError(422, f"object ids must be 1-254, got {sorted(objects)}")
        before = record.snapshot(sorted(set(record.frames) | set(masks)))
        record.state["objects"] = [{"id": oid, "name": f.get("name") or f"object {oid}", "label": f.get("label")
                                    or "object", "color": f.get("color") or COLORS[(oid - 1) % len(COLORS)],
                                    "hidden": bool(f.get("hidden", False))} for oid, f in sorted(objects.items())]
        record.state["next_id"] = max(objects) + 1
        record.state["prompts"] = {}
        for t in list(record.frames):
            record.frames[t] = {}
        first: dict[int, int] = {}
        for t in sorted(masks):
            for oid, m in masks[t].items():
                first.setdefault(oid, t)
                source = "prompt" if first[oid] == t else "import"
                record.frames.setdefault(t, {})[str(oid)] = _entry(m, None, source)
        for oid, t in first.items():
            record.state["prompts"].setdefault(str(oid), {})[str(t)] = {"points": None, "box": None, "choice": None,
                                                                      "mask": True}
        for t in set(before["frames"]) | {str(t) for t in masks}:
            record.write_frame(int(t))
        record.push_undo(before)
        record.save()
        annotator.dirty = annotator.video_state is not None
        return {"objects": len(objects), "frames": len(masks)}


def read_folder(folder: Path, max_bytes: int) -> dict[str, bytes]:
    """The annotation files of a file or folder (and its labels/ subfolder) as {name: bytes}, size capped."""
    paths = [folder] if folder.is_file() else sorted(
        p for d in (folder, folder / "labels") if d.is_dir() for p in d.iterdir()
        if p.is_file() and p.suffix.lower() in (".json", ".png", ".txt"))
    if sum(p.stat().st_size for p in paths) > max_bytes:
        raise AppError(413, f"{folder.name} holds more than the import limit ({max_bytes // 1_000_000} MB)")
    return {p.name: p.read_bytes() for p in paths}
