"""``ns-train reliev3r`` and ``ns-train reliev3r-supervised``: train the FFRM inside nerfstudio's Trainer.

Both use the same network, data and budget; one config switch (``--pipeline.model.loss.supervision``)
separates them. With no arguments they train the tiny model on the bundled synthetic dataset
(rendered into the cache on first use) on the CPU when there is no GPU, with nerfstudio's viser
viewer showing the live prediction of one clip (``--vis tensorboard`` for no viewer).
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig

from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from reliev3r_ns.losses import Reliev3rLossConfig
from reliev3r_ns.training.datamanager import Reliev3rDataManagerConfig
from reliev3r_ns.training.model import Reliev3rModelConfig
from reliev3r_ns.training.optimizers import AdamWOptimizerConfig, WarmupCosineSchedulerConfig
from reliev3r_ns.training.pipeline import Reliev3rPipelineConfig

MAX_ITERATIONS = 3000


def _trainer(method_name: str, supervision: str) -> TrainerConfig:
    return TrainerConfig(
        method_name=method_name,
        max_num_iterations=MAX_ITERATIONS,
        steps_per_eval_batch=50,
        steps_per_eval_image=250,
        steps_per_eval_all_images=1000,
        steps_per_save=500,
        mixed_precision=False,
        vis="viewer+tensorboard",
        # The viewer shows the live prediction of one clip (reliev3r_ns/viewer/live.py); nerfstudio's own
        # training-image frustums assume one scene with fixed cameras, which a multi-scene FFRM has not.
        viewer=ViewerConfig(max_num_display_images=0),
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=Reliev3rPipelineConfig(
            datamanager=Reliev3rDataManagerConfig(),
            model=Reliev3rModelConfig(loss=Reliev3rLossConfig(supervision=supervision)),
        ),
        optimizers={
            "ffrm": {
                "optimizer": AdamWOptimizerConfig(lr=3e-4, weight_decay=0.05, max_norm=1.0),
                "scheduler": WarmupCosineSchedulerConfig(warm_up_end=100, learning_rate_alpha=0.05, max_steps=MAX_ITERATIONS),
            }
        },
    )


reliev3r_method = MethodSpecification(
    config=_trainer("reliev3r", "weak"),
    description="Reliev3R: train a feed-forward reconstruction model from weak labels (teacher relative depth + matches).",
)

reliev3r_supervised_method = MethodSpecification(
    config=_trainer("reliev3r-supervised", "full"),
    description="The fully supervised sibling of reliev3r: same network and data, GT depth and poses.",
)
