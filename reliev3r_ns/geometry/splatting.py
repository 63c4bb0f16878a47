"""Z-buffered point splatting: draw a coloured point cloud as a camera would see it, in plain torch.

Used by the viewer (``get_outputs_for_camera`` renders the FFRM's predicted cloud) and by the viewer
snapshots. Each point covers a square of ``(2 * radius + 1)^2`` pixels around its rounded projection;
per pixel the nearest point wins, ties go to the lowest point index so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reliev3r_ns.geometry.camera import project_camera_points

Tensor = torch.Tensor


@dataclass
class Splat:
    colour: Tensor  # (H, W, C) the winning point's colour, ``background`` where no point lands
    depth: Tensor  # (H, W) z-depth of the winning point, +inf where empty
    index: Tensor  # (H, W) long index of the winning point into the input, -1 where empty

    @property
    def mask(self) -> Tensor:
        return self.index >= 0


def splat_points(
    points_cam: Tensor,
    colours: Tensor,
    intrinsics: Tensor,
    height: int,
    width: int,
    radius: int = 0,
    near: float = 1e-3,
    background: float = 0.0,
) -> Splat:
    """Render (N, 3) OpenCV camera-frame points with (N, C) colours through (3, 3) intrinsics.

    Pixel (0, 0) is the centre of the top-left pixel (the project's convention), so a point lands on
    the pixel whose centre is nearest to its projection. Points closer than ``near`` or non-finite are
    dropped.
    """
    if points_cam.ndim != 2 or points_cam.shape[-1] != 3 or colours.shape[0] != points_cam.shape[0]:
        raise ValueError(f"points_cam must be (N, 3) and colours (N, C); got {tuple(points_cam.shape)} and {tuple(colours.shape)}")
    device = points_cam.device
    num_points = points_cam.shape[0]
    z = points_cam[:, 2]
    keep = torch.isfinite(points_cam).all(-1) & (z > near)
    point_id = torch.nonzero(keep)[:, 0]
    pixels, z = project_camera_points(points_cam[point_id], intrinsics)
    centre = torch.floor(pixels + 0.5).long()  # (M, 2) nearest pixel centre (u, v)

    offsets = torch.arange(-radius, radius + 1, device=device)
    du, dv = torch.meshgrid(offsets, offsets, indexing="xy")
    u = (centre[:, None, 0] + du.reshape(1, -1)).reshape(-1)  # (M * K,)
    v = (centre[:, None, 1] + dv.reshape(1, -1)).reshape(-1)
    K = du.numel()
    z = z[:, None].expand(-1, K).reshape(-1)
    ids = point_id[:, None].expand(-1, K).reshape(-1)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat, z, ids = (v * width + u)[inside], z[inside], ids[inside]

    zbuffer = torch.full((height * width,), float("inf"), dtype=z.dtype, device=device)
    zbuffer.scatter_reduce_(0, flat, z, reduce="amin")
    nearest = z == zbuffer[flat]
    winner = torch.full((height * width,), num_points, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, flat[nearest], ids[nearest], reduce="amin")

    empty = winner == num_points
    colour = colours[winner.clamp_max(num_points - 1)] if num_points else torch.zeros(height * width, colours.shape[-1], device=device)
    colour = torch.where(empty[:, None], torch.full_like(colour, background), colour)
    winner = torch.where(empty, torch.full_like(winner, -1), winner)
    return Splat(colour=colour.view(height, width, -1), depth=zbuffer.view(height, width), index=winner.view(height, width))
