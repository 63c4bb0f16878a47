"""Test-time refinement: adapt the FFRM to one image set with Reliev3R's own weak losses.

No GT and no COLMAP: the set's pseudo-labels (teacher depth, matcher correspondences, from the label
cache) are the only signal, exactly as in training. A model trained on other data is repaired on the
very images it must reconstruct. The weak loss is measured on fixed clips before and after, so the
caller can report whether refinement helped.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from reliev3r_ns.labels import LabelCache, Labeller, PseudoLabelConfig, ViewSet
from reliev3r_ns.losses import GeometryPrediction, Reliev3rLossConfig, WeakLabels, compute_loss
from reliev3r_ns.model import FeedForwardReconstructor as FFRM  # ours or pi3 (reliev3r_ns.model.pi3)
from reliev3r_ns.training.clips import LoadedScene, collate_clips, load_training_scene, sample_clip_views


@dataclass
class RefineConfig:
    steps: int = 0
    """Optimisation steps of test-time refinement (0: off)."""
    views: int = 8
    """Views per refinement clip."""
    lr: float = 5e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    min_pair_matches: int = 8
    eval_clips: int = 4
    """Fixed clips on which the loss is reported before and after."""
    labels: PseudoLabelConfig = field(default_factory=lambda: PseudoLabelConfig(depth_teacher="transformers", matcher="sift"))
    """Teachers for the set's pseudo-labels; a real depth teacher needs
    ``--refine.labels.transformers.model PATH`` (a local Depth Anything / Depth Pro folder)."""
    label_cache: Optional[Path] = None
    loss: Reliev3rLossConfig = field(default_factory=Reliev3rLossConfig)
    seed: int = 0


@dataclass
class RefineReport:
    steps: int
    loss_before: float
    loss_after: float
    terms_before: Dict[str, float]
    terms_after: Dict[str, float]


def _loss(model: FFRM, batch: Dict, config: Reliev3rLossConfig) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    prediction = model(batch["images"], batch.get("intrinsics"))
    geometry = GeometryPrediction(prediction.depth, prediction.confidence, prediction.intrinsics, prediction.cam_to_world)
    weak = WeakLabels(batch["teacher"], batch["teacher_space"], batch["matches"])
    return compute_loss(config, geometry, weak)


@torch.no_grad()
def _mean_loss(model: FFRM, batches: List[Dict], config: Reliev3rLossConfig) -> Tuple[float, Dict[str, float]]:
    was_training = model.training
    model.eval()
    totals: Dict[str, float] = {}
    for batch in batches:
        _, stats = _loss(model, batch, config)
        for key in ("loss/total", "loss/depth", "loss/reprojection"):
            totals[key] = totals.get(key, 0.0) + float(stats[key]) / len(batches)
    model.train(was_training)
    return totals["loss/total"], totals


def prepare_scene(view_set: ViewSet, config: RefineConfig, image_size: Tuple[int, int]) -> LoadedScene:
    from reliev3r_ns.cli.pseudolabel import default_label_cache

    labeller = Labeller(config.labels, LabelCache(config.label_cache or default_label_cache()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        labels = labeller.label(view_set)
    # Intrinsics are what the FFRM predicts here (the processed set has none to give it).
    return load_training_scene(view_set, labels, image_size, use_known_intrinsics=False)


def refine(
    model: FFRM,
    view_set: ViewSet,
    config: RefineConfig,
    image_size: Tuple[int, int],
    progress: Optional[Callable[[int, int, float], None]] = None,
) -> RefineReport:
    """Adapt ``model`` in place on ``view_set`` at ``image_size`` (H, W, a patch multiple)."""
    if config.steps <= 0:
        raise ValueError("refine() needs steps > 0")
    device = next(model.parameters()).device
    scene = prepare_scene(view_set, config, image_size)
    rng = random.Random(config.seed)
    views = min(config.views, view_set.num_views)
    fixed = [collate_clips([scene], [sample_clip_views(scene, views, random.Random(config.seed + 1000 + k), config.min_pair_matches)], device)
             for k in range(config.eval_clips)]
    before, terms_before = _mean_loss(model, fixed, config.loss)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    for step in range(config.steps):
        chosen = sample_clip_views(scene, views, rng, config.min_pair_matches)
        batch = collate_clips([scene], [chosen], device)
        loss, _ = _loss(model, batch, config.loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"refinement loss became {float(loss)} at step {step}; lower --refine.lr")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimiser.step()
        if progress:
            progress(step + 1, config.steps, loss.item())
    model.eval()
    after, terms_after = _mean_loss(model, fixed, config.loss)
    return RefineReport(config.steps, before, after, terms_before, terms_after)
