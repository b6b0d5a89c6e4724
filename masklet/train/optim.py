"""Optimizer and schedule of SAM 2's fine-tuning config: AdamW, a lower learning rate for the image encoder
with layer-wise decay over the Hiera blocks, no weight decay on biases and LayerNorms, and a cosine schedule
from the base rate to a tenth of it (here after an optional linear warm-up)."""
from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

# parameter-name prefixes a user may freeze (`freeze=image_encoder,memory`); short aliases map to module names
FREEZE_ALIASES = {
    "image_encoder": ("image_encoder.",),
    "backbone": ("image_encoder.",),
    "prompt_encoder": ("sam_prompt_encoder.",),
    "mask_decoder": ("sam_mask_decoder.",),
    "decoder": ("sam_mask_decoder.",),
    "memory_attention": ("memory_attention.",),
    "memory_encoder": ("memory_encoder.",),
    "memory": ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_obj_embed_spatial"),
    # the decoder's object-score token and head: "is the object in this frame" (mask_decoder,-object_score
    # freezes the decoder but lets a video phase learn occlusion)
    "object_score": ("sam_mask_decoder.obj_score_token", "sam_mask_decoder.pred_obj_score_head."),
}
# what the image task trains: everything else only exists for tracking
IMAGE_MODE_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")


def parse_freeze(freeze: str | list[str] | tuple[str, ...] | None, model: nn.Module) -> list[str]:
    """`"image_encoder,memory"` or a list -> parameter-name prefixes; an unknown name raises ValueError. A name
    with a leading "-" keeps its parameters trainable inside a frozen part (`"mask_decoder,-object_score"`);
    those come back with the "-" (see `is_frozen`)."""
    if freeze is None or freeze == "" or freeze is False:
        return []
    names = [n.strip() for n in (freeze.split(",") if isinstance(freeze, str) else freeze) if str(n).strip()]
    params = [n for n, _ in model.named_parameters()]
    prefixes: list[str] = []
    for name in names:
        sign, bare = ("-", name[1:].strip()) if name.startswith("-") else ("", name)
        if bare in FREEZE_ALIASES:
            prefixes += [sign + f for f in FREEZE_ALIASES[bare]]
        elif bare and any(p.startswith(bare) for p in params):
            prefixes.append(sign + bare)
        else:
            raise ValueError(f"freeze={name!r} matches no parameter; use {', '.join(FREEZE_ALIASES)} or a "
                             "parameter-name prefix such as sam_mask_decoder.iou_prediction_head (a leading - "
                             "keeps a part trainable)")
    return prefixes


def is_frozen(name: str, prefixes: list[str]) -> bool:
    """Whether parameter `name` is frozen by `parse_freeze`'s prefixes: under a frozen prefix and not under a
    "-" one."""
    frozen = any(name.startswith(f) for f in prefixes if not f.startswith("-"))
    return frozen and not any(name.startswith(f[1:]) for f in prefixes if f.startswith("-"))


def layer_scale(name: str, num_blocks: int, decay: float) -> float:
    """Learning-rate multiplier of an image-encoder parameter (official `layer_decay_param_modifier` applied to
    `image_encoder.trunk`, with `*pos_embed*` overridden to 1): block i gets decay ** (num_blocks - i), the
    patch embedding decay ** (num_blocks + 1), everything outside the trunk 1."""
    if not name.startswith("image_encoder.trunk.") or decay == 1.0:
        return 1.0
    if fnmatch.fnmatchcase(name, "*pos_embed*"):
        return 1.0
    rest = name[len("image_encoder.trunk."):]
    if rest.startswith("patch_embed"):
        layer = 0
    elif rest.startswith("blocks."):
        layer = int(rest.split(".")[1]) + 1
    else:
        layer = num_blocks + 1
    return decay ** (num_blocks + 1 - layer)


def param_groups(model: nn.Module, weight_decay: float, vision_lr_ratio: float,
                 layer_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters; each group carries its `lr_scale` (relative to the base rate)."""
    no_decay = {f"{m_name}.{p_name}" if m_name else p_name
                for m_name, module in model.named_modules() if type(module) is nn.LayerNorm
                for p_name, _ in module.named_parameters(recurse=False)}
    trunk = getattr(getattr(model, "image_encoder", None), "trunk", None)
    num_blocks = len(trunk.blocks) if trunk is not None else 0
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = (vision_lr_ratio if name.startswith("image_encoder.") else 1.0) * layer_scale(name, num_blocks,
                                                                                                layer_decay)
        wd = 0.0 if ("bias" in name or name in no_decay) else weight_decay
        groups.setdefault((scale, wd), []).append(param)
    return [{"params": ps, "lr_scale": s, "weight_decay": wd} for (s, wd), ps in sorted(groups.items())]


def lr_factor(step: int, total: int, warmup: float = 0.0, final: float = 0.1) -> float:
    """Schedule multiplier at optimizer step `step` of `total`: linear warm-up over the first `warmup` fraction,
    then a half cosine from 1 to `final` (the official CosineParamScheduler goes from base_lr to base_lr / 10)."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    span = max(1, total - warm)
    progress = min(1.0, (step - warm) / span)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_scale", 1.0)
    return base_lr * factor
