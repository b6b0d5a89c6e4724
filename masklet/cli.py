"""The `masklet` command line, with Ultralytics' `key=value` syntax.

    masklet predict model=sam2.1_b.pt source=path/to/video.mp4
    masklet predict source=image.jpg points=[900,370] labels=[1]
    masklet track source=video.mp4 points=[[920,470],[909,138]] labels=[1,1]
    masklet info model=sam2.1_l.pt

Bad input (unknown key, unparsable value, unknown model, missing file) prints one message and exits with
status 2; a failure while running (e.g. a download) exits with 1. Set MASKLET_DEBUG=1 to see tracebacks.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .api import PREDICT_ARGS, TRACK_SWITCHES

MODES = ("predict", "track", "info", "annotate", "val", "train", "app", "export")
# Ultralytics' CLI saves predictions by default (its Python API does not)
CLI_DEFAULTS = {"save": True}
_BOOL_KEYS = {"multimask_output", "save", "save_txt", "save_conf", "show", "exist_ok", "verbose", "show_labels",
              "show_conf", "show_boxes", "retina_masks", "detailed"} | set(TRACK_SWITCHES)
_NOT_ON_CLI = {"masks", "stream"}  # arrays and generators have no command-line form
MODE_KEYS: dict[str, list[str]] = {
    "predict": [k for k in PREDICT_ARGS if k not in _NOT_ON_CLI | {"frame"}],
    "track": [k for k in PREDICT_ARGS if k not in _NOT_ON_CLI | {"multimask_output"}] + list(TRACK_SWITCHES),
    "info": ["model", "detailed", "verbose"],
}
INFO_HELP = {"detailed": (False, "also list every parameter tensor (name, shape, mean, std)"),
             "verbose": (True, "print the summary line")}
# modes implemented elsewhere, wired in when present at call time: mode -> (module, command-line hook taking the
# parsed {key: value} dict, its key table {key: (default, help)}, plain function called with the keys as kwargs
# when there is no hook)
EXTERNAL = {"annotate": ("masklet.api.annotate", "annotate_cli", "ANNOTATE_ARGS", "auto_annotate"),
            "val": ("masklet.val", "val_cli", "VAL_KEYS", "run"),
            "train": ("masklet.train", "train_cli", "TRAIN_KEYS", "train"),
            "app": ("masklet.app", "app_cli", "APP_ARGS", "serve"),
            "export": ("masklet.export", "export_cli", "EXPORT_KEYS", "export")}

MODE_HELP = {
    "predict": "segment images, videos, folders or streams (with prompts: one mask per object; without: "
               "segment everything); every frame on its own",
    "track": "track prompted objects through a video with SAM 2's memory (prompts on frame `frame`)",
    "info": "print the model's layers, parameters and GFLOPs",
    "annotate": "auto-annotate a folder of images (detector boxes -> SAM masks -> YOLO labels)",
    "val": "evaluate a model or score existing masks (DAVIS / SA-V J&F, interactive NoC)",
    "train": "fine-tune a SAM 2 model on images (COCO, YOLO-seg, mask PNGs) or videos (DAVIS layout)",
    "app": "annotate images and videos in the browser: click, track, correct, export (local web app)",
    "export": "export a model to ONNX graphs (image encoder, prompt decoder, memory) run by masklet.onnx",
}


class UsageError(ValueError):
    """Bad command line: exit status 2."""


# ---------------------------------------------------------------------------------------------- parsing
def _merge_tokens(argv: Sequence[str]) -> list[str]:
    """Re-join arguments the shell split: `points=[900, 370]`, `key = value`, `key= value`."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        open_brackets = sum(prev.count(c) for c in "[(") - sum(prev.count(c) for c in "])")
        if out and (open_brackets > 0 or prev.endswith("=") or token.startswith("=")):
            out[-1] = prev + (" " if open_brackets > 0 and not prev.endswith("=") and not token.startswith("=")
                              else "") + token
        else:
            out.append(token)
    return out


def parse_value(key: str, text: str) -> Any:
    """A command-line value: None / booleans / numbers / lists by Python literal syntax, else the string."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        if stripped[:1] in "[({" or stripped[-1:] in "])}":
            reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            raise UsageError(f"cannot parse {key}={text}: {reason}. Write lists like points=[900,370] or "
                             f"points=[[400,370],[900,370]] (quote the argument if it contains spaces)") from None
        return stripped


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def parse_args(tokens: Sequence[str], valid: Sequence[str], mode: str) -> dict[str, Any]:
    """`key=value` tokens -> {key: value}, checking keys against `valid`."""
    args: dict[str, Any] = {}
    for token in _merge_tokens(tokens):
        if "=" in token:
            key, _, text = token.partition("=")
            key = key.strip().lstrip("-").replace("-", "_")
            if not key:
                raise UsageError(f"argument {token!r} has no key: use key=value")
            if key not in valid:
                raise UsageError(f"'{key}' is not a valid key for 'masklet {mode}'.{_suggest(key, valid)} "
                                 f"Valid keys: {', '.join(valid)}. See 'masklet {mode} help'.")
            if text.strip() == "":
                raise UsageError(f"{key}= has no value: write {key}=VALUE")
            value = parse_value(key, text)
        else:
            key = token.lstrip("-").replace("-", "_")
            if key in _BOOL_KEYS and key in valid:
                value = True  # a bare flag, as in `masklet predict show`
            elif key in valid:
                raise UsageError(f"'{key}' needs a value: write {key}=VALUE")
            else:
                raise UsageError(f"'{token}' is not a key=value argument for 'masklet {mode}'."
                                 f"{_suggest(key, valid)} See 'masklet {mode} help'.")
        if key in args:
            raise UsageError(f"{key} is given twice")
        if key in _BOOL_KEYS and not isinstance(value, bool):
            raise UsageError(f"{key}={text if '=' in token else value} must be True or False")
        args[key] = value
    if "model" in args and not isinstance(args["model"], str):
        raise UsageError(f"model={args['model']!r} must be a checkpoint name or path such as sam2.1_b.pt")
    for key in ("project", "name"):
        if key in args and args[key] is not None:
            args[key] = str(args[key])
    return args


# ---------------------------------------------------------------------------------------------- help
def _format_keys(keys: Sequence[str], table: dict[str, tuple[Any, str]], defaults: dict[str, Any]) -> str:
    import textwrap

    lines = []
    for key in keys:
        default, text = table[key]
        default = defaults.get(key, default)
        head = f"  {key}={default!r}" if default is not None else f"  {key}="
        wrapped = textwrap.wrap(text, width=78, initial_indent=" " * 6, subsequent_indent=" " * 6)
        lines.append(head)
        lines.extend(wrapped)
    return "\n".join(lines)


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, width=100)


def general_help() -> str:
    import textwrap

    modes = "\n".join(textwrap.fill(MODE_HELP[m], width=100, initial_indent=f"  {m:<9} ", subsequent_indent=" " * 12)
                      for m in MODES)
    return f"""usage: masklet MODE key=value ...

Segment and track anything with SAM 2 / SAM 2.1, SAM and MobileSAM (Ultralytics-style commands).

modes:
{modes}

examples:
  masklet predict points=[900,600] labels=[1]          (no source=: the demo image truck.jpg in masklet.ASSETS)
  masklet track points=[210,350] labels=[1]            (no source=: the demo clip bedroom.mp4)
  masklet predict model=sam2.1_b.pt source=path/to/video.mp4
  masklet predict source=image.jpg points=[900,370] labels=[1]
  masklet predict source=image.jpg bboxes=[100,100,200,200] imgsz=1024 device=cpu
  masklet track source=video.mp4 points=[[920,470],[909,138]] labels=[1,1]
  masklet info model=sam2.1_l.pt

Values use Python syntax (lists [x,y], True/False, None); unknown keys are errors.
Results are saved to runs/segment/predict, predict2, ... (project=, name=). Without model= the default is
{PREDICT_ARGS['model'][0]}; checkpoints are downloaded to $MASKLET_HOME (default ~/.cache/masklet).
'masklet MODE help' lists every key of a mode. MASKLET_DEBUG=1 shows tracebacks of errors.
"""


def mode_help(mode: str) -> str:
    if mode in EXTERNAL:
        ext = _external(mode)
        if ext is None:
            return f"masklet {mode}: {MODE_HELP[mode]}\n\n{_not_available(mode)}\n"
        # the keys with their defaults, as for predict: the Python docstring speaks of callables and exception
        # classes that have no command-line form
        return (f"usage: masklet {mode} key=value ...\n\n{_wrap(MODE_HELP[mode])}\n\nkeys (default):\n"
                f"{_format_keys(list(ext.keys), ext.keys, {})}\n")
    table = {**PREDICT_ARGS, **INFO_HELP, **TRACK_SWITCHES}
    defaults = CLI_DEFAULTS if mode in ("predict", "track") else {}
    if mode == "track":
        defaults = {**defaults, "mode": "track", "name": None}
    return (f"usage: masklet {mode} key=value ...\n\n{_wrap(MODE_HELP[mode])}\n\nkeys (default):\n"
            f"{_format_keys(MODE_KEYS[mode], table, defaults)}\n")


# ---------------------------------------------------------------------------------------------- modes
class _External:
    """A mode implemented in another module: how to call it and which keys it takes."""

    def __init__(self, func: Callable[..., Any], takes_dict: bool, keys: dict[str, tuple[Any, str]],
                 any_key: bool, required: list[str], doc: str) -> None:
        self.func, self.takes_dict, self.keys, self.any_key = func, takes_dict, keys, any_key
        self.required, self.doc = required, doc


def _load(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name, None)
    except ModuleNotFoundError as exc:
        # a masklet part that is not there (yet) means "not available"; a missing third-party package is a
        # real error and is shown as such
        if exc.name and (exc.name == "masklet" or exc.name.startswith("masklet.")):
            return None
        raise


def _external(mode: str) -> _External | None:
    module, hook_name, keys_name, func_name = EXTERNAL[mode]
    hook = _load(module, hook_name)
    table = _load(module, keys_name)
    keys: dict[str, tuple[Any, str]] = {}
    if isinstance(table, dict):
        keys = {k: (v if isinstance(v, tuple) and len(v) == 2 else (v, "")) for k, v in table.items()}
    elif isinstance(table, (list, tuple)):
        keys = {k: (None, "") for k in table}
    func = _load(module, func_name)
    if callable(hook) and keys:
        required = [k for k, (default, text) in keys.items() if default is None and text.startswith("required")]
        return _External(hook, True, keys, False, required, inspect.getdoc(func if callable(func) else hook) or "")
    if not callable(func):
        return None
    params = inspect.signature(func).parameters
    named = [p for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    keys = keys or {p.name: (None if p.default is p.empty else p.default, "required" if p.default is p.empty else "")
                    for p in named}
    return _External(func, False, keys, any(p.kind == p.VAR_KEYWORD for p in params.values()),
                     [p.name for p in named if p.default is p.empty], inspect.getdoc(func) or "")


def _not_available(mode: str) -> str:
    module, _, _, func = EXTERNAL[mode]
    return (f"'masklet {mode}' is not available in this installation: {module}.{func} was not found. "
            "Update masklet, or use the Python API.")


def run_predict(args: dict[str, Any]) -> None:
    from .api.sam import SAM

    args = {**CLI_DEFAULTS, **args}
    source = args.pop("source", None)
    if source is None:
        source = demo_source("truck.jpg")
    model = SAM(args.pop("model", None) or PREDICT_ARGS["model"][0])
    for _ in model.predict(source, stream=True, **args):
        pass  # results are printed and saved as they come; streaming keeps memory flat on long videos


def run_track(args: dict[str, Any]) -> None:
    from .api.video import SAM2VideoPredictor

    args = {**CLI_DEFAULTS, "mode": "track", **args}
    source = args.pop("source", None)
    if source is None:
        if not any(args.get(k) is not None for k in ("points", "bboxes")):
            raise UsageError("masklet track follows the objects you prompt: give points= (with labels=) or bboxes=, "
                             "e.g. masklet track points=[210,350] labels=[1] (the child on the left of the demo "
                             "clip), or source=video.mp4 with prompts of your own")
        source = demo_source("bedroom.mp4")
    call = {k: args.pop(k) for k in ("points", "labels", "bboxes", "frame") if k in args}
    predictor = SAM2VideoPredictor(overrides=args)
    for _ in predictor(source=source, stream=True, **call):
        pass


def demo_source(name: str) -> str:
    """A demo file shipped in masklet.ASSETS, used when the command line gives no source=."""
    from . import ASSETS

    path = ASSETS / name
    if not path.is_file():
        raise UsageError(f"source= is required (the demo file {path} is not in this installation)")
    print(f"masklet: no source= given, using the demo {'clip' if path.suffix == '.mp4' else 'image'} {path}",
          file=sys.stderr)
    return str(path)


def run_info(args: dict[str, Any]) -> None:
    from .api.sam import SAM

    SAM(args.get("model") or PREDICT_ARGS["model"][0]).info(detailed=args.get("detailed", False),
                                                             verbose=args.get("verbose", True))


def run_external(mode: str, tokens: Sequence[str]) -> None:
    ext = _external(mode)
    if ext is None:
        raise UsageError(_not_available(mode))
    args = parse_args(tokens, _Anything(ext.keys) if ext.any_key else list(ext.keys), mode)
    missing = [k for k in ext.required if args.get(k) is None]
    if missing:
        raise UsageError(f"masklet {mode} needs {', '.join(f'{m}=' for m in missing)}; see 'masklet {mode} help'")
    if ext.takes_dict:
        ext.func(args)
    else:
        ext.func(**args)


class _Anything(list):
    """Valid-key list of a function that takes **kwargs: every key is accepted."""

    def __contains__(self, item: object) -> bool:
        return True


# ---------------------------------------------------------------------------------------------- main
def _is_help(token: str) -> bool:
    return token in ("help", "-h", "--help")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure while running, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("MASKLET_DEBUG", "") not in ("", "0")
    try:
        if argv and argv[0] == "segment":  # `masklet segment predict ...`, Ultralytics' TASK MODE order
            argv = argv[1:]
        if not argv or _is_help(argv[0]):
            if len(argv) > 1 and argv[1] in MODES:
                print(mode_help(argv[1]))
            else:
                print(general_help())
            return 0
        if argv[0] in ("version", "--version", "-V"):
            from . import __version__

            print(__version__)
            return 0
        mode, rest = argv[0], argv[1:]
        if mode not in MODES:
            raise UsageError(f"'{mode}' is not a masklet mode.{_suggest(mode, MODES)} Modes: {', '.join(MODES)}. "
                             "See 'masklet help'.")
        if any(_is_help(t) for t in rest):
            print(mode_help(mode))
            return 0
        if mode in EXTERNAL:
            run_external(mode, rest)
            return 0
        args = parse_args(rest, MODE_KEYS[mode], mode)
        {"predict": run_predict, "track": run_track, "info": run_info}[mode](args)
        return 0
    except KeyboardInterrupt:
        print("masklet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, ValueError, TypeError, FileNotFoundError, IsADirectoryError) as exc:
        if debug:
            raise
        print(f"masklet: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, ImportError) as exc:  # ImportError: an optional extra is not installed
        if debug:
            raise
        print(f"masklet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
