"""onnxruntime vs torch on the same CPU, in one run: image encode, decode per prompt, video seconds per frame.

    python bench/export.py                       # reference tiny SAM 2.1 at 1024 px
    python bench/export.py --frames 8 --objects 1 3
    python bench/export.py --quick               # smoke test (tiny test variant)

The model is exported to a temporary folder (float32, and a copy with the int8 image encoder), then timed
through ImagePredictor / VideoPredictor (torch) and OnnxImagePredictor / OnnxVideoPredictor (onnxruntime).
Video: one click per object on frame 0, then `propagate_in_video` over --frames frames; seconds per tracked
frame (frame 0, the prompted one, excluded). `memory_bank` times memory_attention.onnx with the bank passed at
its real size (dynamic axes) against a graph with a fixed padded bank (num_maskmem frames, max_obj_ptrs
pointers) and a validity mask, at an early (2 memories, 2 pointers) and a full bank.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def _median_ms(timing: dict[str, Any]) -> float | None:
    return None if "median_s" not in timing else timing["median_s"] * 1e3


def bench_image(name: str, predictor: Any, image: np.ndarray, args: Any, device: torch.device) -> dict[str, Any]:
    common.log(f"[export] image: {name}")
    out: dict[str, Any] = {}
    out["encode_s"] = common.time_call(lambda: predictor.set_image(image), device, 1, args.repeats)
    h, w = image.shape[:2]
    point = np.array([common.spread_points(1, w, h)[0]])
    out["decode_point_ms"] = _median_ms(common.time_call(
        lambda: predictor.predict(point_coords=point, point_labels=np.ones(1)), device, 2, args.repeats * 4))
    box = np.array([w * 0.2, h * 0.2, w * 0.7, h * 0.8])
    out["decode_box_ms"] = _median_ms(common.time_call(
        lambda: predictor.predict(box=box, multimask_output=False), device, 2, args.repeats * 4))
    return out


def bench_video(name: str, make: Any, frames: list[np.ndarray], objects: int, device: torch.device) -> dict[str, Any]:
    common.log(f"[export] video: {name}, {objects} object(s)")
    predictor = make()
    with torch.inference_mode():
        state = predictor.init_state(frames)
        h, w = frames[0].shape[:2]
        for k, (x, y) in enumerate(common.spread_points(objects, w, h)):
            predictor.add_new_points_or_box(state, 0, k + 1, points=[[x, y]], labels=[1])
        times = [t for t, (f, _, _) in common.timed_iter(predictor.propagate_in_video(state, progress=False), device)
                 if f > 0]
    return {"s_per_frame": common.summarize(times)}


def bench_bank(model: Any, folder: Path, padded_folder: Path, args: Any) -> dict[str, Any]:
    """memory_attention.onnx with a dynamic bank vs a fixed padded bank with a validity mask."""
    import onnxruntime as ort

    common.log("[export] memory bank: dynamic vs padded")
    c, mem_dim, h = model.hidden_dim, model.mem_dim, model.image_size // 16
    frames_max, ptrs_max = model.num_maskmem, model.config.max_obj_ptrs_in_encoder
    opts = ort.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
    dyn = ort.InferenceSession(str(folder / "memory_attention.onnx"), opts, providers=["CPUExecutionProvider"])
    pad = ort.InferenceSession(str(padded_folder / "memory_attention.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    base = {"vision_features": rng.standard_normal((1, c, h, h), np.float32),
            "vision_pos_enc": rng.standard_normal((1, c, h, h), np.float32)}
    out: dict[str, Any] = {"padded_frames": frames_max, "padded_ptrs": ptrs_max}
    for label, frames, ptrs in (("early", 2, 2), ("full", frames_max, ptrs_max)):
        feeds = {**base, "memory": rng.standard_normal((1, frames, mem_dim, h, h), np.float32),
                 "memory_tpos": np.arange(frames, dtype=np.int64) % frames_max,
                 "obj_ptrs": rng.standard_normal((1, ptrs, c), np.float32),
                 "obj_ptr_tpos": np.linspace(0, 1, ptrs, dtype=np.float32)}
        padded = {**base, "memory": np.zeros((1, frames_max, mem_dim, h, h), np.float32),
                  "memory_tpos": np.arange(frames_max, dtype=np.int64),
                  "obj_ptrs": np.zeros((1, ptrs_max, c), np.float32),
                  "obj_ptr_tpos": np.zeros(ptrs_max, np.float32),
                  "memory_valid": np.zeros((1, frames_max), np.float32), "obj_ptr_valid": np.zeros((1, ptrs_max), np.float32)}
        padded["memory"][:, :frames] = feeds["memory"]
        padded["memory_tpos"][:frames] = feeds["memory_tpos"]
        padded["obj_ptrs"][:, :ptrs] = feeds["obj_ptrs"]
        padded["obj_ptr_tpos"][:ptrs] = feeds["obj_ptr_tpos"]
        padded["memory_valid"][:, :frames] = 1
        padded["obj_ptr_valid"][:, :ptrs] = 1
        a = dyn.run(None, feeds)[0]
        b = pad.run(None, padded)[0]
        cpu = torch.device("cpu")
        out[label] = {"frames": frames, "ptrs": ptrs,
                      "dynamic_ms": _median_ms(common.time_call(lambda: dyn.run(None, feeds), cpu, 1, args.repeats)),
                      "padded_ms": _median_ms(common.time_call(lambda: pad.run(None, padded), cpu, 1, args.repeats)),
                      "max_abs_diff": float(np.abs(a - b).max())}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the model's)")
    parser.add_argument("--frames", type=int, default=None, help="video frames propagated (default 6, quick 3)")
    parser.add_argument("--objects", type=int, nargs="+", default=None, help="objects tracked (default 1 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 3, quick 2)")
    parser.add_argument("--no-video", action="store_true", help="image timings only")
    args = parser.parse_args(argv)
    common.fill_defaults(args, normal={"frames": 6, "objects": [1, 3], "repeats": 3},
                         quick={"frames": 3, "objects": [1], "repeats": 2})
    device = common.setup(args)
    if device.type != "cpu":
        raise SystemExit("error: bench/export.py compares on the CPU (onnxruntime's CPU provider): use --device cpu")
    model, result = common.load_run_model("export", args, device, sam2_only=False, imgsz=args.imgsz)
    model = model.float().eval()
    import onnxruntime as ort

    from masklet.data.images import read_image
    from masklet.export.exporter import export_model, quantize_encoder, write_metadata
    from masklet.onnx import OnnxImagePredictor, OnnxVideoPredictor
    from masklet.predictors.image import ImagePredictor

    result["machine"].update(onnxruntime=ort.__version__, ort_threads=args.threads or "default")
    imgsz = model.image_size
    tmp = Path(tempfile.mkdtemp(prefix="masklet-bench-export-"))
    try:
        fp32, int8, padded = tmp / "fp32", tmp / "int8", tmp / "padded"
        for folder in (fp32, padded):
            folder.mkdir()
        common.log("[export] exporting")
        t = __import__("time").perf_counter()
        export_model(model, fp32, imgsz, 17, progress=False)
        result["export_s"] = __import__("time").perf_counter() - t
        write_metadata(fp32, model, imgsz, 17, False, None)
        shutil.copytree(fp32, int8)
        quantize_encoder(int8)
        (int8 / "image_encoder.fp32.onnx").unlink()
        result["graph_mb"] = {p.name: p.stat().st_size / common.MB for p in sorted(fp32.glob("*.onnx"))}
        result["int8_encoder_mb"] = (int8 / "image_encoder.onnx").stat().st_size / common.MB

        image = read_image(common.data_file("images/truck.jpg"))
        threads = args.threads
        backends = {"torch": lambda: ImagePredictor(model),
                    "onnx_fp32": lambda: OnnxImagePredictor(fp32, threads=threads),
                    "onnx_int8": lambda: OnnxImagePredictor(int8, threads=threads)}
        result["image"] = {name: bench_image(name, make(), image, args, device) for name, make in backends.items()}

        if model.family == "sam2":
            export_model(model, padded, imgsz, 17, graphs=("memory_attention",), padded_bank=True, progress=False)
            result["memory_bank"] = bench_bank(model, fp32, padded, args)
            if not args.no_video:
                from masklet.predictors.video import VideoPredictor

                frames = [read_image(common.data_file(f"videos/bedroom_frames/{i:05d}.jpg"))
                          for i in range(args.frames)]
                video = {"torch": lambda: VideoPredictor(model),
                         "onnx_fp32": lambda: OnnxVideoPredictor(fp32, threads=threads),
                         "onnx_int8": lambda: OnnxVideoPredictor(int8, threads=threads)}
                result["video"] = {f"{name}_{n}obj": bench_video(name, make, frames, n, device)
                                   for n in args.objects for name, make in video.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return common.finish(result, args.output, device)


if __name__ == "__main__":
    main()
