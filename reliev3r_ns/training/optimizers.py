"""AdamW for nerfstudio's optimizer config (nerfstudio 1.1 ships Adam and RAdam only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """Decoupled weight decay, what transformer FFRMs (pi3, VGGT) are trained with."""

    _target: Type = torch.optim.AdamW
    weight_decay: float = 0.05
