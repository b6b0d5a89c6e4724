"""Video RAM: flat RSS over long one-pass runs (every entry point), and the interactive API's RAM per frame.

    python bench/video_memory.py                          # stream + one-pass entry points (1000 frames at 256 px)
                                                          # + 30 interactive frames at 1024
    python bench/video_memory.py --part one-pass --entries call_file,val_folder
    python bench/video_memory.py --part stream --frames 2000
    python bench/video_memory.py --quick                  # smoke test (tiny test variant)

Streaming: `VideoPredictor.track_stream` follows 2 objects (clicked on frame 0) over an endless generator
that loops a real video (decoded lazily, one frame at a time), at a small input size so 1000 frames take
minutes on a CPU. Peak RSS (VmHWM, reset once the model is loaded so the load's transient does not mask
growth) after frame --check-at (100) and after --frames (1000) must be within --tolerance (10%): the stream
keeps only the memories attention can still reach.

Interactive: `init_state` on the video file (frames decoded on demand) and `propagate_in_video` of 1 object
over --interactive-frames frames at the model's size (1024). RSS grows with the memories kept for every
frame; its growth per frame (least-squares slope of VmRSS after --interactive-warmup frames, once the
bounded frame cache is full) must stay below the reference's 12.6 MB per frame: the reference holds every
frame as a float32 3x1024x1024 tensor (12.6 MB) besides its memories. The exact bytes the predictor keeps
per frame are reported too, free of allocator noise.

One-pass entry points: the Ultralytics-style `SAM2VideoPredictor(...)(source, stream=True)` on a video file
(`call_file`) and on a frame folder (`call_folder`), `auto_annotate` on a video (`annotate_video`, boxes from a
callable) and `masklet.val.run` on a DAVIS-layout folder (`val_folder`), each over --frames frames (the source
video looped, --one-pass-size pixels) at --imgsz. VmRSS (after malloc_trim) is read after --check-at and after
--frames tracked frames (a probe wrapped around `VideoPredictor.propagate_in_video` counts them, whichever entry
point runs it), with the bytes of the tracking state the predictor holds then (exact, unlike RSS, where a small
model's growth hides in allocator noise); both must stay within --tolerance: they track in one pass, keeping
only the memories that tracking onwards reads. The same script run against a masklet without one-pass tracking shows the growth.

The stream runs first: the interactive part at 1024 px would otherwise set the peak the stream is judged by.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

REFERENCE_MB_PER_FRAME = 12.6  # 3 * 1024 * 1024 float32 values per frame, held by the reference video loader


def looping_frames(video: str) -> Iterator[np.ndarray]:
    """The video's frames over and over, decoded one at a time (never a list of frames)."""
    from masklet.data.sources import iter_stream

    while True:
        count = 0
        for frame in iter_stream(video):
            count += 1
            yield frame
        if count == 0:
            raise ValueError(f"{video} yielded no frames")


def kept_state(state: Any) -> dict[str, Any]:
    """What the predictor holds for its objects: frames with results, frames with memories, and their bytes."""
    results = memories = nbytes = 0
    for obj in state.objects:
        for bank in (obj.cond, obj.non_cond, obj.temp_cond, obj.temp_non_cond):
            for res in bank.values():
                results += 1
                for t in (res.pred_masks, res.obj_ptr, res.object_score_logits, res.memory):
                    if t is not None:
                        nbytes += t.numel() * t.element_size()
                memories += res.memory is not None
    return {"objects": len(state.objects), "frame_results": results, "memories": memories,
            "tensor_mb": nbytes / common.MB, "feature_cache_frames": len(state.feature_cache)}


def stream_part(model: Any, video: str, args: Any, device: torch.device) -> dict[str, Any]:
    from masklet.predictors.video import ObjectPrompt, VideoPredictor

    model.set_image_size(args.imgsz)
    predictor = VideoPredictor(model, dtype=common.autocast_dtype(args))
    common.trim_allocator()
    # the peaks compared are the stream's own: loading the checkpoint peaks higher and would hide growth
    peak_reset = common.reset_peak_rss()
    frames = looping_frames(video)
    first = next(frames)
    height, width = first.shape[:2]
    prompts = {0: [ObjectPrompt(k + 1, points=[p], labels=[1])
                   for k, p in enumerate(common.spread_points(args.objects, width, height))]}
    out: dict[str, Any] = {"imgsz": args.imgsz, "objects": args.objects, "frames": args.frames,
                           "check_at": args.check_at, "video_size": [width, height], "peak_reset": peak_reset,
                           "rss_mb_before": common.current_rss_mb(), "samples": []}
    stream = predictor.track_stream(itertools.chain([first], frames), prompts=prompts)
    t_start = t_check = time.perf_counter()
    try:
        for frame_idx, _, masks in stream:
            del masks  # a consumer that keeps nothing: what is left is the predictor's own RAM
            done = frame_idx + 1
            if done % args.sample_every == 0 or done in (args.check_at, args.frames):
                common.synchronize(device)
                if args.malloc_trim:
                    common.trim_allocator()  # steadier current-RSS readings; the peak (VmHWM) is unaffected
                snap = {"frame": done, **common.memory_snapshot(device)}
                out["samples"].append(snap)
                common.log(f"[stream] frame {done}: rss {snap['rss_mb']:.1f} MB, peak {snap['peak_rss_mb']:.1f} MB, "
                           f"{(time.perf_counter() - t_start) / done:.3f} s/frame")
                if done == args.check_at:
                    out["at_check"], t_check = snap, time.perf_counter()
            if done == args.frames:
                out["at_end"] = out["samples"][-1]
                break
    except Exception as exc:  # noqa: BLE001 - e.g. a bfloat16 dtype mismatch: report it in the JSON
        out["error"] = common.error_text(exc)
        return out
    finally:
        stream.close()
        frames.close()
    elapsed = time.perf_counter() - t_start
    out["s_per_frame"] = elapsed / args.frames
    out["s_per_frame_after_check"] = (time.perf_counter() - t_check) / max(1, args.frames - args.check_at)
    out["kept_at_end"] = kept_state(predictor.stream_state)
    first_snap, last_snap = out["at_check"], out["at_end"]
    peak_ratio = last_snap["peak_rss_mb"] / first_snap["peak_rss_mb"]
    rss_ratio = last_snap["rss_mb"] / first_snap["rss_mb"] if first_snap["rss_mb"] else None
    out.update(peak_rss_mb_at_check=first_snap["peak_rss_mb"], peak_rss_mb_at_end=last_snap["peak_rss_mb"],
               rss_mb_at_check=first_snap["rss_mb"], rss_mb_at_end=last_snap["rss_mb"],
               peak_ratio=peak_ratio, rss_ratio=rss_ratio, tolerance=args.tolerance,
               passed=abs(peak_ratio - 1) <= args.tolerance,
               rss_passed=rss_ratio is not None and abs(rss_ratio - 1) <= args.tolerance)
    return out


ONE_PASS_ENTRIES = ("call_file", "call_folder", "annotate_video", "val_folder")


def write_inputs(video: str, frames: int, size: tuple[int, int], folder: Path) -> dict[str, Path]:
    """The looped video as an mp4 file and as a DAVIS-layout folder of JPEG frames (annotation on frame 0)."""
    import cv2
    from PIL import Image

    from masklet.val.datasets import write_palette_png

    width, height = size
    file = folder / "looped.mp4"
    frame_dir = folder / "davis" / "JPEGImages" / "looped"
    frame_dir.mkdir(parents=True)
    writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    source = looping_frames(video)
    try:
        for i, frame in enumerate(itertools.islice(source, frames)):
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            writer.write(small[:, :, ::-1])
            Image.fromarray(small).save(frame_dir / f"{i:05d}.jpg", quality=90)
    finally:
        writer.release()
        source.close()
    label = np.zeros((height, width), np.uint8)
    label[height // 4: 3 * height // 4, width // 8: width // 2] = 1
    label[height // 3: 2 * height // 3, 5 * width // 8: 7 * width // 8] = 2
    write_palette_png(folder / "davis" / "Annotations" / "looped" / "00000.png", label)
    return {"file": file, "folder": frame_dir, "davis": folder / "davis"}


@contextlib.contextmanager
def frame_probe(checkpoints: set[int], malloc_trim: bool) -> Iterator[dict[str, Any]]:
    """Counts the frames `VideoPredictor.propagate_in_video` yields (whoever calls it) and reads VmRSS at the
    given counts; also notes whether the calls asked for one-pass tracking."""
    from masklet.predictors.video import VideoPredictor

    record: dict[str, Any] = {"frames": 0, "rss_mb": {}, "kept": {}, "one_pass": [], "t0": time.perf_counter()}
    original = VideoPredictor.propagate_in_video

    def propagate(self: Any, state: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        record["one_pass"].append(bool(kwargs.get("one_pass", False)))
        for item in original(self, state, *args, **kwargs):
            record["frames"] += 1
            if record["frames"] in checkpoints:
                done = record["frames"]
                record["rss_mb"][done] = common.current_rss_mb(trim=malloc_trim)
                record["kept"][done] = kept_state(state)
                common.log(f"[one-pass] frame {done}: rss {record['rss_mb'][done]:.1f} MB, state "
                           f"{record['kept'][done]['tensor_mb']:.2f} MB, "
                           f"{(time.perf_counter() - record['t0']) / done:.3f} s/frame")
            yield item

    VideoPredictor.propagate_in_video = propagate
    try:
        yield record
    finally:
        VideoPredictor.propagate_in_video = original


def run_entry(entry: str, model: Any, inputs: dict[str, Path], args: Any, folder: Path) -> None:
    points = common.spread_points(args.objects, *args.one_pass_size)
    if entry in ("call_file", "call_folder"):
        from masklet import SAM2VideoPredictor

        predictor = SAM2VideoPredictor(overrides={"model": model, "imgsz": args.imgsz, "verbose": False})
        source = inputs["file"] if entry == "call_file" else inputs["folder"]
        for result in predictor(source=str(source), points=points, labels=[1] * len(points), stream=True):
            del result  # a consumer that keeps nothing
    elif entry == "annotate_video":
        from masklet.api.annotate import auto_annotate

        boxes = np.array([[x - 20, y - 20, x + 20, y + 20] for x, y in points], dtype=np.float32)
        data = folder / "annotate"
        data.mkdir(exist_ok=True)
        link = data / inputs["file"].name
        if not link.exists():
            link.symlink_to(inputs["file"])
        model.set_image_size(args.imgsz)
        auto_annotate(data, det_model=lambda image: (boxes, np.zeros(len(boxes), int)), sam_model=model,
                      output_dir=folder / "annotate_labels", verbose=False)
    elif entry == "val_folder":
        from masklet.val import run

        run(model=model, data=inputs["davis"], imgsz=args.imgsz, save_dir=folder / "val", save_masks=False,
            verbose=False)
    else:
        raise ValueError(f"unknown entry {entry!r}: choose from {', '.join(ONE_PASS_ENTRIES)}")


def one_pass_part(model: Any, video: str, args: Any) -> dict[str, Any]:
    entries = args.entries.split(",") if args.entries else list(ONE_PASS_ENTRIES)
    out: dict[str, Any] = {"imgsz": args.imgsz, "objects": args.objects, "frames": args.frames,
                           "check_at": args.check_at, "video_size": list(args.one_pass_size), "entries": {}}
    with tempfile.TemporaryDirectory(prefix="video_memory_") as tmp:
        folder = Path(tmp)
        inputs = write_inputs(video, args.frames, tuple(args.one_pass_size), folder)
        for entry in entries:
            common.log(f"[one-pass] {entry}: {args.frames} frames at {args.imgsz} px")
            result: dict[str, Any] = {}
            common.trim_allocator()
            result["rss_mb_before"] = common.current_rss_mb(trim=args.malloc_trim)
            t_start = time.perf_counter()
            try:
                with frame_probe({args.check_at, args.frames}, args.malloc_trim) as probe:
                    run_entry(entry, model, inputs, args, folder)
            except Exception as exc:  # noqa: BLE001 - report it in the JSON
                result["error"] = common.error_text(exc)
                out["entries"][entry] = result
                continue
            at_check, at_end = probe["rss_mb"].get(args.check_at), probe["rss_mb"].get(args.frames)
            kept_check, kept_end = probe["kept"].get(args.check_at), probe["kept"].get(args.frames)
            result.update(frames_tracked=probe["frames"], one_pass_calls=probe["one_pass"],
                          s_per_frame=(time.perf_counter() - t_start) / max(1, probe["frames"]),
                          rss_mb_at_check=at_check, rss_mb_at_end=at_end, kept_at_check=kept_check,
                          kept_at_end=kept_end)
            if at_check and at_end:
                ratio = at_end / at_check
                # the predictor's own tensors are exact: RSS growth of a small model hides in allocator noise
                state_growth = kept_end["tensor_mb"] - kept_check["tensor_mb"]
                result.update(rss_ratio=ratio, mb_per_frame=(at_end - at_check) / (args.frames - args.check_at),
                              state_mb_growth=state_growth,
                              passed=abs(ratio - 1) <= args.tolerance
                              and state_growth <= args.tolerance * max(kept_check["tensor_mb"], 1e-9))
            else:
                result["error"] = f"only {probe['frames']} frames were tracked, fewer than --frames {args.frames}"
            out["entries"][entry] = result
    out["passed"] = all(e.get("passed", False) for e in out["entries"].values())
    return out


def interactive_part(model: Any, video: str, native: int, args: Any, device: torch.device) -> dict[str, Any]:
    from masklet.predictors.video import VideoPredictor

    imgsz = args.interactive_imgsz or native
    model.set_image_size(imgsz)
    predictor = VideoPredictor(model, dtype=common.autocast_dtype(args))
    state = predictor.init_state(video)
    frames = min(args.interactive_frames, state.num_frames)
    out: dict[str, Any] = {"imgsz": imgsz, "objects": args.interactive_objects, "frames": frames,
                           "warmup_frames": args.interactive_warmup, "video_frames": state.num_frames}
    rss: list[float] = []
    times: list[float] = []
    try:
        for k, p in enumerate(common.spread_points(args.interactive_objects, state.video_width, state.video_height)):
            predictor.add_new_points_or_box(state, 0, k + 1, points=[p], labels=[1])
        out["rss_mb_before"] = common.current_rss_mb(trim=args.malloc_trim)
        propagation = predictor.propagate_in_video(state, 0, max_frame_num_to_track=frames - 1, progress=False)
        for seconds, (_, _, masks) in common.timed_iter(propagation, device):
            del masks
            times.append(seconds)
            rss.append(common.current_rss_mb(trim=args.malloc_trim))
            if len(rss) % 5 == 0:
                common.log(f"[interactive] frame {len(rss)}: rss {rss[-1]:.1f} MB, {seconds:.2f} s")
    except Exception as exc:  # noqa: BLE001
        out["error"] = common.error_text(exc)
        return out
    finally:
        kept = kept_state(state)
        if state.frames is not None:
            state.frames.close()
    out.update(rss_mb=rss, s_per_frame=common.summarize(times[1:]).get("median_s"), kept=kept,
               state_mb_per_frame=kept["tensor_mb"] / max(1, len(rss)))
    x = np.arange(len(rss))[args.interactive_warmup:]
    y = np.asarray(rss)[args.interactive_warmup:]
    if len(x) >= 2:
        slope = float(np.polyfit(x, y, 1)[0])
        out.update(mb_per_frame=slope, mb_per_frame_endpoints=float((y[-1] - y[0]) / (x[-1] - x[0])),
                   fitted_frames=len(x), reference_mb_per_frame=args.reference_mb_per_frame,
                   passed=slope < args.reference_mb_per_frame)
    else:
        out["error"] = (f"too few frames to fit: {len(rss)} tracked, {args.interactive_warmup} warm-up "
                        "(raise --interactive-frames)")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--video", default=None, help="video file or frame folder (default: shared "
                        "videos/bedroom.mp4, looped for the stream)")
    parser.add_argument("--part", choices=["both", "all", "stream", "one-pass", "interactive"], default="all",
                        help="what to run (both = stream + interactive; all = stream, one-pass and interactive)")
    parser.add_argument("--entries", default=None,
                        help=f"one-pass entry points, comma-separated (default all: {','.join(ONE_PASS_ENTRIES)})")
    parser.add_argument("--one-pass-size", type=int, nargs=2, default=[480, 270], metavar=("W", "H"),
                        help="frame size of the one-pass inputs")
    parser.add_argument("--frames", type=int, default=None, help="streamed frames (default 1000)")
    parser.add_argument("--check-at", type=int, default=None,
                        help="frame count of the first RSS reading (default 100; half of --frames if that is less)")
    parser.add_argument("--imgsz", type=int, default=None, help="input side of the stream (default 256)")
    parser.add_argument("--objects", type=int, default=2, help="objects tracked in the stream")
    parser.add_argument("--sample-every", type=int, default=None, help="RSS readings every this many stream frames")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed relative change of peak RSS")
    parser.add_argument("--interactive-frames", type=int, default=None, help="frames propagated (default 30)")
    parser.add_argument("--interactive-warmup", type=int, default=None,
                        help="first frames left out of the RSS fit (default 10: the frame cache fills meanwhile)")
    parser.add_argument("--interactive-imgsz", type=int, default=None, help="default: the model's (1024)")
    parser.add_argument("--interactive-objects", type=int, default=1, help="objects propagated")
    parser.add_argument("--no-malloc-trim", dest="malloc_trim", action="store_false",
                        help="read RSS without first returning the allocator's free pages to the OS (noisier: "
                             "transient buffers of a 1024 px frame come and go by tens of MB)")
    parser.add_argument("--reference-mb-per-frame", type=float, default=REFERENCE_MB_PER_FRAME,
                        help="the limit: the reference predictor's RAM per frame")
    args = parser.parse_args(argv)
    common.fill_defaults(
        args, normal={"frames": 1000, "check_at": 100, "imgsz": 256, "sample_every": 50, "interactive_frames": 30,
                      "interactive_warmup": 10},
        quick={"frames": 6, "imgsz": 256, "sample_every": 1, "interactive_frames": 4, "interactive_warmup": 1})
    if args.check_at is None or args.check_at >= args.frames:
        args.check_at = max(1, args.frames // 2)
    video = args.video or str(common.data_file("videos/bedroom.mp4"))
    device = common.setup(args)

    model, result = common.load_run_model("video_memory", args, device, sam2_only=True)
    result["video"] = video
    result["memory_after_load"] = common.memory_snapshot(device)
    compiler = common.Compiler(model, args.compile)
    result["compile"] = compiler.info
    if args.part in ("all", "both", "stream"):
        common.log(f"[stream] {args.frames} frames at {args.imgsz} px")
        result["stream"] = compiler.guard(lambda: _raise_on_error(stream_part(model, video, args, device), compiler))
    if args.part in ("all", "one-pass"):
        common.log(f"[one-pass] {args.frames} frames per entry point at {args.imgsz} px")
        model.set_image_size(args.imgsz)
        result["one_pass"] = compiler.guard(lambda: _raise_on_error(one_pass_part(model, video, args), compiler))
    if args.part in ("all", "both", "interactive"):
        common.log(f"[interactive] {args.interactive_frames} frames")
        result["interactive"] = compiler.guard(
            lambda: _raise_on_error(interactive_part(model, video, result["model"]["native_imgsz"], args, device), compiler))
    result["passed"] = all(result[p].get("passed", False) for p in ("stream", "one_pass", "interactive")
                           if p in result)
    return common.finish(result, args.output, device)


def _raise_on_error(part: dict[str, Any], compiler: common.Compiler) -> dict[str, Any]:
    # with compiled modules an error may be a compile failure: raise it so the guard retries eagerly
    if "error" in part and compiler.compiling:
        raise RuntimeError(part["error"])
    return part


if __name__ == "__main__":
    main()
