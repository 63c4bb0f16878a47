"""Alternating-attention backbone (the shape pi3 and VGGT share).

Each view is patchified and given register tokens; then ``depth`` pairs of blocks alternate
attention within each frame (tokens of one view) and across all frames (every token of every view).
Nothing in the global blocks knows which view a token came from (positions are per-view 2D only),
so with ``reference="none"`` permuting the input views permutes every output exactly (pi3). With
``reference="first"`` view 0 gets its own register tokens, which is all it takes for it to define
the world frame (VGGT).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from reliev3r_ns.model.layers import Block, PatchEmbed, RotaryEmbedding2D

Tensor = torch.Tensor


def feature_layer_indices(depth: int, count: int = 4) -> List[int]:
    """Which block pairs feed the dense head: evenly spaced, always ending with the last."""
    return [math.ceil((k + 1) * depth / count) - 1 for k in range(count)]


class AlternatingAttentionBackbone(nn.Module):
    def __init__(self, config) -> None:  # config: reliev3r_ns.model.ffrm.FFRMConfig
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.registers = nn.Parameter(torch.randn(1, config.num_registers, dim) * 0.02)
        if config.reference == "first":
            self.reference_registers = nn.Parameter(torch.randn(1, config.num_registers, dim) * 0.02)
        if config.position_embedding == "rope":
            self.rope = RotaryEmbedding2D(dim // config.num_heads, config.rope_base)
        elif config.position_embedding == "learned":
            grid = config.learned_position_grid
            self.position = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        else:
            raise ValueError(f"position_embedding must be 'rope' or 'learned', got {config.position_embedding!r}")

        def block() -> Block:
            return Block(dim, config.num_heads, config.mlp_ratio, config.qk_norm, config.layer_scale_init)

        self.frame_blocks = nn.ModuleList(block() for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(config.depth))
        self.feature_layers = feature_layer_indices(config.depth)

    def _run(self, blk: Block, x: Tensor, rope) -> Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, rope, use_reentrant=False)
        return blk(x, rope)

    def forward(self, images: Tensor) -> Tuple[List[Tensor], Tensor]:
        """images: (B, V, 3, H, W), normalised.

        Returns the patch tokens after each of the 4 feature layers, each (B*V, h*w, dim), and
        all final tokens (B, V, R + h*w, dim), registers first.
        """
        B, V, _, H, W = images.shape
        p = self.config.patch_size
        h, w = H // p, W // p
        R = self.config.num_registers
        dim = self.config.embed_dim

        x = self.patch_embed(images.reshape(B * V, 3, H, W))  # (B*V, h*w, dim)
        rope = None
        if self.config.position_embedding == "learned":
            pos = F.interpolate(self.position, size=(h, w), mode="bicubic", align_corners=False)
            x = x + pos.flatten(2).transpose(1, 2)
        registers = self.registers.expand(B, V, R, dim)
        if self.config.reference == "first":
            first = self.reference_registers.expand(B, 1, R, dim)
            registers = torch.cat([first, registers[:, 1:]], dim=1)
        x = torch.cat([registers.reshape(B * V, R, dim), x], dim=1)  # (B*V, T, dim), T = R + h*w
        T = x.shape[1]
        if self.config.position_embedding == "rope":
            cos, sin = self.rope.cos_sin(h, w, R, x.device, x.dtype)
            # The global blocks see V copies of the per-view positions: no view index anywhere.
            rope, rope_global = (cos, sin), (cos.repeat(V, 1), sin.repeat(V, 1))
        else:
            rope_global = None

        features = []
        for i in range(self.config.depth):
            x = self._run(self.frame_blocks[i], x, rope)  # (B*V, T, dim)
            x = self._run(self.global_blocks[i], x.reshape(B, V * T, dim), rope_global).reshape(B * V, T, dim)
            if i in self.feature_layers:
                # A layer may be listed twice in tiny models (depth < 4).
                features.extend([x[:, R:]] * self.feature_layers.count(i))
        return features, x.reshape(B, V, T, dim)
