"""FPN neck of SAM 2's image encoder, and the encoder (trunk + neck) itself."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .hiera import Hiera
from .position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """1x1 lateral convs to `d_model` channels, with a top-down nearest-neighbour path on `top_down_levels`."""

    def __init__(self, d_model: int, backbone_channel_list: list[int], top_down_levels: tuple[int, ...] = (2, 3),
                 interp_mode: str = "nearest") -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)
        self.top_down_levels = top_down_levels
        self.interp_mode = interp_mode

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs) - 1
        out: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                top_down = F.interpolate(prev.float(), scale_factor=2.0, mode=self.interp_mode,
                                         align_corners=None if self.interp_mode == "nearest" else False)
                prev = lateral + top_down.to(lateral.dtype)
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev)
        return out, pos


class ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck. forward((B, 3, S, S)) -> (features, pos_encodings): three levels each,
    highest resolution first ((B, 256, S/4, S/4), (B, 256, S/8, S/8), (B, 256, S/16, S/16)); the
    lowest-resolution level is dropped (`scalp`)."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features, pos = self.neck(self.trunk(x))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return features, pos
