"""Dense head (DPT-style): per-pixel depth and confidence from four backbone layers.

Patch tokens of four layers are reshaped to feature maps at 1/p of the image, resampled to
4x, 2x, 1x and 1/2x of the patch grid, fused coarse-to-fine with residual conv units, and upsampled
to the full image. Depth = exp(raw) (positive, scale free), confidence = 2 * sigmoid(raw), in (0, 2)
as the relative depth loss's -alpha log W term expects. Views are processed independently.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

# exp() of a bf16 / fp32 logit beyond this overflows or stops meaning anything for a scene.
MAX_LOG_DEPTH = 20.0


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds the skip features to the coarser path, refines, and upsamples to ``size``."""

    def __init__(self, features: int, has_skip: bool) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(features) if has_skip else None
        self.unit = ResidualConvUnit(features)
        self.out = nn.Conv2d(features, features, 1)

    def forward(self, path: Tensor, skip: Tensor | None, size: Tuple[int, int]) -> Tensor:
        if skip is not None:
            path = path + self.skip_unit(skip)
        path = self.unit(path)
        path = F.interpolate(path, size=size, mode="bilinear", align_corners=False)
        return self.out(path)


class DenseHead(nn.Module):
    def __init__(self, dim: int, layer_dims: Sequence[int], features: int, out_channels: int = 2) -> None:
        super().__init__()
        if len(layer_dims) != 4:
            raise ValueError(f"the dense head takes 4 layers, got layer_dims={tuple(layer_dims)}")
        self.norm = nn.LayerNorm(dim)
        self.project = nn.ModuleList(nn.Conv2d(dim, d, 1) for d in layer_dims)
        d0, d1, d2, d3 = layer_dims
        self.resample = nn.ModuleList(
            [
                nn.ConvTranspose2d(d0, d0, kernel_size=4, stride=4),  # 4x the patch grid
                nn.ConvTranspose2d(d1, d1, kernel_size=2, stride=2),  # 2x
                nn.Identity(),  # 1x
                nn.Conv2d(d3, d3, kernel_size=3, stride=2, padding=1),  # 1/2x
            ]
        )
        self.to_features = nn.ModuleList(nn.Conv2d(d, features, 3, padding=1, bias=False) for d in layer_dims)
        self.fusion = nn.ModuleList([FusionBlock(features, has_skip=k < 3) for k in range(4)])
        self.out_conv = nn.Conv2d(features, features // 2, 3, padding=1)
        self.out_head = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, out_channels, 1)
        )

    def forward(self, layers: List[Tensor], grid: Tuple[int, int], image_size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """layers: 4 x (N, h*w, dim) patch tokens; grid (h, w); image_size (H, W).
        Returns depth (N, H, W) > 0 and confidence (N, H, W) in (0, 2)."""
        h, w = grid
        maps = []
        for k, tokens in enumerate(layers):
            x = self.norm(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # (N, dim, h, w)
            x = self.resample[k](self.project[k](x))
            maps.append(self.to_features[k](x))  # (N, features, h_k, w_k)
        l1, l2, l3, l4 = maps
        path = self.fusion[3](l4, None, l3.shape[-2:])
        path = self.fusion[2](path, l3, l2.shape[-2:])
        path = self.fusion[1](path, l2, l1.shape[-2:])
        path = self.fusion[0](path, l1, (2 * l1.shape[-2], 2 * l1.shape[-1]))
        path = F.interpolate(self.out_conv(path), size=image_size, mode="bilinear", align_corners=False)
        raw = self.out_head(path).float()  # (N, 2, H, W); activations in fp32 under autocast
        depth = torch.exp(raw[:, 0].clamp(-MAX_LOG_DEPTH, MAX_LOG_DEPTH))
        confidence = 2.0 * torch.sigmoid(raw[:, 1])
        return depth, confidence
