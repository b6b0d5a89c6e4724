"""The Ultralytics-style user API: `SAM`, `SAM2VideoPredictor` and their `Results`.

Names are imported on first use, so `import masklet.api` (and `masklet --help`) does not import torch.
`PREDICT_ARGS` documents every keyword the predict / track calls and the CLI accept.
"""
from __future__ import annotations

from typing import Any

from masklet._lazy import lazy_exports

_EXPORTS = {
    "sam": ["SAM", "increment_path"],
    "video": ["SAM2VideoPredictor"],
    "results": ["Results", "Masks", "Boxes"],
    "prompts": ["normalize_prompts", "PromptError"],
}

# key -> (default, help). The one list of predict/track keywords: SAM.predict, SAM2VideoPredictor overrides and
# the command line validate against it. Defaults are those of the Python API; the CLI saves by default.
PREDICT_ARGS: dict[str, tuple[Any, str]] = {
    "model": ("sam2.1_t.pt", ("checkpoint: a name (sam2_t.pt ... sam2.1_l.pt, sam_b.pt, mobile_sam.pt, official file "
                              "names) downloaded to $MASKLET_HOME, or a local file (variant read from its contents)")),
    "source": (None, ("image, video, folder, glob, webcam index (0) or stream URL; Python also takes arrays, PIL "
                      "images and lists. Omitted in Python: the previous call's source; on the command line: the demo "
                      "truck.jpg (predict) or bedroom.mp4 clip (track) in masklet.ASSETS")),
    "points": (None, ("point prompts (x, y pixels): [x,y] one object; [[x,y],[x,y]] two objects, one point each; "
                      "[[[x,y],[x,y]]] one object with two points")),
    "labels": (None, ("one label per point, 1 = foreground, 0 = background; a single number applies to all "
                      "points; default 1")),
    "bboxes": (None, "box prompts [x1,y1,x2,y2] or [[x1,y1,x2,y2], ...], one object per box"),
    "masks": (None, ("mask prompts: low-resolution logits (B,1,256,256) from a previous call, or binary masks "
                     "(B,H,W) at the image size")),
    "frame": (0, "track: the frame the prompts are on (objects are tracked forwards and backwards from it)"),
    "multimask_output": (False, "return the 3 candidate masks per prompt instead of the best one"),
    "conf": (0.25, ("segment everything: drop masks whose predicted IoU is below this (prompted masks are all "
                    "kept, one per prompt)")),
    "imgsz": (None, "model input size, any multiple of 64 (default: the model's own, 1024)"),
    "device": (None, "cpu, cuda, cuda:1, 0 (= cuda:0) or mps; default: where the model is"),
    "half": (False, ("half precision: the image encoder (and video memory attention) run under autocast in "
                     "float16 on CUDA, bfloat16 elsewhere; the decoder stays float32. Faster on GPUs and "
                     "AVX-512-bf16/AMX CPUs (slower where bf16 is emulated); masks agree with float32 to IoU ~0.99")),
    "dtype": (None, "precision by name instead of half: float32, bfloat16 or float16"),
    "compile": (False, ("torch.compile the mask decoder (and, in float32, the image trunk): faster after a first "
                        "call that compiles for about a minute per input shape on a CPU; needs a C++ compiler")),
    "save": (False, "save annotated images / videos to project/name (the CLI saves by default)"),
    "save_txt": (False, "save YOLO segmentation labels (cls x1 y1 x2 y2 ..., normalised) to project/name/labels"),
    "save_conf": (False, "with save_txt: append each mask's confidence to its line"),
    "show": (False, "show results in a window (needs an OpenCV build with GUI and a display)"),
    "project": ("runs/segment", "folder that holds the run folders"),
    "name": (None, "run folder name (default: the mode, predict or track); taken names get 2, 3, ... appended"),
    "exist_ok": (False, "reuse project/name if it exists instead of making a new numbered one"),
    "vid_stride": (1, "use every n-th frame of videos and streams"),
    "max_frames": (None, "stop each video or stream after this many (used) frames"),
    "stream": (False, "Python: return a generator of Results instead of a list (constant memory on videos)"),
    "verbose": (True, "print a line per image / frame and a speed summary"),
    "show_labels": (True, "draw labels on saved / shown images"),
    "show_conf": (True, "draw confidences in the labels"),
    "show_boxes": (True, "draw boxes on saved / shown images"),
    "line_width": (None, "box line width in pixels (default: from the image size)"),
    "retina_masks": (True, "accepted for Ultralytics compatibility: masks are always at the original resolution"),
    "task": ("segment", "accepted for Ultralytics compatibility: must be 'segment'"),
    "mode": ("predict", "accepted for Ultralytics compatibility: predict or track"),
}

# key -> (default, help): the official video predictor's switches (its defaults), for SAM2VideoPredictor overrides
# and `masklet track`; see masklet.predictors.video.VideoPredictor.
TRACK_SWITCHES: dict[str, tuple[Any, str]] = {
    "add_all_frames_to_correct_as_cond": (False, ("a correction on an already tracked frame becomes a conditioning "
                                                  "frame, so later propagations keep it instead of tracking over it")),
    "non_overlap_masks": (False, "give each pixel to at most one object (the highest logit) in the returned masks"),
    "clear_non_cond_mem_around_input": (False, ("drop the tracked memories within num_maskmem frames of a prompted "
                                                "frame (single-object tracking unless the next switch is set)")),
    "clear_non_cond_mem_for_multi_obj": (False, "also clear around prompted frames when tracking several objects"),
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = _names + ["PREDICT_ARGS", "TRACK_SWITCHES"]
