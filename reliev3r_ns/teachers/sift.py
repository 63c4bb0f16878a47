"""Correspondences with OpenCV SIFT: ratio test, mutual nearest neighbours, MAGSAC fundamental-matrix check.

No weights needed; the default matcher. Pixels are OpenCV (x = column, y = row, (0, 0) the centre of
the top-left pixel), which is also what OpenCV's keypoints use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np


@dataclass
class SiftMatcherConfig:
    max_features: int = 4000
    contrast_threshold: float = 0.04
    """OpenCV's SIFT contrast threshold (its default). Lower finds keypoints in dark, low-contrast
    images (renders, indoor shots at night), at the cost of more, weaker keypoints."""
    ratio: float = 0.8
    """Lowe's ratio test threshold."""
    ransac_threshold_px: float = 1.0
    """MAGSAC inlier threshold for the fundamental matrix, in pixels."""
    min_matches: int = 16
    """Fewer verified matches than this count as no matches for the pair (a fundamental matrix fits
    almost any 8-12 random matches, so small verified sets are mostly wrong)."""
    max_matches_per_pair: int = 2048


@dataclass
class SiftFeatures:
    keypoints: np.ndarray  # (K, 2) float32 pixel positions
    descriptors: np.ndarray  # (K, 128) float32 (RootSIFT-normalised)


def extract_sift(image_rgb: np.ndarray, config: SiftMatcherConfig = SiftMatcherConfig()) -> SiftFeatures:
    import cv2

    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY) if image_rgb.ndim == 3 else image_rgb
    sift = cv2.SIFT_create(nfeatures=config.max_features, contrastThreshold=config.contrast_threshold)
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    if descriptors is None:
        return SiftFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    # RootSIFT: L1-normalise then square-root, which makes Euclidean matching a Hellinger kernel.
    descriptors = np.sqrt(descriptors / np.maximum(descriptors.sum(1, keepdims=True), 1e-12)).astype(np.float32)
    return SiftFeatures(np.array([k.pt for k in keypoints], np.float32), descriptors)


def match_sift(a: SiftFeatures, b: SiftFeatures, config: SiftMatcherConfig = SiftMatcherConfig()) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified matches between two images: ((M, 2) uv_a, (M, 2) uv_b, (M,) confidence in (0, 1]).

    Confidence is 1 - (best / second-best distance), so a distinctive match scores high. Returns
    empty arrays when fewer than ``min_matches`` survive verification.
    """
    import cv2

    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
    if len(a.keypoints) < 2 or len(b.keypoints) < 2:
        return empty
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    forward = matcher.knnMatch(a.descriptors, b.descriptors, k=2)
    backward = matcher.knnMatch(b.descriptors, a.descriptors, k=1)
    best_back = {m[0].queryIdx: m[0].trainIdx for m in backward if m}
    ia, ib, conf = [], [], []
    for pair in forward:
        if len(pair) < 2:
            continue
        m, n = pair
        if m.distance < config.ratio * n.distance and best_back.get(m.trainIdx) == m.queryIdx:
            ia.append(m.queryIdx)
            ib.append(m.trainIdx)
            conf.append(1.0 - m.distance / max(n.distance, 1e-12))
    if len(ia) < config.min_matches:
        return empty
    uv_a, uv_b, conf = a.keypoints[ia], b.keypoints[ib], np.asarray(conf, np.float32)
    return verify_matches(uv_a, uv_b, conf, config.ransac_threshold_px, config.min_matches, config.max_matches_per_pair)


VERIFICATION = "magsac-distinct-2"
"""Names what :func:`verify_matches` does, in the cache key of every matcher that uses it: changing the
verification changes the labels, so it must also change the key."""


def verify_matches(uv_a: np.ndarray, uv_b: np.ndarray, conf: np.ndarray, ransac_threshold_px: float, min_matches: int,
                   max_matches: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the MAGSAC inliers of a fundamental matrix, the most confident ``max_matches`` of them;
    nothing at all when fewer than ``min_matches`` distinct candidates or inliers (every matcher shares this)."""
    import cv2

    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
    uv_a, uv_b = np.ascontiguousarray(uv_a, np.float32), np.ascontiguousarray(uv_b, np.float32)
    conf = np.asarray(conf, np.float32)
    # SIFT puts one keypoint per dominant orientation at the same spot, so one correspondence can come
    # in several copies: they would pass min_matches on too little evidence, and repeated points in a
    # minimal sample make OpenCV's MAGSAC abort (4.10: "!model.empty()") instead of rejecting the sample.
    by_confidence = np.argsort(-conf, kind="stable")
    _, first = np.unique(np.concatenate([uv_a, uv_b], 1)[by_confidence], axis=0, return_index=True)
    distinct = np.sort(by_confidence[first])
    uv_a, uv_b, conf = uv_a[distinct], uv_b[distinct], conf[distinct]
    if len(conf) < max(min_matches, 8):
        return empty
    try:
        _, inliers = cv2.findFundamentalMat(uv_a, uv_b, cv2.USAC_MAGSAC, ransac_threshold_px, 0.999, 10000)
    except cv2.error:
        # Distinct points can still form a degenerate minimal sample that trips the same assertion:
        # for the pair it means what a None result means, no fundamental matrix explains the matches.
        return empty
    if inliers is None:
        return empty
    keep = inliers.ravel().astype(bool)
    if keep.sum() < min_matches:
        return empty
    uv_a, uv_b, conf = uv_a[keep], uv_b[keep], conf[keep]
    if len(conf) > max_matches:
        top = np.argsort(-conf)[:max_matches]
        uv_a, uv_b, conf = uv_a[top], uv_b[top], conf[top]
    return uv_a, uv_b, conf


def match_all_pairs(images: np.ndarray, config: SiftMatcherConfig = SiftMatcherConfig()) -> List[Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """SIFT matches for every pair (i < j) of (V, H, W, 3) images: a list of (i, j, uv_i, uv_j, confidence)."""
    features = [extract_sift(image, config) for image in images]
    out = []
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            uv_i, uv_j, conf = match_sift(features[i], features[j], config)
            out.append((i, j, uv_i, uv_j, conf))
    return out


class SiftMatcher:
    """The matcher interface the label pipeline uses: description (for the cache key), features, match."""

    name = "sift"

    def __init__(self, config: SiftMatcherConfig = SiftMatcherConfig()) -> None:
        self.config = config

    def description(self) -> dict:
        import cv2
        from dataclasses import asdict

        return {"matcher": self.name, "opencv": cv2.__version__, "verification": VERIFICATION, **asdict(self.config)}

    def item_files(self, view_set, index: int):
        """Files whose bytes key a view's part in a pair's label: just the image."""
        return [view_set.image_paths[index]]

    def features(self, image_rgb: np.ndarray) -> SiftFeatures:
        return extract_sift(image_rgb, self.config)

    def match(self, a: SiftFeatures, b: SiftFeatures) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return match_sift(a, b, self.config)
