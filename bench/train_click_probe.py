"""Does training learn which object a click picks? Three identical white discs on black, one positive click
inside one of them: appearance says nothing about which disc is meant, only the click's position does.

A model trained from random weights first learns "every disc" (best-of-three IoU about 1/3) or "no disc"
and stays there until the decoder ties the click's position encoding to the image's; the step where the
best-of-three IoU leaves that plateau measures how fast a change to the model, the loss or the prompt
simulation teaches click localisation, in minutes instead of the half hour of `train_synthetic.py`.

    python bench/train_click_probe.py                      # sam2_test at 128 px, 3000 steps of 8 images
    python bench/train_click_probe.py --width 64 --steps 1500 --corrections 1

Prints one JSON object: the best-of-three IoU of each `--every` steps (mean over the batch) and the first
step where it passed 0.6. Uses masklet.train's own pieces (`image_forward`, `SAM2Loss`, `PromptRecipe`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def discs(rng: np.random.Generator, count: int, size: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (3, size, size) with three white discs each, and the mask of one disc per image."""
    import cv2

    images, masks = [], []
    for _ in range(count):
        ids = np.zeros((size, size), np.uint8)
        for k in (1, 2, 3):
            cx, cy = rng.uniform(radius + 6, size - radius - 6, 2)
            cv2.circle(ids, (int(cx), int(cy)), radius, k, -1)
        visible = [k for k in (1, 2, 3) if (ids == k).any()]
        images.append(torch.from_numpy(np.repeat((ids > 0)[None].astype(np.float32), 3, 0)))
        masks.append(torch.from_numpy(ids == visible[rng.integers(len(visible))]))
    return torch.stack(images), torch.stack(masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=None, help="d_model of the decoder (sam2_test: 32)")
    parser.add_argument("--corrections", type=int, default=0)
    parser.add_argument("--prob-box", type=float, default=0.0)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="mimetic", choices=("mimetic", "default"),
                        help="random initialisation as masklet.train does it (mimetic) or PyTorch's (default)")
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()

    from masklet.models.sam2 import SAM2Model
    from masklet.models.variants import SAM2_VARIANTS
    from masklet.train.forward import image_forward
    from masklet.train.init import mimetic_init
    from masklet.train.loss import SAM2Loss
    from masklet.train.prompts import PromptRecipe

    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    config = SAM2_VARIANTS["sam2_test"]
    if opts.width:
        config = dataclasses.replace(config, name=f"sam2_test_d{opts.width}", d_model=opts.width,
                                     decoder_mlp_dim=2 * opts.width)
    model = SAM2Model(config)
    if opts.init == "mimetic":
        mimetic_init(model)
    model.set_image_size(opts.imgsz)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr)
    loss_fn = SAM2Loss()
    recipe = PromptRecipe(corrections=opts.corrections, prob_box=opts.prob_box)
    rng, generator = np.random.default_rng(opts.seed), torch.Generator().manual_seed(opts.seed)
    curve, window, first_above, t0 = [], [], None, time.perf_counter()
    for step in range(1, opts.steps + 1):
        images, masks = discs(rng, opts.batch, opts.imgsz, radius=opts.imgsz // 9)
        outputs = image_forward(model, model.encode_image(images), torch.arange(opts.batch), masks, recipe,
                                generator)
        loss = loss_fn(outputs, masks[None])["core_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            pred = outputs[0]["multistep_pred_multimasks_high_res"][0] > 0  # first prompt, (B, 3, S, S)
            target = masks[:, None]
            iou = (pred & target).flatten(2).sum(-1) / (pred | target).flatten(2).sum(-1).clamp(min=1)
            window.append(float(iou.max(1).values.mean()))
        if step % opts.every == 0:
            mean = float(np.mean(window))
            window = []
            curve.append({"step": step, "best_of_3_iou": round(mean, 3), "loss": round(float(loss.detach()), 3),
                          "seconds": round(time.perf_counter() - t0, 1)})
            common.log(curve[-1])
            if first_above is None and mean > 0.6:
                first_above = step
    device = torch.device("cpu")
    result = {"benchmark": "train_click_probe", "model": config.name, "imgsz": opts.imgsz, "batch": opts.batch,
              "lr": opts.lr, "corrections": opts.corrections, "prob_box": opts.prob_box, "seed": opts.seed,
              "init": opts.init, "threads": opts.threads, "first_step_above_0.6": first_above, "curve": curve,
              "machine": common.machine_info(device, "float32")}
    common.emit(result)


if __name__ == "__main__":
    main()
