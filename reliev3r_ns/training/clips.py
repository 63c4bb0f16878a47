"""Clips of views from one scene, with weak labels and (when the scene has it) GT, as tensors.

Shared by the training datamanager and test-time refinement; no nerfstudio import here (nerfstudio
imports our dataparser while its own datamanager module is still loading).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.geometry import scale_intrinsics, scale_pixels
from reliev3r_ns.labels import SceneLabels, ViewSet
from reliev3r_ns.losses import Matches


@dataclass
class LoadedScene:
    name: str
    images: torch.Tensor  # (N, 3, H, W) uint8; batches carry them as float in [0, 1]
    teacher: torch.Tensor  # (N, H, W)
    teacher_space: str
    overlap: np.ndarray  # (N, N) verified matches per pair
    matches: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    intrinsics: Optional[torch.Tensor] = None  # (N, 3, 3) OpenCV at the training size
    gt_cam_to_world: Optional[torch.Tensor] = None  # (N, 4, 4) OpenCV
    gt_depth: Optional[torch.Tensor] = None  # (N, H, W)
    metadata: Dict = field(default_factory=dict)  # the scene's scene.json (synthetic scenes: seed, trajectory kind)


def load_training_scene(view_set: ViewSet, labels: SceneLabels, image_size: Tuple[int, int], use_known_intrinsics: bool = True) -> LoadedScene:
    """Images, teacher maps, matches (and GT when the view set has it) resized to ``image_size`` (H, W)."""
    H, W = image_size
    # One image at a time, kept as 8-bit at the training size: a few hundred captures of a few hundred
    # frames each then hold 0.35 MB per view at 294x392, never a capture's full-size images at once.
    images = torch.empty((view_set.num_views, 3, H, W), dtype=torch.uint8)
    for i in range(view_set.num_views):
        image = torch.from_numpy(view_set.load_image(i)).permute(2, 0, 1)[None].float()
        if i and tuple(image.shape[-2:]) != (h0, w0):
            raise SceneFormatError(f"{view_set.image_paths[i]}: {image.shape[-1]}x{image.shape[-2]}, unlike the scene's first image "
                                   f"({w0}x{h0}); training scenes need one image size (split the folder)")
        h0, w0 = image.shape[-2:]
        resized = F.interpolate(image, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        images[i] = resized[0].round().clamp(0, 255).to(torch.uint8)
    sx, sy = W / w0, H / h0
    teacher = F.interpolate(torch.from_numpy(labels.teacher)[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]

    def scale_uv(uv: np.ndarray) -> torch.Tensor:
        return scale_pixels(torch.from_numpy(uv.astype(np.float32)), sx, sy)

    matches = {pair: (scale_uv(m[0]), scale_uv(m[1]), torch.from_numpy(m[2].astype(np.float32))) for pair, m in labels.matches.items()}
    scene = LoadedScene(view_set.root.name, images, teacher, labels.teacher_space, labels.overlap(), matches)
    nerfstudio_scene = view_set.scene  # None for an image folder: no intrinsics, no GT
    if nerfstudio_scene is not None:
        K = torch.from_numpy(nerfstudio_scene.intrinsics).float()
        if use_known_intrinsics:
            scene.intrinsics = scale_intrinsics(K, sx, sy)
        scene.gt_cam_to_world = torch.from_numpy(nerfstudio_scene.cam_to_world).float()
        scene.metadata = dict(nerfstudio_scene.metadata)
        if nerfstudio_scene.has_depth:
            depth = torch.from_numpy(nerfstudio_scene.load_depths())[:, None]
            scene.gt_depth = F.interpolate(depth, size=(H, W), mode="nearest")[:, 0]
    return scene


def subset_scene(scene: LoadedScene, views: List[int]) -> LoadedScene:
    """The scene restricted to ``views`` (in that order), its matches renumbered."""
    position = {v: k for k, v in enumerate(views)}
    index = torch.as_tensor(views, dtype=torch.long)
    pick = lambda x: None if x is None else x[index]  # noqa: E731
    matches = {(position[a], position[b]): m for (a, b), m in scene.matches.items() if a in position and b in position}
    return LoadedScene(scene.name, scene.images[index], scene.teacher[index], scene.teacher_space, scene.overlap[np.ix_(views, views)],
                       matches, pick(scene.intrinsics), pick(scene.gt_cam_to_world), pick(scene.gt_depth), dict(scene.metadata))


def sample_clip_views(scene: LoadedScene, count: int, rng: random.Random, min_pair_matches: int) -> List[int]:
    """Up to ``count`` views connected by >= min_pair_matches matches, grown from a random anchor."""
    connected = scene.overlap >= min_pair_matches
    candidates_anchor = [i for i in range(len(connected)) if connected[i].any()]
    if not candidates_anchor:
        raise SceneFormatError(f"{scene.name}: no pair of views shares {min_pair_matches} verified matches")
    chosen = [rng.choice(candidates_anchor)]
    while len(chosen) < count:
        frontier = sorted({int(j) for i in chosen for j in np.nonzero(connected[i])[0]} - set(chosen))
        if not frontier:
            break
        chosen.append(rng.choice(frontier))
    return chosen


def collate_clips(scenes: List[LoadedScene], views: List[List[int]], device) -> Dict:
    """Stack clips (same number of views each) into one batch on ``device``."""
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
    ).to(device)
    batch = {
        "images": torch.stack([s.images[v] for s, v in zip(scenes, views)]).to(device).float() / 255,
        "teacher": torch.stack([s.teacher[v] for s, v in zip(scenes, views)]).to(device),
        "teacher_space": scenes[0].teacher_space,
        "matches": matches,
        "intrinsics": None,
        "scene_names": [s.name for s in scenes],
        "views": V,
    }
    if all(s.intrinsics is not None for s in scenes):
        batch["intrinsics"] = torch.stack([s.intrinsics[v] for s, v in zip(scenes, views)]).to(device)
    if all(s.gt_cam_to_world is not None for s in scenes):
        batch["gt_cam_to_world"] = torch.stack([s.gt_cam_to_world[v] for s, v in zip(scenes, views)]).to(device)
    if all(s.gt_depth is not None for s in scenes):
        batch["gt_depth"] = torch.stack([s.gt_depth[v] for s, v in zip(scenes, views)]).to(device)
    return batch
