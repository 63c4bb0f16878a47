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

Trajectory: the predicted camera centres are mapped onto the reference by the least-squares Sim(3)
(Umeyama); ATE = RMSE of the aligned centres, in reference units, and ``ate_normalised`` = ATE / RMS
distance of the reference centres from their mean (scale-free, comparable across scenes).

Point maps: the predicted world points of all views are mapped onto the reference point maps by
the least-squares Sim(3) over valid pixels; per pixel rel = |P - P*| / |P* - C*| (C* the pixel's
reference camera centre, so the error is relative to the viewing distance); reported as the mean
rel and tau = fraction with rel < 0.10.

Point clouds (after the same kind of alignment): accuracy = mean distance from each predicted point
to its nearest reference point, completeness = the reverse, Chamfer = their mean.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from reliev3r_ns.geometry import Sim3, pairwise_relative_poses, rotation_geodesic_distance, umeyama_alignment
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
    """(V, H, W) depths; per-view median scaling; averaged over views. Also AbsRel and tau after a
    per-view scale *and shift* (``affine_fit``, as relative-depth models are scored): the shape of each
    depth map apart from its offset. A model whose depth loss removes the shift (the weak one) can
    have the shape right and the offset wrong; the two tau's side by side tell which.

    ``depth_spread_vs_gt``: each view's relative spread of depth (std / mean, blind to scale, not to
    shift) over the GT's, averaged. 1 is right; far below 1 the depth maps are flattened, a large
    offset added to every depth (points pushed far off, where many geometric residuals vanish)."""
    if valid is None:
        valid = torch.isfinite(gt_depth) & (gt_depth > 0)
    abs_rel, delta, tau, affine_abs_rel, affine_tau, spread = [], [], [], [], [], []
    for p, g, m in zip(pred_depth, gt_depth, valid):
        p, g = p[m].double(), g[m].double()
        if g.numel() == 0:
            continue
        scaled = p * (_median(g) / _median(p).clamp_min(1e-12))
        rel = (scaled - g).abs() / g
        abs_rel.append(rel.mean())
        delta.append((torch.maximum(scaled / g, g / scaled) < 1.25).double().mean())
        tau.append((rel < 0.10).double().mean())
        affine_rel = (affine_fit(p, g) - g).abs() / g
        affine_abs_rel.append(affine_rel.mean())
        affine_tau.append((affine_rel < 0.10).double().mean())
        gt_spread = g.std() / g.mean() if g.numel() > 1 else g.new_zeros(())
        if gt_spread > 1e-6:  # a view of one depth (a wall seen head-on) has no spread to compare with
            spread.append((p.std() / p.mean().clamp_min(1e-12)) / gt_spread)
    if not abs_rel:
        return {key: float("nan") for key in ("depth_abs_rel", "depth_delta1.25", "depth_tau", "depth_affine_abs_rel", "depth_affine_tau",
                                              "depth_spread_vs_gt")}
    return {
        "depth_abs_rel": torch.stack(abs_rel).mean().item(),
        "depth_delta1.25": torch.stack(delta).mean().item(),
        "depth_tau": torch.stack(tau).mean().item(),
        "depth_affine_abs_rel": torch.stack(affine_abs_rel).mean().item(),
        "depth_affine_tau": torch.stack(affine_tau).mean().item(),
        "depth_spread_vs_gt": torch.stack(spread).mean().item() if spread else float("nan"),
    }


def affine_fit(pred: Tensor, target: Tensor) -> Tensor:
    """s * pred + t with (s, t) the least-squares fit of the *relative* error (s * pred + t - target) /
    target, (M,) each: the error AbsRel and tau count, so a far wall does not outweigh the near scene.
    A constant pred gets its best constant."""
    weight = target.pow(-2)
    pred_mean, target_mean = (weight * pred).sum() / weight.sum(), (weight * target).sum() / weight.sum()
    pred_centred = pred - pred_mean
    variance = (weight * pred_centred * pred_centred).sum()
    scale = torch.where(variance > 0, (weight * pred_centred * (target - target_mean)).sum() / variance.clamp_min(1e-300),
                        torch.zeros_like(variance))
    return scale * pred_centred + target_mean


def trajectory_metrics(pred_cam_to_world: Tensor, gt_cam_to_world: Tensor) -> Tuple[Dict[str, float], Sim3]:
    """(N, 4, 4) OpenCV camera-to-world -> ({ate, ate_normalised}, the Sim(3) prediction -> reference)."""
    pred_c, gt_c = pred_cam_to_world[:, :3, 3].double(), gt_cam_to_world[:, :3, 3].double()
    sim3 = umeyama_alignment(pred_c, gt_c)
    ate = (sim3.apply_to_points(pred_c) - gt_c).norm(dim=-1).pow(2).mean().sqrt()
    extent = (gt_c - gt_c.mean(0)).norm(dim=-1).pow(2).mean().sqrt().clamp_min(1e-12)
    return {"ate": ate.item(), "ate_normalised": (ate / extent).item()}, sim3


def pointmap_metrics(pred_points: Tensor, gt_points: Tensor, gt_centres: Tensor, valid: Tensor,
                     max_fit_points: int = 100_000, seed: int = 0) -> Dict[str, float]:
    """(V, H, W, 3) predicted / reference world points, (V, 3) reference camera centres, (V, H, W) valid."""
    pred, gt = pred_points.double(), gt_points.double()
    distance = (gt - gt_centres.double()[:, None, None, :]).norm(dim=-1)
    mask = valid & torch.isfinite(pred).all(-1) & torch.isfinite(gt).all(-1) & (distance > 0)
    p, g, d = pred[mask], gt[mask], distance[mask]
    if len(p) < 3:
        return {"pointmap_rel": float("nan"), "pointmap_tau": float("nan")}
    fit = torch.randperm(len(p), generator=torch.Generator().manual_seed(seed))[:max_fit_points]
    sim3 = umeyama_alignment(p[fit], g[fit])
    rel = (sim3.apply_to_points(p) - g).norm(dim=-1) / d
    return {"pointmap_rel": rel.mean().item(), "pointmap_tau": (rel < 0.10).double().mean().item()}


def _nearest_distances(source: Tensor, target: Tensor, chunk: int = 4096) -> Tensor:
    out = [torch.cdist(source[k : k + chunk], target, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values for k in range(0, len(source), chunk)]
    return torch.cat(out) if out else source.new_zeros(0)


def cloud_metrics(pred_points: Tensor, ref_points: Tensor, max_points: int = 20_000, seed: int = 0) -> Dict[str, float]:
    """(M, 3) aligned predicted cloud, (K, 3) reference cloud (both subsampled to ``max_points``)."""
    generator = torch.Generator().manual_seed(seed)
    pred = pred_points.double()[torch.randperm(len(pred_points), generator=generator)[:max_points]]
    ref = ref_points.double()[torch.randperm(len(ref_points), generator=generator)[:max_points]]
    if len(pred) == 0 or len(ref) == 0:
        return {"cloud_accuracy": float("nan"), "cloud_completeness": float("nan"), "cloud_chamfer": float("nan")}
    accuracy = _nearest_distances(pred, ref).mean().item()
    completeness = _nearest_distances(ref, pred).mean().item()
    return {"cloud_accuracy": accuracy, "cloud_completeness": completeness, "cloud_chamfer": 0.5 * (accuracy + completeness)}
