"""Validation datasets: DAVIS-layout video object segmentation folders and interactive (click) datasets,
plus reading and writing DAVIS palette PNGs.

Label maps (annotation PNGs) follow the DAVIS 2017 convention: the pixel value is the object id, 0 is
background and 255 is "void" (DAVIS marks uncertain borders with it; how it is scored is the protocol's rule, see
`masklet.val.protocols`: both official evaluators count it as background). A greyscale annotation whose only
values are 0 and 255 is read as a binary mask (255 -> object 1), because that is how DAVIS 2016 and most
single-object datasets store their masks; palette PNGs never get that treatment.

SA-V val/test store one binary PNG per object instead (Annotations_6fps/<video>/<object>/<frame>.png, object
folders named by their id, "000", "001", ...), because SA-V objects may overlap; `VOSDataset` reads both layouts.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from masklet.data.ordering import frame_order, natural_sorted

PathLike = Union[str, Path]

VOID_LABEL = 255
# More distinct ids than this in one video is taken as a sign that the PNGs are not label maps (anti-aliased or
# JPEG-damaged masks, images): DAVIS has at most 10 objects a video and MOSE / SA-V / YouTube-VOS far fewer than 100.
MAX_OBJECTS = 100
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_RESOLUTION_DIRS = ("480p", "Full-Resolution", "1080p")
# folder names: DAVIS / MOSE / YouTube-VOS first, then SA-V val/test (24 fps frames, annotations every 4th frame)
_IMAGE_DIRS = ("JPEGImages", "JPEGImages_24fps")
_ANNOTATION_DIRS = ("Annotations", "Annotations_6fps")
LAYOUTS = ("davis", "sav", "mose")


# ---------------------------------------------------------------------------------------------------------------
# Palette PNGs
# ---------------------------------------------------------------------------------------------------------------

def davis_palette(n: int = 256) -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map as an (n, 3) uint8 array.

    Colour i spreads the bits of i over the three channels: bit 0 of i goes to red, bit 1 to green, bit 2 to
    blue, as the most significant bit of each channel, then the next three bits as the next most significant
    bits, and so on. So 1 is dark red (128, 0, 0), 2 dark green, 3 olive, 4 navy, ...
    """
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c = i
        rgb = [0, 0, 0]
        for shift in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << shift
            c >>= 3
        palette[i] = rgb
    return palette


def write_palette_png(path: PathLike, label_map: np.ndarray, palette: Optional[np.ndarray] = None) -> Path:
    """Write an (H, W) label map (values 0-255) as a palette ("P" mode) PNG, DAVIS palette by default.

    `palette` may be an (N, 3) array or a flat [r, g, b, ...] list of up to 256 colours. Parent folders are
    created. Returns the path written.
    """
    path = Path(path)
    arr = np.asarray(label_map)
    if arr.ndim != 2:
        raise ValueError(f"label_map must be (H, W), got shape {arr.shape}; for several objects combine them into one "
                         "map with the object id as the pixel value")
    if arr.dtype != np.uint8:
        in_range = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255)
        if arr.dtype == np.bool_ or (np.issubdtype(arr.dtype, np.integer) and in_range):
            arr = arr.astype(np.uint8)
        else:
            raise ValueError(f"label_map must hold integer ids 0-255 (uint8), got dtype {arr.dtype}"
                             + (f" with values {arr.min()}..{arr.max()}" if arr.size else ""))
    pal = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(pal) > 256:
        raise ValueError(f"a PNG palette holds at most 256 colours, got {len(pal)}")
    img = Image.fromarray(np.ascontiguousarray(arr))  # mode "L"
    # putpalette turns an "L" image into "P" keeping the bytes as indices; convert("P") would re-quantise them.
    img.putpalette(pal.reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def _read_label_png(path: Path) -> tuple[np.ndarray, str]:
    """Read a label PNG as (uint8 array, PIL mode), rejecting colour images."""
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("P", "L"):
                arr = np.asarray(img)
            elif mode == "1":
                arr = np.asarray(img).astype(np.uint8)
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img)
                if arr.size and (arr.min() < 0 or arr.max() > 255):
                    raise ValueError(f"annotation {path} is a 16/32-bit greyscale PNG with ids up to {arr.max()}; "
                                     "masklet reads object ids 0-254 (255 = void). Save it as an 8-bit palette PNG "
                                     "with masklet.val.datasets.write_palette_png")
                arr = arr.astype(np.uint8)
            else:
                raise ValueError(f"annotation {path} is a {mode} image (colour or with alpha); annotations must be "
                                 "palette ('P') or "
                                 "greyscale PNGs whose pixel value is the object id (0 = background, 255 = void). "
                                 "Convert colour masks to ids and save them with "
                                 "masklet.val.datasets.write_palette_png")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read annotation {path}: not a readable PNG ({exc})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8), mode


def read_palette_png(path: PathLike) -> np.ndarray:
    """Read a palette or greyscale label PNG as an (H, W) uint8 array of the raw pixel values (palette indices).

    Colour (RGB/RGBA) PNGs are rejected with a ValueError: their colours are not object ids.
    """
    return _read_label_png(Path(path))[0]


def _check_size(arr: np.ndarray, path: Path, frame_hw: Optional[tuple[int, int]], frame: Optional[Path],
                what: str) -> None:
    if frame_hw is not None and arr.shape != frame_hw:
        of = f"its frame {frame}" if frame is not None else "the frame"
        raise ValueError(f"{what} {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but {of} is {frame_hw[1]}x"
                         f"{frame_hw[0]}; {what}s must have the frame's size (resize with nearest-neighbour "
                         "interpolation, or use the matching resolution folder)")


def read_label_map(path: PathLike, frame_hw: Optional[tuple[int, int]] = None, frame: Optional[PathLike] = None,
                   what: str = "annotation") -> np.ndarray:
    """An (H, W) uint8 label map (object ids, 0 background, 255 void) from a palette or greyscale PNG.

    A greyscale PNG holding only 0 and 255 is a binary mask and comes back as 0/1 (see the module docstring).
    With `frame_hw` the size is checked against the frame's (ValueError naming both files).
    """
    path = Path(path)
    arr, mode = _read_label_png(path)
    _check_size(arr, path, frame_hw, None if frame is None else Path(frame), what)
    if mode in ("L", "I;16", "I;16B", "I;16L", "I") and arr.size:
        values = np.unique(arr)
        if len(values) == 2 and values[0] == 0 and values[1] == VOID_LABEL:
            arr = (arr == VOID_LABEL).astype(np.uint8)
    return arr


def read_object_png(path: PathLike, frame_hw: Optional[tuple[int, int]] = None, frame: Optional[PathLike] = None,
                    what: str = "annotation") -> np.ndarray:
    """One object's (H, W) bool mask from an SA-V-style per-object PNG: any non-zero pixel is the object.

    More than two distinct values means the PNG is not one object's binary mask (a label map with several
    objects, or an anti-aliased mask): ValueError, as sav_benchmark refuses such files.
    """
    path = Path(path)
    arr, _ = _read_label_png(path)
    _check_size(arr, path, frame_hw, None if frame is None else Path(frame), what)
    values = np.unique(arr)
    if len(values) > 2:
        raise ValueError(f"{what} {path} holds {len(values)} distinct values ({', '.join(map(str, values[:6]))}"
                         f"{', ...' if len(values) > 6 else ''}); a per-object PNG holds one object: 0 background, "
                         "one non-zero value for the object. Save one binary PNG per object and frame")
    return arr != 0


# ---------------------------------------------------------------------------------------------------------------
# Video object segmentation (DAVIS layout)
# ---------------------------------------------------------------------------------------------------------------

def _frame_size(path: Path) -> tuple[int, int]:
    """(H, W) of a frame as `read_image` returns it: EXIF orientations 5-8 turn the stored image by 90 degrees."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read frame {path}: the file is corrupt or not an image ({exc})") from None
    return h, w


@dataclass
class VOSVideo:
    """One video of a VOS dataset: its frames, the annotated frames and the objects in them.

    frame_paths: the frames in time order (`masklet.data.ordering.frame_order`). annotation_paths: frame index -> annotation PNG
    (only annotated frames; label maps). object_paths (SA-V per-object layout instead): frame index ->
    {object id: binary PNG}, and object_dirs: object id -> its folder name ("000"). Object ids and first
    appearances are found by reading the annotations the first time they are needed, and cached.
    """

    name: str
    frame_paths: list[Path]
    annotation_paths: dict[int, Path]
    max_objects: Optional[int] = MAX_OBJECTS
    object_paths: Optional[dict[int, dict[int, Path]]] = None
    object_dirs: Optional[dict[int, str]] = None
    _object_ids: Optional[list[int]] = field(default=None, repr=False)
    _first: Optional[dict[int, int]] = field(default=None, repr=False)
    _size: Optional[tuple[int, int]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def frame_names(self) -> list[str]:
        """Frame file stems, e.g. "00000"; prediction PNGs are written under these names."""
        return [p.stem for p in self.frame_paths]

    @property
    def per_object(self) -> bool:
        """True for the SA-V layout: one binary PNG per object and frame (objects may overlap)."""
        return self.object_paths is not None

    @property
    def annotated_frames(self) -> list[int]:
        """Indices of the frames that have an annotation PNG (any object's, per-object layout), ascending."""
        return sorted(self.object_paths if self.per_object else self.annotation_paths)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the first frame (each annotation is checked against its own frame when read)."""
        if self._size is None:
            self._size = _frame_size(self.frame_paths[0])
        return self._size

    def read_frame(self, index: int) -> np.ndarray:
        """Frame `index` as an (H, W, 3) uint8 RGB array."""
        from masklet.data.images import read_image  # light, but keeps this module importable on its own

        return read_image(self.frame_paths[index])

    def read_annotation(self, index: int) -> np.ndarray:
        """The label map of frame `index` as an (H, W) uint8 array: object ids, 0 background, 255 void.

        A greyscale 0/255-only annotation is returned as 0/1 (binary mask, see the module docstring).
        Raises KeyError when the frame is not annotated and ValueError for colour PNGs or a size that differs
        from the frame's.
        """
        if self.per_object:
            raise ValueError(f"video {self.name!r} stores one PNG per object (SA-V layout): objects may overlap, so "
                             "there is no single label map; use gt_objects(index) or gt_mask(index, obj_id)")
        if index not in self.annotation_paths:
            raise KeyError(f"frame {index} of video {self.name!r} has no annotation; annotated frames: "
                           f"{self.annotated_frames[:10]}{' ...' if len(self.annotation_paths) > 10 else ''}")
        arr = read_label_map(self.annotation_paths[index], _frame_size(self.frame_paths[index]),
                             self.frame_paths[index])
        return arr

    def _object_mask(self, index: int, obj_id: int) -> np.ndarray:
        path = self.object_paths.get(index, {}).get(obj_id)  # type: ignore[union-attr]
        frame_hw = _frame_size(self.frame_paths[index])
        if path is None:  # this object has no PNG on a frame another object has: absent there
            return np.zeros(frame_hw, dtype=bool)
        return read_object_png(path, frame_hw, self.frame_paths[index])

    def gt_objects(self, index: int) -> dict[int, np.ndarray]:
        """{object id: (H, W) bool mask} of the objects present (non-empty) on annotated frame `index`.

        Label maps: every id other than 0 and 255 (void, not an object). Per-object layout: every object whose
        PNG has a non-zero pixel. Objects absent from the dict are absent from the frame.
        """
        if self.per_object:
            if index not in self.object_paths:  # type: ignore[operator]
                raise KeyError(f"frame {index} of video {self.name!r} has no annotation; annotated frames: "
                               f"{self.annotated_frames[:10]}")
            masks = {obj: self._object_mask(index, obj) for obj in sorted(self.object_paths[index])}  # type: ignore
            return {obj: m for obj, m in masks.items() if m.any()}
        labels = self.read_annotation(index)
        return {int(v): labels == v for v in np.unique(labels) if v not in (0, VOID_LABEL)}

    def gt_masks(self, index: int) -> dict[int, np.ndarray]:
        """{object id: (H, W) bool mask} for every object of the video (absent objects get an empty mask)."""
        if self.per_object:
            return {obj: self._object_mask(index, obj) for obj in self.object_ids}
        labels = self.read_annotation(index)
        return {obj: labels == obj for obj in self.object_ids}

    def gt_mask(self, index: int, obj_id: int) -> np.ndarray:
        """(H, W) bool mask of one object on an annotated frame."""
        if self.per_object:
            return self._object_mask(index, obj_id)
        return self.read_annotation(index) == obj_id

    def void_mask(self, index: int) -> np.ndarray:
        """(H, W) bool mask of the void (label 255) pixels of an annotated frame (none in the per-object layout)."""
        if self.per_object:
            return np.zeros(_frame_size(self.frame_paths[index]), dtype=bool)
        return self.read_annotation(index) == VOID_LABEL

    def _scan(self) -> None:
        first: dict[int, int] = {}
        for idx in self.annotated_frames:
            present = self.gt_objects(idx) if self.per_object else np.unique(self.read_annotation(idx))
            for v in present:
                v = int(v)
                if (self.per_object or v not in (0, VOID_LABEL)) and v not in first:
                    first[v] = idx
            if self.max_objects is not None and len(first) > self.max_objects:
                ids = sorted(first)
                raise ValueError(
                    f"video {self.name!r}: its annotations hold {len(ids)} distinct object ids "
                    f"({', '.join(map(str, ids[:8]))}, ...) by {self.annotation_paths[idx]}, more than "
                    f"max_objects={self.max_objects}. These PNGs do not look like label maps (one value per object, "
                    "0 = background, 255 = void): anti-aliased, resized with interpolation or JPEG-compressed "
                    "masks get many stray values. Save the masks with nearest-neighbour resizing as palette PNGs "
                    "(masklet.val.datasets.write_palette_png), or raise max_objects if the ids are genuine")
        if not first:
            example = (self.annotation_paths[self.annotated_frames[0]] if not self.per_object
                       else next(iter(self.object_paths[self.annotated_frames[0]].values())))  # type: ignore[index]
            raise ValueError(f"video {self.name!r}: none of its {len(self.annotated_frames)} annotated frames "
                             f"(e.g. {example}) contains an object (all pixels are 0 = background or 255 = void); "
                             "annotate at least one object")
        self._first = first
        self._object_ids = sorted(first)

    @property
    def object_ids(self) -> list[int]:
        """Sorted ids of all objects annotated anywhere in the (possibly truncated) video."""
        if self._object_ids is None:
            self._scan()
        return list(self._object_ids)

    def first_appearance(self, obj_id: int) -> int:
        """Index of the first annotated frame that contains `obj_id`: the frame on which the object is prompted."""
        if self._first is None:
            self._scan()
        if obj_id not in self._first:
            raise KeyError(f"object {obj_id} does not appear in video {self.name!r}; objects: {self.object_ids}")
        return self._first[obj_id]

    def prompt_frames(self) -> dict[int, int]:
        """{object id: frame index of its first appearance}, ordered by object id."""
        return {obj: self.first_appearance(obj) for obj in self.object_ids}

    def scored_frames(self, skip_first_last: bool = True) -> list[int]:
        """Annotated frames to score.

        skip_first_last=True leaves out the first and the last annotated frame, as both official evaluators do
        (davis2017-evaluation drops the first and last annotation PNG, sav_benchmark the first and last PNG of each
        object; on DAVIS every frame is annotated, so that is the video's first and last frame; on SA-V, annotated
        every 4th frame, the last annotated frame need not be the last frame). When that leaves nothing (1 or 2
        annotated frames, which neither evaluator can score) all annotated frames are returned. Which objects are
        scored on which of these frames is the protocol's rule (`masklet.val.protocols`).
        """
        frames = self.annotated_frames
        if skip_first_last and len(frames) > 2:
            return frames[1:-1]
        return frames

    def validate(self) -> None:
        """Read every annotation once, raising the first error (colour PNG, size mismatch, no objects)."""
        self._scan()


class VOSDataset:
    """A video object segmentation dataset in DAVIS, MOSE or SA-V layout.

    Layout: root/JPEGImages/<video>/<frame>.jpg and root/Annotations/<video>/<frame>.png (label maps, see the
    module docstring); SA-V's folder names JPEGImages_24fps / Annotations_6fps are accepted too, and so is
    SA-V's per-object layout Annotations*/<video>/<object>/<frame>.png (detected per video: object folders
    instead of PNGs). If JPEGImages holds a resolution folder ("480p", as in DAVIS) it is used (or pick one
    with `resolution`). Videos come from root/ImageSets/2017/<split>.txt, root/ImageSets/<split>.txt or
    root/sav_<split>.txt (SA-V) when that file exists, else from all folders in JPEGImages, sorted; `videos`
    restricts to the named ones. `layout` says which benchmark the folder looks like, and so which
    protocol scores it by default (`masklet.val.protocols.default_protocol`): "davis" (a resolution folder or
    ImageSets/2017, what davis2017-evaluation reads), "sav" (per-object PNG folders, SA-V folder names or list)
    or "mose" (plain JPEGImages/ + Annotations/ label maps: MOSE, YouTube-VOS-like and custom datasets).
    `max_videos` keeps the first N videos and `max_frames` the first N frames of each (objects are then the
    ones annotated within those frames). Frames and annotations are matched by file stem; not every frame
    needs an annotation (sparse annotations, as in YouTube-VOS). A video whose annotations hold more than
    `max_objects` distinct ids is rejected when read (see `MAX_OBJECTS`; None disables the check).
    """

    def __init__(self, root: PathLike, max_videos: Optional[int] = None, max_frames: Optional[int] = None,
                 videos: Optional[Sequence[str]] = None, split: str = "val", resolution: Optional[str] = None,
                 max_objects: Optional[int] = MAX_OBJECTS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOS dataset folder not found: {self.root}")
        img_root = next((self.root / d for d in _IMAGE_DIRS if (self.root / d).is_dir()), self.root / "JPEGImages")
        ann_root = next((self.root / d for d in _ANNOTATION_DIRS if (self.root / d).is_dir()),
                        self.root / "Annotations")
        for folder, what in ((img_root, "frames: JPEGImages/<video>/<frame>.jpg"),
                             (ann_root, "label PNGs: Annotations/<video>/<frame>.png")):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} not found: a DAVIS-layout dataset needs root/JPEGImages and "
                                        f"root/Annotations folders ({what}; SA-V's JPEGImages_24fps and "
                                        f"Annotations_6fps work too); check that {self.root} is the dataset root")
        if resolution is None:
            resolution = next((r for r in _RESOLUTION_DIRS if (img_root / r).is_dir() and (ann_root / r).is_dir()),
                              None)
        if resolution is not None:
            img_root, ann_root = img_root / resolution, ann_root / resolution
            if not img_root.is_dir() or not ann_root.is_dir():
                raise FileNotFoundError(f"resolution folder {resolution!r} not found in both {self.root / 'JPEGImages'} "
                                        f"and {self.root / 'Annotations'}")
        self.image_root, self.annotation_root = img_root, ann_root
        self.max_frames = max_frames
        self.max_objects = max_objects
        self._listing: Optional[Path] = None

        names = self._list_videos(split)
        if videos is not None:
            wanted = list(videos)
            unknown = [v for v in wanted if v not in names]
            if unknown:
                raise ValueError(f"videos {unknown} are not in {self.image_root} (or the split list); available: "
                                 f"{names[:20]}{' ...' if len(names) > 20 else ''}")
            names = wanted
        if max_videos is not None:
            names = names[:max_videos]
        if not names:
            raise ValueError(f"no videos found in {self.image_root}; expected one folder of frames per video")
        self.videos: list[VOSVideo] = [self._load_video(n) for n in names]
        self.layout = self._detect_layout(resolution)

    def _detect_layout(self, resolution: Optional[str]) -> str:
        if (any(v.per_object for v in self.videos) or self.image_root.name in _IMAGE_DIRS[1:]
                or (self._listing is not None and self._listing.name.startswith("sav_"))):
            return "sav"
        if resolution is not None or (self.root / "ImageSets" / "2017").is_dir():
            return "davis"
        return "mose"

    def _list_videos(self, split: str) -> list[str]:
        for listing in (self.root / "ImageSets" / "2017" / f"{split}.txt", self.root / "ImageSets" / f"{split}.txt",
                        self.root / f"sav_{split}.txt"):
            if listing.is_file():
                self._listing = listing
                names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
                missing = [n for n in names if not (self.image_root / n).is_dir()]
                if missing:
                    raise FileNotFoundError(f"{listing} lists videos missing from {self.image_root}: {missing[:10]}; "
                                            "download the full split or pass videos=[...] to pick the ones present")
                return names
        return natural_sorted(p.name for p in self.image_root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _load_video(self, name: str) -> VOSVideo:
        frame_dir = self.image_root / name
        frames = frame_order(p for p in frame_dir.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())
        if not frames:
            raise ValueError(f"video folder {frame_dir} holds no frames ({', '.join(FRAME_SUFFIXES)} files)")
        if self.max_frames is not None:
            frames = frames[:self.max_frames]
        ann_dir = self.annotation_root / name
        anns = natural_sorted(ann_dir.glob("*.png")) if ann_dir.is_dir() else []
        object_dirs = natural_sorted(d for d in ann_dir.iterdir() if d.is_dir()) if ann_dir.is_dir() else []
        if object_dirs:
            if anns:
                raise ValueError(f"{ann_dir} mixes label PNGs ({anns[0].name}) and object folders "
                                 f"({object_dirs[0].name}/); use one layout: <frame>.png label maps (DAVIS) or "
                                 "<object>/<frame>.png binary masks (SA-V)")
            return self._load_object_folders(name, frames, frame_dir, object_dirs)
        if not anns:
            raise ValueError(f"video {name!r} has {len(frames)} frames in {frame_dir} but no annotations: "
                             f"{ann_dir} is missing or holds no .png files. Add at least the first frame's label "
                             f"PNG ({ann_dir / (frames[0].stem + '.png')}) or leave the video out with videos=[...]")
        index_of = {p.stem: i for i, p in enumerate(frames)}
        all_stems = {p.stem for p in frame_dir.iterdir()}
        by_frame: dict[int, Path] = {}
        for a in anns:
            if a.stem in index_of:
                by_frame[index_of[a.stem]] = a
            elif a.stem not in all_stems:
                raise ValueError(f"annotation {a} has no frame with the same name in {frame_dir}; annotation and "
                                 "frame files must share their stem (e.g. 00000.jpg / 00000.png)")
            # else: the frame exists but was cut by max_frames
        if not by_frame:
            raise ValueError(f"video {name!r}: none of the first {len(frames)} frames has an annotation in {ann_dir}; "
                             "raise max_frames or annotate an earlier frame")
        return VOSVideo(name=name, frame_paths=frames, annotation_paths=by_frame, max_objects=self.max_objects)

    def _load_object_folders(self, name: str, frames: list[Path], frame_dir: Path,
                             object_dirs: list[Path]) -> VOSVideo:
        """SA-V layout: Annotations*/<video>/<object id>/<frame>.png, one binary mask per object and frame."""
        index_of = {p.stem: i for i, p in enumerate(frames)}
        all_stems = {p.stem for p in frame_dir.iterdir()}
        by_frame: dict[int, dict[int, Path]] = {}
        dirs: dict[int, str] = {}
        for d in object_dirs:
            if not d.name.isdigit():
                raise ValueError(f"object folder {d} is not named by a number; SA-V layout names object folders "
                                 "by their id (000, 001, ...)")
            obj = int(d.name)
            if obj in dirs:
                raise ValueError(f"object folders {d.parent / dirs[obj]} and {d} name the same object id {obj}")
            dirs[obj] = d.name
            for a in natural_sorted(d.glob("*.png")):
                if a.stem in index_of:
                    by_frame.setdefault(index_of[a.stem], {})[obj] = a
                elif a.stem not in all_stems:
                    raise ValueError(f"annotation {a} has no frame with the same name in {frame_dir}; annotation "
                                     "and frame files must share their stem (e.g. 00000.jpg / 00000.png)")
        if not by_frame:
            raise ValueError(f"video {name!r}: none of the first {len(frames)} frames has an annotation in its object "
                             f"folders {object_dirs[0].parent}/<object>/; raise max_frames or check the frame names")
        return VOSVideo(name=name, frame_paths=frames, annotation_paths={}, max_objects=None,
                        object_paths=by_frame, object_dirs=dirs)

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VOSVideo]:
        return iter(self.videos)

    def __getitem__(self, key: Union[int, str]) -> VOSVideo:
        if isinstance(key, str):
            for v in self.videos:
                if v.name == key:
                    return v
            raise KeyError(f"no video named {key!r}; videos: {[v.name for v in self.videos][:20]}")
        return self.videos[key]

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.videos]


# ---------------------------------------------------------------------------------------------------------------
# Interactive segmentation datasets
# ---------------------------------------------------------------------------------------------------------------

class InteractiveDataset:
    """Images with instance masks for the click protocol; iterating yields (image_path, [(H, W) bool masks]).

    Two layouts:

    * Folder: root/images/<stem>.jpg and root/masks/ with either one instance-id PNG per image,
      masks/<stem>.png (0 background, 255 ignored, every other value one instance, in increasing id order),
      or one PNG per instance, masks/<stem>_<k>.png (non-zero = the instance; ordered by k). When both an
      image "a" and an image "a_1" exist, masks/a_1.png belongs to image "a_1".
    * COCO: a COCO instances JSON (pass it as `root`, or as `annotations` with `root` the image folder;
      a folder holding exactly one .json and no masks/ is also accepted). Images are looked up as
      <image folder>/<file_name>, then <image folder>/images/<file_name>. Polygons are filled with
      cv2.fillPoly (vertices rounded to pixels, so borders may differ by a pixel from pycocotools);
      RLE goes through masklet.utils.rle.coco_rle_to_mask. Crowd annotations (iscrowd=1) are skipped.

    Instances smaller than `min_area` pixels are dropped; images left without instances are skipped and
    listed in `self.skipped`. `max_samples` keeps the first N images (natural file-name order / image id).
    """

    def __init__(self, root: PathLike, annotations: Optional[PathLike] = None, max_samples: Optional[int] = None,
                 min_area: int = 1):
        self.root = Path(root)
        self.min_area = int(min_area)
        self.skipped: list[Path] = []
        self._coco: Optional[dict] = None
        if not self.root.exists():
            raise FileNotFoundError(f"interactive dataset not found: {self.root}")
        ann = Path(annotations) if annotations is not None else None
        if ann is None and self.root.is_file() and self.root.suffix.lower() == ".json":
            ann, self.root = self.root, self.root.parent
        if ann is None and self.root.is_dir() and not (self.root / "masks").is_dir():
            jsons = sorted(self.root.glob("*.json"))
            if len(jsons) == 1:
                ann = jsons[0]
        if ann is not None:
            self._init_coco(ann)
        else:
            self._init_folder()
        if max_samples is not None:
            self._items = self._items[:max_samples]
        if not self._items:
            raise ValueError(f"no images with instance masks found in {self.root}")

    # -- folder layout --------------------------------------------------------------------------------------------
    def _init_folder(self) -> None:
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise FileNotFoundError(f"{self.root} is not an interactive dataset: expected images/ and masks/ folders "
                                    "(images/<name>.jpg with masks/<name>.png or masks/<name>_<k>.png), or a COCO "
                                    "JSON file")
        images = natural_sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"no images in {img_dir} ({', '.join(IMAGE_SUFFIXES)})")
        stems = {p.stem for p in images}
        per_instance: dict[str, list[tuple[int, Path]]] = {}
        for m in mask_dir.glob("*.png"):
            match = re.fullmatch(r"(.+)_(\d+)", m.stem)
            # An exact image-stem match wins: masks/a_1.png belongs to image "a_1" when there is one.
            if match and m.stem not in stems and match.group(1) in stems:
                per_instance.setdefault(match.group(1), []).append((int(match.group(2)), m))
        self._items: list[tuple[Path, object]] = []
        for img in images:
            whole = mask_dir / f"{img.stem}.png"
            if whole.is_file():
                self._items.append((img, ("ids", whole)))
            elif img.stem in per_instance:
                files = [p for _, p in sorted(per_instance[img.stem])]
                self._items.append((img, ("instances", files)))
            else:
                self.skipped.append(img)

    def _folder_masks(self, image: Path, spec) -> list[np.ndarray]:
        kind, src = spec
        hw = _frame_size(image)
        masks: list[np.ndarray] = []
        paths = [src] if kind == "ids" else src
        for p in paths:
            arr = read_palette_png(p)
            if arr.shape != hw:
                raise ValueError(f"mask {p} is {arr.shape[1]}x{arr.shape[0]} (WxH) but image {image} is "
                                 f"{hw[1]}x{hw[0]}; masks must have the image's size")
            if kind == "ids":
                masks.extend(arr == v for v in np.unique(arr) if v not in (0, VOID_LABEL))
            else:
                masks.append(arr != 0)
        return masks

    # -- COCO layout ----------------------------------------------------------------------------------------------
    def _init_coco(self, ann: Path) -> None:
        if not ann.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {ann}")
        try:
            data = json.loads(ann.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{ann} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"{ann} is not a COCO instances file: it needs 'images' and 'annotations' lists")
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            if a.get("iscrowd", 0):
                continue
            by_image.setdefault(a["image_id"], []).append(a)
        img_dir = self.root if self.root.is_dir() else ann.parent
        self._items = []
        for info in sorted(data["images"], key=lambda d: d["id"]):
            path = self._find_image(img_dir, info["file_name"])
            if info["id"] not in by_image:
                self.skipped.append(path)
                continue
            self._items.append((path, ("coco", info, by_image[info["id"]])))

    @staticmethod
    def _find_image(img_dir: Path, file_name: str) -> Path:
        for cand in (img_dir / file_name, img_dir / "images" / file_name):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"image {file_name!r} from the COCO file not found in {img_dir} or "
                                f"{img_dir / 'images'}; pass the image folder as root")

    @staticmethod
    def _coco_mask(seg, hw: tuple[int, int], where: str) -> np.ndarray:
        import cv2

        h, w = hw
        if isinstance(seg, list):
            mask = np.zeros((h, w), dtype=np.uint8)
            polys = [np.round(np.asarray(p, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
                     for p in seg if len(p) >= 6]
            if polys:
                cv2.fillPoly(mask, polys, 1)
            return mask.astype(bool)
        if isinstance(seg, dict) and "counts" in seg:
            from masklet.utils.rle import coco_rle_to_mask  # written separately; imported only when RLE is used

            mask = np.asarray(coco_rle_to_mask(seg)).astype(bool)
            if mask.shape != (h, w):
                raise ValueError(f"{where}: RLE size {mask.shape} differs from the image size {(h, w)}")
            return mask
        raise ValueError(f"{where}: unsupported segmentation {type(seg).__name__}; expected a list of polygons or an "
                         "RLE dict with 'size' and 'counts'")

    def _coco_masks(self, image: Path, info: dict, anns: list[dict]) -> list[np.ndarray]:
        hw = (int(info["height"]), int(info["width"])) if "height" in info and "width" in info else _frame_size(image)
        return [self._coco_mask(a["segmentation"], hw, f"annotation {a.get('id')} of image {info['file_name']}")
                for a in anns if "segmentation" in a]

    # -- access ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> tuple[Path, list[np.ndarray]]:
        image, spec = self._items[index]
        if spec[0] == "coco":
            masks = self._coco_masks(image, spec[1], spec[2])
        else:
            masks = self._folder_masks(image, spec)
        return image, [m for m in masks if int(m.sum()) >= self.min_area]

    def __iter__(self) -> Iterator[tuple[Path, list[np.ndarray]]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def image_paths(self) -> list[Path]:
        return [p for p, _ in self._items]
