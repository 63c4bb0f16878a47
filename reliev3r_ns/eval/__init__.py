"""Evaluation: pose and depth metrics (VGGT / pi3 protocol)."""

from reliev3r_ns.eval.metrics import depth_metrics, pose_auc, pose_metrics, relative_pose_errors

__all__ = ["depth_metrics", "pose_auc", "pose_metrics", "relative_pose_errors"]
