"""CoTracker point tracks as matches, computed in-process (the paper's correspondence labels).

CoTracker is loaded the way its users load it, through torch.hub::

    torch.hub.load("facebookresearch/co-tracker", "cotracker3_offline")

``--cotracker.repo`` is that repo id (fetched once into torch.hub's cache when online, its weights
from the Hugging Face hub by its hubconf) or a local checkout holding ``hubconf.py`` (offline). A repo
id that is not in torch.hub's cache while offline (HF_HUB_OFFLINE=1) is an error that says how to get it.

A view set's frames are resized to ``max_side`` (CoTracker trains at 384x512) and tracked jointly. A
grid of ``grid_size`` x ``grid_size`` queries is laid on every ``query_every``-th view and tracked
forwards and backwards, so content that appears late in a sequence gets tracks too. The tracks visible in
both views of a pair become that pair's candidate matches, mapped back to the images' pixels and
verified by the same MAGSAC check as SIFT. A pair's cache key is its two images, as for every matcher:
tracks reach a pair through its neighbours, but what is stored stays a correspondence set of those two
images. CoTracker's predictor scales query and track coordinates with ``align_corners=True`` (pixel
centres at integers, as in this project), so ``pixel_centre_offset`` is 0 by default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.geometry import scale_pixels
from reliev3r_ns.teachers.depth import TeacherError, hub_offline, weights_fingerprint
from reliev3r_ns.teachers.sift import VERIFICATION, verify_matches

Match = Tuple[np.ndarray, np.ndarray, np.ndarray]


class TrackerError(TeacherError):
    pass


@dataclass
class CoTrackerMatcherConfig:
    repo: str = "facebookresearch/co-tracker"
    """torch.hub repo id (owner/name[:ref]) or a local checkout with hubconf.py."""
    model: str = "cotracker3_offline"
    """The hubconf entry point."""
    device: str = "auto"
    max_side: int = 512
    """Longest side of the frames given to the tracker."""
    grid_size: int = 20
    """Queries per query view: a grid_size x grid_size grid."""
    query_every: int = 8
    """A query grid on every this-many-th view (and on the last)."""
    pixel_centre_offset: float = 0.0
    ransac_threshold_px: float = 1.0
    """MAGSAC inlier threshold for the fundamental matrix, in pixels of the original image."""
    min_matches: int = 16
    max_matches_per_pair: int = 2048


def _hub_checkout(repo: str) -> Path:
    """Where torch.hub keeps a repo id it has fetched (owner_name_ref, ref 'main' by default)."""
    name, _, ref = repo.partition(":")
    owner, _, project = name.partition("/")
    return Path(torch.hub.get_dir()) / f"{owner}_{project}_{ref or 'main'}"


def load_tracker(config: CoTrackerMatcherConfig):
    local = Path(config.repo).expanduser()
    if not local.is_dir() and _hub_checkout(config.repo).is_dir():
        local = _hub_checkout(config.repo)
    how = (f"run `torch.hub.load('{config.repo}', '{config.model}')` once where there is network, or clone "
           f"https://github.com/{config.repo.partition(':')[0]} and pass the folder as --cotracker.repo")
    try:
        if local.is_dir():
            if not (local / "hubconf.py").is_file():
                raise TrackerError(f"{local}: no hubconf.py; --cotracker.repo takes a CoTracker checkout or a torch.hub repo id")
            return torch.hub.load(str(local), config.model, source="local")
        if hub_offline():
            raise TrackerError(f"{config.repo} is not in torch.hub's cache ({torch.hub.get_dir()}) and HF_HUB_OFFLINE is set: {how}")
        return torch.hub.load(config.repo, config.model, trust_repo=True, skip_validation=True)
    except TrackerError:
        raise
    except Exception as error:  # noqa: BLE001 - network, a missing entry point or weights: all need the same advice
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrackerError(f"cannot load CoTracker {config.model!r} from {config.repo} ({message}): {how}") from None


class CoTrackerMatcher:
    """The matcher interface the label pipeline uses, for matchers that see a whole view set at once."""

    name = "cotracker"
    match_from_view_set = True

    def __init__(self, config: CoTrackerMatcherConfig = CoTrackerMatcherConfig()) -> None:
        from reliev3r_ns.model.ffrm import resolve_device

        self.config = config
        self.device = torch.device(resolve_device(config.device))
        self.tracker = load_tracker(config).to(self.device).eval()
        self._tracked: Tuple[object, Tuple[np.ndarray, np.ndarray]] = (None, None)

    def description(self) -> dict:
        return {"matcher": self.name, "verification": VERIFICATION, "weights": weights_fingerprint(self.tracker),
                **{k: v for k, v in asdict(self.config).items() if k != "device"}}

    def item_files(self, view_set, index: int) -> List[Path]:
        return [view_set.image_paths[index]]

    def query_views(self, V: int) -> List[int]:
        return sorted(set(range(0, V, max(1, self.config.query_every))) | {V - 1})

    @torch.no_grad()
    def track(self, view_set) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
        """(T, V, 2) track positions in the images' pixels, (T, V) visibility, and the image size (H, W)."""
        frames = [view_set.load_image(i) for i in range(view_set.num_views)]
        H, W = frames[0].shape[:2]
        if any(f.shape[:2] != (H, W) for f in frames):
            raise TrackerError(f"{view_set.root}: CoTracker tracks views of one size; these differ")
        scale = min(1.0, self.config.max_side / max(H, W))
        h, w = max(8, round(H * scale)), max(8, round(W * scale))
        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().to(self.device)  # (V, 3, H, W) in [0, 255]
        if (h, w) != (H, W):
            video = F.interpolate(video, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        n = self.config.grid_size
        ys, xs = torch.meshgrid((torch.arange(n) + 0.5) * (h / n) - 0.5, (torch.arange(n) + 0.5) * (w / n) - 0.5, indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], -1)
        queries = torch.cat([torch.cat([torch.full((n * n, 1), float(t)), grid], 1) for t in self.query_views(len(frames))])
        tracks, visible = self.tracker(video[None], queries=queries[None].to(self.device), backward_tracking=True)  # (1, V, T, 2), (1, V, T)
        tracks = tracks[0].float().cpu() - self.config.pixel_centre_offset
        tracks = scale_pixels(tracks, W / w, H / h)  # back to the images' pixels
        return tracks.permute(1, 0, 2).numpy(), visible[0].bool().cpu().permute(1, 0).numpy(), (H, W)

    def match_views(self, view_set, i: int, j: int, keys) -> Match:
        """Verified matches of views i and j; the view set is tracked once, on its first pair."""
        if self._tracked[0] is not view_set:
            tracks, visible, (H, W) = self.track(view_set)
            inside = (tracks[..., 0] >= -0.5) & (tracks[..., 0] <= W - 0.5) & (tracks[..., 1] >= -0.5) & (tracks[..., 1] <= H - 0.5)
            self._tracked = (view_set, (tracks, visible & inside & np.isfinite(tracks).all(-1)))
        tracks, visible = self._tracked[1]
        both = visible[:, i] & visible[:, j]
        return verify_matches(tracks[both, i], tracks[both, j], np.ones(int(both.sum()), np.float32),
                              self.config.ransac_threshold_px, self.config.min_matches, self.config.max_matches_per_pair)
