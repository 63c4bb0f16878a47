"""Reconstruct an image set of any length with the FFRM: overlapping windows registered by Sim(3).

One forward pass sees at most ``window_size`` views (memory grows with the number of views). Longer
sets are cut into windows that share ``window_overlap`` views with the previous one; each new window
is mapped into the frame of the first by the similarity that best aligns its point maps of the shared
views onto the already registered point maps of those views (same pixels, so every confident pixel
is a correspondence: robust even with a single shared view). Views already registered keep their
first estimate. Only the last window's point maps and a voxel-downsampled cloud are kept in memory,
so memory stays bounded by the window size, not the set size.

Everything here is OpenCV (see :mod:`reliev3r_ns.geometry.conventions`); the world frame is the
FFRM's frame of the first window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.data.scene_io import SceneFormatError, common_image_size, read_rgb
from reliev3r_ns.geometry import Sim3, scale_intrinsics, umeyama_alignment, unproject_depth_to_world
from reliev3r_ns.model import FFRM

Tensor = torch.Tensor


@dataclass
class ReconstructionConfig:
    window_size: int = 16
    """Views per forward pass (memory grows with it)."""
    window_overlap: int = 4
    """Views shared by consecutive windows; their point maps fix each window's Sim(3)."""
    resolution: Optional[int] = None
    """Longest image side the network runs at; default: the size the checkpoint was trained at
    (recorded at export), else 518 (VGGT's)."""
    confidence_percentile: float = 30.0
    """Per view, drop this percentage of the least confident pixels from the point cloud."""
    voxel_fraction: float = 0.005
    """Voxel edge for downsampling the cloud, as a fraction of the median predicted depth."""
    max_points: int = 500_000
    """Cap on the exported cloud (a uniform random subset beyond it)."""
    autocast_bf16: bool = False
    """Run the network in bf16 autocast (GPU); geometry stays float32."""
    seed: int = 0

    def validate(self) -> None:
        if self.window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {self.window_size}")
        if not 1 <= self.window_overlap < self.window_size:
            raise ValueError(f"window_overlap must be in [1, window_size - 1] = [1, {self.window_size - 1}], got {self.window_overlap}")
        if not 0.0 <= self.confidence_percentile < 100.0:
            raise ValueError(f"confidence_percentile must be in [0, 100), got {self.confidence_percentile}")


@dataclass
class Reconstruction:
    """The registered result. Per view: OpenCV camera-to-world, intrinsics at the *image* size, and
    depth / confidence at the network size ``depth_size``; the cloud is in the same world frame."""

    image_paths: List[Path]
    image_size: Tuple[int, int]  # (H, W) of the images
    depth_size: Tuple[int, int]  # (h, w) of depth / confidence
    cam_to_world: np.ndarray  # (N, 4, 4) float64
    intrinsics: np.ndarray  # (N, 3, 3) float64, OpenCV, at image_size
    depth: np.ndarray  # (N, h, w) float32
    confidence: np.ndarray  # (N, h, w) float32
    points: np.ndarray  # (M, 3) float32
    colours: np.ndarray  # (M, 3) uint8
    windows: List[List[int]] = field(default_factory=list)
    window_transforms: List[Dict[str, object]] = field(default_factory=list)
    """Per window: the Sim(3) (scale, rotation, translation) from its own frame to the world frame."""

    @property
    def num_views(self) -> int:
        return len(self.image_paths)


def plan_windows(num_views: int, window_size: int, overlap: int) -> List[List[int]]:
    """Consecutive windows of ``window_size`` views, each sharing >= ``overlap`` views with the one
    before; the last is moved back to end at the last view so every window is full."""
    if num_views <= window_size:
        return [list(range(num_views))]
    stride = window_size - overlap
    starts = list(range(0, num_views - window_size + 1, stride))
    if starts[-1] + window_size < num_views:
        starts.append(num_views - window_size)
    return [list(range(s, s + window_size)) for s in starts]


def check_image_set(image_paths: Sequence[Path], exif_transpose: bool) -> Tuple[int, int]:
    """Fail early, naming files, for sets the FFRM cannot reconstruct as one."""
    if len(image_paths) == 0:
        raise SceneFormatError("no images to reconstruct")
    if len(image_paths) < 2:
        raise SceneFormatError(
            f"{image_paths[0]}: only one image; a reconstruction needs at least two overlapping views"
        )
    return common_image_size(
        image_paths, exif_transpose, advice="one camera per set: resize or split them into folders of one size each"
    )


def _robust_sim3(source: Tensor, target: Tensor, weights: Tensor, iterations: int = 4) -> Sim3:
    """Umeyama with iteratively reweighted residuals (Cauchy-like), so a few wrong depths at
    occlusion edges do not drag the alignment."""
    w = weights.clone()
    sim3 = umeyama_alignment(source, target, w)
    for _ in range(iterations):
        residual = (sim3.apply_to_points(source) - target).norm(dim=-1)
        scale = residual.median().clamp_min(1e-9)
        w = weights / (1.0 + (residual / (2.0 * scale)) ** 2)
        sim3 = umeyama_alignment(source, target, w)
    return sim3


def _voxel_downsample(points: np.ndarray, colours: np.ndarray, voxel: float) -> Tuple[np.ndarray, np.ndarray]:
    """Mean point and mean colour per occupied voxel."""
    if len(points) == 0:
        return points, colours
    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(0)
    extent = cells.max(0) + 1
    if np.prod(extent.astype(np.float64)) < 2.0**62:
        # One int64 per voxel, x most significant: the same voxels in the same (lexicographic) order as
        # np.unique(cells, axis=0), which sorts structured rows and was the slow part of a reconstruction.
        keys = (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    else:  # a cloud spanning more than 2^62 voxels (points near infinity) cannot be keyed in one int64
        _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    out_p = np.stack([np.bincount(inverse, points[:, k].astype(np.float64), len(counts)) for k in range(3)], -1)
    out_c = np.stack([np.bincount(inverse, colours[:, k].astype(np.float64), len(counts)) for k in range(3)], -1)
    return (out_p / counts[:, None]).astype(np.float32), np.clip(np.rint(out_c / counts[:, None]), 0, 255).astype(np.uint8)


def default_resolution(model: FFRM) -> int:
    size = getattr(model, "checkpoint_extra", {}).get("image_size")
    return int(max(size)) if size else 518


@torch.no_grad()
def reconstruct(
    model: FFRM,
    image_paths: Sequence[Path],
    config: ReconstructionConfig = ReconstructionConfig(),
    exif_transpose: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Reconstruction:
    """Run the FFRM over ``image_paths`` (in order) window by window and register the windows.

    ``progress(done_windows, total_windows)`` is called after each window.
    """
    config.validate()
    image_paths = [Path(p) for p in image_paths]
    H, W = check_image_set(image_paths, exif_transpose)
    N = len(image_paths)
    device = next(model.parameters()).device
    resolution = config.resolution or default_resolution(model)
    h, w = model.inference_size(H, W, resolution)
    windows = plan_windows(N, config.window_size, config.window_overlap)

    cam_to_world = np.zeros((N, 4, 4), np.float64)
    intrinsics = np.zeros((N, 3, 3), np.float64)
    depth = np.zeros((N, h, w), np.float32)
    confidence = np.zeros((N, h, w), np.float32)
    registered = np.zeros(N, bool)
    cloud_p = np.zeros((0, 3), np.float32)
    cloud_c = np.zeros((0, 3), np.uint8)
    voxel: Optional[float] = None
    transforms: List[Dict[str, object]] = []
    previous_points: Dict[int, Tensor] = {}  # view -> (h, w, 3) registered world points (last window only)
    generator = np.random.default_rng(config.seed)

    for k, window in enumerate(windows):
        pixels = np.stack([read_rgb(image_paths[i], exif_transpose=exif_transpose) for i in window])
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).to(device)
        net_images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True) if (h, w) != (H, W) else images
        prediction = model.infer(net_images, autocast_dtype=torch.bfloat16 if config.autocast_bf16 else None)
        c2w = prediction.cam_to_world.double()  # (V, 4, 4) in this window's frame
        d = prediction.depth.double()  # (V, h, w)
        conf = prediction.confidence.float()
        points = prediction.world_points.double()  # (V, h, w, 3)
        if not (torch.isfinite(c2w).all() and torch.isfinite(d).all()):
            names = ", ".join(image_paths[i].name for i in window[:3])
            raise FloatingPointError(f"the FFRM returned non-finite poses or depth for the window starting at {names}; the checkpoint may be broken")

        shared = [i for i in window if registered[i]]
        if shared:
            positions = [window.index(i) for i in shared]
            source = points[positions].reshape(-1, 3)
            target = torch.stack([previous_points[i] for i in shared]).reshape(-1, 3)
            weights = torch.minimum(conf[positions].reshape(-1), torch.from_numpy(confidence[shared]).to(conf.device).reshape(-1)).double()
            if len(source) > 50_000:  # plenty for 7 parameters; keeps the SVDs cheap
                keep = torch.from_numpy(generator.choice(len(source), 50_000, replace=False)).to(source.device)
                source, target, weights = source[keep], target[keep], weights[keep]
            sim3 = _robust_sim3(source, target, weights)
        else:
            eye = torch.eye(3, dtype=torch.float64, device=c2w.device)
            sim3 = Sim3(torch.ones((), dtype=torch.float64, device=c2w.device), eye, torch.zeros(3, dtype=torch.float64, device=c2w.device))
        transforms.append({"scale": float(sim3.scale), "rotation": sim3.rotation.cpu().tolist(), "translation": sim3.translation.cpu().tolist()})

        c2w_world = sim3.apply_to_cam_to_world(c2w)
        d_world = d * sim3.scale
        points_world = sim3.apply_to_points(points.reshape(-1, 3)).reshape(points.shape)
        K_image = scale_intrinsics(prediction.intrinsics.double(), W / w, H / h)
        colours_net = (net_images.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8)

        new_points, new_colours = [], []
        for position, i in enumerate(window):
            if registered[i]:
                continue
            cam_to_world[i] = c2w_world[position].cpu().numpy()
            intrinsics[i] = K_image[position].cpu().numpy()
            depth[i] = d_world[position].float().cpu().numpy()
            confidence[i] = conf[position].cpu().numpy()
            registered[i] = True
            threshold = np.percentile(confidence[i], config.confidence_percentile) if config.confidence_percentile > 0 else -np.inf
            keep = (conf[position] >= float(threshold)).cpu().numpy()
            new_points.append(points_world[position].float().cpu().numpy()[keep])
            new_colours.append(colours_net[position].cpu().numpy()[keep])
        # The next window aligns onto these views' *kept* (first) estimates.
        previous_points = {}
        for i in window:
            previous_points[i] = unproject_depth_to_world(
                torch.from_numpy(depth[i]).double().to(device)[None],
                scale_intrinsics(torch.from_numpy(intrinsics[i]).to(device)[None], w / W, h / H),
                torch.from_numpy(cam_to_world[i]).to(device)[None],
            )[0]

        if new_points:
            if voxel is None:
                voxel = config.voxel_fraction * float(np.median(depth[registered]))
            cloud_p = np.concatenate([cloud_p, *new_points])
            cloud_c = np.concatenate([cloud_c, *new_colours])
            if voxel > 0:
                cloud_p, cloud_c = _voxel_downsample(cloud_p, cloud_c, voxel)
        if progress:
            progress(k + 1, len(windows))

    if len(cloud_p) > config.max_points:
        keep = generator.choice(len(cloud_p), config.max_points, replace=False)
        cloud_p, cloud_c = cloud_p[keep], cloud_c[keep]
    return Reconstruction(
        image_paths=image_paths, image_size=(H, W), depth_size=(h, w), cam_to_world=cam_to_world, intrinsics=intrinsics,
        depth=depth, confidence=confidence, points=cloud_p, colours=cloud_c, windows=windows, window_transforms=transforms,
    )


def shared_intrinsics(intrinsics: np.ndarray) -> np.ndarray:
    """One camera for the whole set: the median of each entry (robust to a view with a bad fov)."""
    K = np.median(intrinsics, axis=0)
    K[0, 1] = K[1, 0] = K[2, 0] = K[2, 1] = 0.0
    K[2, 2] = 1.0
    return K


def focal_spread(intrinsics: np.ndarray) -> float:
    """Relative spread of the per-view focal lengths ((max - min) / median)."""
    f = intrinsics[:, 0, 0]
    return float((f.max() - f.min()) / max(np.median(f), 1e-12)) if len(f) else math.nan
