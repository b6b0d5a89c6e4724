"""Image-encoder speed: seconds per image, GFLOPs and achieved GFLOP/s, for one model or several.

    python bench/encode.py                                  # reference tiny SAM 2.1 at 1024 px
    python bench/encode.py --models all --repeats 3         # SAM 2.1 t/s/b+/l, sam_vit_b, mobile_sam_vit_t
    python bench/encode.py --model sam2.1_hiera_l --dtype bfloat16 --imgsz 512
    python bench/encode.py --quick                          # smoke test (tiny test variant)

Prints one JSON object; `results` has one row per model (params, float32 checkpoint size, seconds per image,
GFLOPs per image, GFLOP/s). Variant names get random weights: the encoder's cost does not depend on them.
On a device with a faster precision than float32 (a CPU with avx512_bf16 / amx_bf16: bfloat16) each row also
times that precision, interleaved call by call with float32 (`paths`, `speedup_vs_float32`; --no-compare to
skip); the machine block names the CPU capability and flags.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def _sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                **kwargs: Any) -> int:
    # torch's flop counter only knows the CUDA attention kernels; on CPU scaled_dot_product_attention reaches
    # the counter as one op and would count as 0. Two batched matmuls: Q K^T and softmax(.) V.
    *batch, lq, e = query_shape
    lk, ev = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * lq * lk * (e + ev)


def _flop_mapping() -> dict:
    ops = [torch.ops.aten.scaled_dot_product_attention]
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        ops.append(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    return {op: _sdpa_flops for op in ops}


def count_flops(fn: Any) -> int:
    """FLOPs of one call of fn (multiply-add = 2 FLOPs), counted eagerly."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    return counter.get_total_flops()


def bench_model(spec: str, args: Any, device: torch.device) -> dict[str, Any]:
    """One row of the table: load, count FLOPs once, compile if asked, time the encoder."""
    from masklet.data.images import read_image
    from masklet.data.preprocess import preprocess

    common.log(f"[encode] {spec}: loading")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # each row's GPU peak is its own model's
    try:
        model, info = common.load_bench_model(spec, device, args.seed)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one bad name must not lose the other rows
        common.log(f"[encode] {spec}: {exc}")
        return {"model": spec, "error": common.error_text(exc)}
    row: dict[str, Any] = {"model": spec, **info}
    try:
        imgsz = args.imgsz or info["native_imgsz"]
        row["imgsz"] = imgsz
        row["batch"] = args.batch
        if imgsz != model.image_size:
            model.set_image_size(imgsz)
        row["precision"] = common.apply_precision(model, args.dtype, args.precision)
        image = read_image(args.image) if args.image != "random" else None
        if image is None:
            x = torch.randn(args.batch, 3, imgsz, imgsz, device=device)
        else:
            x = preprocess(image, model.input_spec, device)[None].expand(args.batch, -1, -1, -1).contiguous()
        x = x.to(model.dtype)

        @torch.inference_mode()
        def encode() -> Any:
            with common.autocast_context(args, device):
                return model.encode_image(x)

        if not args.no_flops:
            try:
                row["gflops"] = count_flops(encode) / args.batch / 1e9
            except Exception as exc:  # noqa: BLE001 - a counting failure must not lose the timing
                row["flops_error"] = common.error_text(exc)
        compiler = common.Compiler(model, args.compile)
        compiler.guard(encode)  # first call: compiles, or falls back to eager
        row["compile"] = compiler.info
        if args.compare:
            # float32 and the device's fastest precision (run as the predictors run it), call by call
            from masklet.predictors.precision import autocast

            fast = common.DTYPES[common.fastest_dtype_name(device)]

            @torch.inference_mode()
            def encode_fast() -> Any:
                with autocast(device, fast):
                    return model.encode_image(x)

            paths = common.interleaved({"float32": encode, str(fast).replace("torch.", ""): encode_fast}, device,
                                       warmup=args.warmup, repeats=args.repeats)
            row["paths"] = paths
            row["speedup_vs_float32"] = common.speedups(paths)
            row["speedup_vs_float32_cpu_time"] = common.speedups(paths, "cpu_median_s")
            timing = paths["float32"]
        else:
            timing = common.time_call(encode, device, warmup=args.warmup, repeats=args.repeats)
        row["encode_s"] = timing["median_s"] / args.batch
        row["encode_s_mean"] = timing["mean_s"] / args.batch
        row["encode_s_min"] = timing["min_s"] / args.batch
        row["timing_per_call"] = timing
        row["images_per_s"] = 1.0 / row["encode_s"]
        if "gflops" in row:
            row["gflops_per_s"] = row["gflops"] / row["encode_s"]
    except Exception as exc:  # noqa: BLE001 - e.g. an op without a bfloat16 kernel: report, go on
        row["error"] = common.error_text(exc)
        common.log(f"[encode] {spec}: {row['error']}")
    row["memory"] = common.memory_snapshot(device)
    common.free_model(model)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=None,
                        help="several models to compare (same forms as --model; 'all' = " + " ".join(common.ALL_MODELS)
                             + "). Default: just --model")
    parser.add_argument("--imgsz", type=int, default=None, help="input side (multiple of 64; default: model's, 1024)")
    parser.add_argument("--batch", type=int, default=1, help="images per encoder call (seconds are per image)")
    parser.add_argument("--image", default=None, help="image to encode, or 'random' (default: shared truck.jpg)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    args = parser.parse_args(argv)
    common.fill_defaults(args, normal={"warmup": 1, "repeats": 5}, quick={"warmup": 1, "repeats": 2})
    if args.image is None:
        args.image = str(common.data_file("images/truck.jpg"))
    device = common.setup(args)
    specs = [name for spec in (args.models or [args.model])
             for name in (common.ALL_MODELS if spec == "all" else [spec])]

    rows = [bench_model(spec, args, device) for spec in specs]
    common.log(f"{'model':<22}{'params M':>10}{'ckpt MB':>10}{'s/img':>10}{'GFLOPs':>10}{'GFLOP/s':>10}")
    nan = float("nan")
    for r in rows:
        common.log(f"{r['model']:<22}{r.get('params_m', nan):>10.2f}{r.get('checkpoint_mb_fp32', nan):>10.1f}"
                   f"{r.get('encode_s', nan):>10.4f}{r.get('gflops', nan):>10.1f}{r.get('gflops_per_s', nan):>10.1f}"
                   + (f"  {r['error']}" if "error" in r else ""))
    result = {
        "benchmark": "encode",
        "machine": common.machine_info(device, args.dtype),
        "settings": common.settings(args),
        "columns": ["model", "variant", "params_m", "checkpoint_mb_fp32", "imgsz", "encode_s", "gflops",
                    "gflops_per_s"],
        "results": rows,
        "memory": common.memory_snapshot(device),
    }
    common.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
