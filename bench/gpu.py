"""One prepared run on a CUDA GPU: parity with the official outputs there, bfloat16 / float16 autocast,
torch.compile, and speed (encode, video frames per second, segment everything, a short training run).

    python bench/gpu.py                          # reference fixtures from MASKLET_REFERENCE / ../shared/reference
    python bench/gpu.py --frames 100 --budget-s 300 --skip train

Sections (each caught on its own, so one failure leaves the others' numbers; the JSON is rewritten after each
section to --out, and one JSON object is printed at the end):
  parity_image  the SAM 2.1 tiny image case on the GPU in float32 with TF32 off, then on: the worst IoU-score
                and low-res logit differences and the share of mask pixels flipped, against the CPU tests'
                tolerances (IoU 1e-4, logits 1e-3, 0.01 % of pixels).
  autocast_image  bfloat16 and float16 autocast: each prompt case's masks against float32 (mean and lowest IoU).
                `bfloat16` runs masklet's bfloat16 copies of the heavy modules (`bf16_twin`), and
                `bfloat16_plain_autocast` autocast alone, here and in the sections below.
  parity_video  the SAM 2.1 video case script (bedroom frames 0-7) replayed in float32 (TF32 off): pixels
                flipped per returned mask set; then the same script in bfloat16 against float32 (mask IoU).
  encode        image encoder milliseconds per 1024 px image: float32, TF32, bfloat16 and float16 autocast.
  video_fps     one object tracked over --frames frames decoded beforehand (the official benchmark also times
                propagation over frames already in memory; published for sam2.1 tiny on an A100: 47 FPS eager,
                91 FPS compiled): float32, TF32, bfloat16, float16.
  video_profile  where a tracked frame's time goes (torch.profiler over 40 frames, bfloat16), and the frame
                time without hole filling.
  everything    segment everything, 32x32 grid, truck.jpg: float32 and bfloat16.
  train         bench/train_synthetic.py at small sizes on the GPU (bfloat16 autocast): that training runs on
                CUDA, its steps per second and held-out scores (not the CPU proof: far fewer steps).
  video_compiled  video_fps in bfloat16 with compile=True (masklet's compiled parts: the decoder and the
                float32 trunk); the first run on 8 frames, which compiles, timed apart.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import common
from video_replay import mask_errors, replay_steps

from masklet.utils.masks import mask_iou

SECTIONS = ("parity_image", "autocast_image", "parity_video", "encode", "video_fps", "video_profile", "everything",
            "train", "video_compiled")
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def plain_autocast() -> Any:
    """bfloat16 through autocast alone: the CUDA bfloat16 twins (`models.common.bf16_twin`) off meanwhile."""
    from masklet.models import common as model_common

    before, model_common.CUDA_BF16_TWINS = model_common.CUDA_BF16_TWINS, False
    try:
        yield
    finally:
        model_common.CUDA_BF16_TWINS = before


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def reference_model(device: torch.device) -> Any:
    """The fixtures' random sam2.1 tiny weights: the stored file, else rebuilt from seed 21 (bit for bit)."""
    from masklet.models.build import load_model

    path = common.reference_dir() / common.REFERENCE_CHECKPOINT
    model = load_model(path) if path.exists() else common.random_model("sam2.1_hiera_t", 21)[0]
    return model.to(device).eval()


def _precision(name: str) -> tuple[str | None, contextlib.AbstractContextManager]:
    """A path's predictor dtype (None: float32, also for "tf32") and the context it runs in ("*_plain_autocast":
    bfloat16 with the CUDA twins off)."""
    dtype = None if name in ("float32", "tf32") else name.split("_")[0]
    return dtype, plain_autocast() if name.endswith("plain_autocast") else contextlib.nullcontext()


def _agreement(ious: list[float]) -> dict[str, Any]:
    return {"masks": len(ious), "mean_iou_vs_float32": float(np.mean(ious)), "lowest_iou": float(np.min(ious))}


@functools.cache
def _image_case() -> tuple[dict, np.ndarray]:
    """The SAM 2.1 image fixture and truck.jpg, read once for the sections that use them."""
    from masklet.data.images import read_image

    ref = torch.load(common.reference_dir() / "sam2.1_hiera_t_image_case.pt", weights_only=False)
    return ref, read_image(common.data_file("images/truck.jpg"))


def _case_kwargs(case: dict) -> dict[str, Any]:
    kwargs = dict(case["kwargs"])
    if "mask_input" in kwargs:
        kwargs["mask_input"] = case["mask_input"]
    return kwargs


def parity_image(model: Any, device: torch.device) -> dict[str, Any]:
    from masklet.predictors.image import ImagePredictor

    ref, image = _image_case()
    out: dict[str, Any] = {}
    for tf32 in (False, True):
        set_tf32(tf32)
        predictor = ImagePredictor(model)
        predictor.set_image(image)
        emb = predictor.get_image_embedding().detach().float().cpu()
        row: dict[str, Any] = {"image_embed_rel": float((emb - ref["image_embed"]).abs().max()
                                                        / ref["image_embed"].abs().mean())}
        worst = {"iou": 0.0, "low_res_logits": 0.0, "pixels_flipped": 0.0}
        for case in ref["prompts"].values():
            masks, scores, low = predictor.predict(**_case_kwargs(case), return_logits=True)
            worst["iou"] = max(worst["iou"], float(np.abs(scores - case["iou_predictions"].numpy()).max()))
            worst["low_res_logits"] = max(worst["low_res_logits"],
                                          float(np.abs(low - case["low_res_logits"].numpy()).max()))
            flipped = mask_errors(masks, case["masks"])[1] / masks.size
            worst["pixels_flipped"] = max(worst["pixels_flipped"], flipped)
        row.update(worst=worst, within_cpu_tolerances=bool(
            row["image_embed_rel"] <= 1e-4 and worst["iou"] <= 1e-4 and worst["low_res_logits"] <= 1e-3
            and worst["pixels_flipped"] <= 1e-4))
        out["tf32" if tf32 else "float32"] = row
    set_tf32(False)
    return out


def autocast_image(model: Any, device: torch.device) -> dict[str, Any]:
    from masklet.predictors.image import ImagePredictor

    ref, image = _image_case()
    results: dict[str, dict[str, np.ndarray]] = {}
    for name in ("float32", *AUTOCAST, "bfloat16_plain_autocast"):
        dtype, context = _precision(name)
        with context:
            predictor = ImagePredictor(model, dtype=dtype)
            predictor.set_image(image)
            results[name] = {case_name: predictor.predict(**_case_kwargs(case))[0]
                             for case_name, case in ref["prompts"].items()}
    return {name: _agreement([iou for case in results["float32"]
                              for iou in mask_iou(results["float32"][case], results[name][case]).reshape(-1)])
            for name in (*AUTOCAST, "bfloat16_plain_autocast")}


def _replay(model: Any, steps: list[dict], dtype: str | None) -> list[dict]:
    from masklet.data.images import read_image
    from masklet.predictors.video import VideoPredictor

    frames = [read_image(common.data_file(f"videos/bedroom_frames/{i:05d}.jpg")) for i in range(8)]
    predictor = VideoPredictor(model, fill_hole_area=0, feature_cache=8, dtype=dtype)
    state = predictor.init_state(frames)
    outputs: list[dict] = []
    replay_steps(predictor, state, steps, lambda i, step, output: outputs.append(output))
    return outputs


def parity_video(model: Any, device: torch.device) -> dict[str, Any]:
    ref = torch.load(common.reference_dir() / "sam2.1_hiera_t_video_case.pt", weights_only=False)
    steps = ref["steps"]
    exact = _replay(model, steps, None)
    worst_flipped, worst_logit, sets = 0.0, 0.0, 0
    for step, output in zip(steps, exact):
        records = {None: step["masks"]} if None in output else step["masks"]
        for key, record in records.items():
            masks = output[key][1]
            logit, flipped = mask_errors(masks, record)
            worst_logit, worst_flipped = max(worst_logit, logit), max(worst_flipped, flipped / masks.numel())
            sets += 1
    out: dict[str, Any] = {"float32": {"mask_sets": sets, "worst_sampled_logit_diff": worst_logit,
                                       "worst_pixels_flipped": worst_flipped,
                                       "within_cpu_tolerances": worst_logit <= 1e-3 and worst_flipped <= 1e-4}}
    for name in ("bfloat16", "bfloat16_plain_autocast"):
        dtype, context = _precision(name)
        with context:
            half = _replay(model, steps, dtype)
        out[name] = _agreement([iou for a_out, b_out in zip(exact, half) for key in a_out
                                for iou in mask_iou(a_out[key][1] > 0, b_out[key][1] > 0).reshape(-1)])
    return out


def encode(model: Any, device: torch.device) -> dict[str, Any]:
    from masklet.data.preprocess import preprocess

    x = preprocess(_image_case()[1], model.input_spec, device)[None]
    out = {}
    for name in ("float32", "tf32", *AUTOCAST, "bfloat16_plain_autocast"):
        set_tf32(name == "tf32")
        dtype, context = _precision(name)
        half = AUTOCAST.get(dtype)

        def call(half: torch.dtype | None = half) -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=half or torch.float32,
                                                        enabled=half is not None):
                model.encode_image(x)

        with context:
            out[name] = {"ms": common.time_call(call, device, warmup=3, repeats=20)["median_s"] * 1e3}
    set_tf32(False)
    return out


def _track(model: Any, frames: list[np.ndarray], dtype: str | None, compile: bool, device: torch.device,
           skip: int = 3) -> dict[str, Any]:
    from masklet.predictors.video import VideoPredictor

    predictor = VideoPredictor(model, dtype=dtype, compile=compile)
    state = predictor.init_state(frames)
    h, w = frames[0].shape[:2]
    predictor.add_new_points_or_box(state, 0, 1, points=[[w / 2, h / 2]], labels=[1])
    times = [s for s, _ in common.timed_iter(predictor.propagate_in_video(state, 0, progress=False), device)]
    steady = sum(times[skip:])
    return {"frames": len(times), "first_frames_s": sum(times[:skip]), "fps": (len(times) - skip) / steady,
            "ms_per_frame": 1e3 * steady / (len(times) - skip)}


def _frames(count: int) -> list[np.ndarray]:
    from masklet.data.sources import VideoFrames

    with VideoFrames(str(common.data_file("videos/bedroom.mp4"))) as video:
        return [video[i] for i in range(min(count, len(video)))]


def video_fps(model: Any, device: torch.device, frames_wanted: int) -> dict[str, Any]:
    frames = _frames(frames_wanted)
    out: dict[str, Any] = {"video": "bedroom.mp4", "frames": len(frames), "size": list(frames[0].shape[:2]),
                           "official_a100_fps": {"eager": 47.2, "compiled": 91.2}}
    for name in ("float32", "tf32", "bfloat16", "float16", "bfloat16_plain_autocast"):
        set_tf32(name == "tf32")
        dtype, context = _precision(name)
        with context:
            out[name] = _track(model, frames, dtype, False, device)
        common.log(f"[gpu] video {name}: {out[name]['fps']:.1f} FPS")
    set_tf32(False)
    return out


def video_compiled(model: Any, device: torch.device, frames_wanted: int) -> dict[str, Any]:
    """bfloat16 tracking with compile=True (last: compiling takes minutes); the first run's seconds apart."""
    from masklet.models.common import enable_compile

    frames = _frames(frames_wanted)
    t0 = time.perf_counter()
    _track(model, frames[:8], "bfloat16", True, device)
    out = {"first_8_frames_s": time.perf_counter() - t0, **_track(model, frames, "bfloat16", True, device)}
    enable_compile(model, on=False)
    return out


def video_profile(model: Any, device: torch.device, frames_wanted: int) -> dict[str, Any]:
    """Where a tracked frame's time goes: bfloat16 tracking of 40 frames under torch.profiler (the operators with
    the most host and device time), and the frame rate without hole filling (fill_hole_area=0) and with the
    masks kept at the model's resolution by asking for fewer frames back."""
    from torch.profiler import ProfilerActivity, profile

    from masklet.predictors.video import VideoPredictor

    frames = _frames(min(frames_wanted, 40))
    out: dict[str, Any] = {}
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        out["profiled"] = _track(model, frames, "bfloat16", False, device)
    table = prof.key_averages()
    out["top_cpu"] = table.table(sort_by="self_cpu_time_total", row_limit=25)
    out["top_cuda"] = table.table(sort_by="self_cuda_time_total", row_limit=15)
    predictor = VideoPredictor(model, dtype="bfloat16", fill_hole_area=0)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[480, 270]], labels=[1])
    times = [t for t, _ in common.timed_iter(predictor.propagate_in_video(state, 0, progress=False), device)]
    out["no_fill_holes_ms_per_frame"] = 1e3 * sum(times[3:]) / (len(times) - 3)
    return out


def everything(model: Any, device: torch.device) -> dict[str, Any]:
    from masklet.data.images import read_image
    from masklet.predictors.everything import AutomaticMaskGenerator

    image = read_image(common.data_file("images/truck.jpg"))
    out = {}
    for name in ("float32", "bfloat16"):
        predictor = AutomaticMaskGenerator(model, points_per_side=32, dtype=None if name == "float32" else name)
        predictor.generate(image)  # warm-up
        common.synchronize(device)
        t0 = time.perf_counter()
        masks = predictor.generate(image)
        common.synchronize(device)
        out[name] = {"s": time.perf_counter() - t0, "masks": len(masks)}
    return out


def train(device: torch.device, images: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(common.ROOT / "bench" / "train_synthetic.py"), "--out", tmp,
               "--data-dir", str(common.data_dir()), "--train-images", str(images), "--val-images", "40",
               "--train-clips", str(images // 10), "--val-clips", "6", "--image-epochs", "2", "--video-epochs", "1",
               "--threads", "4", "--device", str(device), "--amp"]
        run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=240)
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-2000:])
        result = json.loads(run.stdout)
        return {k: result[k] for k in ("device", "amp", "mIoU@1", "J&F", "minutes") if k in result} | {
            "image_steps": 2 * images // 8}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N; cpu for a dry run of the script itself")
    parser.add_argument("--frames", type=int, default=200, help="frames tracked for video_fps")
    parser.add_argument("--train-images", type=int, default=800, help="generated images of the train section")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections left out")
    parser.add_argument("--budget-s", type=float, default=330, help="sections not started after this")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: bench/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "gpu", "machine": common.machine_info(device, "float32"),
                              "seconds": {}, "errors": {}}
    set_tf32(False)
    model = reference_model(device)
    for name in SECTIONS:
        if name in args.skip or time.perf_counter() - start > args.budget_s:
            result["errors"][name] = "skipped"
            continue
        common.log(f"[gpu] {name}")
        t0 = time.perf_counter()
        try:
            if name in ("video_fps", "video_profile", "video_compiled"):
                result[name] = globals()[name](model, device, args.frames)
            elif name == "train":
                result[name] = train(device, args.train_images)
            else:
                result[name] = globals()[name](model, device)
        except Exception:  # noqa: BLE001 - report and go on to the next section
            import traceback

            result["errors"][name] = traceback.format_exc()[-3000:]
        result["seconds"][name] = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
