"""``ns-train reliev3r``: train a feed-forward reconstruction model from weak labels.

Registered through the ``nerfstudio.method_configs`` entry point. Training itself is the subject of
the training issue; until it lands the method is listed and configurable, and running it stops at
set-up with a message saying so (nothing is trained and nothing is written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification


class _TrainingNotAvailable(Model):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "reliev3r: training the feed-forward model is not implemented in this version of reliev3r-ns. "
            "Use `reliev3r-synthetic` to generate data meanwhile."
        )


@dataclass
class Reliev3rModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: _TrainingNotAvailable)


reliev3r_method = MethodSpecification(
    config=TrainerConfig(
        method_name="reliev3r",
        max_num_iterations=1,
        pipeline=VanillaPipelineConfig(model=Reliev3rModelConfig()),
    ),
    description="Reliev3R: a feed-forward reconstruction model trained from weak labels (training not available yet).",
)
