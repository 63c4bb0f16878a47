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
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.scene_box import SceneBox
from rich.console import Console
from rich.progress import track

from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.data.synthetic_dataset import ensure_default_dataset
from reliev3r_ns.labels import LabelCache, Labeller, PseudoLabelConfig, discover_view_sets
from reliev3r_ns.training.clips import LoadedScene, collate_clips, load_training_scene, sample_clip_views, subset_scene

CONSOLE = Console()


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
    label_workers: int = 0
    """Worker processes that compute missing labels before training starts (as ``reliev3r-pseudolabel
    --workers``); 0 computes them in this process. Batches need none: clips are assembled from
    tensors already in memory (``scripts/bench_training.py`` prints the share of a step it takes)."""
    use_known_intrinsics: bool = True
    """Give the model the scenes' intrinsics (Reliev3R assumes them known) when they have them."""
    eval_reference: Literal["pycolmap", "none"] = "pycolmap"
    """Held-out scenes without poses (real captures, videos): 'pycolmap' scores them against pycolmap's
    SfM of their images, run once and cached beside the labels (evaluation only; no loss sees it)."""
    min_reference_views: int = 3
    """A held-out capture where pycolmap registers fewer views is reported and not scored."""
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
        if config.label_workers > 0 and local_rank == 0:
            self._label_in_workers(train_dirs + eval_dirs)
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

    def _label_in_workers(self, folders: List[Path]) -> None:
        """Fill the label cache for every scene with a process pool; failures surface (with the
        scene's name) when the scene is loaded below, exactly as without workers."""
        from reliev3r_ns.labels.workers import label_in_processes

        results = label_in_processes(self.config.labels, self.labeller.cache.root, folders, self.config.label_workers)
        for _ in track(results, total=len(folders), description="labelling scenes", console=CONSOLE, transient=True):
            pass

    def _load(self, folders: List[Path], split: str) -> List[LoadedScene]:
        loaded = []
        for folder in track(folders, description=f"loading {split} scenes and labels", console=CONSOLE, transient=True):
            view_set = self.labeller.open_view_set(folder)
            if view_set.num_views < 2:
                warnings.warn(f"{folder}: only one image; skipped (a clip needs two overlapping views)")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                labels = self.labeller.label(view_set)
            scene = load_training_scene(view_set, labels, self.config.image_size, self.config.use_known_intrinsics)
            if split == "eval" and scene.gt_cam_to_world is None and self.config.eval_reference == "pycolmap":
                scene = self._with_colmap_reference(view_set, scene)
                if scene is None:
                    continue
            if (scene.overlap >= self.config.min_pair_matches).sum() == 0:
                warnings.warn(f"{folder}: no pair of views has {self.config.min_pair_matches} verified matches; skipped")
                continue
            loaded.append(scene)
        return loaded

    def _with_colmap_reference(self, view_set, scene: LoadedScene) -> Optional[LoadedScene]:
        """The held-out capture's registered views with pycolmap's poses as the reference, or None
        (reported) where pycolmap registers fewer than ``min_reference_views``."""
        from reliev3r_ns.eval.reference_cache import capture_reference

        reference = capture_reference(view_set, self.labeller.cache.root)
        registered = len(reference.views)
        if registered < max(2, self.config.min_reference_views):
            warnings.warn(f"{view_set.root}: pycolmap registered {registered} of {view_set.num_views} views; this held-out "
                          f"capture has no reference and is not scored (--pipeline.datamanager.min-reference-views {self.config.min_reference_views})")
            return None
        if registered < view_set.num_views:
            CONSOLE.print(f"{view_set.root.name}: scored on the {registered} of {view_set.num_views} views pycolmap registered")
        scene = subset_scene(scene, reference.views)
        scene.gt_cam_to_world = torch.from_numpy(reference.cam_to_world).float()
        scene.metadata["reference"] = "pycolmap"
        return scene

    # ----------------------------------------------------------------------------------- sampling
    def sample_clip_views(self, scene: LoadedScene, count: int, rng: random.Random) -> List[int]:
        return sample_clip_views(scene, count, rng, self.config.min_pair_matches)

    def make_batch(self, scenes: List[LoadedScene], views: List[List[int]]) -> Dict:
        return collate_clips(scenes, views, self.device)

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
        return self.fixed_clip(self.eval_dataset.scenes[index], index)

    def train_clip(self, index: int) -> Dict:
        """A fixed clip of training scene ``index`` (what the viewer shows of the training data)."""
        return self.fixed_clip(self.train_dataset.scenes[index], index)

    def fixed_clip(self, scene: LoadedScene, seed: int) -> Dict:
        views = self.sample_clip_views(scene, self.config.eval_views, random.Random(seed))
        return self.make_batch([scene], [views])

    # ------------------------------------------------------------------------- checkpointed state
    # torch keeps a module's extra state in its state_dict, so the clip sampler's place travels in
    # nerfstudio's checkpoint: `ns-train reliev3r --load-dir` then draws the clips the uninterrupted
    # run would have. A checkpoint from before this was kept has no entry (nerfstudio loads the
    # pipeline's own keys with strict=False), and the sampler starts afresh as it did then.
    def get_extra_state(self) -> Dict:
        return {"train_rng": self.rng.getstate(), "eval_rng": self.eval_rng.getstate(), "train_count": self.train_count,
                "eval_count": self.eval_count, "world_size": self.world_size}

    def set_extra_state(self, state: Dict) -> None:
        self.train_count, self.eval_count = state["train_count"], state["eval_count"]
        if state["world_size"] == 1 and self.world_size == 1:
            for rng, key in ((self.rng, "train_rng"), (self.eval_rng, "eval_rng")):
                version, internal, gauss = state[key]  # lists after a round trip through some loaders
                rng.setstate((version, tuple(internal), gauss))
        else:
            # Only rank 0's sampler was saved: each rank restarts its own from the seed and the step
            # reached, so ranks keep drawing different clips (not the uninterrupted run's).
            self.rng = random.Random(f"{self.config.seed}/{self.local_rank}/{self.train_count}")

    def get_train_rays_per_batch(self) -> int:
        # nerfstudio's throughput counter counts rays; ours counts views.
        return self.config.clips_per_batch * self.config.max_views

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_views

    def get_datapath(self) -> Path:
        return self.config.data or Path(".")

    def get_param_groups(self) -> Dict:
        return {}
