"""The training objective: one config switch chooses weak (Reliev3R) or full supervision.

Weak:  L = depth_weight * L_relative_depth + reprojection_weight * L_reprojection   (paper: 1 and 0.5)
Full:  L = L_points + camera_weight * L_camera                                      (the sibling)

The ablations are configurations of this one objective: ``depth_weight=0`` (no depth loss),
``reprojection_weight=0`` (no reprojection loss), ``reprojection.residual="pixel"`` (pixel instead of
angle), ``depth.alignment="scale_only"`` (shift-unaware depth loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple

import torch

from reliev3r_ns.losses.relative_depth import RelativeDepthLossConfig, relative_depth_loss
from reliev3r_ns.losses.reprojection import Matches, ReprojectionLossConfig, reprojection_loss
from reliev3r_ns.losses.supervised import SupervisedLossConfig, supervised_losses

Tensor = torch.Tensor


@dataclass
class GeometryPrediction:
    """What the losses need from a model, per batch: all OpenCV, shapes (B, V, ...)."""

    depth: Tensor  # (B, V, H, W) positive z-depth
    confidence: Tensor  # (B, V, H, W) in (0, 2)
    intrinsics: Tensor  # (B, V, 3, 3)
    cam_to_world: Tensor  # (B, V, 4, 4)


@dataclass
class WeakLabels:
    teacher: Tensor  # (B, V, H, W) relative depth in teacher_space
    teacher_space: Literal["depth", "disparity"]
    matches: Matches
    teacher_valid: Optional[Tensor] = None  # (B, V, H, W) bool


@dataclass
class GroundTruth:
    depth: Tensor  # (B, V, H, W) metric z-depth
    intrinsics: Tensor  # (B, V, 3, 3)
    cam_to_world: Tensor  # (B, V, 4, 4)


@dataclass
class Reliev3rLossConfig:
    supervision: Literal["weak", "full"] = "weak"
    depth_weight: float = 1.0
    reprojection_weight: float = 0.5
    depth: RelativeDepthLossConfig = field(default_factory=RelativeDepthLossConfig)
    reprojection: ReprojectionLossConfig = field(default_factory=ReprojectionLossConfig)
    supervised: SupervisedLossConfig = field(default_factory=SupervisedLossConfig)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot train (called by the pipeline before loading scenes).
        Only the terms the supervision uses are checked: the sibling ignores the weak losses' settings."""
        if self.supervision not in ("weak", "full"):
            raise ValueError(f"loss supervision={self.supervision!r}: choose 'weak' or 'full'")
        if self.supervision == "full":
            self.supervised.validate()
            return
        for name in ("depth_weight", "reprojection_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss {name}={getattr(self, name)} must be >= 0")
        self.depth.validate()
        self.reprojection.validate()


def compute_loss(
    config: Reliev3rLossConfig,
    prediction: GeometryPrediction,
    weak: Optional[WeakLabels] = None,
    gt: Optional[GroundTruth] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """(total loss, dict of every term and statistic, detached)."""
    if config.supervision == "weak":
        if weak is None:
            raise ValueError("weak supervision needs weak labels (teacher depth and matches)")
        depth_term, stats = relative_depth_loss(
            prediction.depth, prediction.confidence, weak.teacher, weak.teacher_space, weak.teacher_valid, config.depth
        )
        rep_term, rep_stats = reprojection_loss(
            prediction.depth, prediction.intrinsics, prediction.cam_to_world, weak.matches, config.reprojection
        )
        stats.update(rep_stats)
        total = config.depth_weight * depth_term + config.reprojection_weight * rep_term
        stats.update({"loss/depth": depth_term.detach(), "loss/reprojection": rep_term.detach()})
    elif config.supervision == "full":
        if gt is None:
            raise ValueError("full supervision needs ground truth depth, intrinsics and poses")
        point_term, camera_term, stats = supervised_losses(
            prediction.depth, prediction.confidence, prediction.intrinsics, prediction.cam_to_world,
            gt.depth, gt.intrinsics, gt.cam_to_world, config=config.supervised,
        )
        total = point_term + config.supervised.camera_weight * camera_term
        stats.update({"loss/points": point_term.detach(), "loss/camera": camera_term.detach()})
    else:
        raise ValueError(f"unknown supervision {config.supervision!r}")
    stats["loss/total"] = total.detach()
    return total, stats
