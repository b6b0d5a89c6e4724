"""Automatic mask generator ("segment everything") speed: encode / decode / post-processing seconds.

    python bench/everything.py                          # 32x32 grid on truck.jpg, reference tiny SAM 2.1
    python bench/everything.py --compare-plain          # also time post-processing without the fast path
    python bench/everything.py --points-per-side 16 --threads 2
    python bench/everything.py --quick                  # smoke test (tiny test variant, 4x4 grid)

Two generator settings are timed on the same image: the official defaults (pred_iou_thresh 0.8,
stability_score_thresh 0.95), and a worst case with both thresholds at 0 where every candidate survives the
filters, which is where post-processing time shows (random weights predict low IoU, so with the defaults
almost nothing reaches post-processing). The decoder's outputs of the first run are reused by the later runs
(`decode_reused: true`): decoding depends only on the prompts, and reusing it keeps the benchmark short.
On a device with a faster precision than float32 (bfloat16 on CPUs with avx512_bf16 / amx_bf16), `paths`
compares the default settings in float32 and in that precision, runs alternating (--repeats; --no-compare to
skip): `python bench/everything.py --grid 16 --repeats 2 --threads 2`; with --compile also both compiled
(`enable_compile`), after one untimed compiling run each (`first_run_*`).
`--compare-plain` adds the worst case with `fast=False` (every candidate upsampled to full resolution, as the
official generator does) and checks that both give identical masks.

Prints one JSON object (machine info, settings, one row per run with seconds per stage and mask counts).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


class _DecodeCache:
    """Wraps a generator's `_decode`, remembering outputs by prompt so that later runs skip the decoder."""

    def __init__(self) -> None:
        self.store: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def wrap(self, gen: Any) -> None:
        original = gen._decode

        def decode(points, labels, mask_input, multimask):
            key = (points.numpy().tobytes(), None if mask_input is None else mask_input.numpy().tobytes(), multimask)
            if key not in self.store:
                self.store[key] = original(points, labels, mask_input, multimask)
            return self.store[key]

        gen._decode = decode


def run(model: Any, image: np.ndarray, label: str, kwargs: dict[str, Any], cache: _DecodeCache | None,
        args: Any, device: torch.device, dtype: torch.dtype | None = None,
        compiled: bool | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from masklet.models.common import enable_compile
    from masklet.predictors.everything import AutomaticMaskGenerator

    enable_compile(model, args.compile if compiled is None else compiled)

    gen = AutomaticMaskGenerator(model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                                 **kwargs, dtype=dtype)
    reused = cache is not None and bool(cache.store)
    if cache is not None:
        cache.wrap(gen)
    common.log(f"[everything] {label}: {kwargs}")
    t0, c0 = time.perf_counter(), time.process_time()
    with common.autocast_context(args, device):
        masks = gen.generate(image)
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    row = {
        "run": label,
        "settings": kwargs,
        "total_s": total,
        "encode_s": gen.timings["encode"],
        "decode_s": gen.timings["decode"],
        "decode_reused": reused,
        "postprocess_s": gen.timings["postprocess"],
        # process CPU seconds (all threads): on a shared machine wall time also counts other jobs' turns
        "total_cpu_s": total_cpu,
        "encode_cpu_s": gen.timings["encode_cpu"],
        "decode_cpu_s": gen.timings["decode_cpu"],
        "postprocess_cpu_s": gen.timings["postprocess_cpu"],
        "candidates": gen.num_candidates,
        "masks": len(masks),
        "postprocess_ms_per_candidate": 1000 * gen.timings["postprocess"] / max(gen.num_candidates, 1),
    }
    common.log(f"[everything] {label}: {len(masks)} masks, total {total:.1f}s, {gen.timings}")
    return row, masks


def same_masks(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not np.array_equal(x["segmentation"], y["segmentation"]):
            return False
        if {k: v for k, v in x.items() if k != "segmentation"} != {k: v for k, v in y.items() if k != "segmentation"}:
            return False
    return True


def compare_precisions(model: Any, image: np.ndarray, args: Any, device: torch.device) -> dict[str, Any]:
    """The default settings in float32 and in the device's fastest precision (all stages, the decoder too),
    alternating --repeats times, nothing reused; totals are medians, masks are counted per precision."""
    fast_name = common.fastest_dtype_name(device)
    dtypes = {"float32": (torch.float32, False), fast_name: (common.DTYPES[fast_name], False)}
    out: dict[str, Any] = {}
    if args.compile:
        # eager and compiled alternate too; one untimed run per compiled path first (it compiles)
        dtypes.update({f"{name}+compile": (dtype, True) for name, (dtype, _) in list(dtypes.items())})
        for name, (dtype, compiled) in dtypes.items():
            if compiled:
                row, _ = run(model, image, f"compile_{name}", {}, None, args, device, dtype=dtype, compiled=True)
                out[f"first_run_{name}"] = {k: row[k] for k in ("total_s", "total_cpu_s")}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in dtypes}
    for rep in range(args.repeats):
        for name, (dtype, compiled) in dtypes.items():
            row, _ = run(model, image, f"compare_{name}_{rep + 1}", {}, None, args, device, dtype=dtype,
                         compiled=compiled)
            rows[name].append({**row, "load_avg": common.load_avg()})
    for name, runs in rows.items():
        out[name] = {k: common.summarize([r[k] for r in runs])["median_s"]
                     for k in ("total_s", "encode_s", "decode_s", "postprocess_s", "total_cpu_s")}
        out[name].update(masks=[r["masks"] for r in runs], runs=runs)
    base = out["float32"]["total_s"]
    out["speedup_vs_float32"] = {n: base / out[n]["total_s"] for n in dtypes if n != "float32"}
    out["speedup_vs_float32_cpu_time"] = {n: out["float32"]["total_cpu_s"] / out[n]["total_cpu_s"]
                                          for n in dtypes if n != "float32"}
    return out


def main() -> None:
    parser = common.common_parser(__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="image file (default: the shared data's images/truck.jpg)")
    parser.add_argument("--points-per-side", "--grid", type=int, default=None,
                        help="grid size (default 32; 4 with --quick)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --compare: alternating float32 / fastest runs of the default settings")
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--compare-plain", action="store_true",
                        help="also run the worst case with fast=False and check the masks are identical")
    parser.add_argument("--no-reuse-decode", action="store_true", help="decode again in every run")
    parser.add_argument("--only-compare", action="store_true",
                        help="skip the float32 defaults / worst-case rows: just the precision comparison")
    args = common.fill_defaults(parser.parse_args(), {"points_per_side": 32}, {"points_per_side": 4})
    device = common.setup(args)

    from masklet.data.images import read_image

    image = read_image(args.image or common.data_file("images/truck.jpg"))
    model, model_info = common.load_bench_model(args.model, device, args.seed)
    precision = common.apply_precision(model, args.dtype, args.precision)
    cache = None if args.no_reuse_decode else _DecodeCache()

    worst = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    rows = []
    with torch.inference_mode():
        if not args.only_compare:
            row, _ = run(model, image, "defaults", {}, cache, args, device)
            rows.append(row)
            row, fast_masks = run(model, image, "worst_case", worst, cache, args, device)
            rows.append(row)
        if args.compare_plain and not args.only_compare:
            row, plain_masks = run(model, image, "worst_case_plain", {**worst, "fast": False}, cache, args, device)
            row["identical_to_fast"] = same_masks(fast_masks, plain_masks)
            rows.append(row)

        paths = compare_precisions(model, image, args, device) if args.compare else None

    result = {
        "benchmark": "everything",
        "machine": common.machine_info(device, args.dtype),
        "model": model_info,
        "precision": precision,
        "image": {"path": str(args.image or "images/truck.jpg"), "height": image.shape[0], "width": image.shape[1]},
        "settings": common.settings(args),
        "results": rows,
        **({"paths": paths} if paths else {}),
        "memory": common.memory_snapshot(device),
    }
    common.emit(result, args.output)


if __name__ == "__main__":
    main()
