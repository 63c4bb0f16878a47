"""The feed-forward reconstruction model (pi3 / VGGT shaped): backbone, heads, presets, checkpoints."""

from reliev3r_ns.model.ffrm import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    FFRM,
    FFRMConfig,
    FeedForwardReconstructor,
    ModelSize,
    Prediction,
    ffrm_config,
    resolve_device,
)
from reliev3r_ns.model.loading import load_ffrm

__all__ = ["ModelSize", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "FFRM", "FFRMConfig", "FeedForwardReconstructor", "load_ffrm", "Prediction", "ffrm_config", "resolve_device"]
