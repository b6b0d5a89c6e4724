"""Video tracking speed: seconds per frame for 1, 3 and 10 objects, objects batched and one at a time.

    python bench/video.py                               # reference tiny SAM 2.1, first 8 frames of bedroom.mp4
    python bench/video.py --frames 16 --objects 1 3 10 --modes batched
    python bench/video.py --quick                       # smoke test (tiny test variant)

Each run opens the video with `VideoPredictor.init_state` (frames decoded on demand), clicks one point per
object on frame 0 (points spread over the frame) and propagates forward over the first --frames frames.
Seconds per frame are the steady state: the first --skip frames (the prompted frame and the first tracked
one, which has almost no memory yet) are left out. `batched` tracks objects that share a memory layout in one
batch per frame (masklet's default); `sequential` runs them one at a time like the reference implementation.
The ratio of 3-object to 1-object seconds per frame shows how much an extra object costs.
On a device with a faster precision than float32 (bfloat16 on CPUs with avx512_bf16 / amx_bf16) `paths` also
compares float32 with it, runs alternating (--repeats, --no-compare to skip), e.g.

    python bench/video.py --objects 1 --modes batched --repeats 2 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

MODES = {"batched": True, "sequential": False}


def track(model: Any, video: str, num_objects: int, batch_objects: bool, args: Any,
          device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """One tracking run; per-frame seconds of the propagation. dtype: the predictor's precision (default: as
    --dtype / --precision say)."""
    from masklet.predictors.video import VideoPredictor

    predictor = VideoPredictor(model, batch_objects=batch_objects,
                               dtype=dtype if dtype is not None else common.autocast_dtype(args))
    t0 = time.perf_counter()
    state = predictor.init_state(video)  # encodes frame 0
    common.synchronize(device)
    out: dict[str, Any] = {"objects": num_objects, "init_state_s": time.perf_counter() - t0}
    try:
        if state.num_frames < args.frames:
            raise ValueError(f"{video} has {state.num_frames} frames, fewer than --frames {args.frames}")
        t0 = time.perf_counter()
        for k, point in enumerate(common.spread_points(num_objects, state.video_width, state.video_height)):
            predictor.add_new_points_or_box(state, 0, k + 1, points=[point], labels=[1])
        common.synchronize(device)
        out["prompt_s"] = time.perf_counter() - t0
        frames = predictor.propagate_in_video(state, 0, max_frame_num_to_track=args.frames - 1, progress=False)
        times, cpu_times, present = [], [], 0
        cpu_prev = time.process_time()
        for seconds, (_, _, masks) in common.timed_iter(frames, device):
            times.append(seconds)
            present = int((masks.flatten(1) > 0).any(1).sum())
            cpu_now = time.process_time()  # process CPU seconds (all threads): less sensitive to other jobs
            cpu_times.append(cpu_now - cpu_prev)
            cpu_prev = cpu_now
        steady = times[args.skip:]
        out.update(frames=len(times), measured_frames=len(steady), frame_s=times, frame_cpu_s=cpu_times,
                   total_s=sum(times),
                   objects_present_last_frame=present)
        stats = common.summarize(steady)
        if steady:
            out["s_per_frame"] = stats["median_s"]
            out["s_per_frame_mean"] = stats["mean_s"]
            out["fps"] = 1.0 / stats["median_s"]
    except Exception as exc:  # noqa: BLE001 - e.g. a bfloat16 dtype mismatch: report, go on
        out["error"] = common.error_text(exc)
        common.log(f"[video] {num_objects} objects: {out['error']}")
    finally:
        if state.frames is not None:
            state.frames.close()
    out["memory"] = common.memory_snapshot(device)
    return out


def compare_precisions(model: Any, video: str, args: Any, device: torch.device,
                       float32_runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """float32 against the device's fastest precision: runs alternate (A B A B ...) --repeats times per object
    count, so a shared machine's changing load falls on both; seconds per frame are medians over the steady
    frames of all repeats. The first float32 run of each object count goes into `float32_runs`."""
    fast_name = common.fastest_dtype_name(device)
    dtypes = {"float32": torch.float32, fast_name: common.DTYPES[fast_name]}
    out: dict[str, Any] = {}
    for count in args.objects:
        frames: dict[str, list[float]] = {name: [] for name in dtypes}
        cpu: dict[str, list[float]] = {name: [] for name in dtypes}
        loads = []
        for rep in range(args.repeats):
            for name, dtype in dtypes.items():
                common.log(f"[video] compare {name}, {count} objects, repeat {rep + 1}/{args.repeats}")
                run = track(model, video, count, True, args, device, dtype=dtype)
                if "error" in run:
                    raise SystemExit(f"error: {name} tracking failed: {run['error']}")
                frames[name] += run["frame_s"][args.skip:]
                cpu[name] += run["frame_cpu_s"][args.skip:]
                if name == "float32":
                    float32_runs.setdefault(count, run)
                loads.append(common.load_avg())
        per = {name: {"s_per_frame": common.summarize(f)["median_s"], "frames_s": f,
                      "cpu_s_per_frame": common.summarize(cpu[name])["median_s"], "frames_cpu_s": cpu[name]}
               for name, f in frames.items()}
        base, base_cpu = per["float32"]["s_per_frame"], per["float32"]["cpu_s_per_frame"]
        out[str(count)] = {**per, "speedup_vs_float32": {n: base / p["s_per_frame"] for n, p in per.items()
                                                          if n != "float32"},
                           "speedup_vs_float32_cpu_time": {n: base_cpu / p["cpu_s_per_frame"]
                                                           for n, p in per.items() if n != "float32"},
                           "s_per_frame_per_object": {n: p["s_per_frame"] / count for n, p in per.items()},
                           "load_avg": loads}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--video", default=None,
                        help="video file or frame folder (default: shared videos/bedroom.mp4; "
                             "videos/bedroom_frames works too)")
    parser.add_argument("--frames", type=int, default=None, help="frames tracked from frame 0 (default 8)")
    parser.add_argument("--objects", type=int, nargs="+", default=None, help="object counts (default 1 3 10)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                        help="batched: objects in one batch per frame; sequential: one at a time (reference)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --compare: alternating float32 / fastest runs per object count")
    parser.add_argument("--skip", type=int, default=2, help="first frames left out of the steady state")
    parser.add_argument("--imgsz", type=int, default=None, help="model input side (default: the model's, 1024)")
    parser.add_argument("--warmup-frames", type=int, default=None,
                        help="frames of an untimed 1-object run first (first-call and compile costs)")
    args = parser.parse_args(argv)
    common.fill_defaults(args, normal={"frames": 8, "objects": [1, 3, 10], "warmup_frames": 3},
                         quick={"frames": 4, "objects": [1, 3], "warmup_frames": 0})
    if args.frames <= args.skip:
        parser.error(f"--frames ({args.frames}) must be larger than --skip ({args.skip})")
    video = args.video or str(common.data_file("videos/bedroom.mp4"))
    device = common.setup(args)

    model, result = common.load_run_model("video", args, device, sam2_only=True, imgsz=args.imgsz)
    result["video"] = video
    compiler = common.Compiler(model, args.compile)
    if args.warmup_frames or compiler.compiling:
        if compiler.compiling:
            # compiled code is specialised to shapes: the memory count grows over the first frames and the
            # batch is the object count, so warm up on every shape the timed runs will see
            warm, counts = argparse.Namespace(**{**vars(args), "skip": 0}), args.objects
        else:
            warm = argparse.Namespace(**{**vars(args), "frames": max(args.warmup_frames, args.skip + 1), "skip": 0})
            counts = [1]
        common.log(f"[video] warm-up: {counts} objects, {warm.frames} frames")

        def warmup() -> None:
            for count in counts:
                run = track(model, video, count, True, warm, device)
                if "error" in run and compiler.compiling:
                    raise RuntimeError(run["error"])  # lets the compile guard fall back to eager

        compiler.guard(warmup)
    result["compile"] = compiler.info

    reuse: dict[int, dict[str, Any]] = {}
    if args.compare:
        result["paths"] = compare_precisions(model, video, args, device, reuse)
    runs: dict[str, list[dict[str, Any]]] = {}
    for mode in args.modes:
        runs[mode] = []
        for count in args.objects:
            if mode == "batched" and count in reuse and args.dtype == "float32":
                runs[mode].append(reuse[count])  # the comparison's first float32 run is this run
                continue
            common.log(f"[video] {mode}, {count} objects, {args.frames} frames")
            runs[mode].append(track(model, video, count, MODES[mode], args, device))
    result["runs"] = runs

    summary: dict[str, Any] = {}
    for mode, mode_runs in runs.items():
        per_frame = {r["objects"]: r.get("s_per_frame") for r in mode_runs}
        entry: dict[str, Any] = {"s_per_frame": {str(k): v for k, v in per_frame.items()}}
        one = per_frame.get(1)
        if one:
            entry["ratio_vs_1_object"] = {str(k): v / one for k, v in per_frame.items() if v is not None}
            if per_frame.get(3) is not None:
                entry["ratio_3_to_1"] = per_frame[3] / one
        summary[mode] = entry
    if "batched" in summary and "sequential" in summary:
        summary["sequential_over_batched"] = {
            str(k): s / b for k, b in summary["batched"]["s_per_frame"].items()
            if b and (s := summary["sequential"]["s_per_frame"].get(k))}
    result["summary"] = summary
    return common.finish(result, args.output, device)


if __name__ == "__main__":
    main()
