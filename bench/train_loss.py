"""Time and peak memory of SAM 2's training loss on one clip, as masklet computes it against autograd through
the plain definitions: focal and dice of every multimask output in one pass with a closed-form gradient that
skips the outputs the loss does not train (`masklet.train.loss._MaskTerms`), and the decoder's upsampling to
full resolution as two matrix products (`masklet.train.forward.upsample_bilinear`), against
`focal_loss_per_mask` + `dice_loss_per_mask` + `F.interpolate`. The inputs are what the official recipe
gives the loss: T frames x N objects x M multimask low-res logits (size / 4), upsampled to size x size.

    python bench/train_loss.py                      # 8 frames, 3 objects, 3 masks, 1024 px (the official recipe)
    python bench/train_loss.py --size 128 --objects 8 --masks 1 --threads 1

Prints one JSON object: per variant the median seconds of forward + backward and the peak memory above the
inputs (resident memory on a CPU, after handing freed heap pages back; allocated memory on CUDA).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import time
from typing import Any
from unittest import mock

import common
import torch
import torch.nn.functional as F


def _inputs(frames: int, objects: int, masks: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    low = (torch.randn(frames, objects, masks, size // 4, size // 4, generator=g) * 4).to(device).requires_grad_()
    targets = (torch.rand(frames, objects, size, size, generator=g) > 0.7).to(device)
    ious = torch.rand(frames, objects, masks, generator=g).to(device).requires_grad_()
    scores = torch.randn(frames, objects, 1, generator=g).to(device).requires_grad_()
    return low, targets, ious, scores


def _run(fused: bool, inputs, size: int) -> None:
    from masklet.train import loss as loss_module
    from masklet.train.forward import upsample_bilinear

    low, targets, ious, scores = inputs
    if fused:
        upsample, plain = functools.partial(upsample_bilinear, size=size), contextlib.nullcontext()
    else:  # the same loss with the plain definitions, through autograd
        def upsample(x):
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

        def mask_terms(x, t, alpha, gamma):
            t = t.expand_as(x).to(x.dtype)
            return (loss_module.focal_loss_per_mask(x, t, alpha, gamma), loss_module.dice_loss_per_mask(x, t),
                    loss_module.mask_iou(x, t))
        plain = mock.patch.object(loss_module._MaskTerms, "apply", mask_terms)
    outputs = [{"multistep_pred_multimasks_high_res": [upsample(low[t])], "multistep_pred_ious": [ious[t]],
                "multistep_object_score_logits": [scores[t]]} for t in range(len(low))]
    with plain:
        loss_module.SAM2Loss()(outputs, targets)[loss_module.CORE_LOSS].backward()
    for tensor in (low, ious, scores):
        tensor.grad = None


def _measure(fused: bool, inputs, size: int, device: torch.device) -> tuple[float, float]:
    """(seconds, peak MB above the inputs) of one forward + backward."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = common.current_rss_mb(trim=True)
        common.reset_peak_rss()
    t0 = time.perf_counter()
    _run(fused, inputs, size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated(device) - before) / common.MB
    return time.perf_counter() - t0, common.memory_snapshot()["peak_rss_mb"] - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--masks", type=int, default=3, help="multimask outputs per object (1 or 3)")
    parser.add_argument("--size", type=int, default=1024, help="input size (the loss runs at size x size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 frames at 128 px, one repeat (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size, args.repeats = 2, 128, 1
    device = common.setup(args)
    inputs = _inputs(args.frames, args.objects, args.masks, args.size, device)
    runs: dict[str, list[tuple[float, float]]] = {"fused": [], "autograd": []}
    for _ in range(args.repeats + 1):  # interleaved; the first round warms up and is dropped
        for name, rows in runs.items():
            rows.append(_measure(name == "fused", inputs, args.size, device))
    result: dict[str, Any] = {"benchmark": "train_loss", "machine": common.machine_info(device, "float32"),
                              "settings": vars(args)}
    for name, rows in runs.items():
        result[name] = {"s": round(statistics.median(s for s, _ in rows[1:]), 4),
                        "peak_mb": round(max(mb for _, mb in rows[1:]), 1)}
    result["speedup"] = round(result["autograd"]["s"] / result["fused"]["s"], 2)
    result["memory_ratio"] = round(result["autograd"]["peak_mb"] / max(result["fused"]["peak_mb"], 1e-6), 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
