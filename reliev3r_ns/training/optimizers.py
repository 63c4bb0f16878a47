"""AdamW and a checkpoint-safe warm-up + cosine schedule for nerfstudio's optimizer configs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """Decoupled weight decay, what transformer FFRMs (pi3, VGGT) are trained with."""

    _target: Type = torch.optim.AdamW
    weight_decay: float = 0.05


@dataclass
class WarmupCosineSchedulerConfig(SchedulerConfig):
    """Linear warm-up, then cosine decay to ``learning_rate_alpha`` times the initial rate.

    Same schedule as nerfstudio's CosineDecayScheduler, but its factors are Python floats: that one
    returns numpy scalars, which end up in the checkpoint and make ``torch.load(weights_only=True)``
    (the default since torch 2.6, used by ``ns-eval`` / ``--load-dir``) refuse the file.
    """

    _target: Type = field(default_factory=lambda: WarmupCosineScheduler)
    warm_up_end: int = 100
    learning_rate_alpha: float = 0.05
    max_steps: int = 3000


class WarmupCosineScheduler(Scheduler):
    config: WarmupCosineSchedulerConfig

    def get_scheduler(self, optimizer, lr_init: float):
        warm_up_end, alpha, max_steps = self.config.warm_up_end, self.config.learning_rate_alpha, self.config.max_steps

        def factor(step: int) -> float:
            if step < warm_up_end:
                return step / warm_up_end
            progress = min(1.0, (step - warm_up_end) / max(1, max_steps - warm_up_end))
            return float((math.cos(math.pi * progress) + 1.0) * 0.5 * (1 - alpha) + alpha)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
