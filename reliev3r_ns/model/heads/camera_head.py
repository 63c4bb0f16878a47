"""Camera head: per view, camera-to-world rotation and translation, and a horizontal field of view.

Each view's tokens are pooled (mean of its registers, mean of its patches) and an MLP regresses a
6D rotation, a translation and a field of view. The head is applied to every view with the same
weights, so it keeps the backbone's permutation equivariance. The field of view is only used when
the caller gives no intrinsics (Reliev3R assumes them known).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from reliev3r_ns.geometry import rotation_from_6d

Tensor = torch.Tensor


class CameraHead(nn.Module):
    def __init__(self, dim: int, hidden: int, num_registers: int, fov_range_degrees: Tuple[float, float],
                 translation_init_std: float) -> None:
        super().__init__()
        self.num_registers = num_registers
        self.fov_range = tuple(math.radians(f) for f in fov_range_degrees)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.rotation = nn.Linear(hidden, 6)
        self.translation = nn.Linear(hidden, 3)
        self.fov = nn.Linear(hidden, 1)
        # Start near identity rotations and the middle of the fov range, with small (not zero) weights
        # so every parameter gets a gradient from the first step. Translations start as small as
        # ``translation_init_std`` makes them: the default puts every camera of a clip at nearly one
        # point (a depth / baseline ratio in the thousands); a larger value starts them apart. Tried
        # for the weak model at CPU scale, a larger start did not help (docs/reproduction_log.md, "What did not help").
        for layer, std in ((self.rotation, 1e-3), (self.translation, translation_init_std), (self.fov, 1e-3)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.rotation.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, tokens: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """tokens: (B, V, R + P, dim) -> rotation (B, V, 3, 3) and translation (B, V, 3) of
        camera-to-world (OpenCV), horizontal fov (B, V) in radians."""
        x = self.norm(tokens)
        R = self.num_registers
        pooled = torch.cat([x[:, :, :R].mean(dim=2), x[:, :, R:].mean(dim=2)], dim=-1)  # (B, V, 2*dim)
        hidden = self.mlp(pooled)
        rotation = rotation_from_6d(self.rotation(hidden).float())
        translation = self.translation(hidden).float()
        low, high = self.fov_range
        fov_x = low + (high - low) * torch.sigmoid(self.fov(hidden).float()[..., 0])
        return rotation, translation, fov_x
