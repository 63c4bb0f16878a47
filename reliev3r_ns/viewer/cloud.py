"""One clip's prediction as a cloud and cameras in a frame fit for display.

The FFRM's world frame is arbitrary (pi3-style, no reference view) and so is its scale. For display:

- with GT poses, the prediction is moved onto GT by the Sim(3) fitted on whole poses
  (:func:`~reliev3r_ns.geometry.align_cam_to_world`), so predicted and GT cameras overlap where they
  agree and the cloud sits in the scene's own frame. With GT depth too, the scale is the median
  depth ratio instead: an untrained model's cameras sit almost on top of each other, and scaling
  by their spread would blow its cloud up a hundredfold;
- without, the first predicted camera is put at the origin looking along +y with +z up, and the
  scale is set so that its median depth is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from reliev3r_ns.geometry import Sim3, align_cam_to_world, invert_pose, unproject_depth_to_world

Tensor = torch.Tensor

# OpenCV camera axes (x right, y down, z forward) -> a z-up world looking along +y.
_CAMERA_TO_Z_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass
class LiveCloud:
    """Everything the viewer draws for one clip; all poses OpenCV camera-to-world in the display frame."""

    points: Tensor  # (V, H, W, 3)
    colours: Tensor  # (V, H, W, 3) in [0, 1]
    confidence: Tensor  # (V, H, W)
    cam_to_world: Tensor  # (V, 4, 4) predicted
    intrinsics: Tensor  # (V, 3, 3) predicted (or given), at the clip's image size
    gt_cam_to_world: Optional[Tensor] = None  # (V, 4, 4) GT, when the clip has it
    label: str = ""
    step: int = 0

    @property
    def image_size(self) -> Tuple[int, int]:
        return tuple(self.points.shape[1:3])

    def filtered(self, confidence_percentile: float) -> Tuple[Tensor, Tensor]:
        """(M, 3) points and (M, 3) colours whose confidence is at or above the given percentile."""
        confidence = self.confidence.reshape(-1)
        points, colours = self.points.reshape(-1, 3), self.colours.reshape(-1, 3)
        keep = torch.isfinite(points).all(-1)
        if confidence_percentile > 0 and keep.any():
            threshold = torch.quantile(confidence[keep].float(), min(confidence_percentile, 100.0) / 100.0)
            keep &= confidence >= threshold
        return points[keep], colours[keep]

    def scene_scale(self) -> float:
        """A length to size frustums and points by: the largest distance between two cameras (GT ones
        when known; an untrained model's cloud can be orders of magnitude too large), else the
        cloud's median distance from the first camera."""
        poses = self.gt_cam_to_world if self.gt_cam_to_world is not None else self.cam_to_world
        centres = poses[:, :3, 3]
        spread = float(torch.cdist(centres, centres).max())
        if spread > 1e-6:
            return spread
        points = self.points.reshape(-1, 3)
        points = points[torch.isfinite(points).all(-1)]
        return float((points - centres[0]).norm(dim=-1).median().clamp_min(1e-6)) if len(points) else 1.0


def live_cloud(
    depth: Tensor,
    confidence: Tensor,
    intrinsics: Tensor,
    cam_to_world: Tensor,
    images: Tensor,
    gt_cam_to_world: Optional[Tensor] = None,
    gt_depth: Optional[Tensor] = None,
    label: str = "",
    step: int = 0,
) -> LiveCloud:
    """One clip's prediction -> :class:`LiveCloud`.

    Args:
        depth, confidence: (V, H, W) predicted z-depth and confidence.
        intrinsics: (V, 3, 3) OpenCV; cam_to_world: (V, 4, 4) OpenCV, in the model's frame.
        images: (V, 3, H, W) in [0, 1], the views the model saw.
        gt_cam_to_world: (V, 4, 4) OpenCV GT poses, when known; gt_depth: (V, H, W) GT z-depth (0 = unknown).
    """
    depth, confidence, intrinsics, cam_to_world = (t.detach().float().cpu() for t in (depth, confidence, intrinsics, cam_to_world))
    if gt_cam_to_world is not None:
        gt_cam_to_world = gt_cam_to_world.detach().float().cpu()
        scale = None
        if gt_depth is not None:
            gt_depth = gt_depth.detach().float().cpu()
            valid = (gt_depth > 0) & (depth > 0)
            if valid.any():
                scale = gt_depth[valid].median() / depth[valid].median()
        to_display = align_cam_to_world(cam_to_world, gt_cam_to_world, scale=scale)
    else:
        first_from_world = invert_pose(cam_to_world[0])
        scale = 1.0 / depth[0].median().clamp_min(1e-6)
        to_display = Sim3(scale=scale, rotation=_CAMERA_TO_Z_UP @ first_from_world[:3, :3], translation=scale * (_CAMERA_TO_Z_UP @ first_from_world[:3, 3]))
    cam_to_world = to_display.apply_to_cam_to_world(cam_to_world)
    # Scaling the scene scales depth; pixels and intrinsics stay as they are.
    points = unproject_depth_to_world(depth * to_display.scale, intrinsics, cam_to_world)
    colours = images.detach().float().cpu().permute(0, 2, 3, 1)
    return LiveCloud(points, colours, confidence, cam_to_world, intrinsics, gt_cam_to_world, label, step)
