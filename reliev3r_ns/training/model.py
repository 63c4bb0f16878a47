"""The nerfstudio Model wrapping the FFRM: weak (Reliev3R) or full supervision on clips of views.

``get_outputs`` runs the FFRM on a batch of clips; ``get_loss_dict`` is the objective of
:mod:`reliev3r_ns.losses.objective` (one switch for weak / full); ``get_metrics_dict`` adds pose AUC@30,
RRA / RTA and depth AbsRel / delta / tau whenever the clip has ground truth (in training, only on the
steps the Trainer logs). Ground truth never reaches the weak loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.misc import step_check

from reliev3r_ns.eval import depth_metrics, pose_metrics
from reliev3r_ns.geometry import cam_to_world_opengl_to_opencv, intrinsics_nerfstudio_to_opencv, invert_pose, splat_points, transform_points
from reliev3r_ns.losses import GeometryPrediction, GroundTruth, Reliev3rLossConfig, WeakLabels, compute_loss
from reliev3r_ns.model import FFRM, FFRMConfig, ModelSize, ffrm_config, load_ffrm


@dataclass
class Reliev3rModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: Reliev3rModel)
    enable_collider: bool = False
    model_size: ModelSize = "tiny"
    """FFRM preset: tiny (CPU), small, base, large (ignored with --pipeline.model.init-from)."""
    init_from: Optional[str] = None
    """Start from an FFRM instead of a preset: a reliev3r checkpoint, pi3's released weights (model.safetensors)
    or a hub id (yyfz233/Pi3). The weak losses then fine-tune it; the image size must be a multiple of its patch
    (14 for pi3: --pipeline.datamanager.image-size 294 392, say)."""
    reference: Literal["none", "first"] = "none"
    """'none': pi3-style permutation-equivariant (Reliev3R); 'first': VGGT-style reference view."""
    gradient_checkpointing: bool = False
    camera_translation_init_std: float = FFRMConfig.camera_translation_init_std
    """Std of the camera head's translation weights at initialisation. The default starts every camera of
    a clip at nearly one point (tiny preset: predicted depth / baseline ~1700x the true ratio); 1.0 starts
    it at ~2x. A larger start did not help the weak model at CPU scale (docs/reproduction_log.md, "What did not help")."""
    bf16: bool = False
    """Run the network under bf16 autocast (GPUs from Ampere on); poses, depth, geometry and losses
    stay float32. nerfstudio's own ``--mixed-precision`` is fp16 with a grad scaler, which this
    replaces for transformers."""
    loss: Reliev3rLossConfig = field(default_factory=Reliev3rLossConfig)


class Reliev3rModel(Model):
    config: Reliev3rModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        # Set by the Trainer's callbacks: the current step and how often nerfstudio logs training metrics.
        self._train_step: Optional[int] = None
        self._steps_per_log = 1
        if self.config.init_from:
            self.ffrm = load_ffrm(self.config.init_from)
            self.ffrm.config.gradient_checkpointing = self.config.gradient_checkpointing
        else:
            self.ffrm = FFRM(ffrm_config(self.config.model_size, reference=self.config.reference,
                                         gradient_checkpointing=self.config.gradient_checkpointing,
                                         camera_translation_init_std=self.config.camera_translation_init_std))

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {"ffrm": list(self.ffrm.parameters())}

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        if trainer is not None:
            self._steps_per_log = trainer.config.logging.steps_per_log

        def remember_step(step: int) -> None:
            self._train_step = step

        return [TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], func=remember_step)]

    def _logs_this_step(self) -> bool:
        """Whether the Trainer writes this training step's metrics (its ``step_check``, run at zero).
        The GT pose / depth metrics cost ~1500 small tensor ops per clip (on a GPU each a kernel launch,
        some a host sync): 12.4k of a step's 28.5k ops at 8 clips, computed and then thrown away on the
        steps nerfstudio does not log (docs/training.md, Throughput)."""
        if not self.training or self._train_step is None:
            return True
        return step_check(self._train_step, self._steps_per_log, run_at_zero=True)

    def get_outputs(self, batch: Dict) -> Dict:
        images = batch["images"]
        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            prediction = self.ffrm(images, batch.get("intrinsics"))
        return {"prediction": prediction}

    def _geometry(self, outputs: Dict) -> GeometryPrediction:
        p = outputs["prediction"]
        return GeometryPrediction(depth=p.depth, confidence=p.confidence, intrinsics=p.intrinsics, cam_to_world=p.cam_to_world)

    def get_loss_dict(self, outputs: Dict, batch: Dict, metrics_dict=None) -> Dict[str, torch.Tensor]:
        config = self.config.loss
        if config.supervision == "weak" and self.training and self._train_step is not None:
            in_force = config.reprojection.at_step(self._train_step)
            if in_force is not config.reprojection:  # only during a warm-up: no copy per step otherwise
                config = replace(config, reprojection=in_force)
        weak = gt = None
        if config.supervision == "weak":
            weak = WeakLabels(teacher=batch["teacher"], teacher_space=batch["teacher_space"], matches=batch["matches"])
        else:
            if "gt_cam_to_world" not in batch or "gt_depth" not in batch:
                raise ValueError("reliev3r-supervised needs GT depth and poses; these scenes have none (use `ns-train reliev3r`)")
            K = batch["intrinsics"] if batch.get("intrinsics") is not None else outputs["prediction"].intrinsics.detach()
            gt = GroundTruth(depth=batch["gt_depth"], intrinsics=K, cam_to_world=batch["gt_cam_to_world"])
        total, stats = compute_loss(config, self._geometry(outputs), weak, gt)
        if metrics_dict is not None:
            metrics_dict.update({k.replace("/", "_"): v.detach() for k, v in stats.items() if torch.is_tensor(v) and v.numel() == 1})
        return {"loss": total}

    @torch.no_grad()
    def get_metrics_dict(self, outputs: Dict, batch: Dict) -> Dict[str, torch.Tensor]:
        metrics: Dict[str, torch.Tensor] = {}
        p = outputs["prediction"]
        metrics["confidence_mean"] = p.confidence.detach().mean()
        if not self._logs_this_step():
            return metrics
        if "gt_cam_to_world" in batch:
            per_clip = [pose_metrics(p.cam_to_world[b].float(), batch["gt_cam_to_world"][b]) for b in range(p.cam_to_world.shape[0])]
            for key in per_clip[0]:
                metrics[key] = torch.tensor(float(np.mean([m[key] for m in per_clip])))
        if "gt_depth" in batch:
            per_clip = [depth_metrics(p.depth[b].detach().float(), batch["gt_depth"][b]) for b in range(p.depth.shape[0])]
            for key in per_clip[0]:
                metrics[key] = torch.tensor(float(np.mean([m[key] for m in per_clip])))
        return metrics

    @torch.no_grad()
    def get_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, torch.Tensor]:
        """The viewer's render: the live predicted point cloud (``render_source(width) -> points,
        colours, splat radius``, set by the pipeline from :mod:`reliev3r_ns.viewer.live`) z-buffered
        and splatted from a nerfstudio camera. ``depth`` is the distance along the ray,
        as nerfstudio's other models give it, so the viewer's depth compositing lines up."""
        source = getattr(self, "render_source", None)
        if source is None:
            raise RuntimeError("no point cloud to render: the pipeline sets render_source (Reliev3rPipeline does)")
        height, width = int(camera.height[0, 0]), int(camera.width[0, 0])
        points, colours, radius = source(width)
        points, colours = points.to(self.device), colours.to(self.device)
        cam_to_world = cam_to_world_opengl_to_opencv(camera.camera_to_worlds[0].float())
        K = torch.eye(3, device=self.device)
        K[0, 0], K[1, 1], K[0, 2], K[1, 2] = camera.fx[0, 0], camera.fy[0, 0], camera.cx[0, 0], camera.cy[0, 0]
        K = intrinsics_nerfstudio_to_opencv(K)
        points_cam = transform_points(invert_pose(cam_to_world), points)
        splat = splat_points(points_cam, colours, K, height, width, radius=radius)
        distance = points_cam.norm(dim=-1)[splat.index.clamp_min(0)]
        far = distance[splat.mask].max() if splat.mask.any() else torch.tensor(1.0, device=self.device)
        distance = torch.where(splat.mask, distance, far)
        return {"rgb": splat.colour, "depth": distance[..., None], "accumulation": splat.mask.float()[..., None]}

    @torch.no_grad()
    def get_image_metrics_and_images(self, outputs: Dict, batch: Dict) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        from nerfstudio.utils import colormaps

        metrics = {k: float(v) for k, v in self.get_metrics_dict(outputs, batch).items()}
        p = outputs["prediction"]
        # One strip per clip: input views, predicted depth (log, turbo), confidence.
        views = batch["images"][0].permute(0, 2, 3, 1)  # (V, H, W, 3)
        log_depth = p.depth[0].log()
        depth = colormaps.apply_colormap(((log_depth - log_depth.min()) / (log_depth.max() - log_depth.min()).clamp_min(1e-6))[..., None], colormaps.ColormapOptions(colormap="turbo"))
        confidence = colormaps.apply_colormap((p.confidence[0] / 2.0)[..., None], colormaps.ColormapOptions(colormap="viridis"))
        strip = lambda x: torch.cat(list(x), dim=1)  # noqa: E731  (V, H, W, 3) -> (H, V*W, 3)
        return metrics, {"views": strip(views), "depth": strip(depth), "confidence": strip(confidence)}

    def export_ffrm(self, path: Path, extra: Dict = None) -> Path:
        return self.ffrm.save_checkpoint(path, extra)
