"""`masklet.train(...)` / `masklet train ...`: fine-tune SAM 2 on your own images or videos.

One process on a CPU or a GPU, or several through `torchrun` (torch DDP: NCCL on GPUs, gloo on CPUs). Each
step simulates prompts on a batch (see `masklet.train.prompts`), runs the model's decoder (and, for videos,
its memory) through `masklet.train.forward`, and back-propagates the official loss (`masklet.train.loss`).
Outputs go to a numbered run folder (runs/train/exp, exp2, ...): weights/last.pt and weights/best.pt
({"model": state_dict} with the official keys; last.pt also holds the optimizer and the position in the
schedule, for `resume=True`), args.json, metrics.csv and results.png.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.allocator import retain_freed_memory
from .data import (
    Augment,
    ImageTrainDataset,
    RankSampler,
    VideoTrainDataset,
    collate_images,
    collate_video,
    detect_format,
)
from .forward import image_forward, video_forward
from .init import INIT_CHOICES, mimetic_init
from .loss import CORE_LOSS, LOSS_KEYS, SAM2Loss
from .optim import IMAGE_MODE_PREFIXES, is_frozen, lr_factor, param_groups, parse_freeze, set_lr
from .prompts import PromptRecipe

# key -> (default, help): the keyword arguments of `train` and the keys of `masklet train`
TRAIN_KEYS: dict[str, tuple[Any, str]] = {
    "model": ("sam2.1_t.pt", "checkpoint to start from (name or path), or a variant name without .pt (e.g. "
                             "sam2.1_hiera_t, sam2_test) for random initialisation"),
    "init": ("mimetic", "random initialisation only: mimetic (each mask-decoder attention's key projection starts "
                        "as a copy of its query projection: clicks are localised sooner) or default (PyTorch's)"),
    "data": (None, "dataset: COCO JSON, images/+masks/, YOLO images/+labels/, or DAVIS-layout JPEGImages/+"
                   "Annotations/ (videos); required"),
    "epochs": (10, "passes over the dataset"),
    "imgsz": (None, "training input size, a multiple of 64 (default: the model's, 1024)"),
    "batch": (2, "images (or clips) per step and process"),
    "lr": (5e-6, "base learning rate (official fine-tuning: 5e-6 with batch 8)"),
    "vision_lr_ratio": (0.6, "image-encoder learning rate relative to lr (official 3e-6 / 5e-6)"),
    "layer_decay": (0.9, "layer-wise lr decay over the Hiera blocks"),
    "weight_decay": (0.1, "AdamW weight decay (none on biases and LayerNorms)"),
    "warmup": (0.05, "fraction of the optimizer steps spent warming the lr up linearly"),
    "clip_grad": (0.1, "gradient clipping max norm (None: off)"),
    "accumulate": (1, "batches per optimizer step (gradient accumulation)"),
    "freeze": (None, "comma-separated parts to freeze: image_encoder, prompt_encoder, mask_decoder, memory, "
                     "memory_attention, memory_encoder, object_score, or parameter-name prefixes; a leading - "
                     "keeps a part trainable (mask_decoder,-object_score)"),
    "mode": (None, "image or video (default: video for a DAVIS-layout dataset, else image)"),
    "num_frames": (8, "video: frames per training clip"),
    "max_objects": (3, "objects per image or clip"),
    "image_data": (None, "video mode: an image dataset (any layout data= takes) of which one batch trains with every "
                         "video batch, as Meta's trainer mixes SA-1B into SA-V: the decoder keeps its click skill "
                         "while it learns to track"),
    "image_batch": (None, "images per mixed-in image batch (default: batch)"),
    "corrections": (7, "correction clicks per corrected frame"),
    "prob_box": (0.5, "chance that a click input is a noisy box rather than one point (official 0.5)"),
    "amp": (True, "bfloat16 autocast on CUDA and on CPUs with bf16 instructions"),
    "device": (None, "cpu, cuda, cuda:N or N (default: the GPU of this rank if any, else cpu)"),
    "workers": (0, "DataLoader worker processes"),
    "cache": (False, "keep decoded images (video frames) and masks in memory after their first read, so later "
                     "epochs skip the decoding (uint8: ~3 bytes a pixel of the dataset, per training process); "
                     "with workers=0"),
    "seed": (0, "seed of data order, augmentation and prompts"),
    "val": (None, "validation data (default: the training data when masklet val can read it; False: none)"),
    "val_samples": (20, "images (or videos) validated at each epoch end"),
    "project": ("runs/train", "parent folder of the run folders"),
    "name": ("exp", "run folder name (exp, exp2, ... when taken)"),
    "resume": (False, "True: continue the latest run in project; or a path to a last.pt"),
    "verbose": (True, "progress bars and per-epoch lines"),
}


class TrainStep(nn.Module):
    """The training forward as one module, so that DDP wraps (and synchronises) exactly what is trained.
    forward(batch, generator) -> the loss dict of `SAM2Loss`."""

    def __init__(self, model: nn.Module, mode: str, recipe: PromptRecipe, encoder_frozen: bool) -> None:
        super().__init__()
        self.model, self.mode, self.recipe, self.encoder_frozen = model, mode, recipe, encoder_frozen
        self.loss = SAM2Loss()

    def _encode(self, images: torch.Tensor):
        return self.model.encode_image(images, frozen_backbone=self.encoder_frozen)

    def forward(self, batch: Any, generator: torch.Generator,
                images: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The loss of `batch` (an image batch in image mode, a list of clips in video mode) plus, when given,
        that of the mixed-in image batch `images` (each part divided by its own number of objects)."""
        total = self._image_loss(batch, generator) if self.mode == "image" else self._video_loss(batch, generator)
        if images is not None:
            extra = self._image_loss(images, generator)
            total = {k: v + extra[k] for k, v in total.items()}
        return total

    def _image_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        features = self._encode(batch["images"])
        outputs = image_forward(self.model, features, batch["image_index"], batch["masks"], self.recipe, generator)
        return self.loss(outputs, batch["masks"][None])

    def _video_loss(self, batch: list[dict[str, torch.Tensor]],
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
        # clips of one length run as one batch (one encoder call, one decoder / memory call per frame for all
        # their objects) and share the prompt plan; the loss is divided by all their objects, as in Meta's trainer
        by_length: dict[int, list[dict[str, torch.Tensor]]] = {}
        for clip in batch:
            by_length.setdefault(clip["images"].shape[0], []).append(clip)
        total: dict[str, torch.Tensor] = {}
        for clips in by_length.values():
            masks = torch.cat([c["masks"] for c in clips], dim=1)
            clip_index = torch.cat([torch.full((c["masks"].shape[1],), b) for b, c in enumerate(clips)])
            features = self._encode(torch.cat([c["images"] for c in clips]))
            losses = self.loss(video_forward(self.model, features, masks, self.recipe, generator,
                                             clip_index=clip_index), masks)
            total = {k: total[k] + v if k in total else v for k, v in losses.items()}
        return total


def _increment_dir(project: Path, name: str) -> Path:
    path, n = project / name, 2
    while path.exists():
        path, n = project / f"{name}{n}", n + 1
    return path


def _latest_last(project: Path) -> Path:
    runs = sorted(project.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"resume=True found no run with weights/last.pt in {project}; pass resume=path/to/"
                                "last.pt or start a new run")
    return runs[-1]


def _load_model(spec: Any) -> tuple[nn.Module, str, bool]:
    """The model to train, its name for the logs, and whether it starts from random weights."""
    from ..models.build import build_model, load_model
    from ..models.variants import canonical_variant

    if isinstance(spec, nn.Module):
        return spec, type(spec).__name__, False
    text = str(spec)
    if not Path(text).exists() and not text.endswith((".pt", ".pth")):
        canonical_variant(text)  # raises with suggestions for an unknown name
        return build_model(text), f"{text} (random init)", True
    from ..utils.downloads import resolve_weights

    return load_model(resolve_weights(text)), text, False


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        supported = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        supported = supported or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return torch.bfloat16 if supported else None
    return None


class Trainer:
    """Holds one training run; `Trainer(**kwargs).run()` is what `train` does. Keys: see `TRAIN_KEYS`."""

    def __init__(self, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in TRAIN_KEYS]
        if unknown:
            import difflib

            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, list(TRAIN_KEYS), n=1))
                     else k for k in unknown]
            raise ValueError(f"unknown training argument(s): {', '.join(hints)}. Valid: {', '.join(TRAIN_KEYS)}")
        args = {k: d for k, (d, _) in TRAIN_KEYS.items()}
        args.update(kwargs)
        self.resume_from: Path | None = None
        if args["resume"]:
            self.resume_from = (_latest_last(Path(args["project"])) if args["resume"] is True
                                else Path(args["resume"]))
            if not self.resume_from.is_file():
                raise FileNotFoundError(f"resume checkpoint not found: {self.resume_from}")
            saved = json.loads((self.resume_from.parent.parent / "args.json").read_text())
            # the run continues as it was started; only how long and where it runs may change
            keep = {k: args[k] for k in ("epochs", "device", "workers", "cache", "verbose") if k in kwargs}
            args = {**args, **saved, **keep, "resume": args["resume"]}
        if args["data"] is None:
            raise ValueError("data= is required: a COCO JSON, an images/+masks/ or images/+labels/ folder, or a "
                             "DAVIS-layout video dataset")
        optional = ("image_batch",) if args["image_batch"] is not None else ()
        for key in ("epochs", "batch", "accumulate", "num_frames", "max_objects", *optional):
            if not isinstance(args[key], int) or isinstance(args[key], bool) or args[key] < 1:
                raise ValueError(f"{key} must be a positive integer, got {args[key]!r}")
        self.recipe = PromptRecipe(corrections=args["corrections"], prob_box=args["prob_box"])  # checks both
        if not isinstance(args["cache"], bool):
            raise TypeError(f"cache must be True or False, got {args['cache']!r}")
        if args["cache"] and args["workers"]:
            raise ValueError("cache=True keeps the decoded data in the training process; DataLoader workers "
                             f"(workers={args['workers']}) would each decode and keep their own copy, again every "
                             "epoch: use cache=True with workers=0, or workers without cache")
        if args["init"] not in INIT_CHOICES:
            raise ValueError(f"init={args['init']!r}: use one of {', '.join(INIT_CHOICES)}")
        self.args = args

    # ------------------------------------------------------------------ setup
    def _setup_distributed(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and self.args["device"] != "cpu" else "gloo"
            torch.distributed.init_process_group(backend)

    def _select_device(self) -> torch.device:
        from ..api.sam import select_device

        device = self.args["device"]
        if device is None or device == "":
            return torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        dev = select_device(device, torch.device("cpu"))
        if dev.type == "cuda" and self.world > 1:
            dev = torch.device(f"cuda:{self.local_rank}")
        return dev

    def _setup(self) -> None:
        a = self.args
        self._setup_distributed()
        self.device = self._select_device()
        self.data_format = detect_format(a["data"])
        self.mode = a["mode"] or ("video" if self.data_format == "vos" else "image")
        if self.mode not in ("image", "video"):
            raise ValueError(f"mode={self.mode!r}: use image or video")
        if self.mode == "video" and self.data_format != "vos":
            raise ValueError("mode=video needs a DAVIS-layout dataset (JPEGImages/ and Annotations/)")
        net, self.model_name, random_init = _load_model(a["model"])
        if random_init and a["init"] == "mimetic":
            mimetic_init(net)
        if getattr(net, "family", "") != "sam2":
            raise ValueError(f"{self.model_name} is not a SAM 2 model; masklet trains SAM 2 / SAM 2.1 models")
        if a["imgsz"] is not None:
            net.set_image_size(int(a["imgsz"]))
        self.imgsz = net.image_size
        net.to(self.device).train()
        frozen = parse_freeze(a["freeze"], net)
        for name, p in net.named_parameters():
            trainable = not is_frozen(name, frozen)
            if self.mode == "image":
                trainable = trainable and name.startswith(IMAGE_MODE_PREFIXES)
            p.requires_grad_(trainable)
        self.net = net
        encoder_frozen = not any(p.requires_grad for p in net.image_encoder.parameters())
        self.step_module: nn.Module = TrainStep(net, self.mode, self.recipe, encoder_frozen)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids,
                                                                   find_unused_parameters=True)
        groups = param_groups(net, a["weight_decay"], a["vision_lr_ratio"], a["layer_decay"])
        if not groups:
            raise ValueError(f"freeze={a['freeze']!r} leaves nothing to train")
        # the fused kernel: one pass over all parameters instead of a dozen small ops per tensor (the step of a
        # small model is ~5x faster on a CPU); same arithmetic
        self.optimizer = torch.optim.AdamW(groups, lr=a["lr"], weight_decay=a["weight_decay"],
                                           fused=self.device.type in ("cpu", "cuda"))
        if self.mode == "image":
            self.dataset: Any = ImageTrainDataset(a["data"], self.imgsz, Augment(), a["max_objects"], a["seed"],
                                                  cache=a["cache"])
            collate = collate_images
        else:
            self.dataset = VideoTrainDataset(a["data"], self.imgsz, a["num_frames"], Augment(), a["max_objects"],
                                             a["seed"], cache=a["cache"])
            collate = collate_video
        self.sampler, self.loader = self._loader(self.dataset, a["batch"], collate, a["seed"])
        self.image_loader = None
        if a["image_data"] is not None:
            if self.mode != "video":
                raise ValueError("image_data= mixes image batches into video training: data= must then be a "
                                 "DAVIS-layout video dataset (for images alone, pass them as data=)")
            image_seed = a["seed"] + 1  # an order and augmentation of their own, not the clips'
            self.image_dataset = ImageTrainDataset(a["image_data"], self.imgsz, Augment(), a["max_objects"],
                                                   image_seed, cache=a["cache"])
            self.image_sampler, self.image_loader = self._loader(self.image_dataset, a["image_batch"] or a["batch"],
                                                                 collate_images, image_seed)
        self.steps_per_epoch = math.ceil(len(self.loader) / a["accumulate"])
        self.total_steps = self.steps_per_epoch * a["epochs"]
        self.amp_dtype = _amp_dtype(self.device, a["amp"])
        self.start_epoch, self.step, self.best_fitness = 0, 0, -math.inf
        if self.resume_from is not None:
            ckpt = torch.load(self.resume_from, map_location="cpu", weights_only=True)
            net.load_state_dict(ckpt["model"], strict=True)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.start_epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
            self.best_fitness = float(ckpt.get("best_fitness", -math.inf))
            self.save_dir = self.resume_from.parent.parent
        else:
            self.save_dir = _increment_dir(Path(a["project"]), str(a["name"]))
        self.is_main = self.rank == 0
        if self.is_main:
            (self.save_dir / "weights").mkdir(parents=True, exist_ok=True)
            saved = {k: (str(v) if isinstance(v, Path) else v) for k, v in a.items()}
            saved["model"] = saved["model"] if isinstance(saved["model"], str) else self.model_name
            (self.save_dir / "args.json").write_text(json.dumps(saved, indent=1, default=str))
        self.val_data = self._val_data()

    def _loader(self, dataset: Any, batch: int, collate: Any,
                seed: int) -> tuple[RankSampler, torch.utils.data.DataLoader]:
        """This rank's seeded sampler over `dataset` and the DataLoader that batches it."""
        sampler = RankSampler(len(dataset), seed, self.rank, self.world)
        return sampler, torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=collate,
                                                    num_workers=self.args["workers"])

    def _val_data(self) -> str | None:
        val = self.args["val"]
        if val is False or (isinstance(val, str) and val.lower() in ("false", "none", "")):
            return None
        if val is not None:
            return str(val)
        if self.data_format == "yolo":
            return self._export_yolo_val()
        return str(self.args["data"])

    def _export_yolo_val(self) -> str | None:
        """masklet val reads images/ + masks/: write the YOLO val split (or the data) in that layout once."""
        from PIL import Image

        from .data import YoloSegFolder

        root = Path(self.args["data"])
        split = "val" if (root / "images" / "val").is_dir() else None
        out = self.save_dir / "val_data"
        if self.is_main and not (out / "masks").is_dir():
            reader = YoloSegFolder(root, split)
            (out / "images").mkdir(parents=True, exist_ok=True)
            (out / "masks").mkdir(parents=True, exist_ok=True)
            for i in range(min(len(reader), int(self.args["val_samples"]))):
                image, masks = reader[i]
                target = out / "images" / f"{i:06d}{image.suffix}"
                if not target.exists():
                    target.symlink_to(image.resolve())
                for k, m in enumerate(masks):
                    Image.fromarray(m.astype("uint8") * 255).save(out / "masks" / f"{i:06d}_{k + 1}.png")
        return str(out)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        self._setup()
        rows: list[dict[str, Any]] = self._read_rows() if self.resume_from else []
        with warnings.catch_warnings(), retain_freed_memory(self.device.type == "cpu"):
            # DDP compares every stride of a gradient with its bucket's, those of size-1 dimensions too: the
            # gradients of 1x1 and depthwise convs fed permuted features have the same memory layout as their
            # weights but other strides on those dimensions, and it warns (once per run) of a problem there is not
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            return self._epochs(rows)

    def _epochs(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from tqdm.auto import tqdm

        a = self.args
        for epoch in range(self.start_epoch, a["epochs"]):
            self.dataset.epoch = self.sampler.epoch = epoch
            self.net.train()
            sums = {k: 0.0 for k in (*LOSS_KEYS, CORE_LOSS)}
            count, t0 = 0, time.perf_counter()
            bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{a['epochs']}",
                       disable=not (a["verbose"] and self.is_main), leave=False)
            self.optimizer.zero_grad(set_to_none=True)
            n_batches = len(self.loader)
            image_batches = self._image_batches(epoch) if self.image_loader is not None else None
            for i, batch in enumerate(bar):
                batch = _to_device(batch, self.device)
                images = _to_device(next(image_batches), self.device) if image_batches is not None else None
                generator = torch.Generator().manual_seed(((a["seed"] * 7919 + epoch) * 104729 + i) * 131 + self.rank)
                autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                            else nullcontext())
                with autocast:
                    losses = self.step_module(batch, generator, images)
                (losses[CORE_LOSS] / a["accumulate"]).backward()
                for k in sums:
                    sums[k] += float(losses[k].detach())
                count += 1
                if (i + 1) % a["accumulate"] == 0 or i + 1 == n_batches:
                    lr = set_lr(self.optimizer, a["lr"], lr_factor(self.step, self.total_steps, a["warmup"]))
                    if a["clip_grad"]:
                        nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad],
                                                 float(a["clip_grad"]))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    bar.set_postfix(loss=f"{sums[CORE_LOSS] / count:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.close()
            train = {k: _mean_across_ranks(v / max(count, 1), self.device) for k, v in sums.items()}
            row = {"epoch": epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"] /
                   self.optimizer.param_groups[0].get("lr_scale", 1.0), **{f"train/{k}": v for k, v in train.items()},
                   "seconds": time.perf_counter() - t0}
            if self.is_main:
                metric = self._validate(epoch)
                row.update(metric)
                fitness = next(iter(metric.values())) if metric else -train[CORE_LOSS]
                self._save(epoch, rows + [row], fitness)
            rows.append(row)
            if self.world > 1:
                torch.distributed.barrier()
        result = {"save_dir": self.save_dir, "last": self.save_dir / "weights" / "last.pt",
                  "best": self.save_dir / "weights" / "best.pt", "metrics": rows, "best_fitness": self.best_fitness,
                  "device": str(self.device)}
        if self.is_main and a["verbose"]:
            print(f"Results saved to {self.save_dir}")
        return result

    def _image_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The mixed-in image batches of one epoch: passes over the image dataset, each in its own seeded order
        (numbered from the epoch, so a resumed run draws what the uninterrupted one did)."""
        for cycle in itertools.count():
            self.image_dataset.epoch = self.image_sampler.epoch = epoch * 1000 + cycle
            yield from self.image_loader

    def _validate(self, epoch: int) -> dict[str, float]:
        if self.val_data is None:
            return {}
        from ..val.runner import run as val_run

        task = "vos" if self.mode == "video" else "interactive"
        limit = {"max_videos": self.args["val_samples"]} if task == "vos" else {
            "max_samples": self.args["val_samples"], "max_clicks": 3}
        try:
            result = val_run(self.net, self.val_data, task=task, save_dir=self.save_dir / "val" / f"epoch{epoch + 1}",
                             save_masks=False, verbose=False, dtype="float32", **limit)
        finally:
            self.net.train()
        summary = result["summary"]
        if task == "vos":
            return {"val/J&F": float(summary["J&F-Mean"]), "val/J": float(summary["J-Mean"]),
                    "val/F": float(summary["F-Mean"])}
        return {"val/mIoU@1": float(summary["mIoU@1"]), "val/mIoU@3": float(summary.get("mIoU@3", math.nan))}

    def _save(self, epoch: int, rows: list[dict[str, Any]], fitness: float) -> None:
        weights = self.save_dir / "weights"
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        improved = fitness > self.best_fitness
        if improved:
            self.best_fitness = fitness
        torch.save({"model": state, "optimizer": self.optimizer.state_dict(), "epoch": epoch + 1, "step": self.step,
                    "best_fitness": self.best_fitness}, weights / "last.pt")
        if improved:
            torch.save({"model": state}, weights / "best.pt")
        self._write_rows(rows)
        try:
            plot_metrics(rows, self.save_dir / "results.png")
        except ImportError as exc:  # the curve is optional: matplotlib comes with masklet[train]
            if not getattr(self, "_warned_plot", False):
                warnings.warn(str(exc), stacklevel=2)
                self._warned_plot = True
        if self.args["verbose"]:
            shown = {k: round(v, 4) for k, v in rows[-1].items() if isinstance(v, float) and k != "lr"}
            print(f"epoch {epoch + 1}: {shown}")

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with open(self.save_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    def _read_rows(self) -> list[dict[str, Any]]:
        path = self.save_dir / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [{k: ((int if k in ("epoch", "step") else float)(v) if v not in ("", None) else math.nan)
                     for k, v in r.items()} for r in csv.DictReader(f)]
        return [r for r in rows if r["epoch"] <= self.start_epoch]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


def _mean_across_ranks(value: float, device: torch.device) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t) / torch.distributed.get_world_size()


def plot_metrics(rows: list[Mapping[str, Any]], path: Path) -> Path:
    """Training loss and validation metric per epoch as a PNG (matplotlib, from masklet[train])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the training curve needs matplotlib: pip install 'masklet[train]'") from None
    epochs = [r["epoch"] for r in rows]
    val_keys = [k for k in rows[-1] if k.startswith("val/")]
    fig, axes = plt.subplots(1, 1 + bool(val_keys), figsize=(5 * (1 + bool(val_keys)), 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, [r[f"train/{CORE_LOSS}"] for r in rows], marker="o", label="core loss")
    ax.set_xlabel("epoch"), ax.set_ylabel("training loss"), ax.set_title("loss"), ax.grid(alpha=0.3)
    if val_keys:
        ax = axes[0, 1]
        for k in val_keys:
            ax.plot(epochs, [r.get(k, math.nan) for r in rows], marker="o", label=k[4:])
        ax.set_xlabel("epoch"), ax.set_title("validation"), ax.set_ylim(0, 1), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(**kwargs: Any) -> dict[str, Any]:
    """Fine-tune a SAM 2 / SAM 2.1 model; keys and defaults in `TRAIN_KEYS` (e.g. model, data, epochs, imgsz,
    batch, lr, freeze, device, resume).

    Returns {"save_dir", "last", "best" (paths of the checkpoints), "metrics" (one dict per epoch, as in
    metrics.csv), "best_fitness" (best validation mIoU@1 / J&F, or minus the training loss without
    validation), "device" (what it trained on, e.g. "cpu", "cuda:0")}. Raises ValueError / FileNotFoundError
    for bad arguments or data, before any training.
    """
    return Trainer(**kwargs).run()


def train_cli(args: Mapping[str, Any]) -> dict[str, Any]:
    """`masklet train key=value ...`: the keys of `TRAIN_KEYS`, as `train` takes them."""
    kwargs = dict(args)
    if isinstance(kwargs.get("freeze"), (list, tuple)):
        kwargs["freeze"] = ",".join(map(str, kwargs["freeze"]))
    for key in ("data", "image_data", "val", "project", "name"):
        if key in kwargs and isinstance(kwargs[key], (int, float)) and not isinstance(kwargs[key], bool):
            kwargs[key] = str(kwargs[key])
    if kwargs.get("data") is None:
        raise ValueError("masklet train needs data=, e.g. masklet train model=sam2.1_t.pt data=path/to/coco.json "
                         "epochs=10")
    return train(**kwargs)
