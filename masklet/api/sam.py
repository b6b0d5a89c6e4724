"""`SAM`: the Ultralytics-style model object for images and videos (prompted or segment-everything).

    from masklet import SAM
    model = SAM("sam2.1_b.pt")
    results = model("image.jpg", bboxes=[100, 100, 200, 200])
    results = model(points=[[400, 370], [900, 370]], labels=[1, 1])   # the same image, two objects
    results[0].masks.data   # (N, H, W) bool

Prompts follow `masklet.api.prompts.normalize_prompts`; every image or frame gives one `Results`.
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.common import apply_compile_option
from ..models.hub import select_device
from ..predictors.precision import precision_summary, resolve_dtype
from ..predictors.prompts import Prompts, to_model_frame
from ..utils.allocator import retain_freed_memory
from ..utils.runs import RunDir, increment_path
from . import PREDICT_ARGS
from .prompts import check_prompts_inside, mask_objects, normalize_prompts, with_mask_prompt
from .results import Results, check_gui, results_from_masks

__all__ = ["DEFAULT_MODEL", "SAM", "check_imgsz", "increment_path", "model_gflops", "select_device"]

DEFAULT_MODEL: str = PREDICT_ARGS["model"][0]
_FEATURE_CACHE_SIZE = 4  # encoded images kept for repeated prompts on the same image (~16 MB each, tiny/1024)
_GFLOPS: dict[tuple, float] = {}
BAR_DELAY_S = 1.0  # progress bars appear once a run has taken this long (quick single images print none)


# ---------------------------------------------------------------------------------------------- helpers
def native_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None)
    return int(size if size is not None else model.input_spec.size)


def check_imgsz(model: nn.Module, imgsz: Any) -> int:
    """Validate `imgsz` (int, or [s] / [s, s]) for `model`; None -> the model's native size."""
    native = native_size(model)
    if imgsz is None:
        return native
    given = imgsz
    if isinstance(imgsz, (list, tuple)):
        if len(imgsz) == 2 and imgsz[0] == imgsz[1] or len(imgsz) == 1:
            imgsz = imgsz[0]
        else:
            raise ValueError(f"imgsz={list(given)}: SAM models take square inputs, give one number such as "
                             "imgsz=1024")
    if isinstance(imgsz, float) and imgsz.is_integer():
        imgsz = int(imgsz)
    if isinstance(imgsz, bool) or not isinstance(imgsz, (int, np.integer)):
        raise TypeError(f"imgsz must be an integer such as 1024, got {given!r}")
    imgsz = int(imgsz)
    if hasattr(model, "set_image_size"):
        if imgsz < 64 or imgsz % 64:
            raise ValueError(f"imgsz={imgsz} is not a positive multiple of 64: the model takes square inputs "
                             f"whose side is a multiple of 64 (e.g. 512, 768, 1024; native {native})")
    elif imgsz != native:
        raise ValueError(f"imgsz={imgsz}: {type(model).__name__} runs only at its native size {native} (the "
                         "position embeddings are fixed)")
    return imgsz


def apply_imgsz(model: nn.Module, size: int) -> None:
    if hasattr(model, "set_image_size") and getattr(model, "image_size", size) != size:
        model.set_image_size(size)


def model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def model_gflops(model: nn.Module) -> float:
    """GFLOPs (2 x multiply-adds) of one image encoding plus one mask decoding at the model's native size.

    Counted with `FlopCounterMode` on a copy of the architecture on the meta device (no memory, no compute),
    so it is cheap even for the large variants; cached per variant.
    """
    from torch.utils.flop_counter import FlopCounterMode

    size = native_size(model)
    name = getattr(getattr(model, "config", None), "name", None) or getattr(model, "variant", None)
    key = (type(model).__name__, name, size)
    if key in _GFLOPS:
        return _GFLOPS[key]
    probe, device = model, model_device(model)
    if name is not None:
        try:
            from ..models.build import build_model

            with torch.device("meta"):
                probe = build_model(name, device="meta")
            device = torch.device("meta")
        except (RuntimeError, ValueError, TypeError, NotImplementedError):
            # an architecture that cannot be built on the meta device: count on the real model instead
            probe, device = model, model_device(model)
    x = torch.zeros(1, 3, size, size, device=device, dtype=getattr(probe, "dtype", torch.float32))
    points = torch.full((1, 1, 2), size / 2, device=device, dtype=x.dtype)
    labels = torch.ones(1, 1, dtype=torch.int32, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        features = probe.encode_image(x)
        sparse, dense = probe.encode_prompts(points, labels, None, None)
        probe.decode(probe.image_embedding(features), getattr(features, "high_res", None), sparse, dense, False)
    _GFLOPS[key] = counter.get_total_flops() / 1e9
    return _GFLOPS[key]


def unknown_keyword(func: str, key: str, valid: list[str]) -> TypeError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return TypeError(f"{func}() got an unexpected keyword argument {key!r}.{hint} Valid keywords: "
                     f"{', '.join(sorted(valid))}")


class _Timer:
    """Milliseconds spent inside `with timer:` blocks, summed."""

    def __init__(self) -> None:
        self.ms = 0.0

    def __enter__(self) -> _Timer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms += (time.perf_counter() - self._start) * 1000.0


def _item_stem(name: str) -> str:
    stem = Path(name.split("://")[-1]).stem if name else "image"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "image"


def _video_fps(path: str | None) -> float | None:
    if not path:
        return None
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0
        return float(fps) if fps and np.isfinite(fps) and fps > 0 else None
    finally:
        cap.release()


def _video_length(path: str | None) -> int | None:
    if not path:
        return None
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        return n if n > 0 else None
    finally:
        cap.release()


class RunWriter:
    """Writes what a run saves under its folder: annotated images (name.jpg), annotated videos (stem.mp4,
    OpenCV mp4v) and YOLO label files (labels/stem.txt, labels/stem_<frame>.txt for videos)."""

    def __init__(self, run_dir: RunDir, save: bool, save_txt: bool, save_conf: bool,
                 plot_args: dict[str, Any]) -> None:
        # the folder is created at the first file written: a run that fails before leaves nothing behind
        self.run_dir, self.save, self.save_txt, self.save_conf = run_dir, save, save_txt, save_conf
        self.plot_args = plot_args
        self.writers: dict[str, Any] = {}
        self.saved: list[Path] = []

    @property
    def save_dir(self) -> Path:
        return self.run_dir.path

    def add(self, result: Results, name: str, is_video: bool, fps: float | None = None) -> None:
        if self.save or self.save_txt:
            self.run_dir.ensure()
        result.save_dir = str(self.save_dir)
        stem = _item_stem(name)
        if self.save_txt:
            label = f"{stem}_{result.frame}.txt" if is_video else f"{stem}.txt"
            result.save_txt(self.save_dir / "labels" / label, save_conf=self.save_conf)
        if not self.save:
            return
        image = result.plot(**self.plot_args)
        if is_video:
            writer = self.writers.get(name)
            if writer is None:
                import cv2

                path = self.save_dir / f"{stem}.mp4"
                h, w = image.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 30.0, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"cannot write video {path}: this OpenCV build has no mp4v encoder")
                self.writers[name] = writer
                self.saved.append(path)
            writer.write(image)
        else:
            suffix = Path(name).suffix.lower()
            filename = f"{stem}{suffix}" if suffix in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp") \
                else f"{stem}.jpg"
            path = self.save_dir / filename
            Results._write(image, path)
            self.saved.append(path)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        self.writers.clear()


def plot_args(show_labels: bool, show_conf: bool, show_boxes: bool, line_width: float | None) -> dict[str, Any]:
    return {"labels": show_labels, "conf": show_conf, "boxes": show_boxes, "line_width": line_width}


def check_common(task: Any, mode: Any, vid_stride: Any, max_frames: Any, conf: Any,
                 modes: tuple[str, ...] = ("predict", "track")) -> None:
    """Validate the run options shared by SAM.predict and SAM2VideoPredictor."""
    if task not in (None, "segment"):
        raise ValueError(f"task={task!r}: SAM models do segmentation only, use task='segment' (or leave it out)")
    if mode not in (None,) + modes:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(modes)}")
    if isinstance(vid_stride, bool) or not isinstance(vid_stride, (int, np.integer)) or vid_stride < 1:
        raise ValueError(f"vid_stride must be an integer >= 1, got {vid_stride!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):
        raise ValueError(f"max_frames must be None or an integer >= 1, got {max_frames!r}")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1):
        raise ValueError(f"conf must be a number between 0 and 1, got {conf!r}")


def make_save_dir(project: Any, name: Any, default_name: str, exist_ok: bool) -> RunDir:
    """project/name, or the next free project/name2, name3, ... (exist_ok: project/name itself), created when
    the first file is written."""
    return RunDir(Path(project or PREDICT_ARGS["project"][0]) / str(name or default_name), exist_ok=exist_ok)


def progress_bar(total: int | None, desc: str, unit: str, disable: bool) -> Any:
    """The frame / image bar of predict and track, in the style of val, annotate and propagate_in_video: rate and
    ETA, shown only once a run has taken a second (a single quick image prints no bar), gone when done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, delay=BAR_DELAY_S,
                dynamic_ncols=True)


class RunReport:
    """What predict and track do with each result, in Ultralytics' style: save it (`RunWriter`), show it, print
    its line above the progress bar when verbose, and sum its speeds (ms) for the closing "Speed: ..." line."""

    def __init__(self, writer: RunWriter | None, bar: Any, size: int, show: bool, verbose: bool,
                 plot: dict[str, Any]) -> None:
        self.writer, self.bar, self.size, self.show, self.verbose, self.plot = writer, bar, size, show, verbose, plot
        self.totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.count = 0

    def add(self, result: Results, name: str, is_video: bool, fps: float | None, where: str, path: str) -> None:
        """One result with its `speed`; `name` names its file(s), `where` ("image 1/3", "video 1/1 (frame 4)")
        and `path` start its verbose line."""
        for key in self.totals:
            self.totals[key] += result.speed[key]
        self.count += 1
        if self.writer is not None:
            self.writer.add(result, name, is_video, fps)
        if self.show:
            result.show(**self.plot)
        if self.verbose:
            self.bar.write(f"{where} {path}: {self.size}x{self.size} {result.verbose()}, "
                           f"{result.speed['inference']:.1f}ms")
        self.bar.update(1)

    def close(self) -> None:
        """End the progress bar and finish the files being written (videos)."""
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def summary(self, unit: str, extra: str = "") -> None:
        """When verbose and anything was done: the mean speeds per `unit` and where the results were saved."""
        if not (self.verbose and self.count):
            return
        t, n, size = self.totals, self.count, self.size
        print(f"Speed: {t['preprocess'] / n:.1f}ms preprocess, {t['inference'] / n:.1f}ms inference, "
              f"{t['postprocess'] / n:.1f}ms postprocess per {unit} at shape (1, 3, {size}, {size}){extra}")
        if self.writer is not None and self.writer.run_dir.created:
            print(f"Results saved to {self.writer.save_dir}")


def count_frames(items: list, vid_stride: int, max_frames: int | None) -> int | None:
    """Images and (used) video frames of a source, or None when a stream has no known length."""
    n = 0
    for item in items:
        if item.kind == "image":
            n += 1
            continue
        length = _video_length(item.path) if item.kind == "video" and item.path else None
        if length is None:
            data = getattr(item, "data", None)
            if not isinstance(data, (np.ndarray, list, tuple)):
                return None  # a webcam, URL or generator: no known length
            length = len(data)
        used = (length + vid_stride - 1) // vid_stride
        n += min(used, max_frames) if max_frames else used
    return n


def everything_note(generator: Any, items: list, vid_stride: int, max_frames: int | None) -> str:
    """What segment-everything will cost, said before it starts."""
    per_side = getattr(generator, "points_per_side", None)
    grid = getattr(generator, "point_grids", None)
    n_points = len(grid[0]) if grid is not None and len(grid) else (per_side or 32) ** 2
    frames = count_frames(items, vid_stride, max_frames)
    what = f"{frames} image(s) / frame(s)" if frames is not None else "every frame of the stream"
    estimate = f" (~{frames} min on a CPU)" if frames is not None and frames > 1 else ""
    return (f"No points, bboxes or masks given: segmenting everything on {what}{estimate}: a grid of {n_points} "
            f"point prompts is decoded on each, about 1 min per image on a 2-core CPU with sam2.1_t (seconds on a "
            f"GPU). Pass points=[x,y] or bboxes=[x1,y1,x2,y2] to segment only what you point at.")


def prompt_drawing(prompts: Prompts) -> dict[str, np.ndarray] | None:
    """The prompts as `Results.prompts` draws them: flat points (K, 2) with labels (K,), bboxes (M, 4)."""
    if prompts.empty:
        return None
    out: dict[str, np.ndarray] = {}
    if prompts.points is not None:
        out["points"] = np.asarray(prompts.points, dtype=np.float64).reshape(-1, 2)
        labels = prompts.labels if prompts.labels is not None else np.ones(prompts.points.shape[:2])
        out["labels"] = np.asarray(labels).reshape(-1)
    if prompts.boxes is not None:
        out["bboxes"] = np.asarray(prompts.boxes, dtype=np.float64).reshape(-1, 4)
    return out


def load_sam_model(model: str | Path | nn.Module, device: Any = None) -> tuple[nn.Module, Path | None]:
    """(module, checkpoint path) for a checkpoint name / path (downloaded when needed) or a ready module; see
    `masklet.models.hub.get_model`."""
    from ..models.hub import get_model

    return get_model(model, device)


# ---------------------------------------------------------------------------------------------- SAM
class SAM:
    """A SAM 2 / SAM 2.1 / SAM / MobileSAM model with the Ultralytics calling convention.

    model: a checkpoint name (`sam2_t.pt` ... `sam2.1_l.pt`, `sam_b.pt`, `mobile_sam.pt`, or an official file
    name such as `sam2.1_hiera_base_plus.pt`), downloaded into `$MASKLET_HOME` when missing; a local file (its
    variant is read from the weights); or an already built model module.
    """

    task = "segment"

    def __init__(self, model: str | Path | nn.Module = DEFAULT_MODEL) -> None:
        self.model, self.ckpt_path = load_sam_model(model)
        self.model_name = str(model) if not isinstance(model, nn.Module) else type(model).__name__
        self.predictor: Any = None  # the ImagePredictor of the last image (features set)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._last_source: Any = None
        self.save_dir: Path | None = None  # run folder of the last predict(save=True)

    # ------------------------------------------------------------------ properties
    @property
    def is_sam2(self) -> bool:
        return getattr(self.model, "family", None) == "sam2"

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def variant(self) -> str:
        return getattr(getattr(self.model, "config", None), "name", None) or type(self.model).__name__

    def to(self, device: Any) -> SAM:
        """Move the model (and drop cached image features)."""
        dev = select_device(device, self.device)
        if dev != self.device:
            self.model.to(dev)
            self._cache.clear()
            self.predictor = None
        return self

    def __repr__(self) -> str:
        return f"SAM({self.model_name!r}, variant={self.variant}, device={self.device})"

    # ------------------------------------------------------------------ info
    def info(self, detailed: bool = False, verbose: bool = True) -> tuple[int, int, int, float]:
        """Print and return (layers, parameters, gradients, GFLOPs) - GFLOPs of one image encoding plus one
        mask decoding at the native input size (1024x1024 for the official models). detailed=True also
        prints every parameter tensor."""
        params = list(self.model.named_parameters())
        n_layers = len(list(self.model.modules()))
        n_params = sum(p.numel() for _, p in params)
        n_grads = sum(p.numel() for _, p in params if p.requires_grad)
        gflops = model_gflops(self.model)
        if detailed:
            print(f"{'layer':>5} {'name':>50} {'gradient':>9} {'parameters':>12} {'shape':>20} {'mu':>10} "
                  f"{'sigma':>10}")
            for i, (name, p) in enumerate(params):
                mu = p.float().mean().item() if p.numel() else 0.0
                sigma = p.float().std().item() if p.numel() > 1 else 0.0
                print(f"{i:5d} {name:>50} {p.requires_grad!s:>9} {p.numel():12d} {list(p.shape)!s:>20} "
                      f"{mu:10.3g} {sigma:10.3g}")
        if verbose:
            size = native_size(self.model)
            print(f"{self.variant} summary: {n_layers:,} layers, {n_params:,} parameters, {n_grads:,} gradients, "
                  f"{gflops:.1f} GFLOPs (at {size}x{size})")
            print(precision_summary(self.device))
        return n_layers, n_params, n_grads, gflops

    # ------------------------------------------------------------------ predict
    def __call__(self, source: Any = None, stream: bool = False, bboxes: Any = None, points: Any = None,
                 labels: Any = None, **kwargs: Any) -> list[Results] | Iterator[Results]:
        """Same as `predict`."""
        return self.predict(source, stream, bboxes, points, labels, **kwargs)

    def predict(self, source: Any = None, stream: bool = False, bboxes: Any = None, points: Any = None,
                labels: Any = None, masks: Any = None, *, multimask_output: bool = False, save: bool = False,
                save_txt: bool = False, save_conf: bool = False, show: bool = False, device: Any = None,
                imgsz: Any = None, conf: float = 0.25, project: Any = None, name: Any = None,
                exist_ok: bool = False, verbose: bool = True, vid_stride: int = 1, max_frames: int | None = None,
                show_labels: bool = True, show_conf: bool = True, show_boxes: bool = True,
                line_width: float | None = None, retina_masks: bool = True, task: str = "segment",
                mode: str = "predict", half: bool = False, dtype: Any = None, compile: bool = False,
                **everything_kwargs: Any) -> list[Results] | Iterator[Results]:
        """Segment the images / frames of `source`: with prompts one mask per object, without any prompt every
        object (segment everything, SAM's automatic mask generator).

        source: image / video path, folder, glob, URL, webcam index, (H, W, 3) uint8 RGB array, (N, H, W, 3)
        batch, PIL image, or a list of these; None reuses the previous call's source (and, for an image,
        its already computed features). Video frames are segmented one by one with the same prompts (use
        `SAM2VideoPredictor` to track objects through a video).
        bboxes (4,) / (B, 4) xyxy; points (2,) / (B, 2) / (B, N, 2) xy with labels (), (B,) / (B, N) - see
        `masklet.api.prompts`; masks (B, 1, 256, 256) float low-res logits or (B, H, W) bool / 0-1 / 0-255
        integer binary masks of the image's size (the dtype decides, never the size).
        multimask_output: 3 masks per prompt (all kept) instead of the best one.
        half / dtype: reduced precision for the image encoder (float16 on CUDA, bfloat16 elsewhere; or a dtype
        name) — see `masklet.api.PREDICT_ARGS`. compile: torch.compile the decoder (and float32 image trunk) of
        this model from now on (`masklet.models.common.enable_compile`).
        Segment-everything options of `AutomaticMaskGenerator` (points_per_side, pred_iou_thresh, ...) may be
        passed as extra keywords; `conf` drops its masks with predicted IoU below it.
        Returns a list of `Results`, one per image or frame, in order (a generator with stream=True).
        Validation (prompts, options, source paths) happens at the call, also with stream=True.
        """
        check_common(task, mode, vid_stride, max_frames, conf, modes=("predict",))
        prompts = normalize_prompts(points, labels, bboxes)
        mask_prompt = mask_objects(prompts, masks)
        everything = prompts.empty and mask_prompt is None
        if not everything and everything_kwargs:
            raise unknown_keyword("predict", next(iter(everything_kwargs)), list(PREDICT_ARGS))
        self.to(device)
        precision = resolve_dtype(dtype, half, self.device)
        apply_compile_option(self.model, compile)
        generator = self._everything(everything_kwargs, precision, verbose) if everything else None
        size = check_imgsz(self.model, imgsz)
        apply_imgsz(self.model, size)
        if source is None:
            if self._last_source is None:
                raise ValueError("no source: pass an image or video, e.g. model('image.jpg', points=[x, y]); "
                                 "source=None reuses the source of the previous call")
            source = self._last_source
        from ..data.sources import open_source

        items = open_source(source)
        self._last_source = source
        if show:
            check_gui()
        if generator is not None and verbose:
            print(everything_note(generator, items, vid_stride, max_frames), flush=True)
        writer = None
        if save or save_txt:
            writer = RunWriter(make_save_dir(project, name, "predict", exist_ok), save, save_txt, save_conf,
                               plot_args(show_labels, show_conf, show_boxes, line_width))
        self.save_dir = writer.save_dir if writer is not None else None
        run = self._run(items, prompts, mask_prompt, generator, multimask_output, conf if everything else None,
                        precision, writer, show, verbose, vid_stride, max_frames, size,
                        plot_args(show_labels, show_conf, show_boxes, line_width))
        return run if stream else list(run)

    def _everything(self, kwargs: dict[str, Any], precision: torch.dtype, verbose: bool = False) -> Any:
        try:
            from ..predictors.everything import AutomaticMaskGenerator
        except ImportError as exc:
            raise RuntimeError(f"segment everything (no prompts) needs masklet.predictors.everything, which is not "
                               f"available ({exc}); pass points or bboxes") from None
        valid = [k for k in inspect.signature(AutomaticMaskGenerator.__init__).parameters
                 if k not in ("self", "model", "dtype")]
        for key in kwargs:
            if key not in valid:
                raise unknown_keyword("predict", key, list(PREDICT_ARGS) + valid)
        if "output_mode" in valid:
            kwargs = {**kwargs, "output_mode": "binary_mask"}
        if "progress" in valid and "progress" not in kwargs:
            kwargs["progress"] = verbose  # a bar over the grid's prompt batches of each image
        return AutomaticMaskGenerator(self.model, **kwargs, dtype=precision)

    def _frames(self, item: Any, vid_stride: int, max_frames: int | None) -> Iterator[tuple[int, np.ndarray]]:
        if item.kind == "image":
            yield 0, item.read()
            return
        used = 0
        for frame in item.frames():
            if frame.index % vid_stride:
                continue
            yield frame.index, frame.image
            used += 1
            if max_frames is not None and used >= max_frames:
                return

    def _run(self, items: list, prompts: Prompts, mask_prompt: np.ndarray | None, generator: Any,
             multimask_output: bool, conf: float | None, precision: torch.dtype, writer: RunWriter | None,
             show: bool, verbose: bool,
             vid_stride: int, max_frames: int | None, size: int, plot: dict[str, Any]) -> Iterator[Results]:
        drawn = prompt_drawing(prompts)
        bar = progress_bar(total=count_frames(items, vid_stride, max_frames), desc="predict",
                           unit="frame" if any(i.kind != "image" for i in items) else "image",
                           disable=not verbose)
        report = RunReport(writer, bar, size, show, verbose, plot)
        try:
            # frame after frame allocates and frees the same buffers: on a CPU keep freed memory for reuse
            # (utils.allocator; SAM 2.1 tiny at 1024 px, three photos with a point each: 1.18x)
            with retain_freed_memory(self.device.type == "cpu"):
                for k, item in enumerate(items):
                    is_video = item.kind != "image"
                    fps = _video_fps(item.path) if is_video and writer is not None and writer.save else None
                    if fps is not None:
                        fps /= vid_stride
                    total = _video_length(item.path) if is_video and item.kind == "video" else None
                    frames = self._frames(item, vid_stride, max_frames)
                    while True:
                        pre, inf, post = _Timer(), _Timer(), _Timer()
                        with pre:
                            nxt = next(frames, None)
                        if nxt is None:
                            break
                        index, image = nxt
                        with inf:
                            if generator is not None:
                                masks, scores = self._segment_everything(generator, image, conf)
                            else:
                                masks, scores = self._segment_prompted(image, prompts, mask_prompt, multimask_output,
                                                                       not is_video, precision)
                        with post:
                            result = results_from_masks(image, item.path or item.name, masks, scores,
                                                        frame=index if is_video else None)
                        result.prompts = drawn
                        result.speed = {"preprocess": pre.ms, "inference": inf.ms, "postprocess": post.ms}
                        where = (f"video {k + 1}/{len(items)} (frame {index + 1}{f'/{total}' if total else ''})"
                                 if is_video else f"image {k + 1}/{len(items)}")
                        report.add(result, item.name, is_video, fps, where, item.path or item.name)
                        yield result
        finally:
            report.close()
        report.summary("image")
        if writer is not None:
            self.save_dir = writer.save_dir

    # ------------------------------------------------------------------ one image
    def _encoded(self, image: np.ndarray, cacheable: bool, precision: torch.dtype) -> Any:
        """An ImagePredictor with `image` set, from the cache when this exact image was encoded at this size."""
        from ..predictors.image import ImagePredictor

        key = None
        if cacheable:
            # hashing the pixels (~10 ms) is far cheaper than encoding (seconds on CPU)
            digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
            key = (digest, image.shape, native_size(self.model), getattr(self.model, "image_size", None),
                   str(self.device), precision)
            if key in self._cache:
                self._cache.move_to_end(key)
                self.predictor = self._cache[key]
                return self.predictor
        predictor = ImagePredictor(self.model, dtype=precision)
        predictor.set_image(image)
        if key is not None:
            self._cache[key] = predictor
            while len(self._cache) > _FEATURE_CACHE_SIZE:
                self._cache.popitem(last=False)
        self.predictor = predictor
        return predictor

    def _segment_prompted(self, image: np.ndarray, prompts: Prompts, mask_prompt: np.ndarray | None,
                          multimask_output: bool, cacheable: bool,
                          precision: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (M, H, W) bool and predicted IoUs (M,) for the prompts on one RGB image (M = B, or 3B with
        multimask_output)."""
        h, w = image.shape[:2]
        check_prompts_inside(prompts, h, w)
        full = with_mask_prompt(prompts, mask_prompt, (h, w), self.model.input_spec,
                                self.model.prompt_encoder_mask_input_size())
        predictor = self._encoded(image, cacheable, precision)
        points, labels, boxes, masks = to_model_frame(full, (h, w), self.model.input_spec, False, self.device)
        out, iou, _ = predictor.predict_tensors(0, points, labels, boxes, masks, multimask_output)
        return out.flatten(0, 1), iou.flatten(0, 1)

    def _segment_everything(self, generator: Any, image: np.ndarray,
                            conf: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        records = generator.generate(image)
        if conf:
            records = [r for r in records if float(r["predicted_iou"]) >= conf]
        h, w = image.shape[:2]
        if not records:
            return torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0)
        masks = torch.stack([torch.as_tensor(np.asarray(r["segmentation"])).bool() for r in records])
        scores = torch.tensor([float(r["predicted_iou"]) for r in records], dtype=torch.float32)
        return masks, scores

