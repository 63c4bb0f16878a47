"""Simulated weak labels for scenes with ground truth: for controlled experiments and tests only.

- :func:`simulated_relative_depth`: GT depth turned into what a monocular teacher gives: a random
  per-view affine map in the declared space (depth or disparity), plus multiplicative noise, blur
  and a few outlier blobs. Everything it makes is labelled simulated.
- :func:`gt_correspondences`: exact matches between two views from GT depth and poses (with an
  occlusion check), optionally with pixel noise: a stand-in for a perfect matcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.geometry.camera import pixels_to_camera_rays, project_world_points
from reliev3r_ns.geometry.pose import invert_pose, transform_points
from reliev3r_ns.losses.reprojection import sample_depth

SIMULATED_TEACHER_NAME = "simulated"


@dataclass
class SimulatedDepthTeacherConfig:
    space: Literal["depth", "disparity"] = "disparity"
    scale_range: Tuple[float, float] = (0.2, 5.0)
    """Log-uniform range of the random per-view scale."""
    shift_fraction: float = 0.5
    """Random shift, as a fraction of the map's median value (uniform in [0, shift_fraction])."""
    noise: float = 0.03
    """Multiplicative Gaussian noise (relative)."""
    blur_sigma: float = 1.0
    """Gaussian blur in pixels (teachers are smooth at edges)."""
    outlier_fraction: float = 0.02
    """Fraction of pixels replaced by wrong values, in a few blobs."""


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return maps
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    m = maps.reshape(-1, 1, *maps.shape[-2:])
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return m.reshape(maps.shape)


def simulated_relative_depth(
    gt_depth: np.ndarray, rng: np.random.Generator, config: SimulatedDepthTeacherConfig = SimulatedDepthTeacherConfig()
) -> np.ndarray:
    """(V, H, W) metric GT depth -> (V, H, W) float32 relative map in ``config.space``."""
    depth = torch.from_numpy(np.asarray(gt_depth, dtype=np.float64))
    base = 1.0 / depth if config.space == "disparity" else depth.clone()
    base = _gaussian_blur(base, config.blur_sigma)
    out = []
    V, H, W = base.shape
    for v in range(V):
        m = base[v].numpy() * (1 + config.noise * rng.standard_normal((H, W)))
        n_outliers = int(config.outlier_fraction * H * W)
        if n_outliers:
            ys, xs = np.mgrid[0:H, 0:W]
            for _ in range(3):
                cy, cx = rng.uniform(0, H), rng.uniform(0, W)
                r = np.sqrt(n_outliers / 3 / np.pi)
                blob = (ys - cy) ** 2 + (xs - cx) ** 2 < r * r
                m[blob] = np.median(m) * rng.uniform(0.3, 3.0)
        scale = np.exp(rng.uniform(*np.log(config.scale_range)))
        # A non-negative shift keeps the map positive, as real teachers' outputs are.
        shift = rng.uniform(0, config.shift_fraction) * np.median(m)
        out.append(scale * (m + shift))
    return np.stack(out).astype(np.float32)


def gt_correspondences(
    depths: np.ndarray,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    view_i: int,
    view_j: int,
    stride: int = 4,
    pixel_noise: float = 0.0,
    occlusion_tolerance: float = 0.01,
    max_edge_error_px: float = 0.05,
    rng: Optional[np.random.Generator] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact matches from view i to view j: ((M, 2) uv_i, (M, 2) uv_j), OpenCV pixels.

    Pixels of view i on a ``stride`` grid are lifted with GT depth and projected into view j; kept
    when inside view j, not occluded there (view j's depth agrees within ``occlusion_tolerance``) and
    not on a depth edge of view j: lifted back with view j's interpolated depth, the match must return
    within ``max_edge_error_px`` of its pixel in view i.
    """
    H, W = depths.shape[-2:]
    ys, xs = np.mgrid[0:H:stride, 0:W:stride]
    uv_i = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    # Only the grid pixels are lifted (the same arithmetic as unproject_depth_to_world on them): a
    # scene has V^2 / 2 pairs, and lifting whole depth maps per pair made labelling slow.
    d = torch.from_numpy(np.asarray(depths[view_i][ys.ravel(), xs.ravel()], dtype=np.float64))
    rays = pixels_to_camera_rays(torch.from_numpy(uv_i), torch.from_numpy(intrinsics[view_i]))
    world = transform_points(torch.from_numpy(cam_to_world[view_i]), rays * d[:, None])
    uv_j, z_j = project_world_points(world, torch.from_numpy(intrinsics[view_j]), invert_pose(torch.from_numpy(cam_to_world[view_j])))
    uv_j, z_j = uv_j.numpy(), z_j.numpy()
    inside = (z_j > 0) & (uv_j[:, 0] >= 0) & (uv_j[:, 0] <= W - 1) & (uv_j[:, 1] >= 0) & (uv_j[:, 1] <= H - 1)
    nearest = np.round(uv_j[inside]).astype(int)
    seen = np.abs(depths[view_j][nearest[:, 1], nearest[:, 0]] - z_j[inside]) < occlusion_tolerance * z_j[inside] + 0.02
    keep = np.nonzero(inside)[0][seen]
    # Drop matches whose depth interpolated in view j belongs to no surface (a depth edge): lifted
    # from view j, such a match would not come back to its pixel in view i.
    # Only view j's map in float64 (converting the whole stack per pair cost V times the memory).
    z_interp = sample_depth(
        torch.from_numpy(np.asarray(depths[view_j], dtype=np.float64))[None, None],
        torch.zeros(len(keep), dtype=torch.long),
        torch.zeros(len(keep), dtype=torch.long),
        torch.from_numpy(uv_j[keep]),
    ).numpy()
    rays = pixels_to_camera_rays(torch.from_numpy(uv_j[keep]), torch.from_numpy(intrinsics[view_j]))
    back_world = transform_points(torch.from_numpy(cam_to_world[view_j]), rays * torch.from_numpy(z_interp)[:, None])
    back_uv, _ = project_world_points(back_world, torch.from_numpy(intrinsics[view_i]), invert_pose(torch.from_numpy(cam_to_world[view_i])))
    keep = keep[np.linalg.norm(back_uv.numpy() - uv_i[keep], axis=-1) < max_edge_error_px]
    uv_i, uv_j = uv_i[keep], uv_j[keep]
    if pixel_noise > 0:
        rng = rng or np.random.default_rng(0)
        uv_j = uv_j + rng.normal(scale=pixel_noise, size=uv_j.shape)
    return uv_i.astype(np.float32), uv_j.astype(np.float32)


@dataclass
class SimulatedMatcherConfig:
    stride: int = 8
    """Grid spacing (pixels of view i) of the matched points: a dense tracker's density."""
    pixel_noise: float = 0.5
    """Gaussian noise (pixels) added to the matched position in view j."""
    outlier_fraction: float = 0.05
    """Fraction of matches sent to a random pixel of view j."""
    max_matches_per_pair: int = 1024
    seed: int = 0


class SimulatedMatcher:
    """Correspondences from GT depth and poses, with noise and outliers: a stand-in for a dense
    tracker (the paper uses CoTracker) on synthetic scenes; experiments and tests only, named
    'simulated' in every label it writes."""

    name = "simulated"
    match_from_view_set = True  # pairs come from the scene's GT, not from per-image features

    def __init__(self, config: SimulatedMatcherConfig = SimulatedMatcherConfig()) -> None:
        self.config = config
        self._depths = (None, None)  # (root, (V, H, W) GT depth) of the last view set: pairs come scene by scene

    def description(self) -> dict:
        from dataclasses import asdict

        return {"matcher": self.name, **asdict(self.config)}

    @staticmethod
    def _scene(view_set):
        from reliev3r_ns.data.scene_io import SceneFormatError

        if view_set.scene is None or not view_set.scene.has_depth:
            raise SceneFormatError(
                f"{view_set.root}: the simulated matcher needs GT depth and poses (synthetic scenes); use the sift matcher for real images"
            )
        return view_set.scene

    def item_files(self, view_set, index: int):
        scene = self._scene(view_set)
        return [scene.image_paths[index], scene.depth_paths[index], view_set.root / "transforms.json"]

    def match_views(self, view_set, i: int, j: int, keys) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        scene = self._scene(view_set)
        if self._depths[0] != view_set.root:
            self._depths = (view_set.root, scene.load_depths())
        depths = self._depths[1]
        c = self.config
        rng = np.random.default_rng([c.seed, int(keys[0][:15], 16), int(keys[1][:15], 16)])
        uv_i, uv_j = gt_correspondences(depths, scene.intrinsics, scene.cam_to_world, i, j, stride=c.stride, pixel_noise=c.pixel_noise, rng=rng)
        if len(uv_i) > c.max_matches_per_pair:
            keep = np.sort(rng.choice(len(uv_i), c.max_matches_per_pair, replace=False))
            uv_i, uv_j = uv_i[keep], uv_j[keep]
        outliers = rng.random(len(uv_j)) < c.outlier_fraction
        H, W = depths.shape[-2:]
        uv_j = uv_j.copy()
        uv_j[outliers] = rng.uniform([0, 0], [W - 1, H - 1], size=(int(outliers.sum()), 2))
        return uv_i.astype(np.float32), uv_j.astype(np.float32), np.ones(len(uv_i), np.float32)
