"""pi3's image encoder: a DINOv2 ViT (ViT-L/14 with 4 registers in the released weights), run per view.

    images (N, 3, H, W), ImageNet-normalised, H and W multiples of the patch
      -> patch projection + learned position embedding (bicubic-resized to the patch grid)
      -> [class, registers, patches] through ``depth`` pre-norm blocks with layer scale
      -> final LayerNorm, patch tokens only            (N, h*w, dim)

DINOv2's position embedding was learned on one square grid (37 x 37 for 518 px) and is resized to
each image's grid with antialiased bicubic interpolation; at exactly that grid it is used as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reliev3r_ns.model.layers import Block

Tensor = torch.Tensor


class DinoEncoder(nn.Module):
    def __init__(self, patch_size: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, num_registers: int,
                 position_grid: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.position_grid = position_grid
        self.num_registers = num_registers
        self.patch_projection = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.registers = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + position_grid * position_grid, dim))
        # DINOv2 blocks: no QK-norm, layer scale (1.0 at initialisation in DINOv2's code), LayerNorm eps 1e-6.
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qk_norm=False, layer_scale=1.0, norm_eps=1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embedding_for(self, h: int, w: int) -> Tensor:
        """(1, 1 + h*w, dim): the class token's embedding and the patch grid's, resized to h x w."""
        M = self.position_grid
        if (h, w) == (M, M):
            return self.position_embedding
        table = self.position_embedding.float()
        grid = table[:, 1:].reshape(1, M, M, -1).permute(0, 3, 1, 2)  # (1, dim, M, M)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)  # (1, dim, h, w)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([table[:, :1], grid], dim=1).to(self.position_embedding.dtype)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) normalised -> patch tokens (N, h*w, dim)."""
        N = images.shape[0]
        patches = self.patch_projection(images)  # (N, dim, h, w)
        h, w = patches.shape[-2:]
        tokens = torch.cat([self.class_token.expand(N, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        tokens = tokens + self.position_embedding_for(h, w)
        # Registers carry no position: they go in after the embedding is added, behind the class token.
        tokens = torch.cat([tokens[:, :1], self.registers.expand(N, -1, -1), tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.num_registers:]
