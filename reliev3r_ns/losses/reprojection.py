"""Trigonometry-based reprojection loss (Reliev3R's correspondence term), and its pixel ablation.

For a correspondence k between views i and j at pixels u_ik and u_jk, each pixel is lifted with its
own view's predicted depth (bilinear at the sub-pixel position), intrinsics and camera-to-world
pose into world points p_ik and p_jk. The residual is the angle at camera centre t_i between the two
points, and symmetrically at t_j::

    theta_i = angle(p_ik - t_i, p_jk - t_i) = atan2(|a x b|, a . b)
    L = sum_k c_k * (rho(theta_i) + rho(theta_j)) / 2 / sum_k c_k

with c_k the match confidence and rho a robust function (Cauchy by default, with a scale in degrees;
optionally another one for a warm-up of the first training steps, :meth:`ReprojectionLossConfig.at_step`).

Optionally (``radial_weight > 0``) a radial residual joins the angle at each camera centre: the log
ratio of the two points' distances from it, ``r_i = log|p_jk - t_i| - log|p_ik - t_i|``. The angle says
whether p_jk lies on pixel u_ik's ray; the radial residual says whether it lies at the same distance along
it. Near-parallel rays (short baselines, forward walks) leave the angle almost blind to a view's depth
offset (it moves p_jk along a ray that barely turns as seen from t_i) while the radial residual sees it
directly, so matched views must agree on their depths, not just on their rays. It is scale-free and
defined everywhere (distances are positive, including behind a camera). But a flat depth map (every
point of a view at about one distance) satisfies it whatever the poses, and the relative depth loss
cannot object (it normalises the offset away): in the one training tried (docs/reproduction_log.md, "A radial residual
beside the angle") the network kept the flat depth it starts with and learnt no poses. Off by default.

Why an angle: it is bounded (0..pi) and scale-free, so a far point counts as much as a near one
(a 3D L2 distance is dominated by far points and pulls everything towards the camera), and it is
defined for a point behind the camera, where it is simply large (a pixel reprojection divides by a
depth that changes sign there). atan2 of the cross and dot norms is accurate near 0, where acos of a
normalised dot product loses half its digits and has an infinite gradient. For small errors, theta_i
is the pixel reprojection error divided by the focal length (to first order, near the image centre).

``residual="pixel"`` is the ablation: project p_jk into view i and p_ik into view j and take the pixel
distance to the matched pixel; points at or behind the image plane get no gradient (masked), which is
exactly its failure mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, Literal, Optional, Tuple

import torch

from reliev3r_ns.geometry.camera import pixels_to_camera_rays, project_world_points
from reliev3r_ns.geometry.pose import invert_pose, transform_points

Tensor = torch.Tensor


@dataclass
class Matches:
    """Correspondences of a batch, flattened: entry k links pixel ``uv_i[k]`` of view ``view_i[k]`` to
    ``uv_j[k]`` of view ``view_j[k]``, both in sample ``batch[k]``. Pixels are OpenCV (x = column, y = row,
    (0, 0) the centre of the top-left pixel)."""

    batch: Tensor  # (M,) long
    view_i: Tensor  # (M,) long
    view_j: Tensor  # (M,) long
    uv_i: Tensor  # (M, 2) float
    uv_j: Tensor  # (M, 2) float
    confidence: Tensor  # (M,) float >= 0

    def __len__(self) -> int:
        return int(self.batch.shape[0])

    def to(self, device) -> "Matches":
        return Matches(*(getattr(self, f).to(device) for f in ("batch", "view_i", "view_j", "uv_i", "uv_j", "confidence")))


@dataclass
class ReprojectionLossConfig:
    residual: Literal["angle", "pixel"] = "angle"
    """angle (Reliev3R) or pixel (ablation)."""
    robust: Literal["cauchy", "huber", "l1", "l2"] = "cauchy"
    scale_degrees: float = 1.0
    """Robust scale for angle residuals."""
    scale_pixels: float = 2.0
    """Robust scale for pixel residuals."""
    warmup_robust: Optional[Literal["cauchy", "huber", "l1", "l2"]] = None
    """A robust function for the first ``warmup_steps`` training steps, ``robust`` after them (e.g. l1,
    whose pull does not fade on matches tens of degrees off, then Cauchy). None: ``robust`` throughout."""
    warmup_steps: int = 0
    """How many training steps (from step 0) use ``warmup_robust``."""
    warmup_scale_degrees: float = 2.0
    """Robust scale of angle residuals during the warm-up (pixel residuals keep ``scale_pixels``)."""
    radial_weight: float = 0.0
    """Weight of the radial residual (log distance ratio at each camera centre) beside the angle, per
    match; 0 (default, the paper's loss): angle alone. Angle residuals only."""
    scale_radial: float = 0.05
    """Robust scale of radial residuals (a log ratio: 0.05 is about 5 % in distance)."""

    def validate(self) -> None:
        """Raise ValueError for settings that cannot train. The pipeline calls this before any scene is
        loaded, so a bad flag fails in seconds, not after labelling and loading hundreds of scenes."""
        if (self.warmup_robust is None) != (self.warmup_steps <= 0):
            raise ValueError(f"reprojection warm-up: warmup_robust={self.warmup_robust!r} and warmup_steps={self.warmup_steps} "
                             "must be set together (a robust function and a positive step count), or neither")
        if self.radial_weight > 0 and self.residual != "angle":
            raise ValueError("reprojection radial_weight > 0 needs residual='angle' (the radial residual completes the angle)")
        if self.radial_weight < 0:
            raise ValueError(f"reprojection radial_weight={self.radial_weight} must be >= 0")
        for name in ("scale_degrees", "scale_pixels", "warmup_scale_degrees", "scale_radial"):
            if not getattr(self, name) > 0:
                raise ValueError(f"reprojection {name}={getattr(self, name)} must be > 0 (a robust function's scale)")

    def at_step(self, step: Optional[int]) -> "ReprojectionLossConfig":
        """The config in force at training step ``step`` (None: outside training, the final one)."""
        self.validate()
        if step is None or self.warmup_robust is None or step >= self.warmup_steps:
            return self
        return replace(self, robust=self.warmup_robust, scale_degrees=self.warmup_scale_degrees)


def sample_depth(depth: Tensor, batch: Tensor, view: Tensor, uv: Tensor) -> Tensor:
    """Bilinear depth at sub-pixel OpenCV positions. depth (B, V, H, W); batch, view (M,); uv (M, 2) -> (M,).

    Positions outside the image are clamped to the border. A gather from the flattened maps keeps
    memory at O(M) (grid_sample would need one map per match).
    """
    B, V, H, W = depth.shape
    flat = depth.reshape(-1)
    x = uv[:, 0].detach().clamp(0, W - 1)
    y = uv[:, 1].detach().clamp(0, H - 1)
    x0 = torch.floor(x).clamp(max=max(W - 2, 0)).long()
    y0 = torch.floor(y).clamp(max=max(H - 2, 0)).long()
    fx = (x - x0).to(depth.dtype)
    fy = (y - y0).to(depth.dtype)
    x1 = (x0 + 1).clamp(max=W - 1)
    y1 = (y0 + 1).clamp(max=H - 1)
    base = (batch * V + view) * (H * W)
    d00 = flat[base + y0 * W + x0]
    d01 = flat[base + y0 * W + x1]
    d10 = flat[base + y1 * W + x0]
    d11 = flat[base + y1 * W + x1]
    return (1 - fy) * ((1 - fx) * d00 + fx * d01) + fy * ((1 - fx) * d10 + fx * d11)


def lift_matches(depth: Tensor, intrinsics: Tensor, cam_to_world: Tensor, batch: Tensor, view: Tensor, uv: Tensor) -> Tensor:
    """World points (M, 3) of pixels ``uv`` lifted with their view's depth, intrinsics (B, V, 3, 3)
    and OpenCV camera-to-world (B, V, 4, 4)."""
    z = sample_depth(depth, batch, view, uv)
    rays = pixels_to_camera_rays(uv, intrinsics[batch, view])
    return transform_points(cam_to_world[batch, view], rays * z[:, None])


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    """Angle (radians) between (..., 3) vectors, atan2(|a x b|, a . b): accurate near 0 and pi."""
    cross = torch.linalg.norm(torch.linalg.cross(a, b, dim=-1) + 0.0, dim=-1)
    dot = (a * b).sum(-1)
    # A tiny offset keeps the norm's gradient finite when the cross product is exactly zero.
    return torch.atan2(torch.sqrt(cross**2 + 1e-20), dot)


def log_distance(v: Tensor) -> Tensor:
    """log |v| of (..., 3) vectors; the offset keeps it finite (and its gradient) at v = 0."""
    return 0.5 * torch.log((v * v).sum(-1) + 1e-20)


def robust(residual: Tensor, kind: str, scale: float) -> Tensor:
    r = residual / scale
    if kind == "cauchy":
        return torch.log1p(r * r)
    if kind == "huber":
        a = r.abs()
        return torch.where(a < 1, 0.5 * a * a, a - 0.5)
    if kind == "l1":
        return r.abs()
    if kind == "l2":
        return r * r
    raise ValueError(f"unknown robust function {kind!r}")


def reprojection_loss(
    depth: Tensor,
    intrinsics: Tensor,
    cam_to_world: Tensor,
    matches: Matches,
    config: ReprojectionLossConfig = ReprojectionLossConfig(),
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Reliev3R's reprojection loss over a batch.

    Args:
        depth: (B, V, H, W) predicted z-depth; intrinsics: (B, V, 3, 3); cam_to_world: (B, V, 4, 4) OpenCV.
        matches: flattened correspondences (see :class:`Matches`).

    Returns:
        (scalar loss, stats) with ``reprojection/num_matches`` and ``reprojection/median_error``
        (degrees for the angle residual, pixels for the pixel residual), and with a radial residual
        ``reprojection/median_radial_error`` (|log distance ratio|, about the relative distance error).
    """
    config.validate()
    radial_error = None
    if len(matches) == 0:
        zero = depth.sum() * 0.0
        return zero, {"reprojection/num_matches": torch.tensor(0), "reprojection/median_error": torch.tensor(float("nan"))}
    p_i = lift_matches(depth, intrinsics, cam_to_world, matches.batch, matches.view_i, matches.uv_i)
    p_j = lift_matches(depth, intrinsics, cam_to_world, matches.batch, matches.view_j, matches.uv_j)
    pose_i = cam_to_world[matches.batch, matches.view_i]
    pose_j = cam_to_world[matches.batch, matches.view_j]
    weights = matches.confidence.clamp_min(0)
    if config.residual == "angle":
        t_i = pose_i[:, :3, 3]
        t_j = pose_j[:, :3, 3]
        theta_i = angle_between(p_i - t_i, p_j - t_i)
        theta_j = angle_between(p_j - t_j, p_i - t_j)
        scale = math.radians(config.scale_degrees)
        per_match = 0.5 * (robust(theta_i, config.robust, scale) + robust(theta_j, config.robust, scale))
        error = torch.rad2deg(0.5 * (theta_i + theta_j)).detach()
        if config.radial_weight > 0:
            radial_i = log_distance(p_j - t_i) - log_distance(p_i - t_i)
            radial_j = log_distance(p_i - t_j) - log_distance(p_j - t_j)
            per_match = per_match + config.radial_weight * 0.5 * (
                robust(radial_i, config.robust, config.scale_radial) + robust(radial_j, config.robust, config.scale_radial)
            )
            radial_error = (0.5 * (radial_i.abs() + radial_j.abs())).detach()
    elif config.residual == "pixel":
        uv_ji, z_ji = project_world_points(p_j, intrinsics[matches.batch, matches.view_i], invert_pose(pose_i))
        uv_ij, z_ij = project_world_points(p_i, intrinsics[matches.batch, matches.view_j], invert_pose(pose_j))
        in_front = (z_ji > 1e-6) & (z_ij > 1e-6)
        e_i = torch.linalg.norm(uv_ji - matches.uv_i, dim=-1)
        e_j = torch.linalg.norm(uv_ij - matches.uv_j, dim=-1)
        per_match = 0.5 * (robust(e_i, config.robust, config.scale_pixels) + robust(e_j, config.robust, config.scale_pixels))
        per_match = torch.where(in_front, per_match, torch.zeros_like(per_match))
        weights = weights * in_front
        error = (0.5 * (e_i + e_j)).detach()[in_front]
    else:
        raise ValueError(f"unknown residual {config.residual!r}")
    loss = (weights * per_match).sum() / weights.sum().clamp_min(1e-12)
    stats = {
        "reprojection/num_matches": torch.tensor(len(matches)),
        "reprojection/median_error": error.median() if error.numel() else torch.tensor(float("nan")),
    }
    if radial_error is not None:
        stats["reprojection/median_radial_error"] = radial_error.median()
    return loss, stats
