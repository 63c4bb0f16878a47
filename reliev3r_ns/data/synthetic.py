"""Seeded procedural multi-view scenes, ray cast in torch: RGB, metric z-depth, intrinsics, poses.

A scene is a closed room (floor, four walls, ceiling) holding a cluster of boxes, spheres and
cylinders, every surface carrying its own tileable procedural texture (band-limited noise, discs and
stripes) so that SIFT finds keypoints everywhere. Shading is Lambertian (view independent), so the
same surface point has the same colour in every view, which is what correspondence teachers assume.

World frame: z up, floor at z = 0, object cluster around the origin. Cameras are OpenCV
(``cam_to_world``, see :mod:`reliev3r_ns.geometry.conventions`) and always stay in the free ring
between the object cluster and the walls, so every pixel sees a finite surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch

from reliev3r_ns.geometry.camera import intrinsics_from_fov, pixel_grid, pixels_to_camera_rays
from reliev3r_ns.geometry.pose import look_at

TRAJECTORIES = ("orbit", "forward", "lookat")

# Layout constants (metres): objects live inside a disc, cameras in the ring outside it.
_OBJECT_DISC_RADIUS = 2.4
_CAMERA_RING_INNER = 3.3
_WALL_MARGIN = 0.6
_TEXTURE_TILE_METRES = 4.0


@dataclass
class SyntheticSceneConfig:
    """How one synthetic scene is made. Every field is recorded in the scene's ``scene.json``."""

    width: int = 128
    height: int = 96
    num_views: int = 24
    num_objects: Tuple[int, int] = (4, 8)
    """Inclusive range for the number of primitives in the room."""
    trajectories: Tuple[str, ...] = TRAJECTORIES
    """Trajectory kinds to draw from (one per scene): orbit, forward (a walk), lookat (random)."""
    fov_degrees: Tuple[float, float] = (50.0, 75.0)
    """Horizontal field-of-view range in degrees."""
    vary_focal_per_view: bool = True
    """Draw the focal length per view (else once per scene)."""
    supersample: int = 2
    """RGB is averaged over supersample^2 rays per pixel (anti-aliasing); depth uses the pixel centre."""
    texture_size: int = 512

    def validate(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size {self.width}x{self.height} is too small (need at least 8x8)")
        if self.num_views < 1:
            raise ValueError("num_views must be >= 1")
        unknown = set(self.trajectories) - set(TRAJECTORIES)
        if unknown or not self.trajectories:
            raise ValueError(f"unknown trajectories {sorted(unknown)}; choose from {TRAJECTORIES}")
        lo, hi = self.num_objects
        if not 0 <= lo <= hi:
            raise ValueError(f"num_objects range {self.num_objects} is not a valid (low, high) pair")


@dataclass
class RenderedScene:
    """A scene's views; everything OpenCV, depth in metres (z-depth)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    depths: np.ndarray  # (N, H, W) float32
    cam_to_world: np.ndarray  # (N, 4, 4) float64
    intrinsics: np.ndarray  # (N, 3, 3) float64
    metadata: Dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------------


def _tileable_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Periodic 1/f^beta noise in [0, 1]: filtering white noise in Fourier space keeps it tileable."""
    white = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    radius[0, 0] = 1.0
    field_ = np.fft.ifft2(np.fft.fft2(white) / radius**beta).real
    field_ -= field_.min()
    return field_ / max(field_.max(), 1e-12)


def make_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 tileable texture in [0, 1], rich in blobs and corners."""
    palette = rng.uniform(0.05, 0.95, size=(3, 3))
    noise = _tileable_noise(rng, size, beta=rng.uniform(1.0, 1.6))
    t = noise[..., None]
    image = np.where(t < 0.5, palette[0] * (1 - 2 * t) + palette[1] * 2 * t, palette[1] * (2 - 2 * t) + palette[2] * (2 * t - 1))
    ys, xs = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(25, 60))):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(size * 0.01, size * 0.07)
        # Periodic distance so shapes wrap across the tile border without a seam.
        dy = np.abs(ys - cy)
        dx = np.abs(xs - cx)
        dy = np.minimum(dy, size - dy)
        dx = np.minimum(dx, size - dx)
        colour = rng.uniform(0, 1, 3)
        if rng.uniform() < 0.6:
            mask = dx**2 + dy**2 < radius**2
        else:
            mask = (dx < radius) & (dy < radius * rng.uniform(0.3, 1.5))
        image[mask] = colour
    if rng.uniform() < 0.5:
        period = int(rng.integers(8, 32))
        stripes = ((xs + ys * rng.integers(0, 2)) // period) % 2 == 0
        image = np.where(stripes[..., None], image * 0.75, image)
    return image.astype(np.float32)


def _sample_textures(textures: torch.Tensor, texture_id: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear, wrapping lookup: textures (T, S, S, 3), texture_id (R,), uv (R, 2) in metres -> (R, 3)."""
    size = textures.shape[1]
    coords = uv / _TEXTURE_TILE_METRES * size - 0.5
    base = torch.floor(coords)
    frac = coords - base
    base = base.long()
    flat = textures.reshape(-1, 3)
    colour = torch.zeros(uv.shape[0], 3, dtype=textures.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            x = (base[:, 0] + dx) % size
            y = (base[:, 1] + dy) % size
            weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            colour += weight[:, None] * flat[(texture_id * size + y) * size + x]
    return colour


# ---------------------------------------------------------------------------------------------
# Geometry of the scene and ray casting
# ---------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    room_half: np.ndarray  # (3,) half extents in x, y and the room height in z
    boxes: List[Dict]
    spheres: List[Dict]
    cylinders: List[Dict]
    textures: torch.Tensor  # (T, S, S, 3) float32
    light_dirs: np.ndarray  # (2, 3) unit vectors towards the lights
    light_weights: np.ndarray  # (2,)


def _make_scene(rng: np.random.Generator, config: SyntheticSceneConfig) -> _Scene:
    room_half = np.array([rng.uniform(4.5, 6.5), rng.uniform(4.5, 6.5), rng.uniform(2.8, 3.6)])
    n_objects = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    boxes, spheres, cylinders = [], [], []
    n_textures = 6  # floor, ceiling, 4 walls
    for _ in range(n_objects):
        kind = rng.choice(["box", "sphere", "cylinder"])
        size = rng.uniform(0.3, 0.8)
        # Keep the whole primitive inside the object disc.
        r = rng.uniform(0, _OBJECT_DISC_RADIUS - size * 1.5)
        a = rng.uniform(0, 2 * math.pi)
        centre_xy = np.array([r * math.cos(a), r * math.sin(a)])
        if kind == "box":
            half = np.array([size, rng.uniform(0.3, 1.0) * size, rng.uniform(0.4, 1.8) * size])
            boxes.append({"centre": np.array([*centre_xy, half[2]]), "half": half, "yaw": rng.uniform(0, math.pi), "tex": n_textures})
        elif kind == "sphere":
            z = size if rng.uniform() < 0.6 else rng.uniform(size, 2.0)
            spheres.append({"centre": np.array([*centre_xy, z]), "radius": size, "tex": n_textures})
        else:
            cylinders.append({"centre_xy": centre_xy, "radius": size * 0.8, "height": rng.uniform(0.5, 2.2), "tex": n_textures})
        n_textures += 1
    textures = torch.from_numpy(np.stack([make_texture(rng, config.texture_size) for _ in range(n_textures)]))
    key = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    fill = np.array([-key[0], -key[1], 0.3])
    light_dirs = np.stack([key / np.linalg.norm(key), fill / np.linalg.norm(fill)])
    return _Scene(room_half, boxes, spheres, cylinders, textures, light_dirs, np.array([0.55, 0.2]))


def _safe_reciprocal(d: torch.Tensor) -> torch.Tensor:
    tiny = torch.full_like(d, 1e-12)
    return 1.0 / torch.where(d.abs() < 1e-12, torch.where(d < 0, -tiny, tiny), d)


def _intersect_room(o: torch.Tensor, d: torch.Tensor, room_half: torch.Tensor):
    """Exit point of rays starting inside the room box [-hx, hx] x [-hy, hy] x [0, hz]."""
    lo = torch.stack([-room_half[0], -room_half[1], torch.zeros_like(room_half[0])])
    hi = torch.stack([room_half[0], room_half[1], room_half[2]])
    inv = _safe_reciprocal(d)
    t_axis = torch.where(d > 0, (hi - o) * inv, (lo - o) * inv)  # (R, 3)
    t, axis = t_axis.min(dim=-1)
    p = o + t[:, None] * d
    normal = torch.zeros_like(d)
    normal.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
    # Surfaces: 0 floor, 1 ceiling, 2/3 walls x-/x+, 4/5 walls y-/y+.
    positive = d.gather(1, axis[:, None])[:, 0] > 0
    tex = torch.where(axis == 2, positive.long(), torch.where(axis == 0, 2 + positive.long(), 4 + positive.long()))
    uv = torch.where(
        (axis == 2)[:, None], p[:, [0, 1]], torch.where((axis == 0)[:, None], p[:, [1, 2]], p[:, [0, 2]])
    )
    return t, normal, uv, tex


def _intersect_box(o, d, centre, half, yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=o.dtype)  # local -> world
    ol = (o - centre) @ rot  # world -> local is rot^T, applied to row vectors as @ rot
    dl = d @ rot
    inv = _safe_reciprocal(dl)
    t1 = (-half - ol) * inv
    t2 = (half - ol) * inv
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).min(dim=-1).values
    hit = (t_far >= t_near) & (t_near > 1e-6)
    t = torch.where(hit, t_near, torch.full_like(t_near, math.inf))
    normal_local = torch.zeros_like(dl)
    normal_local.scatter_(1, axis[:, None], -torch.sign(dl.gather(1, axis[:, None])))
    pl = ol + t_near[:, None] * dl
    uv = torch.where(
        (axis == 2)[:, None], pl[:, [0, 1]], torch.where((axis == 0)[:, None], pl[:, [1, 2]], pl[:, [0, 2]])
    )
    return t, normal_local @ rot.T, uv


def _intersect_sphere(o, d, centre, radius):
    oc = o - centre
    b = (oc * d).sum(-1)
    c = (oc * oc).sum(-1) - radius**2
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp_min(0))
    hit = (disc > 0) & (t > 1e-6)
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    p = oc + t.clamp(max=1e6)[:, None] * d
    normal = p / radius
    azimuth = torch.atan2(p[:, 1], p[:, 0])
    polar = torch.acos((p[:, 2] / radius).clamp(-1, 1))
    uv = torch.stack([azimuth * radius, polar * radius], dim=-1)
    return t, normal, uv


def _intersect_cylinder(o, d, centre_xy, radius, height):
    """Vertical cylinder standing on the floor, closed at the top."""
    oxy = o[:, :2] - centre_xy
    dxy = d[:, :2]
    a = (dxy * dxy).sum(-1).clamp_min(1e-12)
    b = (oxy * dxy).sum(-1)
    c = (oxy * oxy).sum(-1) - radius**2
    disc = b * b - a * c
    t_side = (-b - torch.sqrt(disc.clamp_min(0))) / a
    z_side = o[:, 2] + t_side * d[:, 2]
    side_hit = (disc > 0) & (t_side > 1e-6) & (z_side >= 0) & (z_side <= height)
    t_side = torch.where(side_hit, t_side, torch.full_like(t_side, math.inf))
    t_top = (height - o[:, 2]) * _safe_reciprocal(d[:, 2])
    p_top = oxy + t_top[:, None] * dxy
    top_hit = (t_top > 1e-6) & ((p_top * p_top).sum(-1) <= radius**2) & (d[:, 2] < 0)
    t_top = torch.where(top_hit, t_top, torch.full_like(t_top, math.inf))
    use_top = t_top < t_side
    t = torch.minimum(t_side, t_top)
    p = oxy + t.clamp(max=1e6)[:, None] * dxy
    normal_side = torch.cat([p / radius, torch.zeros_like(p[:, :1])], dim=-1)
    normal_top = torch.zeros_like(d)
    normal_top[:, 2] = 1.0
    normal = torch.where(use_top[:, None], normal_top, normal_side)
    z = o[:, 2] + t.clamp(max=1e6) * d[:, 2]
    uv_side = torch.stack([torch.atan2(p[:, 1], p[:, 0]) * radius, z], dim=-1)
    uv = torch.where(use_top[:, None], p, uv_side)
    return t, normal, uv


def cast_rays(scene: _Scene, origins: torch.Tensor, directions: torch.Tensor, with_colour: bool = True):
    """(R, 3) origins and unit directions (world) -> hit distance t (R,), colour (R, 3) or None."""
    dtype = origins.dtype
    t, normal, uv, tex = _intersect_room(origins, directions, torch.as_tensor(scene.room_half, dtype=dtype))
    candidates = []
    for box in scene.boxes:
        candidates.append((*_intersect_box(origins, directions, torch.as_tensor(box["centre"], dtype=dtype), torch.as_tensor(box["half"], dtype=dtype), box["yaw"]), box["tex"]))
    for sphere in scene.spheres:
        candidates.append((*_intersect_sphere(origins, directions, torch.as_tensor(sphere["centre"], dtype=dtype), sphere["radius"]), sphere["tex"]))
    for cyl in scene.cylinders:
        candidates.append((*_intersect_cylinder(origins, directions, torch.as_tensor(cyl["centre_xy"], dtype=dtype), cyl["radius"], cyl["height"]), cyl["tex"]))
    for t_obj, n_obj, uv_obj, tex_obj in candidates:
        closer = t_obj < t
        t = torch.where(closer, t_obj, t)
        normal = torch.where(closer[:, None], n_obj, normal)
        uv = torch.where(closer[:, None], uv_obj, uv)
        tex = torch.where(closer, torch.full_like(tex, tex_obj), tex)
    if not with_colour:
        return t, None
    albedo = _sample_textures(scene.textures, tex, uv).to(dtype)
    lights = torch.as_tensor(scene.light_dirs, dtype=dtype)
    weights = torch.as_tensor(scene.light_weights, dtype=dtype)
    shade = 0.3 + ((normal @ lights.T).clamp_min(0) * weights).sum(-1)
    return t, (albedo * shade[:, None]).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------------


def _camera_ring_outer(scene: _Scene) -> float:
    return float(min(scene.room_half[0], scene.room_half[1]) - _WALL_MARGIN)


def _roll(cam_to_world: torch.Tensor, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    roll = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=cam_to_world.dtype)
    out = cam_to_world.clone()
    out[:3, :3] = cam_to_world[:3, :3] @ roll
    return out


def make_trajectory(rng: np.random.Generator, scene: _Scene, kind: str, num_views: int) -> torch.Tensor:
    """(N, 4, 4) OpenCV camera-to-world poses of one trajectory kind, all in the free camera ring."""
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    outer = _camera_ring_outer(scene)
    ceiling = float(scene.room_half[2])
    centres, targets = [], []
    if kind == "orbit":
        radius = rng.uniform(_CAMERA_RING_INNER, outer)
        start = rng.uniform(0, 2 * math.pi)
        arc = rng.uniform(math.radians(90), math.radians(300))
        phase = rng.uniform(0, 2 * math.pi)
        for k in range(num_views):
            a = start + arc * k / max(num_views - 1, 1)
            h = 1.6 + 0.5 * math.sin(phase + 2 * math.pi * k / max(num_views, 1))
            centres.append([radius * math.cos(a), radius * math.sin(a), h])
            targets.append([*rng.uniform(-0.4, 0.4, 2), rng.uniform(0.5, 1.0)])
    elif kind == "forward":
        # A straight walk along a chord of the camera ring, looking ahead and turned towards the objects.
        r0 = _CAMERA_RING_INNER + 0.05
        half_len = math.sqrt(max(outer**2 - r0**2, 0.01))
        a = rng.uniform(0, 2 * math.pi)
        normal = np.array([math.cos(a), math.sin(a)])
        tangent = np.array([-normal[1], normal[0]])
        inward = math.radians(rng.uniform(25, 55))
        direction = math.cos(inward) * tangent - math.sin(inward) * normal
        h = rng.uniform(1.2, 1.9)
        for k in range(num_views):
            s = -half_len + 2 * half_len * k / max(num_views - 1, 1)
            c = r0 * normal + s * tangent
            wobble = math.radians(8) * math.sin(2 * math.pi * k / max(num_views, 1))
            cw, sw = math.cos(wobble), math.sin(wobble)
            look = np.array([cw * direction[0] - sw * direction[1], sw * direction[0] + cw * direction[1]])
            centres.append([c[0], c[1], h])
            targets.append([c[0] + 3 * look[0], c[1] + 3 * look[1], h - 0.4])
    elif kind == "lookat":
        for _ in range(num_views):
            r = rng.uniform(_CAMERA_RING_INNER, outer)
            a = rng.uniform(0, 2 * math.pi)
            centres.append([r * math.cos(a), r * math.sin(a), rng.uniform(0.7, min(2.6, ceiling - 0.3))])
            rt = rng.uniform(0, 1.5)
            at = rng.uniform(0, 2 * math.pi)
            targets.append([rt * math.cos(at), rt * math.sin(at), rng.uniform(0.2, 1.2)])
    else:
        raise ValueError(f"unknown trajectory {kind!r}; choose from {TRAJECTORIES}")
    poses = look_at(torch.tensor(centres, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64), up)
    return torch.stack([_roll(p, math.radians(rng.uniform(-6, 6))) for p in poses])


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_view(scene: _Scene, cam_to_world: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int, supersample: int):
    """One view: (H, W, 3) float RGB in [0, 1] and (H, W) z-depth in metres (at pixel centres)."""
    dtype = torch.float64
    rotation = cam_to_world[:3, :3].to(dtype)
    centre = cam_to_world[:3, 3].to(dtype)
    # Depth at exact pixel centres (OpenCV convention: integer coordinates).
    rays_cam = pixels_to_camera_rays(pixel_grid(height, width, dtype=dtype).reshape(-1, 2), intrinsics.to(dtype))
    dirs = rays_cam @ rotation.T
    norms = torch.linalg.norm(dirs, dim=-1, keepdim=True)
    t, _ = cast_rays(scene, centre.expand_as(dirs), dirs / norms, with_colour=False)
    depth = (t / norms[:, 0]).reshape(height, width)  # ray distance -> z-depth (rays_cam has z = 1)
    # Colour averaged over a regular sub-pixel grid; float32 is plenty for colour.
    dtype = torch.float32
    rotation, centre, intrinsics = rotation.to(dtype), centre.to(dtype), intrinsics.to(dtype)
    offsets = (torch.arange(supersample, dtype=dtype) + 0.5) / supersample - 0.5
    colour = torch.zeros(height * width, 3, dtype=dtype)
    base = pixel_grid(height, width, dtype=dtype).reshape(-1, 2)
    for oy in offsets:
        for ox in offsets:
            sub = pixels_to_camera_rays(base + torch.stack([ox, oy]), intrinsics) @ rotation.T
            sub = sub / torch.linalg.norm(sub, dim=-1, keepdim=True)
            colour += cast_rays(scene, centre.expand_as(sub), sub)[1]
    colour /= supersample**2
    return colour.reshape(height, width, 3), depth


def generate_scene(seed: int, config: SyntheticSceneConfig = SyntheticSceneConfig()) -> RenderedScene:
    """Render one scene; the same (seed, config) always gives the same bytes."""
    config.validate()
    rng = np.random.default_rng(seed)
    scene = _make_scene(rng, config)
    kind = str(rng.choice(list(config.trajectories)))
    cam_to_world = make_trajectory(rng, scene, kind, config.num_views)
    if config.vary_focal_per_view:
        fovs = rng.uniform(*config.fov_degrees, size=config.num_views)
    else:
        fovs = np.full(config.num_views, rng.uniform(*config.fov_degrees))
    intrinsics = intrinsics_from_fov(torch.tensor(np.radians(fovs), dtype=torch.float64), config.width, config.height)
    images, depths = [], []
    for view in range(config.num_views):
        rgb, depth = render_view(scene, cam_to_world[view], intrinsics[view], config.width, config.height, config.supersample)
        images.append((rgb.numpy() * 255.0 + 0.5).astype(np.uint8))
        depths.append(depth.numpy().astype(np.float32))
    metadata = {
        "seed": int(seed),
        "trajectory": kind,
        "num_objects": len(scene.boxes) + len(scene.spheres) + len(scene.cylinders),
        "room_half_extents": scene.room_half.tolist(),
    }
    return RenderedScene(np.stack(images), np.stack(depths), cam_to_world.numpy(), intrinsics.numpy(), metadata)
