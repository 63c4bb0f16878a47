"""Similarity (Sim(3)) alignment: Umeyama's closed form for point sets and camera centres.

Feed-forward models predict poses in an arbitrary world frame and scale, so every comparison with a
reference first finds the similarity ``x_dst ~ scale * R @ x_src + t`` that best maps one onto the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from reliev3r_ns.geometry.pose import make_pose

Tensor = torch.Tensor


@dataclass
class Sim3:
    """x -> scale * rotation @ x + translation. Fields have a leading batch shape (...)."""

    scale: Tensor  # (...,)
    rotation: Tensor  # (..., 3, 3)
    translation: Tensor  # (..., 3)

    def apply_to_points(self, points: Tensor) -> Tensor:
        """(..., M, 3) points in the source frame -> the destination frame."""
        return self.scale[..., None, None] * (points @ self.rotation.transpose(-1, -2)) + self.translation[..., None, :]

    def apply_to_cam_to_world(self, cam_to_world: Tensor) -> Tensor:
        """(..., N, 4, 4) camera-to-world poses in the source frame -> the destination frame.

        Rotations are rotated, centres mapped like points; the camera's own axes keep unit length
        (a similarity moves where a camera sits, not how it sees).
        """
        rotation = self.rotation[..., None, :, :] @ cam_to_world[..., :3, :3]
        centres = self.apply_to_points(cam_to_world[..., :3, 3])
        return make_pose(rotation, centres)

    def matrix(self) -> Tensor:
        """(..., 4, 4) homogeneous matrix of the similarity."""
        m = make_pose(self.scale[..., None, None] * self.rotation, self.translation)
        return m


def umeyama_alignment(
    source: Tensor,
    target: Tensor,
    weights: Optional[Tensor] = None,
    with_scale: bool = True,
) -> Sim3:
    """Least-squares similarity mapping ``source`` onto ``target`` (Umeyama 1991).

    Minimises sum_k w_k |target_k - (s R source_k + t)|^2 over s > 0, R in SO(3), t.

    Args:
        source, target: (..., M, 3) corresponding points (M >= 3 and not collinear for a unique R;
            degenerate sets still return a valid rotation).
        weights: optional (..., M) non-negative weights.
        with_scale: False fixes s = 1 (SE(3) alignment).
    """
    if source.shape != target.shape or source.shape[-1] != 3:
        raise ValueError(f"source and target must both be (..., M, 3), got {tuple(source.shape)} and {tuple(target.shape)}")
    if weights is None:
        weights = torch.ones(source.shape[:-1], dtype=source.dtype, device=source.device)
    w = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_src = (w[..., None] * source).sum(-2)
    mu_dst = (w[..., None] * target).sum(-2)
    src_c = source - mu_src[..., None, :]
    dst_c = target - mu_dst[..., None, :]
    # Weighted cross-covariance Sigma = sum w dst src^T.
    sigma = (w[..., None, None] * dst_c[..., :, None] * src_c[..., None, :]).sum(-3)
    U, S, Vh = torch.linalg.svd(sigma)
    # Reflection guard: force det(R) = +1.
    d = torch.sign(torch.det(U) * torch.det(Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.ones(*d.shape, 3, dtype=source.dtype, device=source.device)
    D[..., 2] = d
    rotation = U @ (D[..., :, None] * Vh)
    if with_scale:
        var_src = (w * (src_c**2).sum(-1)).sum(-1)
        scale = (S * D).sum(-1) / var_src.clamp_min(1e-12)
    else:
        scale = torch.ones(rotation.shape[:-2], dtype=source.dtype, device=source.device)
    translation = mu_dst - scale[..., None] * (rotation @ mu_src[..., None])[..., 0]
    return Sim3(scale=scale, rotation=rotation, translation=translation)


def align_camera_centres(
    cam_to_world_source: Tensor, cam_to_world_target: Tensor, with_scale: bool = True
) -> Sim3:
    """Sim(3) from the predicted frame to the reference frame, fitted on camera centres of
    (..., N, 4, 4) OpenCV camera-to-world poses (needs N >= 3 non-collinear centres to fix the rotation)."""
    return umeyama_alignment(cam_to_world_source[..., :3, 3], cam_to_world_target[..., :3, 3], with_scale=with_scale)


def align_cam_to_world(cam_to_world_source: Tensor, cam_to_world_target: Tensor, scale: Optional[Tensor] = None) -> Sim3:
    """Sim(3) from the source frame to the target frame, fitted on whole (N, 4, 4) OpenCV poses.

    The rotation is the chordal mean of R_target_i R_source_i^T, so two views (or collinear centres)
    already fix it; scale (unless given, e.g. from depth) and translation are then the least-squares
    fit of the camera centres. Use it to show a prediction next to its reference; metrics keep
    Umeyama on centres (the field's protocol).
    """
    R_src, R_dst = cam_to_world_source[..., :3, :3], cam_to_world_target[..., :3, :3]
    U, _, Vh = torch.linalg.svd((R_dst @ R_src.transpose(-1, -2)).sum(-3))
    D = torch.ones(*U.shape[:-2], 3, dtype=U.dtype, device=U.device)
    D[..., 2] = torch.sign(torch.det(U @ Vh))
    rotation = U @ (D[..., :, None] * Vh)
    c_src, c_dst = cam_to_world_source[..., :3, 3], cam_to_world_target[..., :3, 3]
    src_c = (c_src - c_src.mean(-2, keepdim=True)) @ rotation.transpose(-1, -2)
    dst_c = c_dst - c_dst.mean(-2, keepdim=True)
    spread = (src_c**2).sum((-1, -2))
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=spread.dtype, device=spread.device).expand_as(spread)
    else:
        # Coincident source centres carry no scale; keep 1 rather than divide by zero.
        scale = torch.where(spread > 1e-12, (src_c * dst_c).sum((-1, -2)) / spread.clamp_min(1e-12), torch.ones_like(spread)).clamp_min(1e-6)
    translation = c_dst.mean(-2) - scale[..., None] * (rotation @ c_src.mean(-2)[..., None])[..., 0]
    return Sim3(scale=scale, rotation=rotation, translation=translation)
