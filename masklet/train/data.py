"""Training data: image datasets (COCO JSON, YOLO segmentation labels, image + mask PNG folders) and video
datasets (DAVIS layout: DAVIS, MOSE, SA-V converted to palette PNGs), with a simple augmentation.

Readers are the ones `masklet.val` uses (`InteractiveDataset`, `VOSDataset`) plus a YOLO-seg reader. A sample
is a clip: images (T, 3, S, S) normalised as the model expects and masks (T, N, S, S) bool, with T = 1 for
images. Augmentation, the same for every frame of a clip (so motion stays coherent):

* horizontal flip with probability `flip` (0.5);
* scale jitter: a random crop keeping `scale_jitter[0]`..100 % of each side (default 0.7), at a random place,
  then the square resize to S x S that SAM 2 always does;
* colour jitter: brightness x U(1 - b, 1 + b), contrast x U(1 - c, 1 + c), saturation x U(1 - s, 1 + s)
  with (b, c, s) = `color_jitter` (0.1, 0.05, 0.05 as in the official fine-tuning config).

Every random draw comes from a generator seeded by (seed, epoch, sample index): a run is reproducible and a
resumed run sees the same data as an uninterrupted one, whatever the number of DataLoader workers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import read_image
from ..data.ordering import natural_sorted
from ..data.preprocess import SAM2_INPUT

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Augment:
    """The augmentation described in the module docstring; `Augment.none()` switches it off (validation)."""

    flip: float = 0.5
    scale_jitter: tuple[float, float] = (0.7, 1.0)
    color_jitter: tuple[float, float, float] = (0.1, 0.05, 0.05)

    @staticmethod
    def none() -> Augment:
        return Augment(0.0, (1.0, 1.0), (0.0, 0.0, 0.0))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one sample in one epoch (independent of workers, ranks and resumption)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def make_clip(frames: Sequence[np.ndarray], masks: np.ndarray, size: int, augment: Augment,
              g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(T frames (H, W, 3) uint8, masks (T, N, H, W) bool) -> augmented images (T, 3, S, S) normalised with
    SAM 2's mean/std and masks (T, N, S, S) bool."""
    h, w = frames[0].shape[:2]
    flip = augment.flip > 0 and float(torch.rand((), generator=g)) < augment.flip
    sy, sx = (_uniform(g, *augment.scale_jitter) for _ in range(2))
    ch, cw = max(1, round(h * sy)), max(1, round(w * sx))
    y0 = int(torch.randint(0, h - ch + 1, (), generator=g))
    x0 = int(torch.randint(0, w - cw + 1, (), generator=g))
    b, c, s = augment.color_jitter
    bright, contrast, sat = _uniform(g, 1 - b, 1 + b), _uniform(g, 1 - c, 1 + c), _uniform(g, 1 - s, 1 + s)
    crops = torch.from_numpy(np.stack([f[y0:y0 + ch, x0:x0 + cw] for f in frames])).permute(0, 3, 1, 2)
    if (ch, cw) != (size, size):
        # resized as uint8 (channels-last, as the crops come): torch's antialiased bilinear kernel is vectorised
        # for that case, ~7x faster than in float32 (0.46 -> 0.07 ms for a 128 px image on one AVX2 core); the
        # result is rounded to the nearest of the 256 levels, as an image library's resize would round it
        crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    imgs = crops.float() / 255
    m = torch.from_numpy(np.ascontiguousarray(masks[:, :, y0:y0 + ch, x0:x0 + cw])).float()
    m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) > 0.5
    if flip:
        imgs, m = imgs.flip(-1), m.flip(-1)
    if (bright, contrast, sat) != (1.0, 1.0, 1.0):
        imgs = color_jitter(imgs, bright, contrast, sat)
    mean = torch.tensor(SAM2_INPUT.mean).view(1, 3, 1, 1)
    std = torch.tensor(SAM2_INPUT.std).view(1, 3, 1, 1)
    return ((imgs - mean) / std).contiguous(), m


def color_jitter(imgs: torch.Tensor, bright: float, contrast: float, sat: float) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> brightness x `bright`, then contrast x `contrast` around each image's mean grey,
    then saturation x `sat` around each pixel's grey (ITU-R 601 luma), clamped to [0, 1].

    The three steps are linear in the pixel, so they run as one 3 x 3 map plus an offset, one pass over the
    pixels instead of a dozen (a 128 px training sample from PNG to tensors: 5.2 -> 4.8 ms on one AVX2 core).
    With luma weights w (summing to 1): x -> s c b x + (1 - s) c b (w . x) + (1 - c) b (w . mean x)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=imgs.dtype)
    mix = (sat * torch.eye(3, dtype=imgs.dtype) + (1 - sat) * w.expand(3, 3)) * (contrast * bright)
    offset = (1 - contrast) * bright * (imgs.mean((2, 3)) @ w)  # (T,): the mean grey after brightness
    out = torch.einsum("ij,tjhw->tihw", mix, imgs) + offset.view(-1, 1, 1, 1)
    return out.clamp_(0, 1)


# ---------------------------------------------------------------------------------------------- readers
class YoloSegFolder:
    """Ultralytics YOLO segmentation labels: root/images[/split]/<stem>.jpg with root/labels[/split]/<stem>.txt,
    one instance per line: `class x1 y1 x2 y2 ...`, polygon vertices normalised to [0, 1]. Indexing gives
    (image path, [(H, W) bool masks]) like `masklet.val.InteractiveDataset`; images without labels are skipped."""

    def __init__(self, root: str | Path, split: str | None = None, min_area: int = 1) -> None:
        self.root = Path(root)
        img_dir, lbl_dir = self.root / "images", self.root / "labels"
        if split is not None and (img_dir / split).is_dir():
            img_dir, lbl_dir = img_dir / split, lbl_dir / split
        if not img_dir.is_dir() or not lbl_dir.is_dir():
            raise FileNotFoundError(f"{self.root} is not a YOLO segmentation dataset: expected images/ and labels/ "
                                    "folders (optionally with train/ and val/ inside)")
        self.min_area = min_area
        images = natural_sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        self.items = [(p, lbl_dir / p.relative_to(img_dir).with_suffix(".txt")) for p in images]
        self.items = [(p, lbl) for p, lbl in self.items if lbl.is_file() and lbl.stat().st_size > 0]
        if not self.items:
            raise ValueError(f"no labelled images in {img_dir} (labels expected in {lbl_dir}/<stem>.txt)")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Path, list[np.ndarray]]:
        from ..utils.masks import polygons_to_mask

        image, label = self.items[index]
        from PIL import Image

        with Image.open(image) as im:
            w, h = im.size
        masks = []
        for n, line in enumerate(label.read_text().splitlines()):
            values = line.split()
            if not values:
                continue
            try:
                coords = np.asarray([float(v) for v in values[1:]], dtype=np.float64)
            except ValueError:
                raise ValueError(f"{label} line {n + 1}: expected 'class x1 y1 x2 y2 ...' numbers") from None
            if len(coords) < 6 or len(coords) % 2:
                raise ValueError(f"{label} line {n + 1}: a polygon needs at least 3 (x, y) pairs; box-only YOLO "
                                 "detection labels cannot train a segmentation model (make masks first with "
                                 "masklet annotate)")
            mask = polygons_to_mask([coords.reshape(-1, 2) * [w, h]], h, w)
            if mask.sum() >= self.min_area:
                masks.append(mask)
        return image, masks


def detect_format(data: str | Path) -> str:
    """"coco", "masks" (images/ + masks/), "yolo" (images/ + labels/) or "vos" (JPEGImages/ + Annotations/)."""
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"dataset not found: {root} (relative paths start at {Path.cwd()})")
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "coco"
        raise ValueError(f"data={root} is a file but not a COCO JSON; pass a dataset folder or a COCO JSON")
    if (root / "JPEGImages").is_dir():
        return "vos"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "yolo"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "masks"
    if len(list(root.glob("*.json"))) == 1:
        return "coco"
    raise ValueError(f"cannot tell the layout of {root}: expected a COCO JSON, images/ + masks/ (PNG masks), "
                     "images/ + labels/ (YOLO segmentation) or JPEGImages/ + Annotations/ (DAVIS / MOSE / SA-V)")


# ---------------------------------------------------------------------------------------------- datasets
def _cached(cache: dict | None, key: Any, read: Any) -> Any:
    """read(), kept in `cache` under `key` when there is a cache (the datasets' `cache=True`)."""
    if cache is None:
        return read()
    if key not in cache:
        cache[key] = read()
    return cache[key]


class ImageTrainDataset(torch.utils.data.Dataset):
    """Images with instance masks as one-frame clips; up to `max_objects` instances drawn per image per epoch.
    `cache=True` keeps each decoded image and its masks (uint8 / bool arrays) in this process after the first
    read, so later epochs skip the file decoding."""

    def __init__(self, data: str | Path, imgsz: int, augment: Augment = Augment(), max_objects: int = 3,
                 seed: int = 0, split: str | None = "train", cache: bool = False) -> None:
        fmt = detect_format(data)
        if fmt == "vos":
            raise ValueError(f"{data} is a video dataset; it trains the video model (mode='video')")
        if fmt == "yolo":
            self.reader: Any = YoloSegFolder(data, split)
        else:
            from ..val.datasets import InteractiveDataset

            self.reader = InteractiveDataset(data)
        self.format, self.imgsz, self.augment = fmt, imgsz, augment
        self.max_objects, self.seed, self.epoch = max_objects, seed, 0
        self.cache: dict[int, tuple[np.ndarray, list[np.ndarray]]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.reader)

    def _read(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        def decode() -> tuple[np.ndarray, list[np.ndarray]]:
            path, masks = self.reader[index]
            return read_image(path), masks

        return _cached(self.cache, index, decode)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = sample_generator(self.seed, self.epoch, index)
        image, masks = self._read(index)
        if not masks:  # an image whose instances are all below min_area: one empty object, trained as absent
            masks = [np.zeros(image.shape[:2], dtype=bool)]
        pick = torch.randperm(len(masks), generator=g)[:self.max_objects].tolist()
        stacked = np.stack([masks[i] for i in pick])[None]
        return make_clip([image], stacked, self.imgsz, self.augment, g)


class VideoTrainDataset(torch.utils.data.Dataset):
    """Clips of `num_frames` consecutive annotated frames from a DAVIS-layout dataset, with up to `max_objects`
    of the objects visible on the clip's first frame (as the official `RandomUniformSampler`). `cache=True`
    keeps each decoded frame and label map in this process after the first read (see `ImageTrainDataset`)."""

    def __init__(self, data: str | Path, imgsz: int, num_frames: int = 8, augment: Augment = Augment(),
                 max_objects: int = 3, seed: int = 0, split: str = "train", cache: bool = False) -> None:
        from ..val.datasets import VOSDataset

        self.dataset = VOSDataset(data, split=split)
        self.imgsz, self.num_frames, self.augment = imgsz, num_frames, augment
        self.max_objects, self.seed, self.epoch = max_objects, seed, 0
        self.cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def _read(self, index: int, video: Any, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(frame (H, W, 3) uint8, label map (H, W)) of frame t of video `index`."""
        return _cached(self.cache, (index, t), lambda: (video.read_frame(t), video.read_annotation(t)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = sample_generator(self.seed, self.epoch, index)
        video = self.dataset[index]
        annotated = video.annotated_frames
        count = min(self.num_frames, len(annotated))
        start = int(torch.randint(0, len(annotated) - count + 1, (), generator=g))
        read = [self._read(index, video, t) for t in annotated[start:start + count]]
        labels = [label for _, label in read]
        visible = [int(v) for v in np.unique(labels[0]) if v not in (0, 255)]
        if not visible:  # nothing on the first frame: take the video's objects (trained as absent there)
            visible = video.object_ids
        pick = [visible[i] for i in torch.randperm(len(visible), generator=g)[:self.max_objects].tolist()]
        masks = np.stack([np.stack([lab == obj for obj in pick]) for lab in labels])
        return make_clip([frame for frame, _ in read], masks, self.imgsz, self.augment, g)


def collate_images(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One-frame clips -> images (B, 3, S, S), masks (N, S, S) of all objects, image_index (N,)."""
    images = torch.cat([b[0] for b in batch])
    masks = torch.cat([b[1][0] for b in batch])
    index = torch.cat([torch.full((b[1].shape[1],), i, dtype=torch.long) for i, b in enumerate(batch)])
    return {"images": images, "masks": masks, "image_index": index}


def collate_video(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Clips stay separate (their objects and lengths differ): a list of {"images" (T, 3, S, S), "masks"
    (T, N, S, S)}."""
    return [{"images": b[0], "masks": b[1]} for b in batch]


class RankSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, split across DDP ranks (each rank gets the same number of samples)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world, self.epoch = n, seed, rank, world, 0

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        per_rank = max(1, math.ceil(self.n / self.world))
        perm = (perm * self.world)[:per_rank * self.world]  # pad by repeating so every rank has as many
        return iter(perm[self.rank::self.world])

    def __len__(self) -> int:
        return max(1, math.ceil(self.n / self.world))
