"""nerfstudio pipeline for Reliev3R: clips in, FFRM predictions and losses out; evaluation on
held-out scenes reports pose and depth metrics (``ns-eval`` prints them)."""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Type

import numpy as np
import torch
import torch.distributed as dist
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import Pipeline, VanillaPipeline, VanillaPipelineConfig
from torch.nn.parallel import DistributedDataParallel as DDP

from reliev3r_ns.training.datamanager import Reliev3rDataManagerConfig
from reliev3r_ns.training.model import Reliev3rModelConfig
from reliev3r_ns.viewer.live import LiveView


@dataclass
class Reliev3rPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: Reliev3rPipeline)
    datamanager: Reliev3rDataManagerConfig = field(default_factory=Reliev3rDataManagerConfig)
    model: Reliev3rModelConfig = field(default_factory=Reliev3rModelConfig)
    max_eval_scenes: int = 16
    """Held-out scenes scored by the full evaluation (one fixed clip each)."""
    viewer_refresh_every: int = 50
    """With the viewer on (``--vis viewer`` or ``viewer+tensorboard``): predict the shown clip again
    every this many steps."""
    viewer_confidence_percentile: float = 30.0
    """Initial confidence filter of the viewer's point cloud (a slider in the viewer)."""
    viewer_train_clips: int = 4
    """Training scenes offered in the viewer's clip picker, besides the held-out ones."""


class Reliev3rPipeline(VanillaPipeline):
    def __init__(self, config: Reliev3rPipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler=None) -> None:
        Pipeline.__init__(self)
        self.config = config
        self.test_mode = test_mode
        config.model.loss.validate()
        self.datamanager = config.datamanager.setup(device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank)
        self.datamanager.to(device)
        self._model = config.model.setup(
            scene_box=self.datamanager.train_dataset.scene_box,
            num_train_data=len(self.datamanager.train_dataset),
            metadata=self.datamanager.train_dataset.metadata,
            device=device,
            grad_scaler=grad_scaler,
        )
        self.model.to(device)
        patch = self.model.ffrm.config.patch_size
        height, width = config.datamanager.image_size
        if height % patch or width % patch:
            raise ValueError(f"--pipeline.datamanager.image-size {height} {width} is not a multiple of this FFRM's patch ({patch}); "
                             f"use {max(patch, round(height / patch) * patch)} {max(patch, round(width / patch) * patch)}, say")
        self.world_size = world_size
        self.live_view = LiveView(self._viewer_clips(), self._predict_for_view, config.viewer_confidence_percentile)
        self.model.render_source = self.live_view.points_for_render
        if world_size > 1:
            # nerfstudio's own pattern, made to work with CPU (gloo) processes too: device_ids only for CUDA.
            on_cuda = torch.device(device).type == "cuda"
            self._model = typing.cast(Model, DDP(self._model, device_ids=[local_rank] if on_cuda else None, find_unused_parameters=True))
            dist.barrier(device_ids=[local_rank] if on_cuda else None)

    def _viewer_clips(self) -> Dict[str, Callable[[], Dict]]:
        datamanager = self.datamanager
        clips: Dict[str, Callable[[], Dict]] = {}
        for index, scene in enumerate((datamanager.eval_dataset.scenes if datamanager.eval_dataset else [])[: self.config.max_eval_scenes]):
            clips[f"held-out {scene.name}"] = functools.partial(datamanager.eval_clip, index)
        for index, scene in enumerate(datamanager.train_dataset.scenes[: self.config.viewer_train_clips]):
            clips[f"train {scene.name}"] = functools.partial(datamanager.train_clip, index)
        return clips

    def _predict_for_view(self, batch: Dict):
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.get_outputs(batch)["prediction"]  # the training forward (bf16 autocast included)
        finally:
            model.train(was_training)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        callbacks.append(TrainingCallback(
            where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
            update_every_num_iters=self.config.viewer_refresh_every,
            func=lambda step: self.live_view.on_training_step(step),
        ))
        return callbacks

    # get_train_loss_dict is VanillaPipeline's: the datamanager hands it (batch, batch).

    def get_eval_loss_dict(self, step: int):
        self.eval()
        batch, _ = self.datamanager.next_eval(step)
        with torch.no_grad():
            outputs = self.model(batch)
            metrics = self.model.get_metrics_dict(outputs, batch)
            loss_dict = self.model.get_loss_dict(outputs, batch, metrics)
        self.train()
        return outputs, loss_dict, metrics

    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        batch, _ = self.datamanager.next_eval_image(step)
        with torch.no_grad():
            outputs = self.model(batch)
            metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
        metrics["num_rays"] = batch["views"]  # the Trainer divides by this for a throughput figure
        self.train()
        return metrics, images

    def export_ffrm(self, path: Path, extra: Optional[Dict] = None) -> Path:
        """The FFRM as a standalone checkpoint (reliev3r-export-ffrm's format), with the image size it
        trained at: the processing commands run the network at that size unless told otherwise, and a
        network trained on 128-pixel images gives nonsense on 518-pixel ones."""
        return self.model.export_ffrm(path, {**(extra or {}), "image_size": list(self.datamanager.config.image_size)})

    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False):
        """Mean (and std) of every metric over one fixed clip per held-out scene."""
        self.eval()
        scenes = len(self.datamanager.eval_dataset or [])
        rows = []
        with torch.no_grad():
            for index in range(min(scenes, self.config.max_eval_scenes)):
                batch = self.datamanager.eval_clip(index)
                rows.append({k: float(v) for k, v in self.model.get_metrics_dict(self.model(batch), batch).items()})
        self.train()
        if not rows:
            return {}
        out: Dict[str, float] = {}
        for key in rows[0]:
            values = np.array([r[key] for r in rows])
            out[key] = float(values.mean())
            if get_std:
                out[f"{key}_std"] = float(values.std())
        return out
