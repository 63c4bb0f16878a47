"""The FFRM's heads, one per file."""

from reliev3r_ns.model.heads.camera_head import CameraHead
from reliev3r_ns.model.heads.dense_head import DenseHead

__all__ = ["CameraHead", "DenseHead"]
