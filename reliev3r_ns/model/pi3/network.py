"""pi3 (Wang et al. 2025, "pi^3: Scalable Permutation-Equivariant Visual Geometry Learning") as an FFRM.

    images (B, V, 3, H, W) in [0, 1], H and W multiples of 14
      -> DinoEncoder per view                                   (B*V, h*w, dim)
      -> 5 trunk registers + patches; trunk of alternating frame / global RoPE blocks
         (even blocks attend within a view, odd blocks across all views); no view is special,
         so the output is permutation-equivariant and the world frame arbitrary
      -> features = last two trunk blocks, concatenated        (B*V, 5 + h*w, 2*dim)
      -> point decoder + PixelHead     local points (B, V, H, W, 3) = (x/z * z, y/z * z, exp(.))
      -> confidence decoder + PixelHead   confidence logit (B, V, H, W)
      -> camera decoder + CameraHead      cam_to_world (B, V, 4, 4), OpenCV

Mapped onto :class:`~reliev3r_ns.model.ffrm.Prediction`: depth is the z of the local points;
intrinsics are the closed-form weighted least-squares focal length that best maps the local points'
directions (x/z, y/z) onto the pixel grid, principal point at the image centre (per view, or one per
set with ``shared_focal``), weights sigmoid(confidence); confidence = 2 sigmoid(logit), in (0, 2) like
our own head's. World points come from depth + intrinsics + pose through the geometry core, as for
our own network, so there is one source of geometry. Given intrinsics are used as they are.

The parameter names follow this project's modules; :mod:`reliev3r_ns.model.pi3.weights` maps the
released checkpoint's names onto them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Type

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from reliev3r_ns.geometry import unproject_depth_to_world
from reliev3r_ns.model.ffrm import IMAGENET_MEAN, IMAGENET_STD, FeedForwardReconstructor, Prediction, StoredConfig
from reliev3r_ns.model.layers import Block, RotaryEmbedding2D
from reliev3r_ns.model.pi3.encoder import DinoEncoder
from reliev3r_ns.model.pi3.heads import CameraHead, PixelHead, TokenDecoder

Tensor = torch.Tensor


@dataclass
class Pi3Config(StoredConfig):
    """The pi3 network's shape; the defaults are the released ``yyfz233/Pi3`` (959 M parameters)."""

    _target: Type = field(default_factory=lambda: Pi3Network)
    size: str = "pi3"
    """Informational: 'pi3' for the released shape, anything else for reduced models (tests)."""
    patch_size: int = 14
    dim: int = 1024
    """Width of the encoder and the trunk (the encoder's tokens enter the trunk as they are)."""
    encoder_depth: int = 24
    encoder_registers: int = 4
    position_grid: int = 37
    """Side of the encoder's learned position-embedding grid (518 px / 14)."""
    trunk_depth: int = 36
    trunk_registers: int = 5
    head_dim: int = 1024
    """Width of the point / confidence / camera decoders."""
    head_depth: int = 5
    camera_dim: int = 512
    mlp_ratio: float = 4.0
    attention_head_dim: int = 64
    """Channels per attention head everywhere (DINOv2's and pi3's choice): heads = width / 64."""
    trunk_layer_scale_init: float = 0.01
    rope_base: float = 100.0
    shared_focal: bool = False
    """One focal length for all views of a set (a video from one camera) instead of one per view."""
    fov_range_degrees: Tuple[float, float] = (15.0, 150.0)
    """The fitted focal length is clamped to this horizontal field of view."""
    gradient_checkpointing: bool = False

    def heads(self, width: int) -> int:
        if width % self.attention_head_dim:
            raise ValueError(f"width {width} is not a multiple of the attention head size {self.attention_head_dim}")
        return width // self.attention_head_dim


class Pi3Network(FeedForwardReconstructor):
    architecture = "pi3"

    def __init__(self, config: Pi3Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = DinoEncoder(c.patch_size, c.dim, c.encoder_depth, c.heads(c.dim), c.mlp_ratio, c.encoder_registers, c.position_grid)
        self.trunk_registers = nn.Parameter(torch.zeros(1, c.trunk_registers, c.dim))
        self.trunk = nn.ModuleList([Block(c.dim, c.heads(c.dim), c.mlp_ratio, qk_norm=True, layer_scale=c.trunk_layer_scale_init, norm_eps=1e-6)
                                    for _ in range(c.trunk_depth)])
        self.trunk_rope = RotaryEmbedding2D(c.attention_head_dim, c.rope_base)
        self.point_decoder = TokenDecoder(2 * c.dim, c.head_dim, c.head_dim, c.head_depth, c.heads(c.head_dim), c.mlp_ratio)
        self.point_head = PixelHead(c.head_dim, c.patch_size, 3)
        self.confidence_decoder = TokenDecoder(2 * c.dim, c.head_dim, c.head_dim, c.head_depth, c.heads(c.head_dim), c.mlp_ratio)
        self.confidence_head = PixelHead(c.head_dim, c.patch_size, 1)
        self.camera_decoder = TokenDecoder(2 * c.dim, c.head_dim, c.camera_dim, c.head_depth, c.heads(c.head_dim), c.mlp_ratio)
        self.camera_head = CameraHead(c.camera_dim)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.checkpoint_extra: Dict[str, Any] = {"image_size": [518, 518]}

    def _run(self, block: nn.Module, tokens: Tensor, rope: Tuple[Tensor, Tensor]) -> Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, tokens, rope, use_reentrant=False)
        return block(tokens, rope)

    def forward_raw(self, images: Tensor) -> Dict[str, Tensor]:
        """images (B, V, 3, H, W) in [0, 1] -> the network's own outputs: ``local_points`` (B, V, H, W, 3),
        ``confidence_logit`` (B, V, H, W), ``cam_to_world`` (B, V, 4, 4), all float32."""
        B, V, _, H, W = self.check_inputs(images)
        p = self.config.patch_size
        h, w, R = H // p, W // p, self.config.trunk_registers
        T = R + h * w
        tokens = self.encoder(((images - self.image_mean) / self.image_std).reshape(B * V, 3, H, W))  # (B*V, h*w, dim)
        tokens = torch.cat([self.trunk_registers.expand(B * V, -1, -1).to(tokens.dtype), tokens], dim=1)  # (B*V, T, dim)
        # Registers at position (0, 0), patches from (1, 1); the global blocks see each view's grid again.
        frame_rope = self.trunk_rope.cos_sin(h, w, R, images.device, torch.float32)  # each (T, 64)
        global_rope = (frame_rope[0].repeat(V, 1), frame_rope[1].repeat(V, 1))  # each (V*T, 64)
        last_two = []
        for i, block in enumerate(self.trunk):
            if i % 2 == 0:
                tokens = self._run(block, tokens.reshape(B * V, T, -1), frame_rope)
            else:
                tokens = self._run(block, tokens.reshape(B, V * T, -1), global_rope)
            if i >= len(self.trunk) - 2:
                last_two.append(tokens.reshape(B * V, T, -1))
        features = torch.cat(last_two, dim=-1)  # (B*V, T, 2*dim)

        points = self.point_decoder(features, frame_rope)[:, R:]  # (B*V, h*w, head_dim)
        confidence = self.confidence_decoder(features, frame_rope)[:, R:]
        camera = self.camera_decoder(features, frame_rope)[:, R:]  # (B*V, h*w, camera_dim)
        with torch.autocast(device_type=images.device.type, enabled=False):  # outputs in fp32, as pi3 does
            xy, log_z = self.point_head(points.float(), (h, w)).reshape(B, V, H, W, 3).split([2, 1], dim=-1)
            z = torch.exp(log_z)
            local_points = torch.cat([xy * z, z], dim=-1)  # (B, V, H, W, 3): xy are x/z and y/z
            confidence_logit = self.confidence_head(confidence.float(), (h, w)).reshape(B, V, H, W)
            cam_to_world = self.camera_head(camera.float()).reshape(B, V, 4, 4)
        return {"local_points": local_points, "confidence_logit": confidence_logit, "cam_to_world": cam_to_world}

    def forward(self, images: Tensor, intrinsics: Optional[Tensor] = None) -> Prediction:
        """images (B, V, 3, H, W) in [0, 1]; intrinsics (B, V, 3, 3) OpenCV at this size, or None to fit them."""
        B, V, _, H, W = self.check_inputs(images, intrinsics)
        raw = self.forward_raw(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            depth = raw["local_points"][..., 2]  # (B, V, H, W)
            weights = torch.sigmoid(raw["confidence_logit"])
            focal = fit_focal(raw["local_points"], weights, self.config.shared_focal, self.config.fov_range_degrees)  # (B, V)
            fov_x = 2.0 * torch.atan(W / (2.0 * focal))
            if intrinsics is None:
                intrinsics = centred_intrinsics(focal, H, W)
            else:
                fov_x = fov_x.detach()
            intrinsics = intrinsics.float()
            world_points = unproject_depth_to_world(depth, intrinsics, raw["cam_to_world"])
        return Prediction(raw["cam_to_world"], intrinsics, depth, 2.0 * weights, world_points, fov_x)


def fit_focal(local_points: Tensor, weights: Tensor, shared: bool = False,
              fov_range_degrees: Tuple[float, float] = (15.0, 150.0)) -> Tensor:
    """The focal length f (pixels, fx = fy) minimising sum w |(u - cx, v - cy) - f (x/z, y/z)|^2 over
    each view's pixels (u, v), principal point (cx, cy) at the image centre (pixel centres at integers):
    f = sum w <d, r> / sum w |r|^2 with d the pixel offset and r the point's direction.

    local_points (B, V, H, W, 3), weights (B, V, H, W) >= 0 -> (B, V); with ``shared`` one f per set.
    Points behind the camera get no weight; the result is clamped to ``fov_range_degrees`` (a random
    or untrained network can fit any value, including a negative one)."""
    B, V, H, W, _ = local_points.shape
    z = local_points[..., 2]
    valid = (z > 1e-8) & torch.isfinite(local_points).all(dim=-1)
    safe_z = torch.where(valid, z, torch.ones_like(z))
    rx, ry = local_points[..., 0] / safe_z, local_points[..., 1] / safe_z  # (B, V, H, W)
    du = (torch.arange(W, device=z.device, dtype=z.dtype) - (W - 1) / 2.0).view(1, 1, 1, W)
    dv = (torch.arange(H, device=z.device, dtype=z.dtype) - (H - 1) / 2.0).view(1, 1, H, 1)
    w = torch.where(valid, weights, torch.zeros_like(weights))
    rx, ry = torch.where(valid, rx, torch.zeros_like(rx)), torch.where(valid, ry, torch.zeros_like(ry))
    numerator = (w * (du * rx + dv * ry)).sum(dim=(-2, -1))  # (B, V)
    denominator = (w * (rx * rx + ry * ry)).sum(dim=(-2, -1))
    if shared:
        numerator = numerator.sum(dim=1, keepdim=True).expand(B, V)
        denominator = denominator.sum(dim=1, keepdim=True).expand(B, V)
    low, high = (W / (2.0 * math.tan(math.radians(d) / 2.0)) for d in (fov_range_degrees[1], fov_range_degrees[0]))
    focal = numerator / denominator.clamp_min(1e-12)
    return torch.nan_to_num(focal, nan=low).clamp(low, high)


def centred_intrinsics(focal: Tensor, height: int, width: int) -> Tensor:
    """(...,) focal in pixels -> (..., 3, 3) OpenCV K with the principal point at the image centre."""
    K = torch.zeros(*focal.shape, 3, 3, dtype=focal.dtype, device=focal.device)
    K[..., 0, 0] = K[..., 1, 1] = focal
    K[..., 0, 2] = (width - 1) / 2.0
    K[..., 1, 2] = (height - 1) / 2.0
    K[..., 2, 2] = 1.0
    return K


def pi3_config(size: str = "pi3", **overrides: Any) -> Pi3Config:
    """'pi3': the released shape. 'test': a reduced model of the same structure for tests and demos
    (every kind of layer present, a few hundred thousand parameters)."""
    if size == "pi3":
        return Pi3Config(**overrides)
    if size == "test":
        values = dict(size="test", dim=64, encoder_depth=2, encoder_registers=4, position_grid=6, trunk_depth=4,
                      trunk_registers=5, head_dim=64, head_depth=2, camera_dim=32)
        return Pi3Config(**{**values, **overrides})
    raise ValueError(f"unknown pi3 size {size!r}; choose 'pi3' or 'test'")
