"""Refine a capture's cameras and depth with Reliev3R's weak losses, on explicit per-view parameters.

No weights are trained and nothing is downloaded: the signal is the capture's own verified SIFT
matches (:mod:`reliev3r_ns.process.matching`) through the angular reprojection loss, and a frozen
relative-depth teacher (a user's depth model when given, else the FFRM's own first depth
prediction) through the ambiguity-aware relative depth loss: L = w_d L_depth + w_r L_reprojection.

Unknowns, per view v (the parametrisation that recovered poses from ~17 to ~1 degree in
``docs/tools/experiment_weak_losses_direct.py``):
  - the pose: a rotation update (axis-angle, left-multiplied) and the camera centre; the first view
    of the group is the gauge and stays fixed;
  - the focal length: one log-factor per camera (views of one image size share a camera, as
    COLMAP's ``CameraMode.AUTO`` groups them), principal point at the image centre;
  - the depth: the teacher's map T_v times exp(log scale_v + a coarse bicubic correction grid), so
    the depth keeps the teacher's shape up to a smooth factor;
  - each matched keypoint's depth may leave that map by a factor exp(offset_k), pulled back by a
    Cauchy prior (``keypoint_prior_weight``): fine structure the coarse grid cannot follow.

Where to start: the FFRM's own cameras, or cameras chained along the maximum spanning tree of the
match graph from two-view essential matrices (with the FFRM's focal lengths, translation scales
from its depth), whichever explains the matches better (median angular error), so a poor checkpoint
on real photos does not leave the refinement in the wrong basin, and a good one is kept.

Everything is OpenCV (:mod:`reliev3r_ns.geometry.conventions`); pixels are each image's own
full-size pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.geometry import axis_angle_to_rotation, invert_pose, make_pose
from reliev3r_ns.losses.relative_depth import relative_depth_loss
from reliev3r_ns.losses.reprojection import angle_between, robust
from reliev3r_ns.process.matching import MatchGraph

Tensor = torch.Tensor


@dataclass
class ViewRefineConfig:
    steps: int = 400
    """Adam steps on the explicit per-view parameters (0: off)."""
    depth_weight: float = 1.0
    """Weight of the relative depth loss against the frozen teacher."""
    reprojection_weight: float = 0.5
    """Weight of the angular reprojection loss (Reliev3R's 0.5)."""
    scale_pixels: float = 1.0
    """Cauchy scale of the angular residual, in pixels of the camera it is measured at, as SIFT saw
    the image (at most ``MatchingConfig.max_side``; a SIFT match is good to about a pixel there). The angle is multiplied by that camera's focal length: a bare angle
    shrinks as the focal length grows, so minimising it drifts every focal length upwards (the field
    of view narrows, all angles get smaller); in pixels it measures what COLMAP's bundle adjustment does."""
    keypoint_prior_weight: float = 0.1
    """Pull of each matched keypoint's depth back onto its view's depth map."""
    grid_cells: int = 8
    """Cells across the longer side of each view's coarse depth correction."""
    refine_focal: bool = True
    lr_rotation: float = 3e-3
    lr_translation: float = 1e-2
    """In units of the scene's median depth."""
    lr_depth: float = 1e-2
    lr_focal: float = 1e-2
    focal_init: str = "search"
    """Starting focal length: 'search' (a short refinement from the network's focal length and from
    each of ``focal_search``, then the full one from the start whose matches reproject clearly
    better than from COLMAP's prior, in pixels and in angle; see ``focal_search_margin``), 'prior' (COLMAP's guess without EXIF: 1.2 x the longer image side, a
    45 degree view), 'ffrm' (the network's prediction; right for a network trained on real photos),
    'wide' (0.5 x the longer side, 90 degrees) or a number of pixels for the longer side. The
    refinement moves a focal length only a little from where it starts (on few views or forward
    motion the matches barely tell focal lengths apart, and each start has its own basin), hence
    the search. EXIF focal lengths, where a photo has one, are passed in by the caller and win over
    all of these."""
    focal_search: Tuple[float, ...] = (0.5, 0.65, 0.85, 1.2, 1.6, 2.2)
    """'search' tries these focal lengths, as multiples of the longer image side (90, 75, 61, 45,
    35 and 26 degrees across it), and the network's."""
    focal_search_steps: int = 100
    """Steps of each trial of the search."""
    focal_search_margin: float = 0.85
    """The search keeps COLMAP's prior (1.2 x the longer side) unless another start's median match
    error is below this fraction of the prior's both in pixels and in angle (see docs/real_captures.md:
    on valley the starts differ by hundredths of a pixel; on room the prior's basin is 6x worse)."""
    initialisation: str = "best"
    """'best' (the FFRM's cameras or two-view chaining, whichever fits the matches better), 'ffrm', 'two-view'."""
    patience: int = 60
    """Stop when the loss has not improved by 1e-5 (relative) for this many steps (after the first quarter)."""
    max_matches_per_pair: int = 256
    max_matches: int = 60_000
    """All pairs together keep at most about this many matches (each pair its most confident share):
    a step's cost grows with the matches, the poses' accuracy hardly beyond a few hundred per pair."""
    seed: int = 0

    def validate(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refine view steps={self.steps} must be >= 0")
        if self.initialisation not in ("best", "ffrm", "two-view"):
            raise ValueError(f"refine initialisation={self.initialisation!r}: choose best, ffrm or two-view")
        for name in ("depth_weight", "reprojection_weight", "keypoint_prior_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"refine {name}={getattr(self, name)} must be >= 0")
        if not self.scale_pixels > 0 or self.grid_cells < 1:
            raise ValueError("refine scale_pixels must be > 0 and grid_cells >= 1")
        if self.focal_init not in ("search", "prior", "ffrm", "wide"):
            try:
                if not float(self.focal_init) > 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"refine focal_init={self.focal_init!r}: choose search, prior, ffrm, wide or a focal length in pixels") from None
        if not self.focal_search or not all(f > 0 for f in self.focal_search) or self.focal_search_steps < 1:
            raise ValueError("refine focal_search needs focal lengths > 0 and focal_search_steps >= 1")
        if not 0 < self.focal_search_margin <= 1:
            raise ValueError(f"refine focal_search_margin={self.focal_search_margin} must be in (0, 1]")


@dataclass
class ViewRefineResult:
    cam_to_world: np.ndarray  # (N, 4, 4) float64 OpenCV
    intrinsics: np.ndarray  # (N, 3, 3) float64 at each image's full size
    depth: List[np.ndarray]  # per view, at its input depth map's size
    initialisation: str
    steps: int
    loss_before: float
    loss_after: float
    median_error_px_before: float
    median_error_px_after: float
    curve: List[float]
    view_error_px: np.ndarray  # (N,) median error of the matches each view takes part in, after, in matching pixels
    median_angle_after: float = math.nan  # radians: the same matches' median angular error
    focal_start: str = ""  # the focal_init the final refinement started from
    focal_trials: Optional[Dict[str, Dict[str, float]]] = None  # focal_init='search': each start's median match error after its trial


# ---------------------------------------------------------------------------------- observations
@dataclass
class _Observations:
    view: Tensor  # (P,) long
    keypoint: Tensor  # (P,) long, index into the view's keypoints
    uv: Tensor  # (P, 2) full-size pixels
    teacher: Tensor  # (P,) teacher depth at the keypoint
    match_a: Tensor  # (M,) observation index of each match's first side
    match_b: Tensor  # (M,) second side
    confidence: Tensor  # (M,)

    @functools.cached_property
    def view_a(self) -> Tensor:
        return self.view[self.match_a]

    @functools.cached_property
    def view_b(self) -> Tensor:
        return self.view[self.match_b]

    @functools.cached_property
    def _teacher_table(self) -> Dict[Tuple[int, int], float]:
        return {(v, k): t for v, k, t in zip(self.view.tolist(), self.keypoint.tolist(), self.teacher.tolist())}

    def teacher_at(self, view: int, keypoints: np.ndarray) -> np.ndarray:
        """The teacher's depth at matched keypoints of one view."""
        return np.array([self._teacher_table.get((view, int(k)), float("nan")) for k in keypoints])


def _sample_map(depth: np.ndarray, uv: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear values of a (h, w) map at full-size pixels uv of an image of size (H, W)."""
    h, w = depth.shape
    H, W = size_hw
    x = np.clip((uv[:, 0] + 0.5) * w / W - 0.5, 0, w - 1)
    y = np.clip((uv[:, 1] + 0.5) * h / H - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    return ((1 - fy) * ((1 - fx) * depth[y0, x0] + fx * depth[y0, x1]) + fy * ((1 - fx) * depth[y1, x0] + fx * depth[y1, x1]))


def _observations(graph: MatchGraph, teacher: Sequence[np.ndarray], sizes: Sequence[Tuple[int, int]], max_per_pair: int) -> _Observations:
    index: Dict[Tuple[int, int], int] = {}
    views, keypoints = [], []

    def obs(view: int, keypoint: int) -> int:
        key = (view, keypoint)
        if key not in index:
            index[key] = len(views)
            views.append(view)
            keypoints.append(keypoint)
        return index[key]

    a, b, conf = [], [], []
    for pair in graph.pairs:
        keep = np.argsort(-pair.confidence, kind="stable")[:max_per_pair]
        for k in keep:
            a.append(obs(pair.i, int(pair.keypoints_i[k])))
            b.append(obs(pair.j, int(pair.keypoints_j[k])))
            conf.append(float(pair.confidence[k]))
    views_np = np.asarray(views, np.int64)
    uv = np.zeros((len(views), 2))
    t = np.zeros(len(views))
    for v in range(graph.num_views):
        sel = np.nonzero(views_np == v)[0]
        if len(sel):
            uv[sel] = graph.keypoints[v][np.asarray(keypoints)[sel]]
            t[sel] = _sample_map(teacher[v], uv[sel], sizes[v])
    return _Observations(torch.from_numpy(views_np), torch.tensor(keypoints, dtype=torch.long), torch.from_numpy(uv), torch.from_numpy(t), torch.tensor(a, dtype=torch.long),
                         torch.tensor(b, dtype=torch.long), torch.tensor(conf, dtype=torch.float64))


def _rays(uv: Tensor, K: Tensor) -> Tensor:
    """Camera-frame rays with z = 1 of pixels uv (P, 2) under per-observation intrinsics (P, 3, 3)."""
    x = (uv[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (uv[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], -1)


def _angular_errors(world: Tensor, centres: Tensor, obs: _Observations) -> Tuple[Tensor, Tensor]:
    """Reliev3R's residual at both ends of every match: the angle at camera centre t_a between the
    two lifted points, and at t_b (radians, each (M,))."""
    p_a, p_b = world[obs.match_a], world[obs.match_b]
    t_a, t_b = centres[obs.view_a], centres[obs.view_b]
    return angle_between(p_a - t_a, p_b - t_a), angle_between(p_b - t_b, p_a - t_b)


# ------------------------------------------------------------------------------- initialisation
def two_view_chain(graph: MatchGraph, intrinsics: np.ndarray, obs: _Observations, root: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Cameras from two-view geometry along the maximum spanning tree of the match graph.

    Each tree edge (placed view i, new view j) gives the relative rotation and translation direction
    from the essential matrix of the pair's matches (MAGSAC, the given focal lengths); the
    translation's length makes the triangulated points' depths in view i agree with view i's depth
    scale. Returns (cam_to_world (N, 4, 4), per-view depth scale (N,) applied to the teacher)."""
    import cv2

    N = graph.num_views
    world_to_cam = np.tile(np.eye(4), (N, 1, 1))
    scale = np.ones(N)
    placed = {root}
    edges = sorted(graph.pairs, key=lambda p: -len(p.confidence))
    progress = True
    while progress and len(placed) < N:
        progress = False
        for pair in edges:
            if (pair.i in placed) == (pair.j in placed):
                continue
            i, j, ki, kj = (pair.i, pair.j, pair.keypoints_i, pair.keypoints_j) if pair.i in placed else (pair.j, pair.i, pair.keypoints_j, pair.keypoints_i)
            uv_i, uv_j = graph.keypoints[i][ki].astype(np.float64), graph.keypoints[j][kj].astype(np.float64)
            n_i = cv2.undistortPoints(uv_i[:, None], intrinsics[i], None)[:, 0]
            n_j = cv2.undistortPoints(uv_j[:, None], intrinsics[j], None)[:, 0]
            focal = 0.5 * (intrinsics[i][0, 0] + intrinsics[j][0, 0])
            E, mask = cv2.findEssentialMat(n_i, n_j, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=1.0 / focal)
            if E is None or E.shape != (3, 3):
                continue
            _, R, t, mask, points = cv2.recoverPose(E, n_i, n_j, np.eye(3), distanceThresh=1e4, mask=mask)
            good = mask.ravel() > 0
            if good.sum() < 8:
                continue
            X = points[:3, good] / points[3:, good]  # in view i's camera frame, unit baseline
            in_front = X[2] > 0
            if in_front.sum() < 5:
                continue
            target = scale[i] * obs.teacher_at(i, ki[good][in_front])
            ratio = target / X[2, in_front]
            ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
            s = float(np.median(ratio)) if len(ratio) else 1.0
            relative = np.eye(4)
            relative[:3, :3], relative[:3, 3] = R, t.ravel() * s
            world_to_cam[j] = relative @ world_to_cam[i]
            X_j = (R @ (X[:, in_front] * s) + t * s)[2]
            T_j = obs.teacher_at(j, kj[good][in_front])
            r = X_j / np.maximum(T_j, 1e-12)
            r = r[np.isfinite(r) & (r > 0)]
            scale[j] = float(np.median(r)) if len(r) else scale[i]
            placed.add(j)
            progress = True
    cam_to_world = invert_pose(torch.from_numpy(world_to_cam)).numpy()
    return cam_to_world, scale


def _spread_offsets(uv: np.ndarray, offsets: np.ndarray, size_hw: Tuple[int, int], map_hw: Tuple[int, int]) -> np.ndarray:
    """The matched keypoints' own log-depth offsets spread onto a (h, w) map by normalised Gaussian
    convolution (sigma 1/64 of the longer side), fading to 0 away from any keypoint: the written
    depth maps then agree with the refined geometry where the matches are, and stay the smooth
    teacher-shaped maps elsewhere."""
    import cv2

    h, w = map_hw
    H, W = size_hw
    value, weight = np.zeros((h, w)), np.zeros((h, w))
    if len(uv):
        x = np.clip(np.rint((uv[:, 0] + 0.5) * w / W - 0.5), 0, w - 1).astype(np.int64)
        y = np.clip(np.rint((uv[:, 1] + 0.5) * h / H - 0.5), 0, h - 1).astype(np.int64)
        np.add.at(value, (y, x), offsets)
        np.add.at(weight, (y, x), 1.0)
    sigma = max(h, w) / 64.0
    value, weight = cv2.GaussianBlur(value, (0, 0), sigma), cv2.GaussianBlur(weight, (0, 0), sigma)
    peak = 1.0 / (2.0 * math.pi * sigma * sigma)  # one keypoint's weight at its own pixel
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(weight > 1e-12, value / weight, 0.0)
    return mean * np.minimum(1.0, weight / (0.5 * peak))


# ------------------------------------------------------------------------------------- refinement
def refine_views(
    graph: MatchGraph,
    image_sizes: Sequence[Tuple[int, int]],
    cam_to_world: np.ndarray,
    intrinsics: np.ndarray,
    teacher_depth: Sequence[np.ndarray],
    config: ViewRefineConfig = ViewRefineConfig(),
    initial_depth: Optional[Sequence[np.ndarray]] = None,
    exif_focal: Optional[Sequence[Optional[float]]] = None,
    progress: Optional[Callable[[int, int, float], None]] = None,
) -> ViewRefineResult:
    """Refine the cameras and depth of one connected group of views (see :func:`_refine_views`);
    with ``focal_init='search'`` after a short trial from each starting focal length."""
    config.validate()
    args = (graph, image_sizes, cam_to_world, intrinsics, teacher_depth)
    if config.focal_init != "search" or (exif_focal is not None and all(exif_focal)):
        return _refine_views(*args, config, initial_depth, exif_focal, progress)
    trial_steps = max(1, min(config.focal_search_steps, config.steps))
    longest = max(max(size) for size in image_sizes)
    prior = f"{1.2 * longest:g}"
    candidates = ["ffrm"] + [f"{fraction * longest:g}" for fraction in config.focal_search]
    candidates += [] if prior in candidates else [prior]
    total = len(candidates) * trial_steps + config.steps
    trials, angles = {}, {}
    for k, candidate in enumerate(candidates):
        trial = dataclasses.replace(config, focal_init=candidate, steps=trial_steps, patience=trial_steps)
        report = (lambda done, _, loss, k=k: progress(k * trial_steps + done, total, loss)) if progress else None
        outcome = _refine_views(*args, trial, initial_depth, exif_focal, report)
        trials[candidate], angles[candidate] = outcome.median_error_px_after, outcome.median_angle_after
    # A start beats COLMAP's prior only where its matches reproject clearly better both in image
    # pixels and in angle: a smaller focal length alone shrinks the pixel size of the same angular
    # errors (a moving subject's, say), a larger one alone shrinks the angles. The loss is no judge
    # (its depth term follows a teacher that favours no focal length).
    margin = config.focal_search_margin
    better = [c for c in candidates if trials[c] < margin * trials[prior] and angles[c] < margin * angles[prior]]
    best = min(better, key=trials.get) if better else prior
    report = (lambda done, _, loss: progress(len(candidates) * trial_steps + done, total, loss)) if progress else None
    result = _refine_views(*args, dataclasses.replace(config, focal_init=best), initial_depth, exif_focal, report)
    if best != prior and not result.median_error_px_after < trials[prior]:
        # The full run from the chosen start ended worse than the prior's short trial (its longer,
        # hotter schedule can leave a basin its trial had settled in): COLMAP's start after all.
        result = _refine_views(*args, dataclasses.replace(config, focal_init=prior), initial_depth, exif_focal, report)
    result.focal_trials = {c: {"median_px": trials[c], "median_angle_deg": math.degrees(angles[c])} for c in candidates}
    return result


def _refine_views(
    graph: MatchGraph,
    image_sizes: Sequence[Tuple[int, int]],
    cam_to_world: np.ndarray,
    intrinsics: np.ndarray,
    teacher_depth: Sequence[np.ndarray],
    config: ViewRefineConfig = ViewRefineConfig(),
    initial_depth: Optional[Sequence[np.ndarray]] = None,
    exif_focal: Optional[Sequence[Optional[float]]] = None,
    progress: Optional[Callable[[int, int, float], None]] = None,
) -> ViewRefineResult:
    """Refine the cameras and depth of one connected group of views.

    cam_to_world (N, 4, 4) and intrinsics (N, 3, 3) at each image's full size are the FFRM's;
    ``teacher_depth`` are per-view relative depth maps (any resolution, covering the whole image; the
    FFRM's own when no depth model is given), in depth space; ``initial_depth`` the FFRM's depth
    maps consistent with its cameras (default: the teacher's); ``exif_focal`` per view a focal length
    in pixels from the photo's EXIF, or None (it wins over ``config.focal_init``). Returns the refined cameras and the
    refined depth maps at the teacher maps' sizes."""
    config.validate()
    N = graph.num_views
    if N < 2 or not graph.pairs:
        raise ValueError("view refinement needs at least two views with verified matches between them")
    torch.manual_seed(config.seed)
    dtype = torch.float32  # ample for sub-pixel angles in a scene normalised to unit depth; twice as fast
    initial_depth = teacher_depth if initial_depth is None else initial_depth
    per_pair = max(32, min(config.max_matches_per_pair, config.max_matches // max(len(graph.pairs), 1)))
    obs = _observations(graph, teacher_depth, image_sizes, per_pair)
    init_obs = _observations(graph, initial_depth, image_sizes, per_pair)
    valid_teacher = torch.isfinite(obs.teacher) & (obs.teacher > 0)
    obs.teacher = torch.where(valid_teacher, obs.teacher, torch.ones_like(obs.teacher))
    # Real cameras have square pixels: start from one focal length per view (the FFRM's x and y ones
    # differ where the network input's patch rounding stretched the image), the image centre.
    K0 = torch.from_numpy(np.asarray(intrinsics, np.float64)).clone()
    focal0 = torch.sqrt(K0[:, 0, 0] * K0[:, 1, 1])
    longer = torch.tensor([float(max(size)) for size in image_sizes], dtype=torch.float64)
    if config.focal_init == "prior":
        focal0 = 1.2 * longer
    elif config.focal_init == "wide":
        focal0 = 0.5 * longer
    elif config.focal_init != "ffrm":
        focal0 = torch.full_like(focal0, float(config.focal_init)) * longer / longer.max()
    if exif_focal is not None:
        known = torch.tensor([f if f else math.nan for f in exif_focal], dtype=torch.float64)
        focal0 = torch.where(torch.isfinite(known), known, focal0)
    K0[:, 0, 0] = K0[:, 1, 1] = focal0
    K0[:, 0, 2] = torch.tensor([(W - 1) / 2.0 for _, W in image_sizes], dtype=torch.float64)
    K0[:, 1, 2] = torch.tensor([(H - 1) / 2.0 for H, _ in image_sizes], dtype=torch.float64)

    # Start: the FFRM's cameras (depth scale 1 on its own depth) or the two-view chain.
    ffrm_scale = np.ones(N)
    if initial_depth is not teacher_depth:  # the teacher differs: its scale to the FFRM's depth, per view
        for v in range(N):
            sel = (init_obs.view == v) & valid_teacher
            if sel.any():
                ffrm_scale[v] = float((init_obs.teacher[sel] / obs.teacher[sel]).median())
    starts = {}
    if config.initialisation in ("best", "ffrm"):
        starts["ffrm"] = (np.asarray(cam_to_world, np.float64), ffrm_scale)
    if config.initialisation in ("best", "two-view"):
        starts["two-view"] = two_view_chain(graph, K0.numpy(), obs)

    def median_error(c2w: np.ndarray, scale: np.ndarray) -> float:
        c2w_t = torch.from_numpy(c2w)
        rays = _rays(obs.uv, K0[obs.view])
        world = (c2w_t[obs.view, :3, :3] @ (rays * (obs.teacher * torch.from_numpy(scale)[obs.view])[:, None])[..., None])[..., 0] + c2w_t[obs.view, :3, 3]
        a, b = _angular_errors(world, c2w_t[:, :3, 3], obs)
        return float(torch.rad2deg(0.5 * (a + b)).median())

    scores = {name: median_error(*start) for name, start in starts.items()}
    chosen = min(scores, key=scores.get)
    start_c2w, start_scale = starts[chosen]
    obs = dataclasses.replace(obs, uv=obs.uv.to(dtype), teacher=obs.teacher.to(dtype), confidence=obs.confidence.to(dtype))
    K0 = K0.to(dtype)

    # Parameters. The scene's scale is fixed by the gauge view's depth scale.
    R0 = torch.from_numpy(start_c2w[:, :3, :3].copy()).to(dtype)
    centre_scale = float(np.median(start_scale * np.array([float(obs.teacher[obs.view == v].median()) if (obs.view == v).any() else 1.0 for v in range(N)])))
    centre_scale = centre_scale if math.isfinite(centre_scale) and centre_scale > 0 else 1.0
    c0 = (torch.from_numpy(start_c2w[:, :3, 3].copy()) / centre_scale).to(dtype)
    rotation = torch.zeros(N, 3, dtype=dtype, requires_grad=True)
    centre = c0.clone().requires_grad_(True)
    log_scale0 = torch.from_numpy(np.log(np.maximum(start_scale, 1e-12)) - math.log(centre_scale)).to(dtype)
    log_scale = log_scale0.clone().requires_grad_(True)
    gauge = torch.ones(N, 1, dtype=dtype)
    gauge[0] = 0.0
    camera_of = {}
    cameras = [camera_of.setdefault(tuple(s), len(camera_of)) for s in image_sizes]
    camera_index = torch.tensor(cameras)
    log_focal = torch.zeros(len(camera_of), dtype=dtype, requires_grad=config.refine_focal)
    # One coarse correction grid per view, cells laid out by the set's most common aspect ratio (a
    # portrait view's cells are just taller), so all views share one tensor and one call.
    H_c, W_c = max(set(image_sizes), key=list(image_sizes).count)
    cells = (max(1, round(config.grid_cells * H_c / max(H_c, W_c))), max(1, round(config.grid_cells * W_c / max(H_c, W_c))))
    grid = torch.zeros(N, 1, *cells, dtype=dtype, requires_grad=True)
    offsets = torch.zeros(len(obs.view), dtype=dtype, requires_grad=True)

    # Coarse teacher maps for the relative depth loss (it only sees the smooth correction).
    coarse_hw = (24, 32)
    coarse_teacher = torch.stack([F.interpolate(torch.from_numpy(np.asarray(t, np.float64))[None, None], size=coarse_hw, mode="area")[0, 0]
                                  for t in teacher_depth]).to(dtype)
    # Where each observation sits in its view's grid, as grid_sample coordinates (pixel centres, as
    # F.interpolate(align_corners=False) places them for the dense maps), padded into (N, most, 2).
    H_obs = torch.tensor([image_sizes[v][0] for v in obs.view.tolist()], dtype=dtype)
    W_obs = torch.tensor([image_sizes[v][1] for v in obs.view.tolist()], dtype=dtype)
    xy = torch.stack([(obs.uv[:, 0] + 0.5) / W_obs * 2 - 1, (obs.uv[:, 1] + 0.5) / H_obs * 2 - 1], -1)
    counts = torch.bincount(obs.view, minlength=N)
    order = torch.argsort(obs.view, stable=True)
    slot = torch.empty_like(obs.view)
    slot[order] = torch.arange(len(order)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    padded_xy = torch.zeros(N, 1, int(counts.max()), 2, dtype=dtype)
    padded_xy[obs.view, 0, slot] = xy

    from_centre = obs.uv - K0[obs.view, :2, 2]  # (P, 2) pixels from the principal point
    keypoint_scale = torch.tensor(graph.keypoint_scale or [1.0] * N, dtype=dtype)

    def smooth_at_observations() -> Tensor:
        sampled = F.grid_sample(grid, padded_xy, mode="bicubic", padding_mode="border", align_corners=False)  # (N, 1, 1, most)
        return sampled[obs.view, 0, 0, slot]

    def coarse_smooth() -> Tensor:
        return F.interpolate(grid, size=coarse_hw, mode="bicubic", align_corners=False)[:, 0]

    def scales() -> Tensor:  # the gauge view keeps its scale: it fixes the scene's
        return torch.where(gauge[:, 0].bool(), log_scale, log_scale0)

    def current() -> Tuple[Tensor, Tensor, Tensor]:
        rotations = axis_angle_to_rotation(rotation * gauge) @ R0
        centres = torch.where(gauge.bool(), centre, c0)
        K = K0.clone()
        focal = torch.exp(log_focal)[camera_index]
        K[:, 0, 0] = K0[:, 0, 0] * focal
        K[:, 1, 1] = K0[:, 1, 1] * focal
        return rotations, centres, K

    def lifted(rotations: Tensor, centres: Tensor, K: Tensor) -> Tensor:
        z = obs.teacher * torch.exp(scales()[obs.view] + smooth_at_observations() + offsets)
        # The principal point stays at the image centre: only the focal length moves the rays.
        f_obs = K[:, 0, 0][obs.view]
        cam = torch.cat([from_centre / f_obs[:, None], torch.ones_like(f_obs)[:, None]], -1) * z[:, None]
        return (rotations[obs.view] * cam[:, None, :]).sum(-1) + centres[obs.view]  # R @ x, elementwise: bmm of 3x3s is slow

    ones = torch.ones(1, N, *coarse_hw, dtype=dtype)

    def objective() -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        rotations, centres, K = current()
        a, b = _angular_errors(lifted(rotations, centres, K), centres, obs)
        angle = (0.5 * (a + b)).detach()
        focal = K[:, 0, 0]
        a = a * focal[obs.view_a]  # the angle in pixels of the camera it is measured at
        b = b * focal[obs.view_b]
        # ... and in pixels of the image as SIFT saw it, where a match is good to about one pixel
        # (a 6000-pixel photo described at 1024 is ~6 of its own pixels per SIFT pixel).
        a_m, b_m = a / keypoint_scale[obs.view_a], b / keypoint_scale[obs.view_b]
        weights = obs.confidence
        reprojection = (weights * 0.5 * (robust(a_m, "cauchy", config.scale_pixels) + robust(b_m, "cauchy", config.scale_pixels))).sum() / weights.sum()
        depth_map = coarse_teacher * torch.exp(coarse_smooth())
        depth_loss, _ = relative_depth_loss(depth_map[None], ones, coarse_teacher[None], "depth")
        prior = robust(offsets, "cauchy", 0.1).mean()
        loss = config.reprojection_weight * reprojection + config.depth_weight * depth_loss + config.keypoint_prior_weight * prior
        return loss, (0.5 * (a + b)).detach(), (0.5 * (a_m + b_m)).detach(), angle

    def median_px(error_px: Tensor) -> float:
        return float(error_px.median())

    with torch.no_grad():
        loss0, err0, _, _ = objective()
    groups = [{"params": [rotation], "lr": config.lr_rotation}, {"params": [centre], "lr": config.lr_translation},
              {"params": [log_scale, offsets, grid], "lr": config.lr_depth}]
    if config.refine_focal:
        groups.append({"params": [log_focal], "lr": config.lr_focal})
    curve: List[float] = []
    steps_done = 0
    optimiser = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(config.steps, 1), eta_min=0.0)
    best, since = float("inf"), 0
    parameters = [rotation, centre, log_scale, offsets, grid, log_focal]
    best_state = [p.detach().clone() for p in parameters]
    for step in range(config.steps):
        loss, _, _, _ = objective()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"view refinement loss became {float(loss)} at step {step}; lower the learning rates")
        if float(loss.detach()) < best:  # the parameters this loss was measured at, before the step
            best_state = [p.detach().clone() for p in parameters]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        value = float(loss.detach())
        curve.append(value)
        steps_done = step + 1
        if progress:
            progress(step + 1, config.steps, value)
        if value < best * (1 - 1e-5):
            best, since = value, 0
        else:
            since += 1
            if since >= config.patience and step >= config.steps // 4:
                break

    with torch.no_grad():
        # Early stopping keeps the best parameters seen, not the last: where the loss climbs out
        # of a good state (a start far from its basin, at the schedule's high learning rate), the
        # run returns that state.
        loss1, err1, err1_matching, angle1 = objective()
        if best < float(loss1):
            for p, saved in zip(parameters, best_state):
                p.copy_(saved)
            loss1, err1, err1_matching, angle1 = objective()
        view_error = np.array([float(err1_matching[(obs.view_a == v) | (obs.view_b == v)].median()) if ((obs.view_a == v) | (obs.view_b == v)).any()
                               else math.nan for v in range(N)])
        rotations, centres, K = current()
        c2w = make_pose(rotations.double(), centres.double() * centre_scale).numpy()
        depth_out = []
        for v in range(N):
            t = np.asarray(teacher_depth[v], np.float64)
            smooth = F.interpolate(grid[v:v + 1].double(), size=t.shape, mode="bicubic", align_corners=False)[0, 0].numpy()
            factor = math.exp(float(scales()[v])) * centre_scale
            sel = obs.view == v
            detail = _spread_offsets(obs.uv[sel].double().numpy(), offsets.detach()[sel].double().numpy(), image_sizes[v], t.shape)
            depth_out.append((t * np.exp(smooth + detail) * factor).astype(np.float32))
    return ViewRefineResult(c2w, K.double().numpy(), depth_out, chosen, steps_done, float(loss0), float(loss1), median_px(err0), median_px(err1), curve, view_error,
                            focal_start=config.focal_init, median_angle_after=float(angle1.median()))


def match_reprojection_errors(graph: MatchGraph, image_sizes: Sequence[Tuple[int, int]], cam_to_world: np.ndarray,
                              intrinsics: np.ndarray, depth: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel errors of every verified match under a reconstruction's cameras *and* depth: each side's
    keypoint is lifted with its own view's depth map and projected into the other view, where its
    distance to the matched keypoint is measured (both directions; (2M,), inf behind a camera).
    What a dataset's geometry says about the images' own correspondences, with no reference."""
    out = []
    world_to_cam = invert_pose(torch.from_numpy(np.asarray(cam_to_world, np.float64))).numpy()
    for pair in graph.pairs:
        uv = {pair.i: graph.keypoints[pair.i][pair.keypoints_i].astype(np.float64),
              pair.j: graph.keypoints[pair.j][pair.keypoints_j].astype(np.float64)}
        for src, dst in ((pair.i, pair.j), (pair.j, pair.i)):
            K = intrinsics[src]
            z = _sample_map(np.asarray(depth[src], np.float64), uv[src], image_sizes[src])
            cam = np.stack([(uv[src][:, 0] - K[0, 2]) / K[0, 0] * z, (uv[src][:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
            world = cam @ cam_to_world[src][:3, :3].T + cam_to_world[src][:3, 3]
            other = world @ world_to_cam[dst][:3, :3].T + world_to_cam[dst][:3, 3]
            Kd = intrinsics[dst]
            with np.errstate(divide="ignore", invalid="ignore"):
                projected = np.stack([Kd[0, 0] * other[:, 0] / other[:, 2] + Kd[0, 2], Kd[1, 1] * other[:, 1] / other[:, 2] + Kd[1, 2]], -1)
                error = np.linalg.norm(projected - uv[dst], axis=-1)
            out.append(np.where(other[:, 2] > 0, error, np.inf))
    return np.concatenate(out) if out else np.zeros(0)
