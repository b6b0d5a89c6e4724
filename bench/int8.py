"""Does int8 dynamic quantization of the linear layers pay on a CPU? `torch.ao.quantization.quantize_dynamic`
(weights int8 per tensor, activations quantized per call; fbgemm/x86 kernels with VNNI) on a copy of each
chain, timed against float32 and the bfloat16 copies interleaved call by call in one process, plus the masks of
the SAM 2.1 reference image case (truck.jpg, 7 prompt cases, 12 masks) with an int8 image encoder against
float32 (IoU, as tests/test_precision.py does for bfloat16).

    python bench/int8.py --threads 1 --repeats 3

Chains as bench/compiled.py: `trunk` (Hiera), `memory_attention` (7 memories + 16 pointers), `decoder`
(two-way transformer and upscaling for 4 prompts).
"""
from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from compiled import chains

from masklet.utils.masks import mask_iou

PARTS = ("trunk", "memory_attention", "decoder")


def quantized(module: torch.nn.Module) -> torch.nn.Module:
    """An int8-dynamic copy of `module` (its nn.Linear layers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear}, dtype=torch.qint8)


def image_case_ious(model: Any) -> dict[str, Any]:
    """IoU of the 12 masks of the reference image case, int8 trunk (or also int8 decoder) vs float32."""
    from masklet.data.images import read_image
    from masklet.predictors.image import ImagePredictor

    ref = torch.load(common.reference_dir() / "sam2.1_hiera_t_image_case.pt", weights_only=False)
    image = read_image(common.data_file("images/truck.jpg"))

    def masks() -> list[np.ndarray]:
        predictor = ImagePredictor(model)
        predictor.set_image(image)
        out = []
        for case in ref["prompts"].values():
            kwargs = {k: v.numpy() if torch.is_tensor(v) else v for k, v in case["kwargs"].items()}
            if "mask_input" in case:
                kwargs["mask_input"] = np.asarray(case["mask_input"])
            out.append(predictor.predict(**kwargs)[0])
        return out

    with torch.inference_mode():
        base = masks()
        result = {}
        trunk, transformer = model.image_encoder.trunk, model.sam_mask_decoder.transformer
        model.image_encoder.trunk = quantized(trunk)
        try:
            ious = np.concatenate([np.ravel(mask_iou(a, b)) for a, b in zip(base, masks())])
            result["int8_trunk"] = {"mean_iou": float(ious.mean()), "min_iou": float(ious.min()), "n": len(ious)}
            model.sam_mask_decoder.transformer = quantized(transformer)
            ious = np.concatenate([np.ravel(mask_iou(a, b)) for a, b in zip(base, masks())])
            result["int8_trunk_and_decoder"] = {"mean_iou": float(ious.mean()), "min_iou": float(ious.min()),
                                                "n": len(ious)}
        finally:
            model.image_encoder.trunk, model.sam_mask_decoder.transformer = trunk, transformer
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memories", type=int, default=7)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--no-accuracy", action="store_true")
    args = common.fill_defaults(parser.parse_args(argv), {}, {})
    args.compare = False
    device = common.setup(args)
    model, result = common.load_run_model("int8", args, device)
    result["quantized_engine"] = torch.backends.quantized.engine
    fp32 = chains(model, torch.float32, args.memories)
    bf16 = chains(model, torch.bfloat16, args.memories)
    int8_modules = {"trunk": quantized(model.image_encoder.trunk),
                    "memory_attention": quantized(model.memory_attention)}
    qtransformer = quantized(model.sam_mask_decoder.transformer)
    result["parts"] = {}
    for part in args.parts:
        fn, inputs = fp32[part]
        if part == "decoder":
            # the transformer's linears are int8; the upscaling has none (transposed convs)
            original = model.sam_mask_decoder.transformer
            model.sam_mask_decoder.transformer = qtransformer
            qfn, _ = chains(model, torch.float32, args.memories)["decoder"]
            model.sam_mask_decoder.transformer = original
        elif part == "memory_attention":
            qm = int8_modules[part]
            qfn = lambda *a: qm(*a, 16)  # noqa: E731
        else:
            qfn = int8_modules[part]
        bfn, binputs = bf16[part]

        def run(f: Any, xs: tuple) -> Any:
            @torch.inference_mode()
            def call() -> Any:
                return f(*xs)
            return call

        common.log(f"[int8] {part}")
        paths = common.interleaved({"float32": run(fn, inputs), "int8": run(qfn, inputs),
                                    "bfloat16": run(bfn, binputs)}, device, warmup=1, repeats=args.repeats)
        with torch.inference_mode():
            a, b = fn(*inputs), qfn(*inputs)
        a = a if isinstance(a, (tuple, list)) else (a,)
        b = b if isinstance(b, (tuple, list)) else (b,)
        diff = max(float((x.float() - y.float()).abs().max() / (x.float().abs().max() + 1e-12)) for x, y in zip(a, b))
        result["parts"][part] = {"paths": paths, "speedup_vs_float32_cpu_time": common.speedups(paths, "cpu_median_s"),
                                 "int8_max_rel_diff": diff}
        common.log(part, {k: round(v, 3) for k, v in result["parts"][part]["speedup_vs_float32_cpu_time"].items()},
                   f"diff {diff:.2e}")
    if not args.no_accuracy:
        common.log("[int8] accuracy on the reference image case")
        result["accuracy"] = image_case_ious(model)
        common.log(result["accuracy"])
    common.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
