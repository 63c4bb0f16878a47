"""The feed-forward reconstruction model (pi3 / VGGT shaped): backbone, heads, presets, checkpoints."""

from reliev3r_ns.model.ffrm import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    FFRM,
    FFRMConfig,
    ModelSize,
    Prediction,
    ffrm_config,
    resolve_device,
)

__all__ = ["ModelSize", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "FFRM", "FFRMConfig", "Prediction", "ffrm_config", "resolve_device"]
