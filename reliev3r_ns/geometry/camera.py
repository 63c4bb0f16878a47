"""Pinhole camera math in the project's OpenCV convention (see :mod:`reliev3r_ns.geometry.conventions`).

All functions are batched over leading dimensions, pure torch and differentiable, so the losses can
call them. Pixel (0, 0) is the centre of the top-left pixel; depth is z-depth (distance along the
optical axis), not distance along the ray.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

from reliev3r_ns.geometry.pose import transform_points

Tensor = torch.Tensor


def intrinsics_from_fov(
    fov_x: Union[float, Tensor], width: int, height: int, fov_y: Union[float, Tensor, None] = None
) -> Tensor:
    """(..., 3, 3) intrinsics with a centred principal point from a horizontal field of view (radians).

    When ``fov_y`` is None the pixels are square (fy = fx).
    """
    fov_x = torch.as_tensor(fov_x, dtype=torch.get_default_dtype() if not torch.is_tensor(fov_x) else fov_x.dtype)
    fx = 0.5 * width / torch.tan(0.5 * fov_x)
    if fov_y is None:
        fy = fx
    else:
        fov_y = torch.as_tensor(fov_y, dtype=fx.dtype, device=fx.device)
        fy = 0.5 * height / torch.tan(0.5 * fov_y)
    K = torch.zeros(*fx.shape, 3, 3, dtype=fx.dtype, device=fx.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    # Principal point at the image centre in the pixel-centre-at-integer convention.
    K[..., 0, 2] = (width - 1) / 2.0
    K[..., 1, 2] = (height - 1) / 2.0
    K[..., 2, 2] = 1.0
    return K


def fov_from_intrinsics(intrinsics: Tensor, width: int, height: int) -> Tuple[Tensor, Tensor]:
    """(fov_x, fov_y) in radians, each (...,), from (..., 3, 3) intrinsics; inverse of
    :func:`intrinsics_from_fov` for a centred principal point."""
    fov_x = 2.0 * torch.atan(0.5 * width / intrinsics[..., 0, 0])
    fov_y = 2.0 * torch.atan(0.5 * height / intrinsics[..., 1, 1])
    return fov_x, fov_y


def scale_intrinsics(intrinsics: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """Intrinsics of the same camera after resizing the image by (scale_x, scale_y).

    The pixel-centre convention shifts the principal point: c' = (c + 0.5) * s - 0.5.
    """
    K = intrinsics.clone()
    K[..., 0, 0] = intrinsics[..., 0, 0] * scale_x
    K[..., 1, 1] = intrinsics[..., 1, 1] * scale_y
    K[..., 0, 2] = (intrinsics[..., 0, 2] + 0.5) * scale_x - 0.5
    K[..., 1, 2] = (intrinsics[..., 1, 2] + 0.5) * scale_y - 0.5
    return K


def scale_pixels(pixels: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """(..., 2) pixel positions after resizing the image by (scale_x, scale_y); the same
    pixel-centre shift as :func:`scale_intrinsics`: u' = (u + 0.5) * s - 0.5."""
    return torch.stack([(pixels[..., 0] + 0.5) * scale_x - 0.5, (pixels[..., 1] + 0.5) * scale_y - 0.5], dim=-1)


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(H, W, 2) pixel coordinates (u = column, v = row) of every pixel centre."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def pixels_to_camera_rays(pixels: Tensor, intrinsics: Tensor) -> Tensor:
    """(..., 2) pixels and (..., 3, 3) intrinsics (broadcast over the pixel dims) -> (..., 3) rays
    in camera coordinates with z = 1 (so ``depth * ray`` is the camera point)."""
    fx = intrinsics[..., 0, 0]
    fy = intrinsics[..., 1, 1]
    cx = intrinsics[..., 0, 2]
    cy = intrinsics[..., 1, 2]
    x = (pixels[..., 0] - cx) / fx
    y = (pixels[..., 1] - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def bearing_vectors(pixels: Tensor, intrinsics: Tensor) -> Tensor:
    """Unit-length viewing directions (..., 3) in camera coordinates for (..., 2) pixels."""
    rays = pixels_to_camera_rays(pixels, intrinsics)
    return rays / torch.linalg.norm(rays, dim=-1, keepdim=True)


def unproject_depth_to_camera(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """(..., H, W) z-depth and (..., 3, 3) intrinsics -> (..., H, W, 3) camera-frame points."""
    H, W = depth.shape[-2:]
    grid = pixel_grid(H, W, dtype=depth.dtype, device=depth.device)
    rays = pixels_to_camera_rays(grid, intrinsics[..., None, None, :, :])
    return rays * depth[..., None]


def unproject_depth_to_world(depth: Tensor, intrinsics: Tensor, cam_to_world: Tensor) -> Tensor:
    """(..., H, W) z-depth, (..., 3, 3) intrinsics and (..., 4, 4) OpenCV camera-to-world
    -> (..., H, W, 3) world points."""
    points_cam = unproject_depth_to_camera(depth, intrinsics)
    return transform_points(cam_to_world[..., None, None, :, :], points_cam)


def project_camera_points(points_cam: Tensor, intrinsics: Tensor, eps: float = 1e-8) -> Tuple[Tensor, Tensor]:
    """(..., 3) camera-frame points -> ((..., 2) pixels, (...,) z-depth).

    Points at or behind the image plane get pixels computed from a clamped depth (finite, but
    meaningless); callers mask them with ``depth > 0``. This is exactly why the reprojection loss
    works with angles instead.
    """
    z = points_cam[..., 2]
    z_safe = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    u = intrinsics[..., 0, 0] * points_cam[..., 0] / z_safe + intrinsics[..., 0, 2]
    v = intrinsics[..., 1, 1] * points_cam[..., 1] / z_safe + intrinsics[..., 1, 2]
    return torch.stack([u, v], dim=-1), z


def project_world_points(
    points_world: Tensor, intrinsics: Tensor, world_to_cam: Tensor
) -> Tuple[Tensor, Tensor]:
    """(..., 3) world points, (..., 3, 3) intrinsics and (..., 4, 4) OpenCV world-to-camera
    -> ((..., 2) pixels, (...,) z-depth). Intrinsics and pose broadcast over the point dims."""
    points_cam = transform_points(world_to_cam, points_world)
    return project_camera_points(points_cam, intrinsics)


