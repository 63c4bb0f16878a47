"""The fully supervised sibling's losses (what the weak model is compared against), after pi3.

Same network, geometric ground truth instead of weak labels:

- Local-point loss: the predicted camera-frame points s * P (from depth and intrinsics) against GT
  points, after the single scale s per sample that best aligns them (a feed-forward model's scale
  is arbitrary); robust weighted L1 with weights 1 / z_gt so near and far points count alike,
  confidence-weighted with the same -alpha log W term as the weak depth loss::

      L_points = mean_valid( W * |s P - P_gt|_1 / z_gt - alpha log W )

- Camera loss: every ordered pair (i, j), i != j, of relative poses cam_j_to_cam_i (world-frame free)
  compared with GT: geodesic rotation angle plus Huber on the translation scaled by the same s::

      L_cam = mean_pairs( angle(R_ij^T R_ij_gt) + huber(s t_ij - t_ij_gt) )
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from reliev3r_ns.geometry.camera import unproject_depth_to_camera
from reliev3r_ns.geometry.pose import pairwise_relative_poses, rotation_geodesic_distance

Tensor = torch.Tensor


@dataclass
class SupervisedLossConfig:
    alpha: float = 1.0
    camera_weight: float = 0.1
    huber_delta: float = 0.1
    """Huber threshold on relative translations, in GT units."""

    def validate(self) -> None:
        """Raise ValueError for settings that cannot train (see ``Reliev3rLossConfig.validate``)."""
        if not self.alpha > 0:
            raise ValueError(f"supervised alpha={self.alpha} must be > 0 (the confidence regulariser's weight)")
        if self.camera_weight < 0:
            raise ValueError(f"supervised camera_weight={self.camera_weight} must be >= 0")
        if not self.huber_delta > 0:
            raise ValueError(f"supervised huber_delta={self.huber_delta} must be > 0")


def optimal_scale(pred_points: Tensor, gt_points: Tensor, weights: Tensor) -> Tensor:
    """Per-sample s = argmin sum w |s p - g|^2 = sum w p.g / sum w p.p.

    pred_points, gt_points: (B, ..., 3); weights (B, ...) -> (B,).
    """
    B = pred_points.shape[0]
    p = pred_points.reshape(B, -1, 3)
    g = gt_points.reshape(B, -1, 3)
    w = weights.reshape(B, -1)
    return (w * (p * g).sum(-1)).sum(-1) / (w * (p * p).sum(-1)).sum(-1).clamp_min(1e-12)


def supervised_losses(
    pred_depth: Tensor,
    confidence: Tensor,
    pred_intrinsics: Tensor,
    pred_cam_to_world: Tensor,
    gt_depth: Tensor,
    gt_intrinsics: Tensor,
    gt_cam_to_world: Tensor,
    valid_mask: Optional[Tensor] = None,
    config: SupervisedLossConfig = SupervisedLossConfig(),
) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """(point loss, camera loss, stats). Depths (B, V, H, W), intrinsics (B, V, 3, 3), poses (B, V, 4, 4) OpenCV."""
    valid = torch.isfinite(gt_depth) & (gt_depth > 0)
    if valid_mask is not None:
        valid = valid & valid_mask.bool()
    gt_z = torch.where(valid, gt_depth, torch.ones_like(gt_depth))
    pred_points = unproject_depth_to_camera(pred_depth, pred_intrinsics)
    gt_points = unproject_depth_to_camera(gt_z, gt_intrinsics)
    inv_z = valid / gt_z
    scale = optimal_scale(pred_points, gt_points, inv_z * inv_z)
    s = scale.reshape(-1, *([1] * (pred_points.dim() - 1)))
    residual = (s * pred_points - gt_points).abs().sum(-1) * inv_z
    per_pixel = confidence * residual - config.alpha * torch.log(confidence.clamp_min(1e-6))
    point_loss = (per_pixel * valid).sum() / valid.sum().clamp_min(1)

    V = pred_cam_to_world.shape[1]
    if V < 2:
        camera_loss = pred_cam_to_world.sum() * 0.0
    else:
        rel_pred = pairwise_relative_poses(pred_cam_to_world)
        rel_gt = pairwise_relative_poses(gt_cam_to_world)
        off_diagonal = ~torch.eye(V, dtype=torch.bool, device=pred_depth.device)
        rot = rotation_geodesic_distance(rel_pred[..., :3, :3], rel_gt[..., :3, :3])[:, off_diagonal]
        t_pred = scale[:, None, None, None] * rel_pred[..., :3, 3]
        trans = F.huber_loss(t_pred, rel_gt[..., :3, 3], delta=config.huber_delta, reduction="none").sum(-1)[:, off_diagonal]
        camera_loss = (rot + trans).mean()
    stats = {"supervised/scale": scale.mean().detach(), "supervised/mean_point_residual": ((residual * valid).sum() / valid.sum().clamp_min(1)).detach()}
    return point_loss, camera_loss, stats
