"""Building models from variant names and loading checkpoint files (variant read from the weights)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn

from .variants import SAM1_VARIANT_NAMES, SAM2_VARIANTS, canonical_variant


def build_model(variant: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A randomly initialised model of `variant` (any name or alias, e.g. "sam2.1_hiera_t", "sam2.1_b", "sam_b")."""
    name = canonical_variant(variant)
    if name in SAM2_VARIANTS:
        from .sam2 import SAM2Model

        model = SAM2Model(SAM2_VARIANTS[name])
    else:
        from .sam1 import SAM1Model

        model = SAM1Model(name)
    return model.to(device).eval()


@lru_cache(maxsize=None)
def _variant_signature(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_model(name, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _candidate_variants() -> list[str]:
    try:
        from . import sam1  # noqa: F401
    except ImportError:  # SAM 1 family not available in this build
        return list(SAM2_VARIANTS)
    return list(SAM2_VARIANTS) + list(SAM1_VARIANT_NAMES)


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded checkpoint: `{"model": sd}`, `{"state_dict": sd}` or a bare sd."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source} does not hold a model state_dict (expected {{'model': state_dict}} or a bare "
                         "state_dict of tensors, as in Meta's SAM 2 / SAM checkpoints)")
    return obj


def infer_variant(state_dict: dict[str, torch.Tensor]) -> str:
    """Name of the variant whose state_dict has exactly these keys and shapes.

    Raises ValueError listing the closest variants and their missing/unexpected keys otherwise.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    keys = set(shapes)
    scored = []
    for name in _candidate_variants():
        sig = _variant_signature(name)
        if set(sig) == keys and all(sig[k] == shapes[k] for k in keys):
            return name
        missing, unexpected = set(sig) - keys, keys - set(sig)
        mismatched = [k for k in keys & set(sig) if sig[k] != shapes[k]]
        scored.append((len(missing) + len(unexpected) + len(mismatched), name, missing, unexpected, mismatched))
    scored.sort(key=lambda s: s[0])
    lines = []
    for _, name, missing, unexpected, mismatched in scored[:3]:
        lines.append(f"  {name}: {len(missing)} missing keys {sorted(missing)[:5]}, {len(unexpected)} unexpected "
                     f"{sorted(unexpected)[:5]}, {len(mismatched)} with other shapes {sorted(mismatched)[:5]}")
    raise ValueError("the checkpoint is not a SAM 2 / SAM 2.1 / SAM / MobileSAM state_dict known to masklet. "
                     "Closest variants:\n" + "\n".join(lines))


def load_model(checkpoint: Union[str, Path, dict], variant: str | None = None,
               device: Union[str, torch.device, None] = None, download: bool = True) -> nn.Module:
    """Load a model from a checkpoint name, file (or an already loaded state_dict).

    checkpoint: an existing file, or a known name (`sam2.1_t.pt`, `sam2.1_hiera_tiny.pt`, `sam_b.pt`, ...) looked
    up in `$MASKLET_HOME` and downloaded there when missing (download=False: FileNotFoundError instead), as
    `masklet.models.hub.get_model` does for every entry point. The file is read with
    `torch.load(weights_only=True)` (no pickled code runs); weights of any float dtype are cast to float32. The
    variant is inferred from the state_dict's keys and shapes unless given; a known file name holding another
    variant's weights loads with a `VariantNameWarning` naming both. device: None puts the model on the first GPU
    when there is one, else the CPU (see `masklet.models.hub.select_device`).

    Raises UnknownWeightsError (a FileNotFoundError) for a missing file with an unknown name, ValueError for a
    file that is not a checkpoint or not a SAM state_dict.
    """
    from .hub import check_name_matches, read_checkpoint, select_device

    path = None
    if isinstance(checkpoint, (str, Path)):
        from ..utils.downloads import resolve_weights

        path = resolve_weights(checkpoint, download=download)
        state_dict = extract_state_dict(read_checkpoint(path), str(path))
    else:
        state_dict = extract_state_dict(checkpoint)
    name = canonical_variant(variant) if variant else infer_variant(state_dict)
    if path is not None and not variant:
        check_name_matches(path, name)
    model = build_model(name)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    bad_shapes = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or bad_shapes:
        raise ValueError(f"checkpoint does not match variant {name}: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}, other shapes {bad_shapes[:8]}")
    converted = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
    model.load_state_dict(converted, strict=True)
    return model.to(select_device(device)).eval()


def compile_model(model: nn.Module, components: tuple[str, ...] | None = None,
                  **compile_kwargs: Any) -> dict[str, str]:
    """Opt-in `torch.compile`, in place.

    Default (components=None): the parts where compiling measured faster on a CPU, as `compile=True` of the
    predictors does (`models.common.enable_compile`: the mask decoder in float32 and bfloat16, the Hiera trunk
    in float32). Given component names (e.g. ("image_encoder", "memory_attention")): those modules' whole
    forward, with `compile_kwargs`. Compilation happens at the first call; if it fails there (no C++
    compiler, an unsupported op, an old torch) the part warns once and runs eagerly from then on, so enabling
    it never breaks inference. The state_dict is unchanged. Returns {component: status}.
    """
    import warnings

    if components is None:
        from .common import enable_compile

        return {name: "compiled on first call" for name in enable_compile(model)}
    status: dict[str, str] = {}
    if not hasattr(torch, "compile"):
        return {name: "torch.compile is not available in this torch build" for name in components}
    for name in components:
        module = getattr(model, name, None)
        if module is None:
            status[name] = "not in this model"
            continue
        eager = module.forward
        compiled = torch.compile(eager, **compile_kwargs)
        failure: list[BaseException] = []

        def forward(*args: Any, _compiled=compiled, _eager=eager, _failure=failure, _name=name, **kwargs: Any):
            if not _failure:
                try:
                    return _compiled(*args, **kwargs)
                except Exception as exc:  # any compile-time failure means eager from now on
                    _failure.append(exc)
                    warnings.warn(f"torch.compile of {_name} failed, running it eagerly: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", stacklevel=2)
            return _eager(*args, **kwargs)

        module.forward = forward
        status[name] = "compiled"
    return status
