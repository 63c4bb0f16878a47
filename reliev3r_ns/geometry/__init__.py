"""Geometry core: camera conventions, projection, poses and Sim(3) alignment (all OpenCV inside).

:mod:`~reliev3r_ns.geometry.conventions` is the only module that knows nerfstudio's OpenGL axes and
pixel convention; everything here is OpenCV (x right, y down, z forward).
"""

from reliev3r_ns.geometry.align import Sim3, align_cam_to_world, align_camera_centres, umeyama_alignment
from reliev3r_ns.geometry.camera import (
    bearing_vectors,
    fov_from_intrinsics,
    intrinsics_from_fov,
    pixel_grid,
    pixels_to_camera_rays,
    project_camera_points,
    project_world_points,
    scale_intrinsics,
    scale_pixels,
    unproject_depth_to_camera,
    unproject_depth_to_world,
)
from reliev3r_ns.geometry.conventions import (
    cam_to_world_opencv_to_opengl,
    cam_to_world_opengl_to_opencv,
    frame_to_transforms_json,
    frames_from_transforms_json,
    intrinsics_nerfstudio_to_opencv,
    intrinsics_opencv_to_nerfstudio,
)
from reliev3r_ns.geometry.pose import (
    axis_angle_to_rotation,
    camera_centres,
    compose_poses,
    invert_pose,
    look_at,
    make_pose,
    pairwise_relative_poses,
    quaternion_to_rotation,
    relative_poses_to_reference,
    rotation_angle,
    rotation_from_6d,
    rotation_geodesic_distance,
    rotation_to_quaternion,
    transform_points,
)
from reliev3r_ns.geometry.splatting import Splat, splat_points

__all__ = [name for name in dir() if not name.startswith("_")]
