"""Transformer building blocks: patch embedding, 2D rotary position embedding, attention, blocks.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so PyTorch picks flash /
memory-efficient kernels on GPU (memory linear in the token count) and its fused kernel on CPU.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class PatchEmbed(nn.Module):
    """ViT patchify: (N, 3, H, W) -> (N, h*w, dim) with h = H / patch, w = W / patch."""

    def __init__(self, patch_size: int, embed_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class RotaryEmbedding2D(nn.Module):
    """2D RoPE: the first half of each head's channels rotates with the token's row, the second
    half with its column. Relative offsets, not absolute positions, reach the attention scores, so
    a model trained at one resolution runs at another. Register tokens sit at position (0, 0) and
    patches start at (1, 1), so registers are never confused with a patch.
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4 != 0:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
        quarter = head_dim // 4
        inv_freq = base ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # (head_dim/4,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, h: int, w: int, num_registers: int, device, dtype) -> Tuple[Tensor, Tensor]:
        """(T, head_dim) cos and sin for ``num_registers`` registers followed by an h x w grid."""
        rows = torch.arange(1, h + 1, device=device, dtype=torch.float32).repeat_interleave(w)
        cols = torch.arange(1, w + 1, device=device, dtype=torch.float32).repeat(h)
        zeros = torch.zeros(num_registers, device=device, dtype=torch.float32)
        rows, cols = torch.cat([zeros, rows]), torch.cat([zeros, cols])  # (T,)
        angle_rows = rows[:, None] * self.inv_freq  # (T, head_dim/4)
        angle_cols = cols[:, None] * self.inv_freq
        # rotate_half pairs channel k with channel k + n/2 inside each half.
        angles = torch.cat([angle_rows, angle_rows, angle_cols, angle_cols], dim=-1)  # (T, head_dim)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x: (N, heads, T, head_dim); cos, sin: (T, head_dim)."""
        half = x.shape[-1] // 2
        x_rows, x_cols = x[..., :half], x[..., half:]
        cos_r, cos_c = cos[..., :half], cos[..., half:]
        sin_r, sin_c = sin[..., :half], sin[..., half:]
        return torch.cat([x_rows * cos_r + _rotate_half(x_rows) * sin_r, x_cols * cos_c + _rotate_half(x_cols) * sin_c], -1)


def _rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        # QK-norm keeps attention logits bounded, which is what lets deep models train in bf16.
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        N, T, C = x.shape
        qkv = self.qkv(x).reshape(N, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (N, heads, T, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = RotaryEmbedding2D.apply(q, *rope)
            k = RotaryEmbedding2D.apply(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, head_dim)
        return self.proj(out.transpose(1, 2).reshape(N, T, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual gain starting small, so a deep stack starts close to the identity."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block. ``layer_scale=None`` drops the residual gains (pi3's head decoders);
    ``norm_eps`` is 1e-6 in DINOv2 and pi3, PyTorch's 1e-5 in our own presets."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool, layer_scale: Optional[float],
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x: Tensor, rope: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
