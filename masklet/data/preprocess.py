"""The one preprocessing path from an RGB uint8 frame to the model's normalised input tensor.

Each model family declares an `InputSpec`; images and video frames both go through `preprocess`.
The resampling filter is part of the spec because the official implementations differ: SAM 2's image
predictor resizes the float tensor with antialiased bilinear interpolation, its video predictor resizes
the JPEG with PIL's bicubic filter, and SAM 1 resizes the longest side with PIL's bilinear filter and pads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # imported in `preprocess`: the specs are read by the onnxruntime predictors without torch
    import torch

Resample = Literal["torch-bilinear", "pil-bicubic", "pil-bilinear"]


@dataclass(frozen=True)
class InputSpec:
    """How a model family wants its input.

    size: side of the square model input. resize: "square" stretches to size x size (SAM 2);
    "longest" scales the longest side to size and pads bottom/right with zeros (SAM 1).
    mean/std apply to values in the 0-1 range.
    """

    size: int = 1024
    resize: Literal["square", "longest"] = "square"
    resample: Resample = "torch-bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def with_size(self, size: int) -> "InputSpec":
        return InputSpec(size, self.resize, self.resample, self.mean, self.std)

    def with_resample(self, resample: Resample) -> "InputSpec":
        return InputSpec(self.size, self.resize, resample, self.mean, self.std)


def resized_hw(height: int, width: int, spec: InputSpec) -> tuple[int, int]:
    """Size of the image content inside the model input (before padding)."""
    if spec.resize == "square":
        return spec.size, spec.size
    scale = spec.size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess(image: np.ndarray, spec: InputSpec, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> normalised float32 tensor (3, size, size) on `device`."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    out_h, out_w = resized_hw(height, width, spec)
    if spec.resample == "torch-bilinear":
        x = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255.0)
        if (out_h, out_w) != (height, width):
            x = F.interpolate(x[None], size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)[0]
    else:
        pil_filter = Image.BICUBIC if spec.resample == "pil-bicubic" else Image.BILINEAR
        resized = np.array(Image.fromarray(image).resize((out_w, out_h), pil_filter))
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(3, 1, 1)
    x = (x - mean) / std
    if (out_h, out_w) != (spec.size, spec.size):
        x = F.pad(x, (0, spec.size - out_w, 0, spec.size - out_h))
    return x.contiguous()


SAM2_INPUT = InputSpec()
SAM2_VIDEO_INPUT = InputSpec(resample="pil-bicubic")
SAM1_INPUT = InputSpec(resize="longest", resample="pil-bilinear",
                       mean=(123.675 / 255, 116.28 / 255, 103.53 / 255), std=(58.395 / 255, 57.12 / 255, 57.375 / 255))
