"""Correspondences computed elsewhere (CoTracker tracks, a COLMAP / hloc match export, ...), ingested
into the label cache with validation.

One file per scene, beside its images (the scene folder, or its parent for a bare image folder):

``tracks.npz`` (point tracks, the paper's CoTracker labels)::

    image_names  (V,) str          the images' file names, in the order of the second axis below
    tracks       (T, V, 2) float   pixel (x, y) of track t in image v, at the stored image size
    visible      (T, V) bool       whether track t is seen in image v
    confidence   (T, V) float      optional, in [0, 1] (default 1)

``matches.npz`` (per-pair matches)::

    image_names  (V,) str
    pairs        (P, 2) int        indices into image_names
    pair_index   (M,) int          which pair each match belongs to
    uv_i, uv_j   (M, 2) float      pixel (x, y) in the pair's first / second image
    confidence   (M,) float        optional

Pixels follow our convention (OpenCV: the centre of the top-left pixel is (0, 0)); tools that put the
pixel *corner* at (0, 0) (COLMAP, many trackers' grids) need ``pixel_centre_offset 0.5``. Validation
names the file and the first offending entry: unknown image names, wrong shapes, non-finite or
out-of-image positions, confidences outside [0, 1]. A pair with no shared visible track gets zero
matches (and so no reprojection term), like a SIFT pair without verified matches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from reliev3r_ns.data.scene_io import SceneFormatError

TRACKS_FILE = "tracks.npz"
MATCHES_FILE = "matches.npz"


@dataclass
class ImportedMatcherConfig:
    pixel_centre_offset: float = 0.0
    """Subtracted from every imported coordinate: 0.5 for files whose pixel corner is (0, 0)."""
    max_matches_per_pair: int = 4096
    bounds_tolerance: float = 1.0
    """Positions up to this many pixels outside the image are clipped; further out is an error."""
    seed: int = 0


def correspondence_file(view_set) -> Path:
    for folder in (view_set.root, view_set.image_paths[0].parent):
        for name in (TRACKS_FILE, MATCHES_FILE):
            if (folder / name).is_file():
                return folder / name
    raise SceneFormatError(
        f"{view_set.root}: the imported matcher needs {TRACKS_FILE} or {MATCHES_FILE} in the scene folder "
        "(format: reliev3r_ns/teachers/imported.py, docs/reference.md 'Weak labels')"
    )


class ImportedMatcher:
    name = "imported"
    match_from_view_set = True

    def __init__(self, config: ImportedMatcherConfig = ImportedMatcherConfig()) -> None:
        self.config = config
        self._loaded: Tuple[Path, Dict] = (None, {})

    def description(self) -> dict:
        return {"matcher": self.name, **asdict(self.config)}

    def item_files(self, view_set, index: int) -> List[Path]:
        # The correspondence file is part of every image's key: editing it invalidates the pairs.
        return [view_set.image_paths[index], correspondence_file(view_set)]

    def _load(self, view_set) -> Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        path = correspondence_file(view_set)
        if self._loaded[0] == path:
            return self._loaded[1]
        try:
            data = dict(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as error:
            raise SceneFormatError(f"{path}: cannot read ({error})") from None
        names = [str(n) for n in data.get("image_names", [])]
        if not names:
            raise SceneFormatError(f"{path}: missing 'image_names'")
        ours = {p.name: k for k, p in enumerate(view_set.image_paths)}
        unknown = [n for n in names if n not in ours]
        if unknown:
            raise SceneFormatError(f"{path}: image_names {unknown[:3]} are not images of {view_set.root}")
        to_view = np.array([ours[n] for n in names])
        H, W = view_set.load_image(0).shape[:2]
        pairs = self._from_tracks(path, data, len(names), H, W) if path.name == TRACKS_FILE else self._from_matches(path, data, len(names), H, W)
        result = {}
        for (a, b), (uv_a, uv_b, conf) in pairs.items():
            i, j = int(to_view[a]), int(to_view[b])
            result[(i, j) if i < j else (j, i)] = (uv_a, uv_b, conf) if i < j else (uv_b, uv_a, conf)
        self._loaded = (path, result)
        return result

    def _check_positions(self, path: Path, what: str, uv: np.ndarray, H: int, W: int) -> np.ndarray:
        uv = uv.astype(np.float64) - self.config.pixel_centre_offset
        bad = ~np.isfinite(uv).all(-1)
        if bad.any():
            raise SceneFormatError(f"{path}: {what} has non-finite positions (first at entry {int(np.argmax(bad))})")
        t = self.config.bounds_tolerance
        outside = (uv[:, 0] < -0.5 - t) | (uv[:, 0] > W - 0.5 + t) | (uv[:, 1] < -0.5 - t) | (uv[:, 1] > H - 0.5 + t)
        if outside.any():
            k = int(np.argmax(outside))
            raise SceneFormatError(f"{path}: {what} entry {k} at {uv[k].tolist()} lies outside the {W}x{H} image; "
                                   "wrong image size or pixel convention (see pixel_centre_offset)?")
        return np.stack([uv[:, 0].clip(0, W - 1), uv[:, 1].clip(0, H - 1)], -1).astype(np.float32)

    @staticmethod
    def _check_confidence(path: Path, confidence: np.ndarray) -> np.ndarray:
        if not (np.isfinite(confidence).all() and (confidence >= 0).all() and (confidence <= 1).all()):
            raise SceneFormatError(f"{path}: confidence must be finite and in [0, 1]")
        return confidence.astype(np.float32)

    def _from_tracks(self, path, data, V, H, W):
        for key in ("tracks", "visible"):
            if key not in data:
                raise SceneFormatError(f"{path}: missing '{key}'")
        tracks, visible = data["tracks"], data["visible"].astype(bool)
        if tracks.ndim != 3 or tracks.shape[1:] != (V, 2) or visible.shape != tracks.shape[:2]:
            raise SceneFormatError(f"{path}: tracks must be (T, {V}, 2) and visible (T, {V}); got {tracks.shape} and {visible.shape}")
        confidence = self._check_confidence(path, data["confidence"]) if "confidence" in data else np.ones(visible.shape, np.float32)
        out = {}
        for a in range(V):
            for b in range(a + 1, V):
                both = visible[:, a] & visible[:, b]
                uv_a = self._check_positions(path, f"tracks[:, {a}]", tracks[both, a], H, W)
                uv_b = self._check_positions(path, f"tracks[:, {b}]", tracks[both, b], H, W)
                out[(a, b)] = self._cap(uv_a, uv_b, np.minimum(confidence[both, a], confidence[both, b]))
        return out

    def _from_matches(self, path, data, V, H, W):
        for key in ("pairs", "pair_index", "uv_i", "uv_j"):
            if key not in data:
                raise SceneFormatError(f"{path}: missing '{key}'")
        pairs, index = data["pairs"].astype(np.int64), data["pair_index"].astype(np.int64)
        M = len(index)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs < 0).any() or (pairs >= V).any() or (pairs[:, 0] == pairs[:, 1]).any():
            raise SceneFormatError(f"{path}: pairs must be (P, 2) indices of two different images in [0, {V})")
        if data["uv_i"].shape != (M, 2) or data["uv_j"].shape != (M, 2) or ((index < 0) | (index >= len(pairs))).any():
            raise SceneFormatError(f"{path}: uv_i, uv_j must be ({M}, 2) and pair_index in [0, {len(pairs)})")
        confidence = self._check_confidence(path, data["confidence"]) if "confidence" in data else np.ones(M, np.float32)
        uv_i = self._check_positions(path, "uv_i", data["uv_i"], H, W)
        uv_j = self._check_positions(path, "uv_j", data["uv_j"], H, W)
        out = {}
        for p, (a, b) in enumerate(pairs):
            m = index == p
            out[(int(a), int(b))] = self._cap(uv_i[m], uv_j[m], confidence[m])
        return out

    def _cap(self, uv_a, uv_b, confidence):
        if len(confidence) > self.config.max_matches_per_pair:
            keep = np.sort(np.random.default_rng(self.config.seed).choice(len(confidence), self.config.max_matches_per_pair, replace=False))
            uv_a, uv_b, confidence = uv_a[keep], uv_b[keep], confidence[keep]
        return uv_a, uv_b, confidence

    def match_views(self, view_set, i: int, j: int, keys) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        empty = (np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
        return self._load(view_set).get((i, j), empty)
