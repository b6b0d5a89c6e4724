"""Reduced-precision inference: bfloat16 / float16 autocast around the model's forward passes, the hardware
check that says whether bfloat16 pays on this CPU, and the bfloat16 copies of the heavy modules a CPU runs.

On a CPU, bfloat16 is fast only with bf16 matrix instructions (AVX-512-bf16 or AMX); elsewhere (AVX2) PyTorch
emulates it and it is slower than float32. float32 stays the default everywhere: it is the exact path that
reproduces the official outputs; `dtype="auto"` picks the fastest precision of the device (`fastest_dtype`).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import Any

import torch

from ..models.common import bf16_twin  # noqa: F401 - re-exported: part of the precision story

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
# CPU flags (/proc/cpuinfo) of bf16 matrix instructions
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    """The SIMD / matrix flags of this CPU that matter for speed (avx2, avx512*, amx*), sorted; empty where
    /proc/cpuinfo does not exist (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return tuple(sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx", "fma"))))
    return ()


def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX-512-bf16 or AMX-bf16) and PyTorch's CPU kernels
    can use them (ATen capability AVX512 or better)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith(("AVX512", "AMX")) and any(f in cpu_flags() for f in BF16_CPU_FLAGS)


def cpu_precision_info() -> dict[str, Any]:
    """What decides the CPU precision, for `info()` and benchmark JSON: ATen capability, CPU flags, whether
    bfloat16 has hardware support, and the precision `dtype="auto"` picks on the CPU."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": list(cpu_flags()),
            "bf16_hardware": cpu_has_bf16(), "fastest_dtype": str(fastest_dtype("cpu")).replace("torch.", "")}


def precision_summary(device: torch.device | str | None = None) -> str:
    """One line for `info()`: the default precision and the fastest one on `device`, with the CPU evidence."""
    fast = str(fastest_dtype(device)).replace("torch.", "")
    if device is not None and torch.device(device).type == "cuda":
        return f"precision: float32 (default, exact); fastest on {device}: {fast} (dtype='auto' or half=True)"
    info = cpu_precision_info()
    bf16 = [f for f in info["cpu_flags"] if f in BF16_CPU_FLAGS]
    why = (f"bf16 instructions {', '.join(bf16)}" if info["bf16_hardware"]
           else "no bf16 instructions: half=True would be slower")
    return (f"precision: float32 (default, exact); fastest on this CPU: {fast} (dtype='auto'); CPU "
            f"{info['cpu_capability']}, {why}")


def fastest_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """The precision that runs fastest on `device` (this machine's default device when None): float16 on
    CUDA, bfloat16 on a CPU with bf16 matrix instructions, float32 on other CPUs."""
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if on_cuda:
        return torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, half: bool = False,
                  device: torch.device | str | None = None) -> torch.dtype:
    """`dtype` given as a torch dtype or a name ("bfloat16", "bf16", "float16", ..., or "auto" for
    `fastest_dtype`); `half=True` (used when dtype is None) means float16 on CUDA and bfloat16 elsewhere (the
    fast type of each) — on `device`, or on this machine when no device is given. bfloat16 on a CPU without
    bf16 instructions warns that it is slower than float32 there.

    Raises ValueError for an unknown name or an unsupported dtype.
    """
    if not isinstance(half, bool):
        raise ValueError(f"half must be True or False, got {half!r}")
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if dtype is None:
        if not half:
            return torch.float32
        chosen = torch.float16 if on_cuda else torch.bfloat16
    elif isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}: use float32, bfloat16 or float16")
        chosen = dtype
    else:
        key = str(dtype).lower().replace("torch.", "")
        if key == "auto":
            return fastest_dtype(device)
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16, auto")
        chosen = DTYPES[key]
    if chosen == torch.bfloat16 and not on_cuda and not cpu_has_bf16():
        warnings.warn("bfloat16 on this CPU will be slower than float32: it has no bf16 instructions "
                      f"(capability {torch.backends.cpu.get_cpu_capability()}, no avx512_bf16 / amx_bf16); "
                      "use the default float32", UserWarning, stacklevel=3)
    return chosen


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast context for `dtype` on `device` (a no-op for float32). Weights stay float32; matrix products
    and convolutions run in the reduced type, reductions and outputs where accuracy needs it in float32.
    In bfloat16 (on a CPU or a CUDA GPU) the heavy modules (image trunk, memory attention, decoder transformer
    and upscaling) run instead as bfloat16 copies of themselves (`bf16_twin`)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
