"""Does torch.compile (inductor, CPU) pay on masklet's chains? Each chain eager and compiled, in float32 and in
bfloat16 (the bf16 module copies `dtype="bfloat16"` runs), interleaved call by call in one process; compile
seconds of each first call (process CPU seconds too, since inductor's C++ builds run in this process tree).

    python bench/compiled.py --threads 1 --repeats 3              # reference tiny SAM 2.1, 1024 px
    python bench/compiled.py --threads 1 --parts decoder --dtypes bfloat16

Chains: `trunk` (Hiera image trunk), `neck` (FPN neck + the decoder's high-res 1x1 convs), `memory_attention`
(current frame over 7 memories + 16 object pointers), `decoder` (two-way transformer and upscaling for 4 prompts,
one CPU chunk of segment everything). Set TORCHINDUCTOR_COMPILE_THREADS=1 to keep the C++ builds on one core.
"""
from __future__ import annotations

import copy
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

PARTS = ("trunk", "neck", "memory_attention", "decoder")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def chains(model: Any, dtype: torch.dtype, memories: int) -> dict[str, tuple[Any, tuple]]:
    """name -> (callable module or function, inputs) in `dtype` (module copies cast to it)."""
    from masklet.models.mask_decoder import MaskDecoder

    def cast(module: torch.nn.Module) -> torch.nn.Module:
        return module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)

    side = model.image_size // 16
    c, mem_dim = model.hidden_dim, model.mem_dim
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    trunk = cast(model.image_encoder.trunk)
    neck, conv_s0, conv_s1 = (cast(m) for m in (model.image_encoder.neck, model.sam_mask_decoder.conv_s0,
                                                model.sam_mask_decoder.conv_s1))
    with torch.inference_mode():
        feats = trunk(rnd(1, 3, model.image_size, model.image_size))

    def neck_fn(*xs: torch.Tensor) -> Any:
        out, pos = neck(list(xs))
        return conv_s0(out[0]), conv_s1(out[1]), out[2], pos[2]

    transformer, upscaling = cast(model.sam_mask_decoder.transformer), cast(model.sam_mask_decoder.output_upscaling)
    n_prompts = 4

    def decoder_fn(image: torch.Tensor, pe: torch.Tensor, tokens: torch.Tensor, hyper: torch.Tensor,
                   s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        hs, src = transformer(image, pe, tokens)
        src = src.transpose(1, 2).reshape(tokens.shape[0], c, side, side)
        return hs, MaskDecoder._upscale_bands(upscaling, src, hyper, s0, s1)

    memory_attention = cast(model.memory_attention)
    n_mem = memories * side * side + 16
    return {
        "trunk": (trunk, (rnd(1, 3, model.image_size, model.image_size),)),
        "neck": (neck_fn, tuple(f.clone() for f in feats)),
        "memory_attention": (lambda *a: memory_attention(*a, 16),
                             (rnd(1, side * side, c), rnd(1, side * side, c), rnd(1, n_mem, mem_dim),
                              rnd(1, n_mem, mem_dim))),
        "decoder": (decoder_fn, (rnd(1, c, side, side), rnd(1, c, side, side), rnd(n_prompts, 7, c),
                                 rnd(n_prompts, 4, c // 8), rnd(1, c // 8, 4 * side, 4 * side),
                                 rnd(1, c // 4, 2 * side, 2 * side))),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memories", type=int, default=7)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--mode", default=None, help="torch.compile mode (default, max-autotune-no-cudagraphs)")
    args = common.fill_defaults(parser.parse_args(argv), {}, {})
    args.compare = False
    device = common.setup(args)
    model, result = common.load_run_model("compiled", args, device)
    result["inductor_compile_threads"] = os.environ.get("TORCHINDUCTOR_COMPILE_THREADS")
    result["compile_mode"] = args.mode
    result["parts"] = {}
    for dtype_name in args.dtypes:
        dtype = common.DTYPES[dtype_name]
        built = chains(model, dtype, args.memories)
        for part in args.parts:
            fn, inputs = built[part]
            compiled = torch.compile(fn, mode=args.mode)
            key = f"{part}/{dtype_name}"
            common.log(f"[compiled] {key}: compiling")
            with torch.inference_mode():
                t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu_s()
                try:
                    compiled(*inputs)
                except Exception as exc:  # noqa: BLE001 - a failed compile is a result
                    result["parts"][key] = {"compile_error": common.error_text(exc)}
                    common.log(f"[compiled] {key}: {common.error_text(exc)}")
                    continue
                compile_info = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                                "children_cpu_s": _children_cpu_s() - k0}

            def run(f: Any) -> Any:
                @torch.inference_mode()
                def call() -> Any:
                    return f(*inputs)
                return call

            paths = common.interleaved({"eager": run(fn), "compiled": run(compiled)}, device, warmup=1,
                                       repeats=args.repeats)
            with torch.inference_mode():
                a, b = fn(*inputs), compiled(*inputs)
            a = a if isinstance(a, (tuple, list)) else (a,)
            b = b if isinstance(b, (tuple, list)) else (b,)
            diff = max(float((x.float() - y.float()).abs().max() / (x.float().abs().max() + 1e-12))
                       for x, y in zip(a, b))
            row = {"compile": compile_info, "paths": paths,
                   "compiled_speedup_cpu_time": common.speedups(paths, "cpu_median_s", base="eager"),
                   "compiled_speedup_wall": common.speedups(paths, base="eager"), "max_rel_diff": diff}
            result["parts"][key] = row
            common.log(key, {k: round(v, 3) for k, v in compile_info.items()},
                       {k: round(v, 3) for k, v in row["compiled_speedup_cpu_time"].items()}, f"diff {diff:.2e}")
            torch._dynamo.reset()
    common.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
