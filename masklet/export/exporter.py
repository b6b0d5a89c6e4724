"""`masklet.export`: a model to a folder of ONNX graphs that `masklet.onnx` runs on onnxruntime alone.

SAM 2 / 2.1: image_encoder.onnx, prompt_decoder.onnx, memory_encoder.onnx, memory_attention.onnx,
mask_prompt.onnx (the mask-prompt downsampling conv and the no-object pointer) and
metadata.json. SAM 1 / MobileSAM: image_encoder.onnx and prompt_decoder.onnx. Graphs are recorded with
torch's TorchScript-based ONNX exporter (`dynamo=False`): the wrappers in `graphs.py` are written so that the
traced shapes follow the inputs (prompt count, objects, memory frames, object pointers).
"""
from __future__ import annotations

import contextlib
import io
import json
import platform
import warnings
from pathlib import Path
from typing import Any

EXPORT_FORMATS = ("onnx",)
DEFAULT_OPSET = 17
# LayerNormalization (opset 17) keeps the graphs' layer norms one node; older opsets are not tested
MIN_OPSET = 17
EXTRA_HINT = "pip install 'masklet[export]'"


class ExportError(RuntimeError):
    """The model could not be exported (the exporter's own message, shortened)."""


def require_export_extra(*modules: str) -> None:
    """Import-check the [export] extra; ImportError naming the pip command when a part is missing."""
    import importlib

    for module in modules or ("onnx", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(f"ONNX export needs the '{module}' package, which is not installed: "
                              f"{EXTRA_HINT}") from None


def check_export_args(format: str, opset: Any, imgsz: Any) -> int:
    """Validate the arguments before any work; returns the opset. ValueError names the problem and the fix."""
    if not isinstance(format, str) or format.lower() not in EXPORT_FORMATS:
        raise ValueError(f"format={format!r} is not supported: masklet exports {', '.join(EXPORT_FORMATS)} "
                         "(format=onnx)")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ValueError(f"opset={opset!r} must be an integer ONNX opset, e.g. opset={DEFAULT_OPSET}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset={opset} is too old: the graphs need opset {MIN_OPSET} or newer "
                         f"(LayerNormalization); use opset={DEFAULT_OPSET}")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"opset={opset} is newer than this onnx package supports ({newest}); use opset={newest} "
                         "or older")
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 64 or imgsz % 64:
        raise ValueError(f"imgsz={imgsz!r} must be a positive multiple of 64, e.g. imgsz=1024")
    return opset


@contextlib.contextmanager
def _whole_image_upscaling():
    """The mask decoder upscales in bands of rows on a CPU, sized by the prompt count; a traced graph would freeze
    the band starts of the example's count and slice wrongly for another. One band covering any count here."""
    from ..models import mask_decoder

    saved = mask_decoder.CPU_UPSCALE_BAND_ELEMENTS
    mask_decoder.CPU_UPSCALE_BAND_ELEMENTS = 1 << 62
    try:
        yield
    finally:
        mask_decoder.CPU_UPSCALE_BAND_ELEMENTS = saved


def _export_graph(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                  dynamic_axes: dict, opset: int, fold: bool = True) -> None:
    import torch

    try:
        with _whole_image_upscaling(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=fold,
                              dynamo=False)
    except Exception as exc:  # the exporter raises many types; the user gets one line, not its stack
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"exporting {path.name} with opset {opset} failed: {first}. Try opset={DEFAULT_OPSET}; "
                          "set MASKLET_DEBUG=1 for the exporter's traceback") from exc


def graph_specs(model, imgsz: int, padded_bank: bool = False) -> dict[str, tuple]:
    """name -> (module, example args, input names, output names, dynamic axes) for every graph of `model`."""
    import torch

    from .graphs import ImageEncoderGraph, MaskPromptGraph, MemoryAttentionGraph, MemoryEncoderGraph, PromptDecoderGraph

    sam2 = getattr(model, "family", None) == "sam2"
    c = 256 if not sam2 else model.hidden_dim
    h = imgsz // 16
    image = torch.randn(1, 3, imgsz, imgsz)
    specs: dict[str, tuple] = {}
    enc_out = (["image_embed", "high_res_feats_0", "high_res_feats_1", "vision_features", "vision_pos_enc"]
               if sam2 else ["image_embed"])
    specs["image_encoder"] = (ImageEncoderGraph(model), (image,), ["image"], enc_out, {})
    points = torch.tensor([[[imgsz * 0.3, imgsz * 0.4], [imgsz * 0.6, imgsz * 0.5], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1]], dtype=torch.int64)
    mask_input = torch.zeros(1, 1, 4 * h, 4 * h)
    has_mask = torch.zeros(1)
    embed = torch.randn(1, c, h, h)
    dec_axes = {"image_embed": {0: "batch"}, "point_coords": {0: "batch", 1: "num_points"},
                "point_labels": {0: "batch", 1: "num_points"}, "mask_input": {0: "batch"}, "masks": {0: "batch"},
                "iou_predictions": {0: "batch"}}
    if sam2:
        high = (torch.randn(1, c // 8, 4 * h, 4 * h), torch.randn(1, c // 4, 2 * h, 2 * h))
        dec_axes.update({"high_res_feats_0": {0: "batch"}, "high_res_feats_1": {0: "batch"},
                         "object_score_logits": {0: "batch"}, "obj_ptr": {0: "batch"}})
        specs["prompt_decoder"] = (
            PromptDecoderGraph(model), (embed, *high, points, labels, mask_input, has_mask),
            ["image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input",
             "has_mask_input"], ["masks", "iou_predictions", "object_score_logits", "obj_ptr"], dec_axes)
        mem_dim = model.mem_dim
        specs["memory_encoder"] = (
            MemoryEncoderGraph(model), (embed, torch.randn(2, 1, 4 * h, 4 * h), torch.tensor([[1.0], [-1.0]]),
                                        torch.ones(1)),
            ["vision_features", "mask_logits", "object_score_logits", "binarize"],
            ["maskmem_features", "maskmem_pos_enc"],
            {"mask_logits": {0: "objects"}, "object_score_logits": {0: "objects"}, "maskmem_features": {0: "objects"}})
        specs["mask_prompt"] = (MaskPromptGraph(model), (torch.ones(1, 1, imgsz, imgsz),), ["mask"],
                                ["mask_for_decoder", "no_obj_ptr"],
                                {"mask": {0: "objects"}, "mask_for_decoder": {0: "objects"}, "no_obj_ptr": {0: "objects"}})
        frames, ptrs = (model.num_maskmem, model.config.max_obj_ptrs_in_encoder) if padded_bank else (2, 3)
        att_args = [embed, torch.randn(1, c, h, h), torch.randn(2, frames, mem_dim, h, h),
                    torch.arange(frames, dtype=torch.int64) % model.num_maskmem, torch.randn(2, ptrs, c),
                    torch.linspace(-0.5, 0.5, ptrs)]
        att_names = ["vision_features", "vision_pos_enc", "memory", "memory_tpos", "obj_ptrs", "obj_ptr_tpos"]
        att_axes = {"memory": {0: "objects", 1: "num_memories"}, "memory_tpos": {0: "num_memories"},
                    "obj_ptrs": {0: "objects", 1: "num_ptrs"}, "obj_ptr_tpos": {0: "num_ptrs"},
                    "pix_feat": {0: "objects"}}
        if padded_bank:
            att_args += [torch.ones(2, frames), torch.ones(2, ptrs)]
            att_names += ["memory_valid", "obj_ptr_valid"]
            att_axes = {"memory": {0: "objects"}, "obj_ptrs": {0: "objects"}, "pix_feat": {0: "objects"},
                        "memory_valid": {0: "objects"}, "obj_ptr_valid": {0: "objects"}}
        specs["memory_attention"] = (MemoryAttentionGraph(model, padded=padded_bank), tuple(att_args), att_names,
                                     ["pix_feat"], att_axes)
    else:
        specs["prompt_decoder"] = (
            PromptDecoderGraph(model), (embed, points, labels, mask_input, has_mask),
            ["image_embed", "point_coords", "point_labels", "mask_input", "has_mask_input"],
            ["masks", "iou_predictions"], dec_axes)
    return specs


def export_model(model, folder: Path, imgsz: int, opset: int, graphs: tuple[str, ...] | None = None,
                 padded_bank: bool = False, progress: bool = True) -> list[Path]:
    """Write the graphs of a loaded `model` into `folder`; returns their paths."""
    from tqdm.auto import tqdm

    specs = graph_specs(model, imgsz, padded_bank)
    names = [n for n in specs if graphs is None or n in graphs]
    paths = []
    for name in tqdm(names, desc="export onnx", disable=not progress, leave=False):
        module, args, inputs, outputs, axes = specs[name]
        path = folder / f"{name}.onnx"
        # folding the memory attention's constants copies its RoPE tables into every use (158 MB instead of 24
        # for the tiny model); onnxruntime folds them in memory when the session starts
        _export_graph(module.eval(), args, path, inputs, outputs, axes, opset, fold=name != "memory_attention")
        paths.append(path)
    return paths


def quantize_encoder(folder: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) of image_encoder.onnx, in
    place; the float32 graph is kept as image_encoder.fp32.onnx."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = folder / "image_encoder.onnx"
    fp32 = folder / "image_encoder.fp32.onnx"
    src.rename(fp32)
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a warning per shape-inference gap (int64 slices: not quantized)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32), str(src), weight_type=QuantType.QInt8)
    except Exception as exc:
        fp32.rename(src)
        raise ExportError(f"int8 quantization of the image encoder failed: {str(exc).splitlines()[0]}") from exc
    finally:
        root.setLevel(level)
    return src


def metadata(model, imgsz: int, opset: int, int8: bool, source: str | None) -> dict[str, Any]:
    import onnx
    import torch

    from .. import __version__

    sam2 = getattr(model, "family", None) == "sam2"
    spec = model.input_spec
    meta: dict[str, Any] = {
        "format": "onnx", "family": model.family, "variant": model.config.name, "source": source,
        "image_size": imgsz, "resize": spec.resize, "resample": spec.resample,
        "mean": list(spec.mean), "std": list(spec.std),
        "mask_input_size": [4 * (imgsz // 16)] * 2,
        "int8_encoder": int8, "opset": opset,
        "versions": {"masklet": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "python": platform.python_version()},
        "graphs": {}, "low_res_clamp": getattr(model, "low_res_clamp", 32.0),
    }
    if sam2:
        cfg = model.config
        meta.update({"sam2_1": cfg.sam2_1, "num_maskmem": model.num_maskmem, "hidden_dim": model.hidden_dim,
                     "mem_dim": model.mem_dim, "max_obj_ptrs_in_encoder": cfg.max_obj_ptrs_in_encoder,
                     "no_obj_score": -1024.0, "memory_bank": "dynamic",
                     "stability_delta": model.sam_mask_decoder.stability_delta,
                     "stability_thresh": model.sam_mask_decoder.stability_thresh,
                     "video_resample": "pil-bicubic"})
    return meta


def write_metadata(folder: Path, model, imgsz: int, opset: int, int8: bool, source: str | None) -> dict[str, Any]:
    meta = metadata(model, imgsz, opset, int8, source)
    meta["graphs"] = {p.name: p.stat().st_size for p in sorted(folder.glob("*.onnx"))}
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    return meta


def export(model: Any = "sam2.1_t.pt", format: str = "onnx", imgsz: int = 1024, int8: bool = False,
           opset: int | None = None, project: str = "runs/export", name: str | None = None,
           progress: bool = True) -> Path:
    """Export a model to ONNX; returns the folder written (runs/export/<variant>, <variant>2, ... never
    overwritten).

    model: a checkpoint name or path (as `SAM(...)` takes) or a loaded model. imgsz: square input size (a multiple
    of 64). int8: quantize the image encoder dynamically (onnxruntime). opset: ONNX opset (default 17, the
    oldest accepted). Raises ValueError for an unknown format / bad opset / bad imgsz, ImportError naming
    `pip install 'masklet[export]'` when onnx or onnxruntime is missing, ExportError when the exporter fails.
    """
    opset_checked = None
    require_export_extra("onnx", "onnxruntime")
    opset_checked = check_export_args(format, opset, imgsz)
    from ..api.sam import increment_path, load_sam_model

    module, ckpt = load_sam_model(model)
    if getattr(module, "image_size", imgsz) != imgsz:
        module.set_image_size(imgsz)
    module = module.float().cpu().eval()
    folder = increment_path(Path(project) / (name or module.config.name), mkdir=True)
    export_model(module, folder, imgsz, opset_checked, progress=progress)
    if int8:
        quantize_encoder(folder)
    meta = write_metadata(folder, module, imgsz, opset_checked, bool(int8), str(ckpt) if ckpt else None)
    if progress:
        print(f"exported {meta['variant']} ({', '.join(meta['graphs'])}) to {folder}")
    return folder


# `masklet export` keys: key -> (default, help); read by masklet/cli.py
EXPORT_KEYS: dict[str, tuple[Any, str]] = {
    "model": (None, "required: checkpoint name or path, e.g. sam2.1_t.pt"),
    "format": ("onnx", "export format (onnx)"),
    "imgsz": (1024, "square input size of the exported graphs, a multiple of 64"),
    "int8": (False, "dynamically quantize the image encoder to int8 (onnxruntime); float32 kept as "
                    "image_encoder.fp32.onnx"),
    "opset": (DEFAULT_OPSET, f"ONNX opset ({MIN_OPSET} or newer)"),
    "project": ("runs/export", "parent folder of the export"),
    "name": (None, "folder name (default: the variant); numbered name2, name3, ... when it exists"),
}


def export_cli(args: dict[str, Any]) -> Path:
    """`masklet export model=sam2.1_t.pt format=onnx [imgsz=1024] [int8=True] [opset=17]`: write the ONNX graphs
    and metadata.json into runs/export/<variant> (never overwritten). Run them with masklet.onnx's
    OnnxImagePredictor (onnxruntime and numpy only)."""
    kwargs = {k: args[k] for k in EXPORT_KEYS if k in args}
    if not isinstance(kwargs.get("int8", False), bool):
        raise ValueError(f"int8={kwargs['int8']!r} must be True or False")
    try:
        return export(**kwargs)
    except ImportError as exc:  # the CLI prints errors it knows; a missing extra is one of them
        raise RuntimeError(str(exc)) from None
