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

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.data.scene_io import SceneFormatError, image_size
from reliev3r_ns.process.capture import read_rgb_reduced
from reliev3r_ns.geometry import Sim3, scale_intrinsics, umeyama_alignment, unproject_depth_to_world
from reliev3r_ns.model import FeedForwardReconstructor as FFRM  # ours or pi3 (reliev3r_ns.model.pi3)

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
    """The registered result. Per view: OpenCV camera-to-world, intrinsics at the view's *own* image
    size (views may differ in size and orientation), and depth / confidence / colours at network
    resolution covering exactly that view's image; the cloud is in the same world frame."""

    image_paths: List[Path]
    image_sizes: List[Tuple[int, int]]  # (H, W) of each image, upright
    depth_size: Tuple[int, int]  # (h, w) of the network input
    cam_to_world: np.ndarray  # (N, 4, 4) float64
    intrinsics: np.ndarray  # (N, 3, 3) float64, OpenCV, each at its image's size
    depth: List[np.ndarray]  # per view (h_v, w_v) float32
    confidence: List[np.ndarray]  # per view (h_v, w_v) float32
    view_colours: List[np.ndarray]  # per view (h_v, w_v, 3) uint8: the pixels the network saw
    points: np.ndarray  # (M, 3) float32
    colours: np.ndarray  # (M, 3) uint8
    windows: List[List[int]] = field(default_factory=list)
    window_transforms: List[Dict[str, object]] = field(default_factory=list)
    """Per window: the Sim(3) (scale, rotation, translation) from its own frame to the world frame."""

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    @property
    def image_size(self) -> Tuple[int, int]:
        """The one (H, W) of a set whose images share it."""
        if len(set(self.image_sizes)) != 1:
            raise ValueError("the images have different sizes; use image_sizes")
        return self.image_sizes[0]

    def subset(self, views: Sequence[int]) -> "Reconstruction":
        """The same reconstruction restricted to ``views`` (in that order); the cloud is left as it
        is (rebuild it with :func:`build_cloud`)."""
        views = list(views)
        return dataclasses.replace(
            self, image_paths=[self.image_paths[v] for v in views], image_sizes=[self.image_sizes[v] for v in views],
            cam_to_world=self.cam_to_world[views], intrinsics=self.intrinsics[views], depth=[self.depth[v] for v in views],
            confidence=[self.confidence[v] for v in views], view_colours=[self.view_colours[v] for v in views],
            windows=[[views.index(i) for i in w if i in views] for w in self.windows])

    def depth_intrinsics(self, index: int) -> np.ndarray:
        """View ``index``'s intrinsics at its depth map's resolution."""
        H, W = self.image_sizes[index]
        h, w = self.depth[index].shape
        return scale_intrinsics(torch.from_numpy(self.intrinsics[index]), w / W, h / H).numpy()


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


def check_image_set(image_paths: Sequence[Path], exif_transpose: bool) -> List[Tuple[int, int]]:
    """Fail early, naming files, for sets the FFRM cannot reconstruct; returns each image's (H, W)."""
    if len(image_paths) == 0:
        raise SceneFormatError("no images to reconstruct")
    if len(image_paths) < 2:
        raise SceneFormatError(
            f"{image_paths[0]}: only one image; a reconstruction needs at least two overlapping views"
        )
    return [image_size(Path(p), exif_transpose) for p in image_paths]


@dataclass
class CanvasPlacement:
    """Where one image sits in the network's common input (the canvas): resized by (scale_x,
    scale_y) network pixels per image pixel into a (height, width) block at (offset_x, offset_y).

    Images of the set's most common size fill the canvas (resized, the aspect ratio kept to within
    the patch rounding, as before). Any other image is resized to fit inside it whole and centred,
    the rest padded (VGGT's "pad" preprocessing): a portrait photo among landscape ones keeps all of
    its pixels, where a centre crop would throw away most of it, and its intrinsics stay a plain
    scale + offset of the network's."""

    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int
    height: int
    width: int

    @classmethod
    def fit(cls, image_hw: Tuple[int, int], canvas_hw: Tuple[int, int], fill: bool) -> "CanvasPlacement":
        (H, W), (h, w) = image_hw, canvas_hw
        if fill:
            return cls(w / W, h / H, 0, 0, h, w)
        s = min(w / W, h / H)
        ww, hh = min(w, max(1, round(W * s))), min(h, max(1, round(H * s)))
        return cls(ww / W, hh / H, (w - ww) // 2, (h - hh) // 2, hh, ww)

    def intrinsics_to_image(self, K_canvas: Tensor) -> Tensor:
        """Canvas intrinsics (..., 3, 3) -> the image's own (pixel centres at integers)."""
        K = K_canvas.clone()
        K[..., 0, 0] = K_canvas[..., 0, 0] / self.scale_x
        K[..., 1, 1] = K_canvas[..., 1, 1] / self.scale_y
        K[..., 0, 2] = (K_canvas[..., 0, 2] - self.offset_x + 0.5) / self.scale_x - 0.5
        K[..., 1, 2] = (K_canvas[..., 1, 2] - self.offset_y + 0.5) / self.scale_y - 0.5
        return K

    def crop(self, canvas_map: Tensor) -> Tensor:
        """The part of a (..., h, w[, C]) canvas map that shows the image."""
        return canvas_map[..., self.offset_y:self.offset_y + self.height, self.offset_x:self.offset_x + self.width]


def _load_on_canvas(path: Path, placement: CanvasPlacement, canvas_hw: Tuple[int, int], exif_transpose: bool) -> Tensor:
    """(3, h, w) float in [0, 1]: the image decoded at a bounded size, resized into its block, the
    rest of the canvas at the normalisation mean (so padding normalises to zero)."""
    from reliev3r_ns.model.ffrm import IMAGENET_MEAN

    pixels = read_rgb_reduced(path, max(placement.height, placement.width) * 2, exif_transpose)
    # a decoder may hand back a read-only buffer; torch wants its own writable copy
    image = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy()).permute(2, 0, 1).float().div_(255.0)[None]
    if image.shape[-2:] != (placement.height, placement.width):
        image = F.interpolate(image, size=(placement.height, placement.width), mode="bilinear", align_corners=False, antialias=True)
    canvas = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, *canvas_hw).clone()
    canvas[:, placement.offset_y:placement.offset_y + placement.height, placement.offset_x:placement.offset_x + placement.width] = image[0]
    return canvas


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


def build_cloud(reconstruction: "Reconstruction", config: "ReconstructionConfig") -> Tuple[np.ndarray, np.ndarray]:
    """The coloured cloud of every view's confident pixels, voxel-downsampled view block by view block
    (so memory stays bounded by a block, not the set), capped at ``config.max_points``."""
    N = reconstruction.num_views
    voxel = config.voxel_fraction * float(np.median(np.concatenate([d.ravel() for d in reconstruction.depth])))
    cloud_p, cloud_c = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    for start in range(0, N, 16):
        new_p, new_c = [cloud_p], [cloud_c]
        for i in range(start, min(N, start + 16)):
            conf = reconstruction.confidence[i]
            threshold = np.percentile(conf, config.confidence_percentile) if config.confidence_percentile > 0 else -np.inf
            keep = conf >= threshold
            world = unproject_depth_to_world(torch.from_numpy(reconstruction.depth[i]).double()[None],
                                             torch.from_numpy(reconstruction.depth_intrinsics(i))[None],
                                             torch.from_numpy(reconstruction.cam_to_world[i])[None])[0].numpy()
            new_p.append(world[keep].astype(np.float32))
            new_c.append(reconstruction.view_colours[i][keep])
        cloud_p, cloud_c = np.concatenate(new_p), np.concatenate(new_c)
        if voxel > 0 and math.isfinite(voxel):
            cloud_p, cloud_c = _voxel_downsample(cloud_p, cloud_c, voxel)
    if len(cloud_p) > config.max_points:
        keep = np.random.default_rng(config.seed).choice(len(cloud_p), config.max_points, replace=False)
        cloud_p, cloud_c = cloud_p[keep], cloud_c[keep]
    return cloud_p, cloud_c


def default_resolution(model: FFRM) -> int:
    size = getattr(model, "checkpoint_extra", {}).get("image_size")
    return int(max(size)) if size else 518


def canvas_size(model: FFRM, image_sizes: Sequence[Tuple[int, int]], resolution: Optional[int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(the network's input (h, w), the set's most common image size (H, W), which fills it)."""
    counts: Dict[Tuple[int, int], int] = {}
    for size in image_sizes:
        counts[size] = counts.get(size, 0) + 1
    common = max(counts, key=lambda s: (counts[s], s[1] >= s[0], s))  # ties: landscape, then larger
    return model.inference_size(*common, resolution), common


@torch.no_grad()
def reconstruct(
    model: FFRM,
    image_paths: Sequence[Path],
    config: ReconstructionConfig = ReconstructionConfig(),
    exif_transpose: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
    image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
) -> Reconstruction:
    """Run the FFRM over ``image_paths`` (in order) window by window and register the windows.

    Images may differ in size (see :class:`CanvasPlacement`); ``image_sizes`` (H, W, upright) saves
    reading their headers again. ``progress(done_windows, total_windows)`` is called after each window.
    """
    config.validate()
    image_paths = [Path(p) for p in image_paths]
    sizes = list(image_sizes) if image_sizes is not None else check_image_set(image_paths, exif_transpose)
    if len(image_paths) < 2:
        check_image_set(image_paths, exif_transpose)
    N = len(image_paths)
    device = next(model.parameters()).device
    resolution = config.resolution or default_resolution(model)
    (h, w), common = canvas_size(model, sizes, resolution)
    placements = [CanvasPlacement.fit(size, (h, w), fill=size == common) for size in sizes]
    windows = plan_windows(N, config.window_size, config.window_overlap)

    cam_to_world = np.zeros((N, 4, 4), np.float64)
    intrinsics = np.zeros((N, 3, 3), np.float64)
    depth: List[Optional[np.ndarray]] = [None] * N
    confidence: List[Optional[np.ndarray]] = [None] * N
    view_colours: List[Optional[np.ndarray]] = [None] * N
    registered = np.zeros(N, bool)
    transforms: List[Dict[str, object]] = []
    previous_points: Dict[int, Tensor] = {}  # view -> (h_v, w_v, 3) registered world points (last window only)
    generator = np.random.default_rng(config.seed)

    for k, window in enumerate(windows):
        net_images = torch.stack([_load_on_canvas(image_paths[i], placements[i], (h, w), exif_transpose) for i in window]).to(device)
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
            source = torch.cat([placements[i].crop(points[p].permute(2, 0, 1)).permute(1, 2, 0).reshape(-1, 3) for p, i in zip(positions, shared)])
            target = torch.cat([previous_points[i].reshape(-1, 3) for i in shared])
            weights = torch.cat([torch.minimum(placements[i].crop(conf[p]).reshape(-1), torch.from_numpy(confidence[i]).to(conf.device).reshape(-1))
                                 for p, i in zip(positions, shared)]).double()
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
        K_canvas = prediction.intrinsics.double()
        colours_net = (net_images.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8)

        for position, i in enumerate(window):
            if registered[i]:
                continue
            placement = placements[i]
            cam_to_world[i] = c2w_world[position].cpu().numpy()
            intrinsics[i] = placement.intrinsics_to_image(K_canvas[position]).cpu().numpy()
            depth[i] = placement.crop(d_world[position]).float().cpu().numpy().copy()
            confidence[i] = placement.crop(conf[position]).cpu().numpy().copy()
            view_colours[i] = placement.crop(colours_net[position].permute(2, 0, 1)).permute(1, 2, 0).cpu().numpy().copy()
            registered[i] = True
        # The next window aligns onto these views' *kept* (first) estimates.
        previous_points = {}
        for i in window:
            H_i, W_i = sizes[i]
            h_i, w_i = depth[i].shape
            previous_points[i] = unproject_depth_to_world(
                torch.from_numpy(depth[i]).double().to(device)[None],
                scale_intrinsics(torch.from_numpy(intrinsics[i]).to(device)[None], w_i / W_i, h_i / H_i),
                torch.from_numpy(cam_to_world[i]).to(device)[None],
            )[0]
        if progress:
            progress(k + 1, len(windows))

    result = Reconstruction(
        image_paths=image_paths, image_sizes=sizes, depth_size=(h, w), cam_to_world=cam_to_world, intrinsics=intrinsics,
        depth=depth, confidence=confidence, view_colours=view_colours, points=np.zeros((0, 3), np.float32),
        colours=np.zeros((0, 3), np.uint8), windows=windows, window_transforms=transforms,
    )
    result.points, result.colours = build_cloud(result, config)
    return result


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
