"""Correspondences of a real capture, and which views see each other (its match graph).

Every view is described once with SIFT at a bounded working size (no weights needed); pairs are
matched with the ratio test, mutual nearest neighbours and a MAGSAC fundamental-matrix check
(:mod:`reliev3r_ns.teachers.sift`). Keypoints are kept per view, so a pair's match refers to keypoint
indices: the same keypoint matched in several pairs is one observation (what makes tracks).

Which pairs are matched: every pair for small sets (``exhaustive_up_to`` views, as COLMAP's
exhaustive matcher), otherwise each view's temporal neighbours (a video or walk-through) plus its
nearest views by a global descriptor of its thumbnail (an unordered collection), as COLMAP's
sequential + vocabulary-tree matching do.

The match graph then tells which views belong together: views in no verified pair overlap nothing
and are reported by name, as COLMAP leaves an image unregistered; only the largest connected group
is reconstructed. :func:`visual_order` walks the graph so that consecutive views see each other,
which is how windows of an unordered collection are made.

Pixels are OpenCV (x = column, y = row, (0, 0) the centre of the top-left pixel) in each image's own
full-size pixels, whatever size it was described at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from reliev3r_ns.teachers.sift import SiftFeatures, SiftMatcherConfig, extract_sift, match_sift


@dataclass
class MatchingConfig:
    max_side: int = 1024
    """Views are described at most this many pixels on their longest side (COLMAP's default is 3200;
    a phone photo's 4000 px add time, not accuracy, at the FFRM's resolution)."""
    sift: SiftMatcherConfig = field(default_factory=lambda: SiftMatcherConfig(max_features=4000, max_matches_per_pair=1024))
    exhaustive_up_to: int = 40
    """Sets of at most this many views match every pair; larger ones match neighbours only."""
    sequential_neighbours: int = 6
    """Larger sets: each view is matched with this many following views in file order."""
    retrieval_neighbours: int = 8
    """Larger sets: and with this many views whose thumbnails look most alike."""
    min_pair_matches: int = 16
    """A pair with fewer verified matches does not connect its views."""
    min_view_matches: int = 30
    """A view is placed only with at least this many verified matches to the other placed views
    (COLMAP's ``abs_pose_min_num_inliers``): one weak pair, e.g. matches on a repeated wallpaper
    pattern, would otherwise place a view wrongly with nothing to contradict it."""


@dataclass
class PairMatches:
    i: int
    j: int
    keypoints_i: np.ndarray  # (M,) indices into view i's keypoints
    keypoints_j: np.ndarray  # (M,) indices into view j's keypoints
    confidence: np.ndarray  # (M,) in (0, 1]


@dataclass
class MatchGraph:
    """Keypoints per view (full-size pixels) and the verified matches of every pair that has them."""

    keypoints: List[np.ndarray]  # per view (K_v, 2) float32
    pairs: List[PairMatches]
    num_views: int
    pairs_tried: int = 0
    keypoint_scale: Optional[List[float]] = None
    """Per view: full-size pixels per pixel of the image SIFT described (1 where it was not reduced)."""

    def neighbours(self) -> List[Dict[int, int]]:
        """Per view: {other view: number of verified matches}."""
        out: List[Dict[int, int]] = [dict() for _ in range(self.num_views)]
        for p in self.pairs:
            out[p.i][p.j] = out[p.j][p.i] = len(p.confidence)
        return out

    def components(self) -> List[List[int]]:
        """Connected groups of views, largest first (ties: lowest view first); isolated views are
        groups of one."""
        parent = list(range(self.num_views))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for p in self.pairs:
            parent[find(p.i)] = find(p.j)
        groups: Dict[int, List[int]] = {}
        for v in range(self.num_views):
            groups.setdefault(find(v), []).append(v)
        return sorted(groups.values(), key=lambda g: (-len(g), g[0]))

    def weakly_matched(self, min_view_matches: int) -> Dict[int, int]:
        """Views with fewer than ``min_view_matches`` verified matches to the others, found by
        dropping the weakest repeatedly (a view's count only includes views still kept): {view: count}."""
        kept = set(range(self.num_views))
        dropped: Dict[int, int] = {}
        while True:
            totals = {v: 0 for v in kept}
            for p in self.pairs:
                if p.i in kept and p.j in kept:
                    totals[p.i] += len(p.confidence)
                    totals[p.j] += len(p.confidence)
            weak = [v for v, n in totals.items() if n < min_view_matches]
            if not weak:
                return dropped
            worst = min(weak, key=lambda v: (totals[v], v))
            dropped[worst] = totals[worst]
            kept.discard(worst)

    def without(self, views: Sequence[int]) -> "MatchGraph":
        """The same views, with every pair that touches ``views`` removed (they become isolated)."""
        drop = set(views)
        return MatchGraph(self.keypoints, [p for p in self.pairs if p.i not in drop and p.j not in drop], self.num_views, self.pairs_tried,
                          self.keypoint_scale)

    def subset(self, views: Sequence[int]) -> "MatchGraph":
        """The graph restricted to ``views``, renumbered 0..len(views)-1 in the given order."""
        new = {v: k for k, v in enumerate(views)}
        pairs = []
        for p in self.pairs:
            if p.i in new and p.j in new:
                a, b = new[p.i], new[p.j]
                if a < b:
                    pairs.append(PairMatches(a, b, p.keypoints_i, p.keypoints_j, p.confidence))
                else:
                    pairs.append(PairMatches(b, a, p.keypoints_j, p.keypoints_i, p.confidence))
        scale = [self.keypoint_scale[v] for v in views] if self.keypoint_scale else None
        return MatchGraph([self.keypoints[v] for v in views], pairs, len(views), self.pairs_tried, scale)

    def num_matches(self) -> int:
        return int(sum(len(p.confidence) for p in self.pairs))


def _thumbnail_descriptor(image: np.ndarray, size: int = 16) -> np.ndarray:
    """A tiny global descriptor: the grey thumbnail, zero-mean and unit-norm, so views of the same
    place at the same exposure look alike (a stand-in for a vocabulary tree on small sets)."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / max(float(np.linalg.norm(small)), 1e-6)


def candidate_pairs(num_views: int, thumbnails: Optional[np.ndarray], config: MatchingConfig) -> List[Tuple[int, int]]:
    """Pairs (i < j) to match: all of them for small sets, else sequential + retrieval neighbours."""
    if num_views <= config.exhaustive_up_to:
        return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]
    pairs = set()
    for i in range(num_views):
        for j in range(i + 1, min(num_views, i + 1 + config.sequential_neighbours)):
            pairs.add((i, j))
    if thumbnails is not None and config.retrieval_neighbours > 0:
        similarity = thumbnails @ thumbnails.T
        np.fill_diagonal(similarity, -np.inf)
        for i in range(num_views):
            for j in np.argsort(-similarity[i])[: config.retrieval_neighbours]:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def _keypoint_indices(uv: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Which keypoint each matched position is (verification returns positions, not indices)."""
    lookup = {(float(x), float(y)): k for k, (x, y) in enumerate(keypoints)}
    return np.array([lookup[(float(x), float(y))] for x, y in uv], dtype=np.int64)


def build_match_graph(
    load_image: Callable[[int], np.ndarray],
    image_sizes: Sequence[Tuple[int, int]],
    config: MatchingConfig = MatchingConfig(),
    progress: Optional[Callable[[int, int], None]] = None,
) -> MatchGraph:
    """Describe every view (``load_image(v)`` returns it at most ``config.max_side`` pixels, any
    size; ``image_sizes[v]`` is its full (H, W)) and match the candidate pairs.

    ``progress(done, total)`` counts views described, then pairs matched."""
    N = len(image_sizes)
    features: List[SiftFeatures] = []
    keypoints: List[np.ndarray] = []
    thumbnails = []
    keypoint_scale = []
    total = N
    for v in range(N):
        image = load_image(v)
        H, W = image_sizes[v]
        f = extract_sift(image, config.sift)
        features.append(f)
        # Back to full-size pixels (centre-of-pixel convention: c' = (c + 0.5) * s - 0.5).
        sx, sy = W / image.shape[1], H / image.shape[0]
        keypoint_scale.append(max(sx, sy))
        full = np.empty_like(f.keypoints)
        full[:, 0] = (f.keypoints[:, 0] + 0.5) * sx - 0.5
        full[:, 1] = (f.keypoints[:, 1] + 0.5) * sy - 0.5
        keypoints.append(full)
        thumbnails.append(_thumbnail_descriptor(image))
        if progress:
            progress(v + 1, total)
    pairs_to_try = candidate_pairs(N, np.stack(thumbnails) if thumbnails else None, config)
    total = N + len(pairs_to_try)
    pairs: List[PairMatches] = []
    for k, (i, j) in enumerate(pairs_to_try):
        uv_i, uv_j, conf = match_sift(features[i], features[j], config.sift)
        if len(conf) >= config.min_pair_matches:
            pairs.append(PairMatches(i, j, _keypoint_indices(uv_i, features[i].keypoints),
                                     _keypoint_indices(uv_j, features[j].keypoints), conf.astype(np.float32)))
        if progress:
            progress(N + k + 1, total)
    return MatchGraph(keypoints, pairs, N, len(pairs_to_try), keypoint_scale)


def visual_order(graph: MatchGraph, views: Optional[Sequence[int]] = None) -> List[int]:
    """The views of one connected group in an order where consecutive views overlap: a depth-first
    walk of the maximum spanning tree (by match count), from the lowest-numbered view, visiting
    children in file order. A video keeps (about) its order; a shuffled one gets it back."""
    views = sorted(range(graph.num_views) if views is None else views)
    inside = set(views)
    edges = sorted(((len(p.confidence), p.i, p.j) for p in graph.pairs if p.i in inside and p.j in inside), reverse=True)
    parent = {v: v for v in views}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    tree: Dict[int, List[int]] = {v: [] for v in views}
    for _, i, j in edges:
        a, b = find(i), find(j)
        if a != b:
            parent[a] = b
            tree[i].append(j)
            tree[j].append(i)
    order: List[int] = []
    seen = set()
    for root in views:  # one walk per connected part (a single one when the group is connected)
        if root in seen:
            continue
        stack = [root]
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            order.append(v)
            stack.extend(sorted((u for u in tree[v] if u not in seen), reverse=True))
    return order
