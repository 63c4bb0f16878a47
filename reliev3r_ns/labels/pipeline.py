"""Compute (or load) the weak labels of one view set: a teacher map per view, matches per pair.

Everything goes through the :class:`~reliev3r_ns.labels.cache.LabelCache`: what is there and valid
is loaded, what is missing is computed and written at once (file by file), so an interrupted run
loses at most the item in flight.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple

import numpy as np

from reliev3r_ns.data.scene_io import common_image_size
from reliev3r_ns.labels.cache import LabelCache, config_key, file_key
from reliev3r_ns.labels.pairs import PairSelectionConfig, select_pairs
from reliev3r_ns.labels.video_frames import DEFAULT_VIDEO_FRAMES
from reliev3r_ns.labels.view_sets import ViewSet, open_view_set
from reliev3r_ns.teachers.depth import (
    DepthTeacher,
    SimulatedDepthTeacher,
    TransformersDepthTeacher,
    TransformersDepthTeacherConfig,
)
from reliev3r_ns.teachers.cotracker import CoTrackerMatcherConfig
from reliev3r_ns.teachers.imported import ImportedMatcher, ImportedMatcherConfig
from reliev3r_ns.teachers.kornia_matchers import KorniaMatcherConfig
from reliev3r_ns.teachers.sift import SiftMatcher, SiftMatcherConfig
from reliev3r_ns.teachers.simulated import SimulatedDepthTeacherConfig, SimulatedMatcher, SimulatedMatcherConfig


MatcherName = Literal["sift", "kornia", "cotracker", "imported", "simulated"]


@dataclass
class PseudoLabelConfig:
    """Which teachers make the weak labels (and so which cache entries are used)."""

    depth_teacher: Literal["simulated", "transformers"] = "simulated"
    """'simulated' needs GT depth (synthetic scenes; experiments and tests only). 'transformers' is a real teacher."""
    transformers: TransformersDepthTeacherConfig = field(default_factory=TransformersDepthTeacherConfig)
    simulated: SimulatedDepthTeacherConfig = field(default_factory=SimulatedDepthTeacherConfig)
    simulated_seed: int = 0
    matcher: MatcherName = "sift"
    """'kornia': DISK + LightGlue or LoFTR, kornia's hub weights or local files (see --kornia.*, teachers/kornia_matchers.py).
    'cotracker': CoTracker tracks computed here, through torch.hub (see --cotracker.*, teachers/cotracker.py).
    'imported': tracks.npz / matches.npz made elsewhere (e.g. CoTracker), see teachers/imported.py.
    'simulated': GT correspondences with noise and outliers (synthetic scenes; experiments and tests only)."""
    sift: SiftMatcherConfig = field(default_factory=SiftMatcherConfig)
    kornia: KorniaMatcherConfig = field(default_factory=KorniaMatcherConfig)
    cotracker: CoTrackerMatcherConfig = field(default_factory=CoTrackerMatcherConfig)
    imported: ImportedMatcherConfig = field(default_factory=ImportedMatcherConfig)
    simulated_matches: SimulatedMatcherConfig = field(default_factory=SimulatedMatcherConfig)
    pairs: PairSelectionConfig = field(default_factory=PairSelectionConfig)
    video_frames: int = DEFAULT_VIDEO_FRAMES
    """Frames sampled (evenly, once, cached under <label cache>/frames) from each video under --data."""

    def build_depth_teacher(self) -> DepthTeacher:
        if self.depth_teacher == "simulated":
            return SimulatedDepthTeacher(self.simulated, self.simulated_seed)
        return TransformersDepthTeacher(self.transformers)

    def build_matcher(self):
        if self.matcher == "simulated":
            return SimulatedMatcher(self.simulated_matches)
        if self.matcher == "imported":
            return ImportedMatcher(self.imported)
        if self.matcher == "cotracker":
            from reliev3r_ns.teachers.cotracker import CoTrackerMatcher

            return CoTrackerMatcher(self.cotracker)
        if self.matcher == "kornia":
            from reliev3r_ns.teachers.kornia_matchers import KorniaMatcher

            return KorniaMatcher(self.kornia)
        return SiftMatcher(self.sift)


@dataclass
class SceneLabels:
    """Weak labels of one view set, all in that view set's image order."""

    root: Path
    teacher: np.ndarray  # (V, H, W) float32 in teacher_space
    teacher_space: str
    teacher_name: str
    pairs: List[Tuple[int, int]]
    matches: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]]  # (i, j) -> uv_i, uv_j, confidence

    @property
    def num_matches(self) -> int:
        return sum(len(m[2]) for m in self.matches.values())

    def overlap(self) -> np.ndarray:
        """(V, V) symmetric number of verified matches between views (for clip sampling)."""
        V = len(self.teacher)
        counts = np.zeros((V, V), np.int64)
        for (i, j), m in self.matches.items():
            counts[i, j] = counts[j, i] = len(m[2])
        return counts


class Labeller:
    """Holds the (possibly heavy) teachers once, labels many view sets."""

    def __init__(self, config: PseudoLabelConfig, cache: LabelCache) -> None:
        self.config = config
        self.cache = cache
        self.depth_teacher = config.build_depth_teacher()
        self.matcher = config.build_matcher()
        depth_description = self.depth_teacher.description()
        match_description = self.matcher.description()
        self.depth_key = config_key(depth_description)
        self.match_key = config_key(match_description)
        cache.describe("depth", self.depth_key, depth_description)
        cache.describe("matches", self.match_key, match_description)

    def open_view_set(self, scene: Path) -> ViewSet:
        """A scene under --data as a view set; a video's frames go to this cache's ``frames/`` folder."""
        return open_view_set(scene, self.cache.root / "frames", self.config.video_frames)

    def label(self, view_set: ViewSet, progress: Optional[Callable[[int, int], None]] = None) -> SceneLabels:
        """Load or compute every label of ``view_set``; ``progress(done, total)`` after each item."""
        V = view_set.num_views
        pairs = select_pairs(V, self.config.pairs) if V >= 2 else []
        if V < 2:
            warnings.warn(f"{view_set.root}: only one image; it gets a depth label but no matches")
        total, done = V + len(pairs), 0

        # Images: readable headers, one size. Headers only, so a fully cached scene is not decoded;
        # an unreadable file still fails before any work, a truncated one when a teacher decodes it
        # (before anything is written for it).
        size = common_image_size(view_set.image_paths, view_set.exif_transpose, where=view_set.root)
        image_keys = [file_key(self.matcher.item_files(view_set, i)) for i in range(V)]
        depth_keys = [file_key(self.depth_teacher.item_files(view_set, i)) for i in range(V)]

        teacher: List[Optional[np.ndarray]] = []
        for i in range(V):
            teacher.append(self.cache.load_depth(self.cache.depth_file(self.depth_key, depth_keys[i]), size))
        missing = [i for i in range(V) if teacher[i] is None]
        done += V - len(missing)
        if progress:
            progress(done, total)
        batch = getattr(getattr(self.depth_teacher, "config", None), "batch_size", 1) or 1
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            maps = self.depth_teacher.predict(view_set, chunk, [depth_keys[i] for i in chunk])
            for i, m in zip(chunk, maps):
                self.cache.save_depth(self.cache.depth_file(self.depth_key, depth_keys[i]), m, self.depth_teacher.space)
                teacher[i] = m
            done += len(chunk)
            if progress:
                progress(done, total)

        matches: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        features: Dict[int, object] = {}
        for i, j in pairs:
            path = self.cache.matches_file(self.match_key, image_keys[i], image_keys[j])
            data = self.cache.load_matches(path)
            if data is None:
                if getattr(self.matcher, "match_from_view_set", False):
                    uv_i, uv_j, conf = self.matcher.match_views(view_set, i, j, (image_keys[i], image_keys[j]))
                else:
                    for k in (i, j):
                        if k not in features:
                            features[k] = self.matcher.features(view_set.load_image(k))
                    uv_i, uv_j, conf = self.matcher.match(features[i], features[j])
                self.cache.save_matches(path, uv_i, uv_j, conf)
                data = {"uv_i": uv_i, "uv_j": uv_j, "confidence": conf}
            matches[(i, j)] = (data["uv_i"], data["uv_j"], data["confidence"])
            done += 1
            if progress:
                progress(done, total)
        return SceneLabels(view_set.root, np.stack(teacher), self.depth_teacher.space, self.depth_teacher.name, pairs, matches)
