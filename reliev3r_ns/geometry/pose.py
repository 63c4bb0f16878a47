"""Rigid poses and rotations, batched torch, differentiable.

Poses are (..., 4, 4) homogeneous matrices named by the direction they map points
(``cam_to_world`` / ``world_to_cam``, OpenCV camera axes; see :mod:`reliev3r_ns.geometry.conventions`).
Quaternions are unit (w, x, y, z), scalar first, as COLMAP writes them; the name ``quat_wxyz`` says so.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def make_pose(rotation: Tensor, translation: Tensor) -> Tensor:
    """(..., 3, 3) rotation and (..., 3) translation -> (..., 4, 4) pose [R | t; 0 0 0 1]."""
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    pose = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def invert_pose(pose: Tensor) -> Tensor:
    """Inverse of a rigid (..., 4, 4) pose, using R^T rather than a general matrix inverse.

    ``invert_pose(cam_to_world)`` is ``world_to_cam`` and vice versa.
    """
    rotation_t = pose[..., :3, :3].transpose(-1, -2)
    translation = -(rotation_t @ pose[..., :3, 3:4])[..., 0]
    return make_pose(rotation_t, translation)


def compose_poses(a_from_b: Tensor, b_from_c: Tensor) -> Tensor:
    """a_from_b @ b_from_c = a_from_c, e.g. ``compose_poses(world_to_cam_j, cam_i_to_world)``
    is the pose mapping camera i's frame to camera j's frame."""
    return a_from_b @ b_from_c


def transform_points(pose: Tensor, points: Tensor) -> Tensor:
    """Apply a (..., 4, 4) (or (..., 3, 4)) pose to (..., 3) points: R p + t."""
    return (pose[..., :3, :3] @ points[..., None])[..., 0] + pose[..., :3, 3]


def camera_centres(cam_to_world: Tensor) -> Tensor:
    """(..., 3) camera centres in world coordinates of (..., 4, 4) OpenCV camera-to-world poses."""
    return cam_to_world[..., :3, 3]


def relative_poses_to_reference(cam_to_world: Tensor, reference_index: int = 0) -> Tensor:
    """Re-express (..., N, 4, 4) camera-to-world poses in the frame of view ``reference_index``:
    the result's reference pose is the identity (the VGGT convention for a world frame)."""
    world_to_reference = invert_pose(cam_to_world[..., reference_index : reference_index + 1, :, :])
    return compose_poses(world_to_reference, cam_to_world)


def pairwise_relative_poses(cam_to_world: Tensor) -> Tensor:
    """(..., N, 4, 4) camera-to-world -> (..., N, N, 4, 4) with [i, j] = cam_j_to_cam_i
    (= world_to_cam_i @ cam_j_to_world). Independent of the world frame, which is what
    world-frame-free losses and pose metrics compare."""
    world_to_cam = invert_pose(cam_to_world)
    return world_to_cam[..., :, None, :, :] @ cam_to_world[..., None, :, :, :]


def rotation_angle(rotation: Tensor) -> Tensor:
    """Geodesic angle (radians) of (..., 3, 3) rotations, stable near 0 and pi.

    Uses atan2(|axis * sin|, cos) from the skew part and the trace instead of acos(trace), whose
    gradient is infinite at 0 where a loss spends most of its time.
    """
    cos = (rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2] - 1.0) * 0.5
    skew = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )
    sin = 0.5 * torch.sqrt((skew**2).sum(-1) + 1e-20)
    return torch.atan2(sin, cos)


def rotation_geodesic_distance(rotation_a: Tensor, rotation_b: Tensor) -> Tensor:
    """Angle (radians) of R_a^T R_b, i.e. the rotation error between two (..., 3, 3) rotations."""
    return rotation_angle(rotation_a.transpose(-1, -2) @ rotation_b)


def quaternion_to_rotation(quat_wxyz: Tensor) -> Tensor:
    """(..., 4) quaternions (w, x, y, z), normalised here, -> (..., 3, 3) rotation matrices."""
    q = quat_wxyz / torch.linalg.norm(quat_wxyz, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """(..., 3, 3) rotations -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Picks, per rotation, the largest of the four candidate denominators (Shepperd's method), so it
    is accurate for every rotation including 180 degree turns.
    """
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * q_k^2 for k = w, x, y, z
    four_sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], four_sq[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], four_sq[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], four_sq[..., 3]], -1),
        ],
        dim=-2,
    )  # (..., 4, 4): row k is 4 q_k * q
    best = four_sq.argmax(dim=-1)
    chosen = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = chosen / torch.linalg.norm(chosen, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def look_at(camera_centre: Tensor, target: Tensor, world_up: Tensor) -> Tensor:
    """OpenCV camera-to-world (..., 4, 4) for a camera at ``camera_centre`` looking at ``target``.

    The camera's y axis (down in the image) points against ``world_up`` as far as it can.
    """
    forward = target - camera_centre
    forward = forward / torch.linalg.norm(forward, dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, world_up.expand_as(forward), dim=-1)
    right = right / torch.linalg.norm(right, dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    rotation = torch.stack([right, down, forward], dim=-1)  # columns are the camera axes in world
    return make_pose(rotation, camera_centre)


def axis_angle_to_rotation(axis_angle: Tensor) -> Tensor:
    """(..., 3) axis-angle vectors (direction = axis, norm = angle in radians) -> (..., 3, 3).

    The matrix exponential of the skew matrix: exact, differentiable at zero (where Rodrigues'
    formula divides by the angle), which is where pose refinement starts.
    """
    zero = torch.zeros_like(axis_angle[..., 0])
    x, y, z = axis_angle.unbind(-1)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1)
    return torch.linalg.matrix_exp(skew.reshape(*axis_angle.shape[:-1], 3, 3))


def rotation_from_6d(six_d: Tensor, eps: float = 1e-8) -> Tensor:
    """(..., 6) -> (..., 3, 3) rotation whose first two columns are the Gram-Schmidt
    orthonormalisation of the two 3-vectors in ``six_d`` (Zhou et al. 2019).

    Networks regress this instead of quaternions or Euler angles because the map is continuous,
    so nearby rotations have nearby outputs; unlike an SVD projection its gradient stays finite.
    """
    a1, a2 = six_d[..., :3], six_d[..., 3:]
    b1 = a1 / torch.linalg.norm(a1, dim=-1, keepdim=True).clamp_min(eps)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / torch.linalg.norm(a2, dim=-1, keepdim=True).clamp_min(eps)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)
