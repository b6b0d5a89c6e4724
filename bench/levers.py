"""Which CPU bfloat16 lever pays: the image encoder and one memory-attention call timed with each lever on
and off, interleaved call by call in one process (medians of wall and process CPU seconds).

    python bench/levers.py --threads 1 --repeats 3        # reference tiny SAM 2.1, 1024 px, 7 memories

Paths: float32; `autocast` (bfloat16 autocast, the CPU SDPA kernel: masklet before issue 19); `+blocked`
(autocast, attention as bf16 matrix products per query block); `+twins` (bfloat16 copies of the modules, no
blocked attention); `both` (what `dtype="bfloat16"` runs now).
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memories", type=int, default=7, help="memory frames the attention call reads")
    parser.add_argument("--parts", nargs="+", default=["encode", "memory_attention"],
                        choices=["encode", "memory_attention"])
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

    def path(call: Any, levers: tuple[bool, bool] | None) -> Any:
        @torch.inference_mode()
        def run() -> Any:
            if levers is None:
                return call()
            mc.CPU_BF16_BLOCKED_ATTENTION, mc.CPU_BF16_TWINS = levers
            try:
                with autocast(device, torch.bfloat16):
                    return call()
            finally:
                mc.CPU_BF16_BLOCKED_ATTENTION = mc.CPU_BF16_TWINS = True
        return run

    result["parts"] = {}
    for part in args.parts:
        common.log(f"[levers] {part}")
        paths = common.interleaved({name: path(calls[part], levers) for name, levers in PATHS.items()}, device,
                                   warmup=1, repeats=args.repeats)
        result["parts"][part] = {"paths": paths, "speedup_vs_float32": common.speedups(paths),
                                 "speedup_vs_float32_cpu_time": common.speedups(paths, "cpu_median_s")}
        common.log({k: round(v, 2) for k, v in result["parts"][part]["speedup_vs_float32_cpu_time"].items()})
    common.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
