"""Ambiguity-aware relative depth loss (Reliev3R's depth term).

A monocular teacher map T equals the truth only up to an unknown positive scale and an unknown
shift, in a declared space: ``"depth"`` (Depth Pro, MoGe) or ``"disparity"`` (Depth Anything). The
prediction D is therefore compared with T only after that ambiguity is removed from both, in the
teacher's space (the prediction is turned into disparity 1 / D when the teacher is a disparity).

Per view, with W in (0, 2) the model's confidence and sg the stop-gradient::

    L = mean_valid( W * |G(D, sg W) - G(T, sg W)| - alpha * log W )
    G(x, w) = (x - median_w(x)) / MAD_w(x),   MAD_w(x) = sum w |x - median_w(x)| / sum w

G subtracts a W-weighted median and divides by the W-weighted mean absolute deviation, so L is
invariant to any s > 0 and t applied to T (s T + t), and to the global scale of D (in depth space
scale and shift both cancel; in disparity space 1 / (s D) = (1/s) / D, a pure scale). Median and MAD
are robust: a few wrong teacher pixels move neither. The -alpha log W term stops the confidence from
collapsing to 0; minimising over W gives W = alpha / residual (clipped to the bound), so the network
learns where the teacher is unreliable.

Degenerate views are skipped (weight 0, counted in the returned stats) rather than turned into NaN:
fewer than ``min_valid_pixels`` valid pixels, or a teacher that is constant over them (MAD below
``rel_eps`` of its largest deviation). Non-finite teacher values (inf depth for sky, NaN) and
non-positive teacher depths (the usual no-data marker) are invalid pixels; any finite disparity,
zero (sky) included, is a valid value.

Ablation variants (``alignment``):
- ``"median_mad"``: the paper's loss above.
- ``"least_squares"``: MiDaS style: T is normalised with G, then the prediction is aligned to it by a
  W-weighted least-squares scale and shift solved in closed form.
- ``"scale_only"``: shift-unaware: both maps are divided by their W-weighted median and compared
  (invariant to scale only, so a teacher shift is wrongly penalised).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import torch

Tensor = torch.Tensor
TeacherSpace = Literal["depth", "disparity"]


@dataclass
class RelativeDepthLossConfig:
    alignment: Literal["median_mad", "least_squares", "scale_only"] = "median_mad"
    """median_mad (the paper), least_squares (MiDaS-style ablation), scale_only (shift-unaware ablation)."""
    alpha: float = 1.0
    """Weight of the -alpha * log W confidence regulariser."""
    min_valid_pixels: int = 16
    """Views with fewer valid teacher pixels are skipped."""
    rel_eps: float = 1e-4
    """A teacher whose MAD is below rel_eps times its largest deviation from the median counts as constant (skipped)."""
    min_depth: float = 1e-4
    """Predicted depth is clamped here before taking a disparity."""

    def validate(self) -> None:
        """Raise ValueError for settings that cannot train (see ``Reliev3rLossConfig.validate``)."""
        if not self.alpha > 0:
            # Without the -alpha log W term nothing stops the confidence from sinking to its floor.
            raise ValueError(f"depth alpha={self.alpha} must be > 0 (the confidence regulariser's weight)")
        if self.min_valid_pixels < 1:
            raise ValueError(f"depth min_valid_pixels={self.min_valid_pixels} must be >= 1")
        if self.rel_eps < 0:
            raise ValueError(f"depth rel_eps={self.rel_eps} must be >= 0")
        if not self.min_depth > 0:
            raise ValueError(f"depth min_depth={self.min_depth} must be > 0 (a disparity is taken of the clamped depth)")


def weighted_median(values: Tensor, weights: Tensor) -> Tensor:
    """(..., P) values and non-negative weights -> (...,) lower weighted median.

    Differentiable in ``values`` (the gradient flows to the chosen element); weights are data.
    Rows whose weights sum to 0 return the plain median position's value.
    """
    sorted_values, order = torch.sort(values, dim=-1)
    sorted_weights = torch.gather(weights, -1, order)
    cumulative = torch.cumsum(sorted_weights, dim=-1)
    half = 0.5 * cumulative[..., -1:]
    index = torch.searchsorted(cumulative.contiguous(), half.contiguous()).clamp(max=values.shape[-1] - 1)
    return torch.gather(sorted_values, -1, index)[..., 0]


def _normalise_median_mad(x: Tensor, w: Tensor, valid: Tensor, rel_eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """G(x, w) over the last dim; returns (normalised x, MAD, largest |x - median| over valid pixels).

    The MAD is floored at rel_eps times the largest deviation (never below 1e-12), so a (near-)constant
    row normalises to finite values instead of dividing by zero.
    """
    median = weighted_median(x, w)
    deviation = (x - median[..., None]).abs()
    mad = (w * deviation).sum(-1) / w.sum(-1).clamp_min(1e-12)
    spread = torch.where(valid, deviation, torch.zeros_like(deviation)).amax(-1).detach()
    floor = (rel_eps * spread).clamp_min(1e-12)
    return (x - median[..., None]) / torch.maximum(mad, floor)[..., None], mad, spread


def relative_depth_loss(
    pred_depth: Tensor,
    confidence: Tensor,
    teacher: Tensor,
    teacher_space: TeacherSpace,
    valid_mask: Optional[Tensor] = None,
    config: RelativeDepthLossConfig = RelativeDepthLossConfig(),
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Reliev3R's relative depth loss, averaged over the views that are not degenerate.

    Args:
        pred_depth: (..., H, W) predicted z-depth, positive.
        confidence: (..., H, W) predicted confidence W in (0, 2).
        teacher: (..., H, W) teacher map in ``teacher_space``.
        teacher_space: "depth" or "disparity".
        valid_mask: optional (..., H, W) bool, False where the teacher must be ignored.

    Returns:
        (scalar loss, stats) with stats ``depth/valid_views``, ``depth/skipped_views`` and
        ``depth/mean_residual`` (the |G - G| term alone, for logging).
    """
    if teacher_space not in ("depth", "disparity"):
        raise ValueError(f"teacher_space must be 'depth' or 'disparity', got {teacher_space!r}")
    if pred_depth.shape != teacher.shape or confidence.shape != teacher.shape:
        raise ValueError(
            f"shapes differ: pred {tuple(pred_depth.shape)}, confidence {tuple(confidence.shape)}, teacher {tuple(teacher.shape)}"
        )
    lead = teacher.shape[:-2]
    pred = pred_depth.reshape(*lead, -1)
    conf = confidence.reshape(*lead, -1)
    target = teacher.reshape(*lead, -1).detach()

    valid = torch.isfinite(target)
    if teacher_space == "depth":
        valid = valid & (target > 0)
    if valid_mask is not None:
        valid = valid & valid_mask.reshape(*lead, -1).bool()
    target = torch.where(valid, target, torch.zeros_like(target))
    if teacher_space == "disparity":
        pred = 1.0 / pred.clamp_min(config.min_depth)

    # sg(W) as normalisation weights, restricted to valid pixels.
    w = conf.detach() * valid
    n_valid = valid.sum(-1)

    if config.alignment in ("median_mad", "least_squares"):
        target_n, target_mad, target_spread = _normalise_median_mad(target, w, valid, config.rel_eps)
        # Constant up to a few pixels: the MAD is negligible next to the largest deviation. Both are
        # shift- and scale-equivariant, so the test is as invariant as the loss.
        degenerate = target_mad <= config.rel_eps * target_spread
        if config.alignment == "median_mad":
            pred_n = _normalise_median_mad(pred, w, valid, config.rel_eps)[0]
        else:
            pred_n = _align_least_squares(pred, target_n, w)
    elif config.alignment == "scale_only":
        target_scale = weighted_median(target, w)
        pred_scale = weighted_median(pred, w)
        target_n = target / target_scale.clamp_min(1e-12)[..., None]
        pred_n = pred / pred_scale.clamp_min(1e-12)[..., None]
        degenerate = target_scale <= 1e-12
    else:
        raise ValueError(f"unknown alignment {config.alignment!r}")

    usable = (n_valid >= config.min_valid_pixels) & ~degenerate  # (...,)
    residual = (pred_n - target_n).abs()
    per_pixel = conf * residual - config.alpha * torch.log(conf.clamp_min(1e-6))
    mask = valid & usable[..., None]
    per_view = (per_pixel * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    n_usable = usable.sum()
    loss = (per_view * usable).sum() / n_usable.clamp_min(1)
    stats = {
        "depth/valid_views": n_usable.detach(),
        "depth/skipped_views": (~usable).sum().detach(),
        "depth/mean_residual": ((residual * mask).sum() / mask.sum().clamp_min(1)).detach(),
    }
    return loss, stats


def _align_least_squares(pred: Tensor, target: Tensor, w: Tensor) -> Tensor:
    """s * pred + t with (s, t) = argmin sum w (s pred + t - target)^2, per row (closed form)."""
    sw = w.sum(-1).clamp_min(1e-12)
    mean_p = (w * pred).sum(-1) / sw
    mean_t = (w * target).sum(-1) / sw
    dp = pred - mean_p[..., None]
    dt = target - mean_t[..., None]
    var = (w * dp * dp).sum(-1)
    scale = (w * dp * dt).sum(-1) / var.clamp_min(1e-12)
    return scale[..., None] * dp + mean_t[..., None]
