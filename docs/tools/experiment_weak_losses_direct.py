"""Do Reliev3R's two weak losses carry enough signal to recover camera poses? No network involved.

On a synthetic scene, per-view depth maps and camera poses are optimised directly with only the
ambiguity-aware relative depth loss (against a *simulated* disparity teacher: random per-view scale
and shift, noise, blur, outliers) and the angular reprojection loss (on SIFT matches verified with
MAGSAC). Ground truth is used only to make the scene, to perturb the starting poses, and to score.

    python docs/tools/experiment_weak_losses_direct.py [--quick] [--steps 1500] [--rotation-noise-deg 15]

How depth is parametrised decides what the losses can do, so three are compared (``--depth-param``):
  pixels   a free log-depth per pixel (49k unknowns per view);
  grid     a coarse per-view log-depth grid, upsampled (smooth, like a network's output);
  teacher  the teacher's own map through a per-view affine map in its declared space (disparity),
           times a coarse smooth correction: depth = 1 / (a * teacher + b) * exp(upsample(grid)).
The last mirrors what a network learns from the depth loss (the teacher's shape, its own scale)
and starts from a = 1, b = 0, i.e. from the teacher's arbitrary scale and shift.

Prints the pairwise relative rotation error and translation-direction error (degrees) before and
after, and the depth AbsRel after per-view median scaling, and writes a top view of the cameras.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.geometry import (
    align_camera_centres,
    axis_angle_to_rotation,
    make_pose,
    pairwise_relative_poses,
    rotation_geodesic_distance,
)
from reliev3r_ns.losses import Matches, relative_depth_loss, reprojection_loss
from reliev3r_ns.losses.reprojection import angle_between, lift_matches
from reliev3r_ns.teachers.sift import match_all_pairs
from reliev3r_ns.teachers.simulated import simulated_relative_depth


def pose_errors(cam_to_world: torch.Tensor, gt: torch.Tensor):
    """Mean pairwise rotation error and translation-direction error in degrees (world-frame free)."""
    rel, rel_gt = pairwise_relative_poses(cam_to_world), pairwise_relative_poses(gt)
    V = gt.shape[0]
    off = ~torch.eye(V, dtype=torch.bool)
    rot = torch.rad2deg(rotation_geodesic_distance(rel[..., :3, :3], rel_gt[..., :3, :3])[off])
    trans = torch.rad2deg(angle_between(rel[..., :3, 3], rel_gt[..., :3, 3])[off])
    return rot.mean().item(), trans.mean().item()


def optimise(param, args, start, K, teacher, matches, grid_hw):
    """Adam on poses (views 1..V-1; view 0 is the gauge) and the chosen depth parametrisation."""
    V, H, W = teacher.shape
    init_R, init_t = start[:, :3, :3], start[:, :3, 3]
    delta_rot = torch.zeros(V, 3, dtype=torch.float64, requires_grad=True)
    translation = init_t.clone().requires_grad_(True)
    gauge = torch.ones(V, 1, dtype=torch.float64)
    gauge[0] = 0
    gen = torch.Generator().manual_seed(args.seed)
    log_grid = torch.zeros(1, V, *grid_hw, dtype=torch.float64, requires_grad=True)
    if param == "pixels":
        log_depth = (math.log(3.0) + 0.01 * torch.randn(1, V, H, W, dtype=torch.float64, generator=gen)).requires_grad_(True)
        depth_params, depth_lr = [log_depth], 0.02
    elif param == "grid":
        with torch.no_grad():
            log_grid += math.log(3.0) + 0.01 * torch.randn(log_grid.shape, dtype=torch.float64, generator=gen)
        depth_params, depth_lr = [log_grid], 0.02
    else:
        log_scale = torch.zeros(1, V, 1, 1, dtype=torch.float64, requires_grad=True)
        shift = torch.zeros(1, V, 1, 1, dtype=torch.float64, requires_grad=True)
        depth_params, depth_lr = [log_scale, shift, log_grid], 0.01
    teacher_disparity = teacher[None] / teacher.flatten(1).median(-1).values[None, :, None, None]

    def current_depth():
        smooth = torch.nn.functional.interpolate(log_grid, size=(H, W), mode="bicubic", align_corners=False)
        if param == "pixels":
            return log_depth.exp()
        if param == "grid":
            return smooth.exp()
        disparity = (log_scale.exp() * teacher_disparity + shift).clamp_min(1e-3)
        return smooth.exp() / disparity

    def current_poses():
        return make_pose(axis_angle_to_rotation(delta_rot * gauge) @ init_R, torch.where(gauge.bool(), translation, init_t))

    optimiser = torch.optim.Adam(
        [{"params": depth_params, "lr": depth_lr}, {"params": [delta_rot], "lr": 0.003}, {"params": [translation], "lr": 0.01}]
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps, eta_min=0.05 * 0.003)
    ones = torch.ones(1, V, H, W, dtype=torch.float64)
    from rich.progress import track

    for _ in track(range(args.steps), description=f"optimising depth ({param}) + poses"):
        depth = current_depth()
        l_depth, _ = relative_depth_loss(depth, ones, teacher[None], "disparity")
        l_rep, _ = reprojection_loss(depth, K[None], current_poses()[None], matches)
        loss = l_depth + 0.5 * l_rep
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
    return current_poses().detach(), current_depth().detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller, shorter run (about a minute on 2 cores)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--rotation-noise-deg", type=float, default=15.0)
    parser.add_argument("--translation-noise", type=float, default=0.5, help="metres")
    parser.add_argument("--depth-param", nargs="+", choices=["pixels", "grid", "teacher"], default=["pixels", "grid", "teacher"])
    parser.add_argument("--grid", type=int, default=8, help="cells across the width of the coarse depth grid")
    parser.add_argument("--max-match-error-deg", type=float, default=None,
                        help="diagnosis only: drop matches whose GT angular error exceeds this (uses GT)")
    parser.add_argument("--output", type=Path, default=Path("outputs/experiment_weak_losses_direct.png"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.views, args.width, args.height = 300, 6, 128, 96
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    scene = generate_scene(args.seed, SyntheticSceneConfig(width=args.width, height=args.height, num_views=args.views, trajectories=("forward",)))
    V, H, W = scene.depths.shape
    gt_c2w = torch.from_numpy(scene.cam_to_world)
    K = torch.from_numpy(scene.intrinsics)
    teacher = torch.from_numpy(simulated_relative_depth(scene.depths, rng).astype(np.float64))

    pairs = [p for p in match_all_pairs(scene.images) if len(p[2])]
    M = sum(len(p[2]) for p in pairs)
    matches = Matches(
        torch.zeros(M, dtype=torch.long),
        torch.cat([torch.full((len(p[2]),), p[0]) for p in pairs]),
        torch.cat([torch.full((len(p[2]),), p[1]) for p in pairs]),
        torch.from_numpy(np.concatenate([p[2] for p in pairs]).astype(np.float64)),
        torch.from_numpy(np.concatenate([p[3] for p in pairs]).astype(np.float64)),
        torch.from_numpy(np.concatenate([p[4] for p in pairs]).astype(np.float64)),
    )
    gt_depth = torch.from_numpy(scene.depths.astype(np.float64))[None]
    p_i = lift_matches(gt_depth, K[None], gt_c2w[None], matches.batch, matches.view_i, matches.uv_i)
    p_j = lift_matches(gt_depth, K[None], gt_c2w[None], matches.batch, matches.view_j, matches.uv_j)
    match_error = torch.rad2deg(angle_between(p_i - gt_c2w[matches.view_i, :3, 3], p_j - gt_c2w[matches.view_i, :3, 3]))
    print(f"scene seed {args.seed} ({scene.metadata['trajectory']}), {V} views {W}x{H}; SIFT: {M} verified matches on "
          f"{len(pairs)} of {V * (V - 1) // 2} pairs, GT angular error median {match_error.median():.3f} deg, "
          f"{(match_error > 1).float().mean() * 100:.1f}% above 1 deg")
    if args.max_match_error_deg is not None:
        keep = match_error <= args.max_match_error_deg
        matches = Matches(*(getattr(matches, f)[keep] for f in ("batch", "view_i", "view_j", "uv_i", "uv_j", "confidence")))
        print(f"diagnosis: kept {int(keep.sum())} matches with GT error <= {args.max_match_error_deg} deg")

    # Start: GT poses perturbed (view 0 kept as the gauge), the same start for every parametrisation.
    noise_rot = torch.from_numpy(rng.normal(size=(V, 3))) * math.radians(args.rotation_noise_deg) / math.sqrt(3)
    noise_t = torch.from_numpy(rng.normal(size=(V, 3))) * args.translation_noise / math.sqrt(3)
    noise_rot[0] = 0
    noise_t[0] = 0
    init_R = axis_angle_to_rotation(noise_rot) @ gt_c2w[:, :3, :3]
    init_t = gt_c2w[:, :3, 3] + noise_t
    start = make_pose(init_R, init_t)

    def depth_abs_rel(depth):
        ratio = (gt_depth / depth).flatten(2).median(-1).values[..., None, None]
        return ((depth * ratio - gt_depth).abs() / gt_depth).mean().item()

    grid_hw = (max(2, round(args.grid * H / W)), args.grid)
    results = {}
    for param in args.depth_param:
        final, depth = optimise(param, args, start, K, teacher, matches, grid_hw)
        results[param] = (pose_errors(final, gt_c2w), depth_abs_rel(depth), final)

    before = pose_errors(start, gt_c2w)
    print(f"{'':30s}{'rotation err (deg)':>20s}{'translation dir err (deg)':>28s}{'depth AbsRel':>14s}")
    print(f"{'start (perturbed GT poses)':30s}{before[0]:20.2f}{before[1]:28.2f}{'':>14s}")
    for param, ((rot, trans), abs_rel, _) in results.items():
        print(f"{'after, depth = ' + param:30s}{rot:20.2f}{trans:28.2f}{abs_rel:14.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    curves = [("GT", gt_c2w, "k-o"), ("start", start, "C1--x")]
    curves += [(f"depth = {param}", r[2], f"C{k + 2}-s") for k, (param, r) in enumerate(results.items())]
    for name, poses, style in curves:
        sim = align_camera_centres(poses, gt_c2w)
        centres = sim.apply_to_points(poses[:, :3, 3]).numpy()
        ax.plot(centres[:, 0], centres[:, 1], style, label=name, ms=4)
    ax.set_aspect("equal")
    ax.legend()
    ax.set_title("camera centres, top view (Sim(3)-aligned to GT)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
