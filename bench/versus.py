"""This tree against another masklet version, in one process: encode, one memory-attention call, one decoder
chunk and a short video run timed alternately (process CPU seconds), float32 by default.

    git archive 76dbae5 masklet | tar -x -C /tmp/base && mv /tmp/base/masklet /tmp/base/masklet_base
    grep -rl masklet /tmp/base/masklet_base --include=*.py | \
        xargs sed -i -E 's/(from|import) masklet(\\.|\\s)/\\1 masklet_base\\2/g'
    PYTHONPATH=.:/tmp/base python bench/versus.py --threads 1 --repeats 3

The other version is imported as the package `masklet_base` (a renamed copy), so both run side by side on
the same weights (the reference random tiny SAM 2.1) and inputs.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def parts(pkg: str, dtype: str, frames: list[np.ndarray]) -> dict[str, Any]:
    build = importlib.import_module(f"{pkg}.models.build")
    images = importlib.import_module(f"{pkg}.data.images")
    preprocess = importlib.import_module(f"{pkg}.data.preprocess")
    precision = importlib.import_module(f"{pkg}.predictors.precision")
    video = importlib.import_module(f"{pkg}.predictors.video")
    model = build.load_model(common.reference_dir() / common.REFERENCE_CHECKPOINT).eval()
    device = torch.device("cpu")
    fast = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    image = preprocess.preprocess(images.read_image(common.data_file("images/truck.jpg")), model.input_spec,
                                  device)[None]
    side = model.image_size // 16
    g = torch.Generator().manual_seed(0)
    curr = torch.randn(1, side * side, model.hidden_dim, generator=g)
    memory = torch.randn(1, 7 * side * side + 16, model.mem_dim, generator=g)
    with torch.inference_mode():
        features = model.encode_image(image)
    embedding = model.image_embedding(features)
    points = torch.rand(4, 1, 2, generator=g) * model.image_size
    sparse, dense = model.encode_prompts(points, torch.ones(4, 1, dtype=torch.int32), None, None)

    def encode() -> Any:
        with torch.inference_mode(), precision.autocast(device, fast):
            return model.encode_image(image)

    def memory_attention() -> Any:
        with torch.inference_mode(), precision.autocast(device, fast):
            return model.memory_attention(curr, curr, memory, memory, 16)

    def decoder() -> Any:
        with torch.inference_mode(), precision.autocast(device, fast):
            return model.decode(embedding, features.high_res, sparse, dense, True)

    def track() -> Any:
        predictor = video.VideoPredictor(model, dtype=dtype)
        state = predictor.init_state(frames)
        h, w = frames[0].shape[:2]
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[w * 0.5, h * 0.6]], labels=[1])
        return list(predictor.propagate_in_video(state, progress=False))

    return {"encode": encode, "memory_attention": memory_attention, "decoder": decoder, "video": track}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.common_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", default="masklet_base", help="package name of the other version")
    parser.add_argument("--frames", type=int, default=4, help="video frames (bedroom.mp4) of the `video` part")
    parser.add_argument("--parts", nargs="+", default=["encode", "memory_attention", "decoder", "video"])
    args = common.fill_defaults(parser.parse_args(argv), {}, {})
    args.compare = False
    device = common.setup(args)
    import cv2

    cap = cv2.VideoCapture(str(common.data_file("videos/bedroom.mp4")))
    frames = []
    while len(frames) < args.frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
    result: dict[str, Any] = {"benchmark": "versus", "machine": common.machine_info(device, args.dtype),
                              "settings": common.settings(args), "base": args.base, "parts": {}}
    ours, base = parts("masklet", args.dtype, frames), parts(args.base, args.dtype, frames)
    for part in args.parts:
        common.log(f"[versus] {part}")
        paths = common.interleaved({args.base: base[part], "this tree": ours[part]}, device, warmup=1,
                                   repeats=args.repeats)
        result["parts"][part] = {"paths": paths,
                                 "speedup_cpu_time": common.speedups(paths, "cpu_median_s", base=args.base),
                                 "speedup_wall": common.speedups(paths, base=args.base)}
        common.log(part, {k: round(v, 3) for k, v in result["parts"][part]["speedup_cpu_time"].items()})
    common.emit(result, args.output)
    return result


if __name__ == "__main__":
    main()
