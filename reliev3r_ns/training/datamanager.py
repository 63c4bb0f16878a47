"""Clips of V views from many scenes, with their weak labels (and GT when the scenes carry it).

A clip is sampled from one scene: a random anchor view, then views added one at a time, each chosen
among the views that share at least ``min_pair_matches`` verified matches with a view already in
the clip, so every clip is connected by correspondences. Images, teacher maps, GT depth,
intrinsics and matches are resized to ``image_size`` (a multiple of the patch size) once, at
set-up, and held in memory; labels come from the cache and are computed on first use.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.scene_box import SceneBox
from rich.console import Console
from rich.progress import track

from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.data.synthetic_dataset import ensure_default_dataset
from reliev3r_ns.geometry import scale_intrinsics, scale_pixels
from reliev3r_ns.labels import LabelCache, Labeller, PseudoLabelConfig, discover_view_sets, open_view_set
from reliev3r_ns.losses import Matches

CONSOLE = Console()


@dataclass
class LoadedScene:
    name: str
    images: torch.Tensor  # (N, 3, H, W) float in [0, 1]
    teacher: torch.Tensor  # (N, H, W)
    teacher_space: str
    overlap: np.ndarray  # (N, N) verified matches per pair
    matches: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    intrinsics: Optional[torch.Tensor] = None  # (N, 3, 3) OpenCV at the training size
    gt_cam_to_world: Optional[torch.Tensor] = None  # (N, 4, 4) OpenCV
    gt_depth: Optional[torch.Tensor] = None  # (N, H, W)


class SceneCollection:
    """What nerfstudio's Trainer and pipeline expect of a dataset: a length, a scene box, metadata."""

    def __init__(self, scenes: List[LoadedScene]) -> None:
        self.scenes = scenes
        self.scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        self.metadata: Dict = {}

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def has_gt(self) -> bool:
        return bool(self.scenes) and all(s.gt_cam_to_world is not None and s.gt_depth is not None for s in self.scenes)


@dataclass
class Reliev3rDataManagerConfig(DataManagerConfig):
    _target: Type = field(default_factory=lambda: Reliev3rDataManager)
    data: Optional[Path] = None
    """Training scenes (a folder of scenes). Default: the bundled synthetic dataset's train split."""
    eval_data: Optional[Path] = None
    """Held-out scenes. Default: the synthetic eval split with the default data, else the last
    ``eval_fraction`` of the scenes under --data."""
    eval_fraction: float = 0.1
    image_size: Tuple[int, int] = (96, 128)
    """(H, W) the model trains at; a multiple of the patch size."""
    min_views: int = 2
    max_views: int = 8
    """Views per clip: a random count in [min_views, max_views] per step (the paper uses 8)."""
    eval_views: int = 8
    clips_per_batch: int = 2
    min_pair_matches: int = 8
    """Two views count as overlapping with at least this many verified matches."""
    labels: PseudoLabelConfig = field(default_factory=lambda: PseudoLabelConfig(depth_teacher="simulated", matcher="simulated"))
    """Teachers. The default (simulated depth teacher and simulated dense tracks, from GT) suits only
    synthetic scenes; for real images use e.g. ``--pipeline.datamanager.labels.depth-teacher transformers
    --pipeline.datamanager.labels.transformers.model PATH --pipeline.datamanager.labels.matcher sift``."""
    label_cache: Optional[Path] = None
    """Label cache root (default <cache>/labels)."""
    use_known_intrinsics: bool = True
    """Give the model the scenes' intrinsics (Reliev3R assumes them known) when they have them."""
    seed: int = 0


class Reliev3rDataManager(DataManager):
    config: Reliev3rDataManagerConfig

    def __init__(self, config: Reliev3rDataManagerConfig, device="cpu", test_mode="val", world_size: int = 1, local_rank: int = 0, **kwargs) -> None:
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.world_size, self.local_rank = world_size, local_rank
        train_dirs, eval_dirs = self._scene_folders()
        from reliev3r_ns.cli.pseudolabel import default_label_cache

        self.labeller = Labeller(config.labels, LabelCache(config.label_cache or default_label_cache()))
        self.train_dataset = SceneCollection(self._load(train_dirs, "train"))
        self.eval_dataset = SceneCollection(self._load(eval_dirs, "eval")) if eval_dirs else None
        if not self.train_dataset.scenes:
            raise SceneFormatError(
                f"{config.data}: no training scene has two overlapping views (>= {config.min_pair_matches} verified matches); "
                "add images with more overlap or lower --pipeline.datamanager.min-pair-matches"
            )
        self.rng = random.Random(config.seed + local_rank)
        self.eval_rng = random.Random(config.seed + 1)
        super().__init__()

    # ------------------------------------------------------------------------------------- set-up
    def _scene_folders(self) -> Tuple[List[Path], List[Path]]:
        config = self.config
        if config.data is None:
            splits = ensure_default_dataset()
            train = discover_view_sets(splits["train"])
            evaluation = discover_view_sets(config.eval_data or splits["eval"])
            return train, evaluation
        scenes = discover_view_sets(config.data)
        if config.eval_data is not None:
            return scenes, discover_view_sets(config.eval_data)
        n_eval = int(round(len(scenes) * config.eval_fraction))
        if n_eval == 0 or len(scenes) - n_eval < 1:
            return scenes, []
        return scenes[:-n_eval], scenes[-n_eval:]

    def _load(self, folders: List[Path], split: str) -> List[LoadedScene]:
        H, W = self.config.image_size
        loaded = []
        for folder in track(folders, description=f"loading {split} scenes and labels", console=CONSOLE, transient=True):
            view_set = open_view_set(folder)
            if view_set.num_views < 2:
                warnings.warn(f"{folder}: only one image; skipped (a clip needs two overlapping views)")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                labels = self.labeller.label(view_set)
            images = torch.from_numpy(np.stack([view_set.load_image(i) for i in range(view_set.num_views)])).permute(0, 3, 1, 2).float() / 255
            h0, w0 = images.shape[-2:]
            sx, sy = W / w0, H / h0
            images = F.interpolate(images, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
            teacher = F.interpolate(torch.from_numpy(labels.teacher)[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]

            def scale_uv(uv: np.ndarray) -> torch.Tensor:
                return scale_pixels(torch.from_numpy(uv.astype(np.float32)), sx, sy)

            matches = {pair: (scale_uv(m[0]), scale_uv(m[1]), torch.from_numpy(m[2].astype(np.float32))) for pair, m in labels.matches.items()}
            overlap = labels.overlap()
            if (overlap >= self.config.min_pair_matches).sum() == 0:
                warnings.warn(f"{folder}: no pair of views has {self.config.min_pair_matches} verified matches; skipped")
                continue
            scene = LoadedScene(folder.name, images, teacher, labels.teacher_space, overlap, matches)
            nerfstudio_scene = view_set.scene  # None for an image folder: no intrinsics, no GT
            if nerfstudio_scene is not None:
                K = torch.from_numpy(nerfstudio_scene.intrinsics).float()
                if self.config.use_known_intrinsics:
                    scene.intrinsics = scale_intrinsics(K, sx, sy)
                scene.gt_cam_to_world = torch.from_numpy(nerfstudio_scene.cam_to_world).float()
                if nerfstudio_scene.has_depth:
                    depth = torch.from_numpy(nerfstudio_scene.load_depths())[:, None]
                    scene.gt_depth = F.interpolate(depth, size=(H, W), mode="nearest")[:, 0]
            loaded.append(scene)
        return loaded

    # ----------------------------------------------------------------------------------- sampling
    def sample_clip_views(self, scene: LoadedScene, count: int, rng: random.Random) -> List[int]:
        """Up to ``count`` views connected by >= min_pair_matches matches, grown from a random anchor."""
        connected = scene.overlap >= self.config.min_pair_matches
        candidates_anchor = [i for i in range(len(connected)) if connected[i].any()]
        chosen = [rng.choice(candidates_anchor)]
        while len(chosen) < count:
            frontier = sorted({int(j) for i in chosen for j in np.nonzero(connected[i])[0]} - set(chosen))
            if not frontier:
                break
            chosen.append(rng.choice(frontier))
        return chosen

    def make_batch(self, scenes: List[LoadedScene], views: List[List[int]]) -> Dict:
        """Stack clips (same number of views each) into one batch on the device."""
        V = len(views[0])
        batch_index, view_i, view_j, uv_i, uv_j, conf = [], [], [], [], [], []
        for b, (scene, chosen) in enumerate(zip(scenes, views)):
            position = {v: k for k, v in enumerate(chosen)}
            for (a, c), (ua, uc, w) in scene.matches.items():
                if a in position and c in position and len(w):
                    batch_index.append(torch.full((len(w),), b))
                    view_i.append(torch.full((len(w),), position[a]))
                    view_j.append(torch.full((len(w),), position[c]))
                    uv_i.append(ua)
                    uv_j.append(uc)
                    conf.append(w)
        empty2 = torch.zeros(0, 2)
        matches = Matches(
            torch.cat(batch_index) if batch_index else torch.zeros(0, dtype=torch.long),
            torch.cat(view_i) if view_i else torch.zeros(0, dtype=torch.long),
            torch.cat(view_j) if view_j else torch.zeros(0, dtype=torch.long),
            torch.cat(uv_i) if uv_i else empty2,
            torch.cat(uv_j) if uv_j else empty2,
            torch.cat(conf) if conf else torch.zeros(0),
        ).to(self.device)
        batch = {
            "images": torch.stack([s.images[v] for s, v in zip(scenes, views)]).to(self.device),
            "teacher": torch.stack([s.teacher[v] for s, v in zip(scenes, views)]).to(self.device),
            "teacher_space": scenes[0].teacher_space,
            "matches": matches,
            "intrinsics": None,
            "scene_names": [s.name for s in scenes],
            "views": V,
        }
        if all(s.intrinsics is not None for s in scenes):
            batch["intrinsics"] = torch.stack([s.intrinsics[v] for s, v in zip(scenes, views)]).to(self.device)
        if all(s.gt_cam_to_world is not None for s in scenes):
            batch["gt_cam_to_world"] = torch.stack([s.gt_cam_to_world[v] for s, v in zip(scenes, views)]).to(self.device)
        if all(s.gt_depth is not None for s in scenes):
            batch["gt_depth"] = torch.stack([s.gt_depth[v] for s, v in zip(scenes, views)]).to(self.device)
        return batch

    def _sample_batch(self, collection: SceneCollection, rng: random.Random, views: int, clips: int) -> Dict:
        scenes = [rng.choice(collection.scenes) for _ in range(clips)]
        chosen = [self.sample_clip_views(s, views, rng) for s in scenes]
        V = min(len(c) for c in chosen)  # clips in one batch share V
        return self.make_batch(scenes, [c[:V] for c in chosen])

    # ------------------------------------------------------------------------ nerfstudio contract
    def next_train(self, step: int) -> Tuple[Dict, Dict]:
        self.train_count += 1
        views = self.rng.randint(self.config.min_views, self.config.max_views)
        batch = self._sample_batch(self.train_dataset, self.rng, views, self.config.clips_per_batch)
        return batch, batch

    def next_eval(self, step: int) -> Tuple[Dict, Dict]:
        self.eval_count += 1
        batch = self._sample_batch(self.eval_dataset, self.eval_rng, self.config.eval_views, 1)
        return batch, batch

    def next_eval_image(self, step: int) -> Tuple[Dict, Dict]:
        batch = self.eval_clip(0)
        return batch, batch

    def eval_clip(self, index: int) -> Dict:
        """The fixed evaluation clip of held-out scene ``index`` (same views every time)."""
        scene = self.eval_dataset.scenes[index]
        views = self.sample_clip_views(scene, self.config.eval_views, random.Random(index))
        return self.make_batch([scene], [views])

    def get_train_rays_per_batch(self) -> int:
        # nerfstudio's throughput counter counts rays; ours counts views.
        return self.config.clips_per_batch * self.config.max_views

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_views

    def get_datapath(self) -> Path:
        return self.config.data or Path(".")

    def get_param_groups(self) -> Dict:
        return {}
