"""Small building blocks shared by several model components."""
from __future__ import annotations

import copy
import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Type

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.normalized_shape = (num_channels,)  # a Python int: ONNX export traces tensor shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        # (a one-channel or 1 x 1 map is contiguous in both layouts and takes the steps below)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # channels-last input (the memory encoder's): the channels are the innermost axis, so torch's fused
            # layer_norm normalises them in one pass, forward and backward (5-10x faster than the steps below at
            # 16-256 channels on a CPU); the output keeps the input's memory format
            y = x.permute(0, 2, 3, 1).float()
            y = F.layer_norm(y, self.normalized_shape, self.weight.to(y.dtype), self.bias.to(y.dtype), self.eps)
            return y.permute(0, 3, 1, 2).to(dtype)
        x = x.float()  # statistics in float32 also for bfloat16 inputs (a no-op in float32)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return (self.weight[:, None, None] * x + self.bias[:, None, None]).to(dtype)


class MLP(nn.Module):
    """`num_layers` linear layers with an activation between them (state_dict keys `layers.i.*`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 activation: Type[nn.Module] = nn.ReLU, sigmoid_output: bool = False) -> None:
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MLPBlock(nn.Module):
    """Two-layer MLP with SAM 1's state_dict names (`lin1`, `lin2`)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, activation: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


# bfloat16 attention on a CPU: scores of this many elements per block of queries (16 MB in bfloat16)
CPU_BF16_SCORE_ELEMENTS = 1 << 23
# switches of the two CPU bfloat16 levers, for measuring each (bench/levers.py); both on by default
CPU_BF16_BLOCKED_ATTENTION = True
CPU_BF16_TWINS = True
# bfloat16 copies of the heavy modules under CUDA bfloat16 autocast (bench/gpu.py compares with plain autocast)
CUDA_BF16_TWINS = True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention on (B, heads, N, C) tensors (the fused kernel where one exists).

    A batch of 1 on either side (an image shared by B prompts, or B prompts attended by one image) is
    broadcast to the other's batch without copying. bfloat16 on a CPU with bf16 matrix units (AVX-512-bf16 /
    AMX) takes `blocked_attention`: the CPU kernel of `scaled_dot_product_attention` does not use them. Without
    them a bf16 matrix product is emulated (measured on an AVX2 EPYC: 13x slower than float32) while the fused
    kernel is not, so bfloat16 stays on it there.
    """
    if q.device.type == "cpu" and ((q.dtype == torch.bfloat16 and CPU_BF16_BLOCKED_ATTENTION
                                    and _cpu_bf16_units()) or v.shape[-1] < q.shape[-1]):
        if q.dtype == torch.bfloat16 and not _cpu_bf16_units():  # values narrower than queries, emulated bf16
            return blocked_attention(q.float(), k.float(), v.float()).to(q.dtype)
        return blocked_attention(q, k.to(q.dtype), v.to(q.dtype))
    batch = max(q.shape[0], k.shape[0])
    if q.shape[0] != batch:
        q = q.expand(batch, -1, -1, -1)
    if k.shape[0] != batch:
        k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
    return F.scaled_dot_product_attention(q, k, v)


@functools.lru_cache(maxsize=1)
def _cpu_bf16_units() -> bool:
    from ..predictors.precision import cpu_has_bf16  # the one hardware check (imported late: it imports this)

    return cpu_has_bf16()


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(C)) v as two matrix products per block of queries, (B, heads, Nq, C) -> (B, heads,
    Nq, Cv); batches of 1 broadcast.

    For bfloat16 on a CPU: the products run on the bf16 matrix units (fp32 accumulation inside oneDNN), the
    softmax kernel keeps its max and sum in float32, and a block's scores (~`CPU_BF16_SCORE_ELEMENTS`) stay
    small enough to be reused from cache by the second product. Measured at 1024 px (AVX-512-bf16, 2 cores):
    memory cross-attention 4096 x 16448 tokens 0.21 s vs 0.38 s for the fused kernel in bf16 or float32.
    """
    scale = q.shape[-1] ** -0.5
    kt = k.transpose(-1, -2).contiguous()  # a strided K^T slowed the first product by ~35%
    batch = max(q.shape[0], k.shape[0])
    n_q, n_k = q.shape[-2], k.shape[-2]
    rows = max(64, CPU_BF16_SCORE_ELEMENTS // max(1, batch * q.shape[1] * n_k) // 64 * 64)
    if n_q <= rows:
        return torch.softmax((q * scale) @ kt, dim=-1) @ v
    out = q.new_empty(batch, q.shape[1], n_q, v.shape[-1])
    for i in range(0, n_q, rows):
        scores = (q[:, :, i:i + rows] * scale) @ kt
        torch.matmul(torch.softmax(scores, dim=-1), v, out=out[:, :, i:i + rows])
    return out


@dataclass
class ImageFeatures:
    """Encoder output for B frames.

    embed (B, C, h, w): lowest-resolution feature; pos (B, C, h, w): its position encoding;
    high_res [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]: skip features already projected by conv_s0/conv_s1.
    """

    embed: torch.Tensor
    pos: torch.Tensor
    high_res: list[torch.Tensor]

    def select(self, index: int | slice | torch.Tensor) -> "ImageFeatures":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures(self.embed[index], self.pos[index], [f[index] for f in self.high_res])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ImageFeatures":
        return ImageFeatures(self.embed.to(device, dtype), self.pos.to(device, dtype),
                             [f.to(device, dtype) for f in self.high_res])


# ---------------------------------------------------------------------------------------------- bfloat16 copies
def _state_key(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, t.dtype) for t in (*module.parameters(), *module.buffers()))


def _twins_on(device_type: str) -> bool:
    # the switches of the CPU and CUDA twins (for measuring each, bench/levers.py and bench/gpu.py)
    return {"cpu": CPU_BF16_TWINS, "cuda": CUDA_BF16_TWINS}.get(device_type, False)


def bf16_twin(module: nn.Module) -> nn.Module | None:
    """A bfloat16 copy of `module` to run in its place, or None where the module should run itself.

    Used by the heavy modules' forward: under bfloat16 autocast in inference (no grad, eval mode) on a CPU or
    a CUDA GPU, a float32 module runs its bfloat16 twin on inputs cast once, so activations stay bfloat16 from
    end to end: autocast would cast every weight on every call (on a GPU, ~330 extra kernel launches per
    tracked frame of the tiny model) and every activation back and forth between ops. On a CPU, attention then
    takes the bf16 matrix units (`common.blocked_attention`). float16 autocast keeps the autocast path (layer
    norms and softmax in float16 could overflow). The twin is made once and kept on the module (outside its
    state_dict); it is made again when the module's weights change (data pointer or version counter) or move.
    Costs half the module's float32 size in memory.
    """
    if torch.is_grad_enabled() or module.training:
        return None
    first = next(module.parameters(), None)
    if first is None or first.dtype != torch.float32:
        return None
    kind = first.device.type
    if (not _twins_on(kind) or not torch.is_autocast_enabled(kind)
            or torch.get_autocast_dtype(kind) != torch.bfloat16):
        return None
    key = _state_key(module)
    cached = module.__dict__.get("_bf16_twin")
    if cached is not None and cached[0] == key:
        cached[1].__dict__[COMPILE_ATTR] = _compile_twin(module)
        return cached[1]
    module.__dict__.pop("_bf16_twin", None)
    with torch.inference_mode(False), torch.no_grad():
        twin = copy.deepcopy(module).to(torch.bfloat16).requires_grad_(False)
    twin.__dict__[COMPILE_ATTR] = _compile_twin(module)
    module.__dict__["_bf16_twin"] = (key, twin)
    return twin


def to_bf16(x: Any) -> Any:
    """Floating tensors (also inside lists and tuples) cast to bfloat16; everything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.bfloat16) if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_bf16(v) for v in x)
    return x


def run_twin(twin: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """twin(*args, **kwargs) with floating inputs in bfloat16 and autocast off (everything is bf16 already)."""
    with torch.autocast(next(twin.parameters()).device.type, enabled=False):
        return twin(*to_bf16(args), **{k: to_bf16(v) for k, v in kwargs.items()})


# ---------------------------------------------------------------------------------------------- torch.compile
# the modules whose forward goes through `compiled_call` (set by `enable_compile`); kept as a plain attribute so
# that a module's bfloat16 twin (a deep copy) is compiled too
COMPILE_ATTR = "_masklet_compile"
_COMPILED: dict[Callable, Callable] = {}


def compiled_call(module: nn.Module, fn: Callable, *args: Any) -> Any:
    """fn(*args), through `torch.compile` when `enable_compile` marked `module`. fn is a plain function (e.g.
    `type(module)._forward`, with the module among the args): one compiled wrapper per function serves every
    module, and holds none of them.

    Inference only (no grad, eval mode): training runs eagerly. Shapes are specialised (dynamic=False): each
    new input shape compiles once more (tens of seconds on a CPU). Where compiling fails (no C++ compiler for
    inductor, an unsupported op) it warns once and runs eagerly from then on.
    """
    if (not module.__dict__.get(COMPILE_ATTR) or torch.is_grad_enabled() or module.training
            or torch.compiler.is_compiling()):
        return fn(*args)
    compiled = _COMPILED.get(fn)
    if compiled is None:
        compiled = _COMPILED[fn] = torch.compile(fn, dynamic=False)
    try:
        return compiled(*args)
    except Exception as exc:  # noqa: BLE001 - any compile failure means eager; a real error re-raises below
        module.__dict__[COMPILE_ATTR] = False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(f"torch.compile failed for {type(module).__name__}, running eagerly: "
                      f"{type(exc).__name__}: {first[:300]}", RuntimeWarning, stacklevel=2)
        return fn(*args)


def _compile_twin(module: nn.Module) -> bool:
    # whether the bfloat16 twin of a module marked for compiling is compiled too (COMPILABLE names the dtypes)
    return bool(module.__dict__.get(COMPILE_ATTR)) and torch.bfloat16 in getattr(type(module), "COMPILABLE", ())


def enable_compile(model: nn.Module, on: bool = True) -> list[str]:
    """Mark the parts of `model` where `torch.compile` (inductor) measured faster on a CPU (bench/compiled.py,
    one thread, CPU-time ratios): the mask decoder's two-way transformer and upscaling (float32 1.38x, bfloat16
    1.82x; ~60 s to compile) and, in float32 only, the Hiera image trunk (1.16x; ~40 s; its bfloat16 copy
    compiled 1.10x in ~5 min, so it stays eager). Each compiles on its first inference call, once per input
    shape and precision, and keeps the compiled code while the process runs. Memory attention stays eager:
    its memory length changes from frame to frame (a compile each) and compiling it measured 1.04x (float32) /
    1.11x (bfloat16). A class opts in with `COMPILABLE = (dtypes...)`. Returns the names of the marked
    modules (`on=False` unmarks them)."""
    marked = []
    for name, module in model.named_modules():
        if getattr(type(module), "COMPILABLE", ()):
            module.__dict__[COMPILE_ATTR] = bool(on)
            marked.append(name)
    return marked


def apply_compile_option(model: nn.Module, compile: Any) -> None:
    """The `compile=` option of the predictors and the API: True marks `model` with `enable_compile` (it stays
    marked for later predictors); False leaves it as it is. ValueError for anything but a bool."""
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    if compile:
        enable_compile(model)
