"""Which CPU bfloat16 lever pays: the image encoder and one memory-attention call timed with each lever on
and off, interleaved call by call in one process (medians of wall and process CPU seconds).

    python bench/levers.py --threads 1 --repeats 3        # reference tiny SAM 2.1, 1024 px, 7 memories

Paths: float32; `autocast` (bfloat16 autocast, the CPU SDPA kernel: masklet before issue 19); `+blocked`
(autocast, attention as bf16 matrix products per query block); `+twins` (bfloat16 copies of the modules, no
blocked attention); `both` (what `dtype="bfloat16"` runs now).

    python bench/levers.py --threads 1 --parts memory_attention --late-value   # value projection before/after
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

PATHS = {"float32": None, "autocast": (False, False), "+blocked": (True, False), "+twins": (False, True),
         "both": (True, True)}
# --late-value: memory attention with the value projection before the attention (as the official code) and after
# (models.transformer.LATE_VALUE_PROJECTION), in float32 and in bfloat16 (both levers)
LATE_VALUE_PATHS = {"float32": (None, True), "float32 early-v": (None, False), "bf16": ((True, True), True),
                    "bf16 early-v": ((True, True), False)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memories", type=int, default=7, help="memory frames the attention call reads")
    parser.add_argument("--parts", nargs="+", default=["encode", "memory_attention"],
                        choices=["encode", "memory_attention"])
    parser.add_argument("--late-value", action="store_true",
                        help="time the late value projection of memory attention instead of the bf16 levers")
    args = common.fill_defaults(parser.parse_args(argv), {}, {})
    args.compare = False
    device = common.setup(args)
    import masklet.models.common as mc
    from masklet.data.images import read_image
    from masklet.data.preprocess import preprocess
    from masklet.predictors.precision import autocast

    model, result = common.load_run_model("levers", args, device)
    image = preprocess(read_image(common.data_file("images/truck.jpg")), model.input_spec, device)[None]
    side = model.image_size // 16
    curr = torch.randn(1, side * side, model.hidden_dim)
    memory = torch.randn(1, args.memories * side * side + 16, model.mem_dim)
    calls = {"encode": lambda: model.encode_image(image),
             "memory_attention": lambda: model.memory_attention(curr, curr, memory, memory, 16)}

    import masklet.models.transformer as mt

    def path(call: Any, levers: tuple[bool, bool] | None, late_value: bool = True) -> Any:
        @torch.inference_mode()
        def run() -> Any:
            mt.LATE_VALUE_PROJECTION = late_value
            try:
                if levers is None:
                    return call()
                mc.CPU_BF16_BLOCKED_ATTENTION, mc.CPU_BF16_TWINS = levers
                with autocast(device, torch.bfloat16):
                    return call()
            finally:
                mc.CPU_BF16_BLOCKED_ATTENTION = mc.CPU_BF16_TWINS = mt.LATE_VALUE_PROJECTION = True
        return run

    result["parts"] = {}
    for part in args.parts:
        common.log(f"[levers] {part}")
        if args.late_value:
            fns = {name: path(calls[part], *how) for name, how in LATE_VALUE_PATHS.items()}
        else:
            fns = {name: path(calls[part], levers) for name, levers in PATHS.items()}
        paths = common.interleaved(fns, device, warmup=1, repeats=args.repeats)
        result["parts"][part] = {"paths": paths, "speedup_vs_float32": common.speedups(paths),
                                 "speedup_vs_float32_cpu_time": common.speedups(paths, "cpu_median_s")}
        common.log({k: round(v, 2) for k, v in result["parts"][part]["speedup_vs_float32_cpu_time"].items()})
    common.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
