"""Shared pieces of the benchmark scripts: options, machine info, shared files, models, timing and memory.

Every script prints exactly one JSON object on stdout (progress goes to stderr), so results can be piped
into files and compared across machines. Sizes are in MB = 1e6 bytes, the unit of the reference numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REFERENCE_CHECKPOINT = "sam2.1_hiera_t_random.pt"
# what `--models all` compares: one of each size of SAM 2.1 and the two SAM 1 encoders people pick for speed
ALL_MODELS = ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam_vit_b", "mobile_sam_vit_t"]


def log(*parts: Any) -> None:
    """Progress on stderr: stdout is reserved for the JSON result."""
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- shared files
def reference_dir() -> Path:
    return Path(os.environ.get("MASKLET_REFERENCE", ROOT.parent / "shared" / "reference"))


def data_dir() -> Path:
    return Path(os.environ.get("MASKLET_DATA", ROOT.parent / "shared" / "data"))


def data_file(name: str) -> Path:
    """A file of the shared data folder; a clear error naming the env variable when it is missing."""
    path = data_dir() / name
    if not path.exists():
        raise SystemExit(f"error: {path} not found (set MASKLET_DATA to the shared/data folder, or pass the path)")
    return path


# ---------------------------------------------------------------------------------------------- options
class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's layout; shows defaults except None (those depend on --quick and say so)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def common_parser(description: str) -> argparse.ArgumentParser:
    """Options every script takes. Defaults of None are filled by `fill_defaults` (normal vs --quick)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--model", default=None,
                        help="'reference' (the shared random tiny checkpoint sam2.1_hiera_t_random.pt), a checkpoint "
                             "path (.pt/.pth), or a variant name for random weights (sam2.1_hiera_l, sam_vit_b, "
                             "mobile_sam_vit_t, sam2_test, ...). Default: reference (sam2_test with --quick)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="precision of the model")
    parser.add_argument("--precision", default="cast", choices=["cast", "autocast"],
                        help="how --dtype is applied: 'cast' = model.to(dtype); 'autocast' = float32 weights run "
                             "under torch.autocast (the predictors' dtype= option)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile model.image_encoder and model.memory_attention (eager fallback)")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the fastest precision of the device (bfloat16 on CPUs with avx512_bf16 / "
                             "amx_bf16, float16 on CUDA), interleaved with float32 in the same process, and print "
                             "the speedup. Default: on when --dtype is float32 and the device has a faster one")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and inputs")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    parser.add_argument("--output", default=None, help="also write the JSON result to this file")
    return parser


def fill_defaults(args: argparse.Namespace, normal: dict[str, Any], quick: dict[str, Any]) -> argparse.Namespace:
    """Options left at None take the normal or the --quick default; options given explicitly always win."""
    defaults = {"model": "reference", **normal}
    if args.quick:
        defaults.update({"model": "sam2_test", **quick})
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def setup(args: argparse.Namespace) -> torch.device:
    """Apply threads and seed; resolve and check the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False (CPU build or no GPU)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    args.device = str(device)  # the JSON records what ran, not what was asked
    if getattr(args, "compare", False) is None:
        args.compare = args.dtype == "float32" and fastest_dtype_name(device) != "float32"
    return device


def fastest_dtype_name(device: torch.device) -> str:
    """The precision `dtype="auto"` picks on `device` (masklet.predictors.precision.fastest_dtype)."""
    from masklet.predictors.precision import fastest_dtype

    return str(fastest_dtype(device)).replace("torch.", "")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the run, as given after defaults were filled (goes into the JSON)."""
    return {k: v for k, v in vars(args).items() if k != "output"}


# ---------------------------------------------------------------------------------------------- machine
def _cpu_name() -> str:
    name = platform.processor()
    # platform.processor() is just "x86_64" (or empty) on Linux; the model name is in /proc/cpuinfo
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return name or platform.machine()


def _total_ram_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 1e9
    return None


def machine_info(device: torch.device, dtype: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        # a busy machine skews timings: 1, 5 and 15 minute load averages when the run started
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "ram_gb": _total_ram_gb(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
        "dtype": dtype,
        "device_name": _cpu_name(),
        **_cpu_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), gpu_memory_gb=props.total_memory / 1e9,
                    gpu_capability=f"{props.major}.{props.minor}")
    return info


def _cpu_precision() -> dict[str, Any]:
    """ATen CPU capability, the CPU's SIMD / matrix flags and whether bfloat16 has hardware support."""
    from masklet.predictors.precision import cpu_precision_info

    return cpu_precision_info()


def load_avg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


# ---------------------------------------------------------------------------------------------- models
def _random_weights_module() -> Any | None:
    path = reference_dir() / "random_weights.py"
    if not path.exists():
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("masklet_bench_random_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _manifest_entries(variant: str, keys: set[str]) -> list[list[Any]] | None:
    """The reference manifest's [key, shape, dtype] entries of `variant` (variants.json / sam1_variants.json), in
    the manifest's order, when it lists exactly `keys`; None otherwise (e.g. the test variants)."""
    for name in ("variants.json", "sam1_variants.json"):
        path = reference_dir() / name
        if path.exists():
            entries = json.loads(path.read_text()).get(variant, {}).get("state_dict")
            if entries and {e[0] for e in entries} == keys:
                return entries
    return None


def random_model(variant: str, seed: int) -> tuple[nn.Module, str]:
    """A model of `variant` with random weights drawn like the reference fixtures' (fan-in scaled normals, the
    object-score bias raised so video objects stay present and tracking exercises the memory path). Entries are
    drawn in the reference manifest's key order where it lists the variant, so `random_model("sam2.1_hiera_t",
    21)` is the fixtures' sam2.1_hiera_t_random.pt bit for bit (masklet's own key order draws other values)."""
    from masklet.models.build import build_model

    model = build_model(variant)
    module = _random_weights_module()
    if module is None:
        return model, "random (PyTorch default init; random_weights.py not found)"
    state_dict = model.state_dict()
    entries = _manifest_entries(variant, set(state_dict)) or [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state_dict.items()]
    state = module.build(entries, seed, 3.0)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    del state
    return model, f"random (reference scheme, seed {seed})"


def load_bench_model(spec: str, device: torch.device, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """The model named by --model, in float32 on `device`, with a description for the JSON."""
    from masklet.models.build import load_model

    t0 = time.perf_counter()
    if spec in ("reference", "ref"):
        path = reference_dir() / REFERENCE_CHECKPOINT
        if path.exists():
            model, weights = load_model(path), f"reference checkpoint {path.name}"
        else:
            log(f"warning: {path} not found (set MASKLET_REFERENCE); using random sam2.1_hiera_t weights")
            model, weights = random_model("sam2.1_hiera_t", seed)
    elif Path(spec).exists():
        model, weights = load_model(spec), f"checkpoint {spec}"
    elif spec.endswith((".pt", ".pth")) and ("/" in spec or os.sep in spec):
        raise SystemExit(f"error: checkpoint not found: {spec}")
    else:
        if spec.endswith((".pt", ".pth")):
            log(f"warning: no file {spec}; timing random weights of the variant it names")
        model, weights = random_model(spec, seed)
    model = model.to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    info = {
        "spec": spec,
        "variant": model.config.name,
        "family": model.family,
        "weights": weights,
        "params_m": params / 1e6,
        "checkpoint_mb_fp32": params * 4 / MB,  # what a float32 checkpoint of these weights weighs
        "native_imgsz": model.config.image_size,
        "load_s": time.perf_counter() - t0,
    }
    return model, info


def load_run_model(benchmark: str, args: argparse.Namespace, device: torch.device, sam2_only: bool = False,
                   imgsz: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load --model, set its input size to `imgsz` (when given), apply --dtype/--precision; returns the model and
    the head of the result JSON (benchmark, machine, settings, model with the input size used, precision)."""
    model, info = load_bench_model(args.model, device, args.seed)
    if sam2_only and model.family != "sam2":
        raise SystemExit(f"error: bench/{benchmark}.py tracks video and needs a SAM 2 model, {args.model} is "
                         f"{model.family}")
    if imgsz and imgsz != model.image_size:
        model.set_image_size(imgsz)
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "machine": machine_info(device, args.dtype),
        "settings": settings(args),
        "model": {**info, "imgsz": model.image_size},
        "precision": apply_precision(model, args.dtype, args.precision),
    }
    return model, result


def free_model(model: nn.Module | None) -> None:
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def error_text(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


def apply_precision(model: nn.Module, dtype_name: str, mode: str) -> dict[str, Any]:
    """Put the model in the requested precision. Cast failures are reported per component, not raised: a
    component that cannot hold the dtype stays float32 and the JSON says so."""
    info: dict[str, Any] = {"dtype": dtype_name, "mode": mode}
    dtype = DTYPES[dtype_name]
    if dtype == torch.float32 or mode == "autocast":
        return info
    try:
        model.to(dtype)
    except Exception as exc:  # noqa: BLE001 - reported, then each part is tried on its own
        info["cast_error"] = error_text(exc)
        failed = {}
        for name, child in model.named_children():
            try:
                child.to(dtype)
            except Exception as child_exc:  # noqa: BLE001
                failed[name] = error_text(child_exc)
        info["cast_failed_components"] = failed
    return info


def autocast_dtype(args: argparse.Namespace) -> torch.dtype | None:
    """The dtype the predictors should autocast to (None when the weights were cast instead)."""
    return DTYPES[args.dtype] if args.precision == "autocast" else None


def autocast_context(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(args)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Compiler:
    """--compile: `masklet.models.common.enable_compile` (torch.compile of the parts where it measured faster on
    a CPU: the decoder's transformer and upscaling, the Hiera trunk in float32). They compile at their first
    call and go back to eager with a warning where compiling fails; the JSON lists the marked modules."""

    def __init__(self, model: nn.Module, enabled: bool) -> None:
        from masklet.models.common import enable_compile

        self.model = model
        self.info: dict[str, Any] = {"requested": enabled, "used": False, "components": {}}
        if enabled:
            self.info["components"] = {name: "compiled on first call" for name in enable_compile(model)}
            self.info["used"] = bool(self.info["components"])

    @property
    def compiling(self) -> bool:
        """Whether any component is marked for compiling (then warm-ups must cover every input shape)."""
        return bool(self.info["used"])

    def guard(self, fn: Callable[[], Any]) -> Any:
        """fn() once (the compiling call), its process CPU seconds recorded in the JSON."""
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if self.info["used"]:
            self.info["first_call_s"] = time.perf_counter() - t0
            self.info["first_call_cpu_s"] = time.process_time() - c0
        return out


# ---------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict[str, Any]:
    """Statistics of a list of seconds. The median is the number to quote on a shared machine."""
    if not times:
        return {"n": 0}
    return {
        "n": len(times),
        "mean_s": statistics.fmean(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
    }


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 5) -> dict[str, Any]:
    """Run fn `warmup` times untimed, then `repeats` timed calls (GPU work finished inside each timing)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return summarize(times)


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int = 1,
                repeats: int = 5) -> dict[str, dict[str, Any]]:
    """Time several ways of doing the same work, alternating them call by call (A B A B ...), so a shared
    machine's changing load falls on all alike. Per name: wall statistics (median_s is the one to quote),
    median process CPU seconds (all threads; less sensitive to other jobs) and the load average at the end."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: {**summarize(wall[name]), "cpu_median_s": statistics.median(cpu[name]) if cpu[name] else None,
                   "times_s": wall[name], "load_avg": load_avg()} for name in fns}


def speedups(paths: dict[str, dict[str, Any]], key: str = "median_s", base: str = "float32") -> dict[str, float]:
    """base's `key` over each other path's: how many times faster than float32."""
    ref = paths.get(base, {}).get(key)
    return {name: ref / p[key] for name, p in paths.items() if name != base and ref and p.get(key)}


def timed_iter(iterator: Iterator[Any], device: torch.device) -> Iterator[tuple[float, Any]]:
    """(seconds, item) for each item: the work a generator does to produce each one."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        synchronize(device)
        yield time.perf_counter() - t0, item


# ---------------------------------------------------------------------------------------------- memory
def _proc_status() -> dict[str, float]:
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024 / MB  # the kernel reports kB
    return values


def memory_snapshot(device: torch.device | None = None) -> dict[str, Any]:
    """Current and peak resident memory of this process (and CUDA allocator stats on a GPU).

    VmRSS/VmHWM come from /proc (Linux); ru_maxrss is the portable peak (kB on Linux, bytes on macOS).
    """
    status = _proc_status()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    snap: dict[str, Any] = {
        "rss_mb": status.get("VmRSS"),
        "peak_rss_mb": status.get("VmHWM"),
        "ru_maxrss_mb": maxrss / MB if sys.platform == "darwin" else maxrss * 1024 / MB,
    }
    if snap["peak_rss_mb"] is None:
        snap["peak_rss_mb"] = snap["ru_maxrss_mb"]
    if device is not None and device.type == "cuda":
        snap.update(cuda_allocated_mb=torch.cuda.memory_allocated(device) / MB,
                    cuda_peak_allocated_mb=torch.cuda.max_memory_allocated(device) / MB,
                    cuda_reserved_mb=torch.cuda.memory_reserved(device) / MB)
    return snap


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) from the current RSS, so a later peak measures what came
    after, not a transient before (loading a checkpoint peaks well above tracking). Linux only; ru_maxrss
    cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def trim_allocator() -> bool:
    """Hand glibc's free heap pages back to the OS (malloc_trim), so that a following RSS reading measures the
    memory still in use rather than what the allocator happens to keep cached. False where unavailable."""
    from masklet.utils.allocator import trim_allocator as trim

    return trim()


def current_rss_mb(trim: bool = False) -> float:
    """VmRSS in MB (after `trim_allocator` if asked); falls back to the peak where /proc is missing (macOS),
    which is only an upper bound."""
    if trim:
        trim_allocator()
    status = _proc_status()
    if "VmRSS" in status:
        return status["VmRSS"]
    return memory_snapshot()["ru_maxrss_mb"]


# ---------------------------------------------------------------------------------------------- prompts, output
def spread_points(count: int, width: int, height: int) -> list[list[float]]:
    """`count` (x, y) points spread over a frame: centres of a grid of cells shaped like the frame, so objects
    are distinct and prompts do not all land on one region."""
    cols = max(1, math.ceil(math.sqrt(count * width / height)))
    rows = math.ceil(count / cols)
    points = []
    for k in range(count):
        r, c = divmod(k, cols)
        points.append([(c + 0.5) * width / cols, (r + 0.5) * height / rows])
    return points


def _rounded(value: Any) -> Any:
    # 5 significant digits: enough for timings, keeps the JSON readable
    if isinstance(value, float):
        return float(f"{value:.5g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _rounded(value.item())
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    return value


def emit(result: dict[str, Any], output: str | None = None) -> None:
    """Print the result as one JSON object on stdout (and write it to `output`)."""
    text = json.dumps(_rounded(result), indent=2)
    print(text, flush=True)
    if output:
        Path(output).write_text(text + "\n")


def finish(result: dict[str, Any], output: str | None, device: torch.device | None = None) -> dict[str, Any]:
    """The end of a script: the process's memory (`memory_snapshot`) into result["memory"], then `emit`; returns
    the result."""
    result["memory"] = memory_snapshot(device)
    emit(result, output)
    return result
