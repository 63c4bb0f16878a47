"""pi3's three heads, each a small transformer over one view's tokens followed by an output layer.

    trunk features (N, T, 2*dim): the last two trunk blocks' outputs, concatenated
      -> TokenDecoder (linear in, ``depth`` plain pre-norm RoPE blocks, linear out)   (N, T, out)
      -> PixelHead: one linear layer per patch token, pixel-shuffled to the image     (N, H, W, channels)
      -> CameraHead: residual MLPs, mean over the patch tokens, MLP, translation + 9D rotation
         projected onto SO(3)                                                        (N, 4, 4) cam_to_world
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reliev3r_ns.model.layers import Block

Tensor = torch.Tensor


class TokenDecoder(nn.Module):
    def __init__(self, in_dim: int, dim: int, out_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.input = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qk_norm=False, layer_scale=None, norm_eps=1e-6) for _ in range(depth)])
        self.output = nn.Linear(dim, out_dim)

    def forward(self, tokens: Tensor, rope: Optional[Tuple[Tensor, Tensor]]) -> Tensor:
        """tokens (N, T, in_dim) -> (N, T, out_dim); rope: (cos, sin) each (T, head_dim)."""
        tokens = self.input(tokens)
        for block in self.blocks:
            tokens = block(tokens, rope)
        return self.output(tokens)


class PixelHead(nn.Module):
    """Each patch token predicts its patch's ``channels`` x p x p values directly (DUSt3R's linear head)."""

    def __init__(self, dim: int, patch_size: int, channels: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dim, channels * patch_size * patch_size)

    def forward(self, tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
        """tokens (N, h*w, dim) -> (N, H, W, channels) with H = h * patch, W = w * patch."""
        N = tokens.shape[0]
        h, w = grid
        values = self.proj(tokens).transpose(1, 2).reshape(N, -1, h, w)  # (N, channels*p*p, h, w)
        return F.pixel_shuffle(values, self.patch_size).permute(0, 2, 3, 1)


class ResidualMlp(nn.Module):
    """x + relu(L3(relu(L2(relu(L1(x))))))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.layers:
            y = F.relu(layer(y))
        return x + y


class CameraHead(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.residual = nn.ModuleList([ResidualMlp(dim) for _ in range(2)])
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.translation = nn.Linear(dim, 3)
        self.rotation = nn.Linear(dim, 9)

    def forward(self, tokens: Tensor) -> Tensor:
        """patch tokens (N, h*w, dim) -> cam_to_world (N, 4, 4), OpenCV, float32."""
        for block in self.residual:
            tokens = block(tokens)
        feature = self.mlp(tokens.mean(dim=1))  # (N, dim)
        with torch.autocast(device_type=feature.device.type, enabled=False):
            feature = feature.float()
            translation = self.translation(feature)  # (N, 3)
            rotation = closest_rotation(self.rotation(feature).reshape(-1, 3, 3))  # (N, 3, 3)
            pose = torch.zeros(feature.shape[0], 4, 4, dtype=feature.dtype, device=feature.device)
            pose[:, :3, :3] = rotation
            pose[:, :3, 3] = translation
            pose[:, 3, 3] = 1.0
        return pose


def closest_rotation(matrix: Tensor) -> Tensor:
    """(N, 3, 3) -> the rotation nearest (Frobenius) to the matrix with unit-length rows: the special
    orthogonal Procrustes solution U diag(1, 1, det(U V^T)) V^T of its SVD U S V^T."""
    unit_rows = F.normalize(matrix, dim=-1)
    U, _, Vh = torch.linalg.svd(unit_rows)
    sign = torch.det(U @ Vh)  # -1 where U V^T is a reflection
    U = torch.cat([U[..., :2], U[..., 2:] * sign[:, None, None]], dim=-1)
    return U @ Vh
