"""Reliev3R's losses: the ambiguity-aware relative depth loss, the trigonometric reprojection loss,
the fully supervised sibling's losses, and the objective that switches between them."""

from reliev3r_ns.losses.objective import GeometryPrediction, GroundTruth, Reliev3rLossConfig, WeakLabels, compute_loss
from reliev3r_ns.losses.relative_depth import RelativeDepthLossConfig, relative_depth_loss, weighted_median
from reliev3r_ns.losses.reprojection import Matches, ReprojectionLossConfig, angle_between, reprojection_loss, sample_depth
from reliev3r_ns.losses.supervised import SupervisedLossConfig, optimal_scale, supervised_losses

__all__ = [name for name in dir() if not name.startswith("_")]
