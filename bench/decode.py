"""Prompt-decoding speed: milliseconds per 1-point prompt, per 64-point batch and per 16-box batch.

    python bench/decode.py                          # reference tiny SAM 2.1 on truck.jpg
    python bench/decode.py --model sam_vit_b --dtype bfloat16
    python bench/decode.py --quick                  # smoke test (tiny test variant)

The image is encoded once (`set_image`, timed as well); each case then times `ImagePredictor.predict` (the
numpy API: prompt checks, masks upsampled to the image size and copied to numpy) and `predict_tensors` (the
tensor path with prompts already in model coordinates: decoder plus upsampling only) and `decoder` (prompt
encoder + mask decoder alone, low-resolution output: the model's share). A 64-point batch is 64 prompts of one
point each in one call (as the automatic mask generator sends them); 16 boxes are one call.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def grid_boxes(count: int, width: int, height: int) -> np.ndarray:
    """`count` xyxy boxes, each half a grid cell wide, centred on the cells of `spread_points`."""
    centres = np.array(common.spread_points(count, width, height))
    cols = max(1, int(np.ceil(np.sqrt(count * width / height))))
    rows = int(np.ceil(count / cols))
    half = np.array([width / cols, height / rows]) / 4
    return np.concatenate([centres - half, centres + half], axis=1)


def cases(args: Any, width: int, height: int) -> dict[str, dict[str, Any]]:
    """The prompt sets, as `predict` keyword arguments (official multimask defaults of each use)."""
    point = np.array([common.spread_points(1, width, height)[0]])
    points = np.array(common.spread_points(args.points, width, height))[:, None, :]
    return {
        # one click: the interactive case; the official predictor returns 3 masks for one point
        "point_1": {"point_coords": point, "point_labels": np.ones(1), "multimask_output": True},
        # a batch of single clicks, as the automatic mask generator decodes them (multimask on)
        f"points_{args.points}": {"point_coords": points, "point_labels": np.ones((args.points, 1)),
                                  "multimask_output": True},
        # boxes are unambiguous: one mask each, as in the official box-batch example
        f"boxes_{args.boxes}": {"box": grid_boxes(args.boxes, width, height), "multimask_output": False},
    }


def _ms_stats(timing: dict[str, Any]) -> dict[str, Any]:
    return {"n": timing["n"], **{k.replace("_s", "_ms"): v * 1e3 for k, v in timing.items() if k.endswith("_s")}}


def bench_case(predictor: Any, kwargs: dict[str, Any], args: Any, device: torch.device) -> dict[str, Any]:
    """Time one prompt set three ways: `predict` (numpy API), `predict_tensors` (tensor API) and `decoder`
    (prompt encoder + mask decoder alone: the model's share, without upsampling masks to the image size)."""
    from masklet.predictors.prompts import official_prompts, to_model_frame

    prompts = official_prompts(kwargs.get("point_coords"), kwargs.get("point_labels"), kwargs.get("box"))
    batch = prompts.batch
    multimask = kwargs["multimask_output"]
    out: dict[str, Any] = {"prompts": batch, "multimask_output": multimask}
    model = predictor.model
    pts, lbl, boxes, masks = to_model_frame(prompts, predictor.orig_hw[0], predictor.spec, False, device)
    cast = (lambda t: None if t is None else t.to(model.dtype))

    @torch.inference_mode()
    def decoder() -> Any:
        features = predictor._images[0].features  # the cached encoder output of the image
        with common.autocast_context(args, device):
            sparse, dense = model.encode_prompts(cast(pts), lbl, cast(boxes), cast(masks))
            return model.decode(model.image_embedding(features), features.high_res, sparse, dense, multimask)

    calls = {
        "predict": lambda: predictor.predict(**kwargs),
        "predict_tensors": lambda: predictor.predict_tensors(0, pts, lbl, boxes, masks, multimask),
        "decoder": decoder,
    }
    for api, fn in calls.items():
        try:
            timing = common.time_call(fn, device, args.warmup, args.repeats)
            out[f"{api}_ms"] = timing["median_s"] * 1e3
            out[f"{api}_ms_per_prompt"] = out[f"{api}_ms"] / batch
            out[f"{api}_stats_ms"] = _ms_stats(timing)
        except Exception as exc:  # noqa: BLE001 - e.g. a dtype mismatch in the prompt encoder: report it
            out[f"{api}_error"] = common.error_text(exc)
            common.log(f"[decode] {api}: {out[f'{api}_error']}")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--image", default=None, help="image to prompt (default: shared images/truck.jpg)")
    parser.add_argument("--imgsz", type=int, default=None, help="model input side (default: the model's, 1024)")
    parser.add_argument("--points", type=int, default=None, help="single-point prompts in the batched-points case "
                        "(default 64)")
    parser.add_argument("--boxes", type=int, default=None, help="boxes in the box-batch case (default 16)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per case")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    args = parser.parse_args(argv)
    common.fill_defaults(args, normal={"warmup": 3, "repeats": 20, "points": 64, "boxes": 16},
                        quick={"warmup": 0, "repeats": 1, "points": 4, "boxes": 4})
    image_path = Path(args.image) if args.image else common.data_file("images/truck.jpg")
    device = common.setup(args)

    from masklet.data.images import read_image
    from masklet.predictors.image import ImagePredictor

    model, result = common.load_run_model("decode", args, device, imgsz=args.imgsz)
    compiler = common.Compiler(model, args.compile)
    image = read_image(image_path)
    height, width = image.shape[:2]
    result["image"] = {"path": str(image_path), "width": width, "height": height}
    predictor = ImagePredictor(model, dtype=common.autocast_dtype(args))
    try:
        compiler.guard(lambda: predictor.set_image(image))  # also the warm-up of the encoder
        # the encoder is slow on CPU: a single timed run unless asked for more
        result["set_image_s"] = common.time_call(lambda: predictor.set_image(image), device, 0,
                                                 max(1, args.repeats // 10))["median_s"]
    except Exception as exc:  # noqa: BLE001
        result["set_image_error"] = common.error_text(exc)
    result["compile"] = compiler.info
    result["cases"] = {}
    if predictor.is_image_set:
        for name, kwargs in cases(args, width, height).items():
            common.log(f"[decode] {name}")
            result["cases"][name] = bench_case(predictor, kwargs, args, device)
    return common.finish(result, args.output, device)


if __name__ == "__main__":
    main()
