"""Proof that `masklet.train` learns: train the small registered `sam2_test_wide` variant (0.84 M parameters,
128 px) from random initialisation on generated data (textured shapes over the real photos and video frames
of ../shared/data), first as an image model, then as a video model on clips where one shape passes behind
another, and score it on held-out data with `masklet.val`: mIoU from a single click (interactive protocol,
click at the interior point farthest from the border, the mask picked by predicted IoU) and J&F (DAVIS
protocol, mask prompt on the first frame), at the input size (1x, 1.5x or 2x the training size) that scores
best on a generated validation split apart from the held-out sets (the shapes are seen larger in training
than at evaluation, and a finer grid resolves the small ones; the scores at the training size are printed
beside). `--evaluate CHECKPOINT` scores a trained checkpoint on the same data without training.

    python bench/train_synthetic.py          # the full run (targets: mIoU >= 0.85, J&F >= 0.80, < 30 min)
    python bench/train_synthetic.py --lowres-epochs 1 --image-epochs 1 --video-epochs 1 --train-images 100 \
        --train-clips 10
    python bench/train_synthetic.py --evaluate tests/assets/sam2_test_wide_synthetic.pt   # the kept checkpoint

The recipe, and why (measured in issue 16): the random initialisation is masklet.train's `init=mimetic` (each
mask-decoder attention starts with k_proj = q_proj: the "which shape did the click pick" plateau ends after
~1,500 steps instead of 3,500 to over 4,500); the image phase trains without correction clicks (from random
weights they slow learning down), with every shape of an image as a training object (three objects per
encoder pass) and mostly point prompts (`--prob-box 0.2`: the score is for one point), its first 6 epochs at
64 px and then 11 at 128 (progressive resizing: a 64 px step costs 0.4x a 128 px one); the video phase
trains everything but the image encoder (the memory, and the decoder, which learns to decode from memory
without a prompt), with 8 of the training images mixed into every step (`image_data=`, as Meta mixes SA-1B
into SA-V: without them the decoder forgets the clicks, so it used to stay frozen and only its object-score
head trained), and sees its 3,500 clips twice, 8 per step (batched clips run ~1.9x the clips per second of
one at a time on a CPU). Decoded images and frames stay in memory after their first epoch (`cache=True`).
Both phases train as `--procs` DDP processes (gloo) of `--threads` threads each: on two cores, two single-thread
processes ran 1.16x the image steps and 1.4x the video clips per second of one two-thread process (the ops of a
model this small scale badly over threads); `--batch` and the other batch sizes are global (split over the
processes, so the steps are those of one process with that batch).
Prints one JSON object on stdout (the trainers' lines go to stderr) with the machine's CPU flags and load.
Data, initialisation, sample order and prompts come from `--seed`; the float32 arithmetic of several threads or
processes is not bit-identical from run to run, so a rerun lands near, not on, the same scores (`--save` copies
the checkpoint; tests/assets/sam2_test_wide_synthetic.pt came from the default command, seed 0).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lowres_ceiling(clips: Path, lowres: int) -> dict[str, float]:
    """J&F of the ground truth itself passed through the decoder's low-res output grid (area-averaged to
    lowres x lowres, upsampled bilinearly, thresholded at 0.5) on the DAVIS-layout `clips`, scored like
    `masklet val` (the frames `VOSVideo.scored_frames` picks; J and F averaged over frames, then objects): what perfect
    low-res logits would score, so how far the target is from the ceiling of a model of this output size."""
    import numpy as np
    import torch.nn.functional as F

    from masklet.val.datasets import VOSDataset
    from masklet.val.metrics import score_sequence

    def through_grid(gt: np.ndarray) -> np.ndarray:
        low = F.interpolate(torch.from_numpy(gt).float()[None, None], size=(lowres, lowres), mode="area")
        return (F.interpolate(low, size=gt.shape, mode="bilinear", align_corners=False)[0, 0] > 0.5).numpy()

    j_means, f_means = [], []
    for video in VOSDataset(clips):
        frames = video.scored_frames()
        for obj in video.object_ids:
            gts = [video.gt_mask(t, obj) for t in frames]
            j, f = score_sequence([through_grid(gt) for gt in gts], gts)
            j_means.append(j.mean())
            f_means.append(f.mean())
    j, f = float(np.mean(j_means)), float(np.mean(f_means))
    return {"J&F": round((j + f) / 2, 4), "J": round(j, 4), "F": round(f, 4)}


def _train(threads: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """masklet.train(**kwargs) on `threads` threads, its lines on stderr (stdout is the JSON alone); returns
    what the bench needs: {"last", "metrics", "device"}."""
    import masklet

    torch.set_num_threads(threads)
    torch.manual_seed(kwargs["seed"])  # the random initialisation (under DDP rank 0's weights are broadcast)
    with contextlib.redirect_stdout(sys.stderr):
        run = masklet.train(**kwargs)
    return {"last": str(run["last"]), "metrics": run["metrics"], "device": run["device"]}


def _train_rank(rank: int, world: int, port: int, threads: int, kwargs: dict[str, Any], result_file: str) -> None:
    """One DDP process of a training phase (torch.multiprocessing.spawn target): masklet.train joins the gloo
    group through the environment, as under torchrun; rank 0 writes its result to `result_file`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    result = _train(threads, kwargs)
    if rank == 0:
        Path(result_file).write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def train_phase(procs: int, threads: int, **kwargs: Any) -> dict[str, Any]:
    """masklet.train(**kwargs) in this process (procs=1) or in `procs` spawned DDP processes; returns rank 0's
    {"last", "metrics", "device"}."""
    if procs == 1:
        return _train(threads, kwargs)
    with socket.socket() as sock:  # a free port for the process group's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result_file = Path(kwargs["project"]) / f"{kwargs['name']}_result.json"
    torch.multiprocessing.spawn(_train_rank, args=(procs, port, threads, kwargs, str(result_file)),
                                nprocs=procs)
    return json.loads(result_file.read_text())


def per_process(value: int, procs: int, what: str) -> int:
    if value % procs:
        raise SystemExit(f"{what}={value} is global: it must divide into --procs {procs} processes")
    return value // procs


def eval_sizes(spec: str, imgsz: int) -> list[int]:
    """The evaluation input sizes to choose from: --eval-imgsz auto -> imgsz, 1.5x and 2x it (multiples of 64,
    the sizes the model takes), else the one size given."""
    if spec == "auto":
        return list(dict.fromkeys(max(64, round(imgsz * f / 64) * 64) for f in (1.0, 1.5, 2.0)))
    if not spec.isdigit() or int(spec) < 64 or int(spec) % 64:
        raise SystemExit(f"--eval-imgsz {spec}: use auto or a positive multiple of 64")
    return [int(spec)]


def score_split(model: torch.nn.Module, data: Path, prefix: str, imgsz: int, save_dir: Path,
                max_clicks: int = 1) -> dict[str, float]:
    """`masklet val` of `model` at input size `imgsz` on data/<prefix>_images (one click at the interior point
    farthest from the border, up to `max_clicks`) and data/<prefix>_clips (DAVIS protocol); the scores rounded,
    and their mean (what --eval-imgsz auto maximises)."""
    from masklet.val import run as val_run

    interactive = val_run(model, str(data / f"{prefix}_images"), task="interactive", max_clicks=max_clicks,
                          imgsz=imgsz, verbose=False, save_dir=save_dir / "interactive", dtype="float32")["summary"]
    vos = val_run(model, str(data / f"{prefix}_clips"), task="vos", imgsz=imgsz, verbose=False,
                  save_dir=save_dir / "vos", dtype="float32")["summary"]
    scores = {"mIoU@1": float(interactive["mIoU@1"]), "mIoU@1-oracle": float(interactive["mIoU@1-oracle"]),
              "mIoU@3": float(interactive.get("mIoU@3", float("nan"))),
              "J&F": float(vos["J&F-Mean"]), "J": float(vos["J-Mean"]), "F": float(vos["F-Mean"])}
    scores["mean"] = (scores["mIoU@1"] + scores["J&F"]) / 2
    if max_clicks < 3:
        del scores["mIoU@3"]
    return {k: round(v, 4) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default="runs/bench_train_synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="sam2_test_wide", help="variant trained from random weights")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--train-clips", type=int, default=3500)
    parser.add_argument("--val-clips", type=int, default=30)
    parser.add_argument("--lowres-epochs", type=int, default=6,
                        help="image epochs at --lowres-imgsz before the --image-epochs at --imgsz (0: none)")
    parser.add_argument("--lowres-imgsz", type=int, default=64)
    parser.add_argument("--image-epochs", type=int, default=11)
    parser.add_argument("--video-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--video-batch", type=int, default=8, help="clips per step in the video phase")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init", default="mimetic", choices=("mimetic", "default"),
                        help="random initialisation: mimetic (masklet.train's: decoder k_proj = q_proj) or PyTorch's")
    parser.add_argument("--corrections", type=int, default=0,
                        help="correction clicks per corrected frame (0: from scratch they slow learning down)")
    parser.add_argument("--prob-box", type=float, default=0.2,
                        help="share of box prompts among first prompts (official 0.5; the score is for points)")
    parser.add_argument("--video-freeze",
                        default="image_encoder",
                        help="parts the video phase leaves as the image phase trained them ('' trains everything)")
    parser.add_argument("--video-image-batch", type=int, default=8,
                        help="training images mixed into every video step (masklet.train image_data=; 0: none)")
    parser.add_argument("--procs", type=int, default=2, help="training processes (DDP over gloo on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="threads per training process")
    parser.add_argument("--save", default=None, help="copy the final checkpoint here")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the trainer's, a GPU if any)")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast while training (off: the proof run is float32)")
    parser.add_argument("--val-split-images", type=int, default=60,
                        help="generated validation images (not the held-out ones): per-epoch validation and the "
                             "choice of the evaluation input size")
    parser.add_argument("--val-split-clips", type=int, default=10, help="generated validation clips, likewise")
    parser.add_argument("--eval-imgsz", default="auto",
                        help="input size of the held-out evaluation: auto (the best of --imgsz, 1.5x and 2x it, "
                             "multiples of 64, on the validation split) or a number")
    parser.add_argument("--evaluate", default=None, metavar="CHECKPOINT",
                        help="skip training: generate the held-out and validation data and score this checkpoint")
    opts = parser.parse_args()
    procs, batches = opts.procs, {}
    for key in ("batch", "video_batch", "video_image_batch"):  # checked before the data is generated
        batches[key] = per_process(getattr(opts, key), procs, "--" + key.replace("_", "-"))
    candidates = eval_sizes(opts.eval_imgsz, opts.imgsz)
    if opts.evaluate and not Path(opts.evaluate).is_file():
        raise SystemExit(f"--evaluate {opts.evaluate}: no such checkpoint")

    import masklet
    from masklet.train.synthetic import load_backgrounds, write_image_dataset, write_video_dataset

    cores = procs * opts.threads
    torch.set_num_threads(cores)  # data and evaluation run here, on all the cores the training used
    import common

    machine = common.machine_info(torch.device("cpu"), "float32")  # load average and CPU flags when the run starts
    out = Path(opts.out)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    backgrounds = load_backgrounds(opts.data_dir, frames_per_video=3)
    data = out / "data"
    # each dataset from its own seed, so writing them side by side gives the same files as one after another;
    # the validation split (per-epoch validation, choice of the evaluation size) is apart from the held-out sets
    datasets = [(write_image_dataset, "val_images", opts.val_images, 1000, {}),
                (write_video_dataset, "val_clips", opts.val_clips, 3000, {"frames": 12}),
                (write_image_dataset, "val_split_images", opts.val_split_images, 4000, {}),
                (write_video_dataset, "val_split_clips", opts.val_split_clips, 5000, {"frames": 12})]
    if not opts.evaluate:
        datasets += [(write_video_dataset, "train_clips", opts.train_clips, 2000, {"frames": 8}),
                     (write_image_dataset, "train_images", opts.train_images, 0, {})]
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(write, data / name, n, backgrounds, opts.seed + offset, **kw)
                for write, name, n, offset, kw in datasets]
        for job in jobs:
            job.result()
    t_data = time.perf_counter() - t0
    print(f"data: {t_data:.0f} s", file=sys.stderr)

    t_lowres = t_image = t_video = 0.0
    result: dict[str, Any] = {"bench": "train_synthetic"}
    if opts.evaluate:
        last, device = opts.evaluate, "cpu"
        result["evaluated"] = str(opts.evaluate)
    else:
        train_args = dict(imgsz=opts.imgsz, lr=opts.lr, vision_lr_ratio=1.0, layer_decay=1.0, weight_decay=0.01,
                          warmup=0.02, corrections=opts.corrections, prob_box=opts.prob_box, amp=opts.amp,
                          device=opts.device, seed=opts.seed, project=str(out), verbose=True, cache=True)
        # images: every shape of an image is a training object (max_objects=3), one encoder pass for all of them;
        # first at a quarter of the pixels (progressive resizing: a 64 px step costs 0.4x a 128 px one)
        image_args = dict(data=str(data / "train_images"), batch=batches["batch"], max_objects=3,
                          val=str(data / "val_split_images"), val_samples=30, init=opts.init, **train_args)
        t1 = time.perf_counter()
        start = opts.model  # a variant name (random weights), then the 64 px phase's checkpoint
        if opts.lowres_epochs:
            start = train_phase(procs, opts.threads, **{**image_args, "imgsz": opts.lowres_imgsz}, model=start,
                                epochs=opts.lowres_epochs, name="image_lowres")["last"]
        t_lowres = time.perf_counter() - t1
        image_run = train_phase(procs, opts.threads, **image_args, model=start, epochs=opts.image_epochs,
                                name="image")
        t_image = time.perf_counter() - t1
        t2 = time.perf_counter()
        video_run = train_phase(procs, opts.threads, model=image_run["last"], data=str(data / "train_clips"),
                                epochs=opts.video_epochs, val=str(data / "val_split_clips"),
                                val_samples=opts.val_split_clips, name="video", batch=batches["video_batch"],
                                num_frames=8, max_objects=2, freeze=opts.video_freeze or None, **train_args,
                                image_data=str(data / "train_images") if opts.video_image_batch else None,
                                image_batch=batches["video_image_batch"] or None)
        t_video = time.perf_counter() - t2
        last, device = video_run["last"], video_run["device"]
        result["mIoU@1_after_image_phase_on_val_split"] = image_run["metrics"][-1].get("val/mIoU@1")

    model = masklet.load_model(last)
    t3 = time.perf_counter()
    # the evaluation size is chosen on the validation split, never on the held-out data: the shapes are seen
    # larger in training (crops keep 70-100 % of each side) and a finer token grid resolves the small ones
    selection = {size: score_split(model, data, "val_split", size, out / "eval" / f"val_split_{size}")
                 for size in candidates}
    eval_imgsz = max(candidates, key=lambda size: (selection[size]["mean"], -size))
    heldout = {size: score_split(model, data, "val", size, out / "eval" / f"heldout_{size}", max_clicks=3)
               for size in dict.fromkeys((eval_imgsz, opts.imgsz))}
    t_eval = time.perf_counter() - t3
    model.set_image_size(opts.imgsz)
    checkpoint = out / f"{model.config.name}_synthetic.pt"
    torch.save({"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}, checkpoint)
    if opts.save:
        Path(opts.save).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, opts.save)
    scores = heldout[eval_imgsz]
    result.update({
        "model": model.config.name,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "imgsz": opts.imgsz, "procs": opts.procs, "threads": opts.threads, "seed": opts.seed, "init": opts.init,
        "amp": opts.amp,
        "device": device,
        "train_images": opts.train_images, "lowres_epochs": opts.lowres_epochs, "lowres_imgsz": opts.lowres_imgsz,
        "image_epochs": opts.image_epochs, "train_clips": opts.train_clips,
        "video_epochs": opts.video_epochs, "corrections": opts.corrections, "prob_box": opts.prob_box,
        "batch": opts.batch, "video_batch": opts.video_batch, "video_freeze": opts.video_freeze,
        "video_image_batch": opts.video_image_batch,
        "heldout_images": opts.val_images, "heldout_clips": opts.val_clips,
        "eval_imgsz": eval_imgsz,
        "mIoU@1": scores["mIoU@1"], "mIoU@1-oracle": scores["mIoU@1-oracle"], "mIoU@3": scores["mIoU@3"],
        "J&F": scores["J&F"], "J": scores["J"],
        "F": scores["F"],
        f"at_imgsz_{opts.imgsz}": {k: heldout[opts.imgsz][k] for k in ("mIoU@1", "J&F")},
        "eval_imgsz_selection": {str(size): sel for size, sel in selection.items()},
        # the decoder's masks are (size / 4)^2 logits: the J&F of the held-out ground truth at that size
        "J&F_lowres_ceiling": lowres_ceiling(data / "val_clips", eval_imgsz // 4),
        "minutes": {"data": round(t_data / 60, 2), "image_training": round(t_image / 60, 2),
                    "of_which_lowres": round(t_lowres / 60, 2),
                    "video_training": round(t_video / 60, 2), "evaluation": round(t_eval / 60, 2),
                    "total": round((time.perf_counter() - t0) / 60, 2)},
        "checkpoint": str(checkpoint), "checkpoint_MB": round(checkpoint.stat().st_size / 1e6, 2),
        "targets": {"mIoU@1": 0.85, "J&F": 0.80, "minutes": 30},
        "machine": machine,
    })
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
