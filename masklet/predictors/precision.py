"""Reduced-precision inference: bfloat16 / float16 autocast around the model's forward passes."""
from __future__ import annotations

import contextlib
from typing import Union

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_dtype(dtype: Union[str, torch.dtype, None], half: bool = False,
                  device: Union[torch.device, str, None] = None) -> torch.dtype:
    """`dtype` given as a torch dtype or a name ("bfloat16", "bf16", "float16", ...); `half=True` (used when
    dtype is None) means float16 on CUDA and bfloat16 elsewhere (the fast type of each) — on `device`, or on
    this machine when no device is given."""
    if not isinstance(half, bool):
        raise ValueError(f"half must be True or False, got {half!r}")
    if dtype is None:
        if not half:
            return torch.float32
        on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        return torch.float16 if on_cuda else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}: use float32, bfloat16 or float16")
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16")
    return DTYPES[key]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast context for `dtype` on `device` (a no-op for float32). Weights stay float32; matrix products
    and convolutions run in the reduced type, reductions and outputs where accuracy needs it in float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
