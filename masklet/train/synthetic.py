"""Generated training data: textured shapes over real backgrounds, as images (instance masks) and as clips of
shapes that move and pass behind each other. Used by `bench/train_synthetic.py` to show that training learns
and by tests that need ground truth for real photos. Everything is drawn from one numpy seed.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..val.datasets import write_palette_png


def load_backgrounds(data_dir: str | Path, frames_per_video: int = 6, max_side: int = 480) -> list[np.ndarray]:
    """RGB photos from `data_dir`/images and a few frames of each `data_dir`/videos/*.mp4, longest side
    `max_side` at most."""
    from ..data.images import read_image

    data_dir = Path(data_dir)
    out: list[np.ndarray] = []
    for path in sorted((data_dir / "images").glob("*.jpg")):
        out.append(read_image(path))
    for path in sorted((data_dir / "videos").glob("*.mp4")):
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 100
        for k in range(frames_per_video):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k * total / frames_per_video))
            ok, frame = cap.read()
            if ok:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
    if not out:
        raise FileNotFoundError(f"no images or videos in {data_dir} (expected images/*.jpg, videos/*.mp4)")
    resized = []
    for img in out:
        scale = min(1.0, max_side / max(img.shape[:2]))
        resized.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else img)
    return resized


def random_crop(rng: np.random.Generator, image: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random crop of `image` covering 40-100 % of its shorter side, resized to (h, w)."""
    ih, iw = image.shape[:2]
    side = int(min(ih, iw) * rng.uniform(0.4, 1.0))
    ch, cw = side, min(iw, int(side * w / h))
    y, x = rng.integers(0, ih - ch + 1), rng.integers(0, iw - cw + 1)
    return cv2.resize(image[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA)


def texture(rng: np.random.Generator, backgrounds: Sequence[np.ndarray], h: int, w: int) -> np.ndarray:
    """A shape's fill: a crop of a photo, tinted with a random colour and contrast (or striped)."""
    tex = random_crop(rng, backgrounds[rng.integers(len(backgrounds))], h, w).astype(np.float32)
    tint = rng.uniform(0.2, 1.0, 3) * 255
    tex = tex.mean(-1, keepdims=True) * rng.uniform(0.3, 0.8) + tint * rng.uniform(0.4, 0.8)
    if rng.random() < 0.3:
        period = rng.integers(4, 12)
        stripes = ((np.arange(w)[None, :] + np.arange(h)[:, None] * rng.choice([-1, 1])) // period) % 2
        tex = tex * (0.7 + 0.3 * stripes[..., None])
    return np.clip(tex, 0, 255).astype(np.uint8)


def shape_mask(rng: np.random.Generator, h: int, w: int, size: float, center: tuple[float, float] | None = None,
               kind: str | None = None) -> np.ndarray:
    """A filled ellipse, rotated rectangle or random star-shaped polygon of about `size` pixels across."""
    kind = kind or rng.choice(["ellipse", "rect", "polygon"])
    cx, cy = center if center is not None else (rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2))
    canvas = np.zeros((h, w), np.uint8)
    angle = rng.uniform(0, 180)
    if kind == "ellipse":
        axes = (int(size / 2 * rng.uniform(0.6, 1.0)), int(size / 2 * rng.uniform(0.4, 1.0)))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, angle, 0, 360, 1, -1)
    elif kind == "rect":
        box = cv2.boxPoints(((cx, cy), (size * rng.uniform(0.5, 1.0), size * rng.uniform(0.4, 1.0)), angle))
        cv2.fillPoly(canvas, [np.round(box).astype(np.int32)], 1)
    else:
        n = rng.integers(5, 9)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size / 2 * rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], -1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def shapes_image(rng: np.random.Generator, backgrounds: Sequence[np.ndarray], h: int = 160, w: int = 160,
                 max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An image with 1..max_shapes textured shapes over a photo crop, and its instance-id map (later shapes
    occlude earlier ones; a shape left with under 1/3 of its area, or 80 pixels or fewer, in view stays drawn
    but is background in the id map)."""
    image = random_crop(rng, backgrounds[rng.integers(len(backgrounds))], h, w)
    ids = np.zeros((h, w), np.uint8)
    areas = []
    for _ in range(rng.integers(1, max_shapes + 1)):
        mask = shape_mask(rng, h, w, rng.uniform(0.25, 0.6) * min(h, w))
        image[mask] = texture(rng, backgrounds, h, w)[mask]
        areas.append(int(mask.sum()))
        ids[mask] = len(areas)
    kept = np.zeros_like(ids)
    k = 0
    for i, area in enumerate(areas, 1):
        in_view = ids == i
        visible = int(in_view.sum())
        # a shape mostly hidden behind later ones is an ambiguous target (a click on a sliver between two
        # occluders); it stays drawn but becomes background
        if visible > 80 and 3 * visible >= area:
            k += 1
            kept[in_view] = k
    return image, kept


def write_image_dataset(root: str | Path, n: int, backgrounds: Sequence[np.ndarray], seed: int,
                        size: int = 160) -> Path:
    """root/images/<i>.jpg and root/masks/<i>.png (instance ids), the layout `masklet val` and training read."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, ids = shapes_image(rng, backgrounds, size, size)
        if ids.max() == 0:
            image, ids = shapes_image(rng, backgrounds, size, size)
        cv2.imwrite(str(root / "images" / f"{i:05d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(root / "masks" / f"{i:05d}.png"), ids)
    return root


def occlusion_clip(rng: np.random.Generator, backgrounds: Sequence[np.ndarray], frames: int = 12, h: int = 160,
                   w: int = 160) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two textured shapes crossing a photo: object 1 (in front, larger) and object 2 (behind) move in
    opposite directions so that object 2 passes behind object 1 around the middle of the clip, then comes
    out again. Returns frames (H, W, 3) and label maps (0 background, 1, 2)."""
    background = random_crop(rng, backgrounds[rng.integers(len(backgrounds))], h, w)
    size_front, size_back = rng.uniform(0.4, 0.55) * h, rng.uniform(0.22, 0.32) * h
    tex_front, tex_back = texture(rng, backgrounds, h, w), texture(rng, backgrounds, h, w)
    kind_front, kind_back = rng.choice(["ellipse", "rect", "polygon"], 2)
    shape_rng = int(rng.integers(1 << 30))
    y = rng.uniform(0.35, 0.65) * h
    meet = rng.uniform(0.4, 0.6) * w
    span = rng.uniform(0.3, 0.4) * w
    out_frames, labels = [], []
    for t in range(frames):
        s = t / (frames - 1)  # 0..1
        x_front = meet + span * (0.5 - s) * 0.6
        x_back = meet - span * (0.5 - s) * 1.4
        back = shape_mask(np.random.default_rng(shape_rng), h, w, size_back, (x_back, y + 4), kind_back)
        front = shape_mask(np.random.default_rng(shape_rng + 1), h, w, size_front, (x_front, y), kind_front)
        frame = background.copy()
        frame[back] = tex_back[back]
        frame[front] = tex_front[front]
        label = np.zeros((h, w), np.uint8)
        label[back] = 2
        label[front] = 1
        out_frames.append(frame)
        labels.append(label)
    return out_frames, labels


def write_video_dataset(root: str | Path, n: int, backgrounds: Sequence[np.ndarray], seed: int, frames: int = 12,
                        size: int = 160) -> Path:
    """A DAVIS-layout dataset (JPEGImages/<video>/<frame>.jpg, Annotations/<video>/<frame>.png palette PNGs)
    of `n` occlusion clips."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for v in range(n):
        clip, labels = occlusion_clip(rng, backgrounds, frames, size, size)
        (root / "JPEGImages" / f"clip{v:04d}").mkdir(parents=True, exist_ok=True)
        for t, (frame, label) in enumerate(zip(clip, labels)):
            cv2.imwrite(str(root / "JPEGImages" / f"clip{v:04d}" / f"{t:05d}.jpg"),
                        cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_palette_png(root / "Annotations" / f"clip{v:04d}" / f"{t:05d}.png", label)
    return root
