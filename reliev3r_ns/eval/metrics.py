"""Pose and depth metrics as the field names them (VGGT / pi3 protocol), world-frame free.

Pose: for every pair (i, j), i < j, the relative pose cam_j_to_cam_i of the prediction is compared
with the truth: rotation error = geodesic angle; translation error = angle between the relative
translation directions (scale-free). With ``sign_ambiguous`` (VGGT's evaluation) a direction and
its opposite count as equal: min(e, 180 - e). RRA@t / RTA@t = fraction of pairs under t degrees;
AUC@30 = mean over thresholds 1..30 degrees of the fraction of pairs whose max(rotation error,
translation error) is under the threshold.

Depth: per view, the prediction is scaled by median(gt) / median(pred) over valid pixels, then
AbsRel = mean |d - d*| / d*, delta<1.25 = fraction with max(d / d*, d* / d) < 1.25, and
tau = fraction with |d - d*| / d* < 0.10 (the paper's inlier ratio at 10 %).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from reliev3r_ns.geometry import pairwise_relative_poses, rotation_geodesic_distance
from reliev3r_ns.losses.reprojection import angle_between

Tensor = torch.Tensor


def relative_pose_errors(pred_cam_to_world: Tensor, gt_cam_to_world: Tensor, sign_ambiguous: bool = True) -> Tuple[Tensor, Tensor]:
    """(V, 4, 4) predicted and GT camera-to-world (any world frames) -> rotation and translation
    direction errors in degrees, each (V * (V - 1) / 2,) over pairs i < j."""
    V = gt_cam_to_world.shape[-3]
    pred = pairwise_relative_poses(pred_cam_to_world.double())
    gt = pairwise_relative_poses(gt_cam_to_world.double())
    i, j = torch.triu_indices(V, V, offset=1)
    rot = torch.rad2deg(rotation_geodesic_distance(pred[i, j, :3, :3], gt[i, j, :3, :3]))
    trans = torch.rad2deg(angle_between(pred[i, j, :3, 3], gt[i, j, :3, 3]))
    if sign_ambiguous:
        trans = torch.minimum(trans, 180.0 - trans)
    return rot.float(), trans.float()


def pose_auc(rotation_errors: Tensor, translation_errors: Tensor, max_threshold: int = 30) -> float:
    worst = torch.maximum(rotation_errors, translation_errors)
    thresholds = torch.arange(1, max_threshold + 1, dtype=worst.dtype, device=worst.device)
    return (worst[None, :] < thresholds[:, None]).float().mean().item()


def pose_metrics(pred_cam_to_world: Tensor, gt_cam_to_world: Tensor, thresholds: Sequence[int] = (5, 15, 30)) -> Dict[str, float]:
    rot, trans = relative_pose_errors(pred_cam_to_world, gt_cam_to_world)
    out = {"pose_auc30": pose_auc(rot, trans, 30), "rotation_error_deg": rot.mean().item(), "translation_error_deg": trans.mean().item()}
    for t in thresholds:
        out[f"rra{t}"] = (rot < t).float().mean().item()
        out[f"rta{t}"] = (trans < t).float().mean().item()
    return out


def _median(x: Tensor) -> Tensor:
    """The usual median (mean of the two middle values for an even count); torch.median takes the lower."""
    s = x.flatten().sort().values
    n = s.numel()
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


def depth_metrics(pred_depth: Tensor, gt_depth: Tensor, valid: Optional[Tensor] = None) -> Dict[str, float]:
    """(V, H, W) depths; per-view median scaling; averaged over views."""
    if valid is None:
        valid = torch.isfinite(gt_depth) & (gt_depth > 0)
    abs_rel, delta, tau = [], [], []
    for p, g, m in zip(pred_depth, gt_depth, valid):
        p, g = p[m].double(), g[m].double()
        if g.numel() == 0:
            continue
        p = p * (_median(g) / _median(p).clamp_min(1e-12))
        rel = (p - g).abs() / g
        abs_rel.append(rel.mean())
        delta.append((torch.maximum(p / g, g / p) < 1.25).double().mean())
        tau.append((rel < 0.10).double().mean())
    if not abs_rel:
        return {"depth_abs_rel": float("nan"), "depth_delta1.25": float("nan"), "depth_tau": float("nan")}
    return {
        "depth_abs_rel": torch.stack(abs_rel).mean().item(),
        "depth_delta1.25": torch.stack(delta).mean().item(),
        "depth_tau": torch.stack(tau).mean().item(),
    }
