"""Evaluation: pose, trajectory, depth, point-map and cloud metrics (VGGT / pi3 protocol), references."""

from reliev3r_ns.eval.metrics import (
    cloud_metrics,
    depth_metrics,
    pointmap_metrics,
    pose_auc,
    pose_metrics,
    relative_pose_errors,
    trajectory_metrics,
)

__all__ = ["cloud_metrics", "depth_metrics", "pointmap_metrics", "pose_auc", "pose_metrics", "relative_pose_errors", "trajectory_metrics"]
