"""Labelling throughput: SIFT features (images/s) and matching + verification (pairs/s) on CPU.

    python scripts/bench_labels.py [--size 256 192] [--views 8] [--scenes 2]

Renders a few synthetic scenes (not timed), then times feature extraction per image and matching
per pair separately, and the full labeller (simulated teacher + SIFT + cache writes) per scene.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.data.scene_io import write_scene
from reliev3r_ns.labels import LabelCache, Labeller, PseudoLabelConfig, open_view_set, select_pairs
from reliev3r_ns.teachers.sift import SiftMatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs=2, type=int, default=[256, 192], metavar=("W", "H"))
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=2)
    args = parser.parse_args()
    config = SyntheticSceneConfig(width=args.size[0], height=args.size[1], num_views=args.views)
    scenes = [generate_scene(100 + k, config) for k in range(args.scenes)]
    matcher = SiftMatcher()

    start = time.perf_counter()
    features = [[matcher.features(image) for image in scene.images] for scene in scenes]
    feature_time = time.perf_counter() - start
    pairs = select_pairs(args.views)
    start = time.perf_counter()
    matched = [len(matcher.match(f[i], f[j])[2]) for f in features for i, j in pairs]
    match_time = time.perf_counter() - start
    n_images, n_pairs = args.scenes * args.views, len(matched)

    with tempfile.TemporaryDirectory() as tmp:
        roots = [write_scene(Path(tmp) / f"scene_{k}", s.images, s.cam_to_world, s.intrinsics, s.depths) for k, s in enumerate(scenes)]
        labeller = Labeller(PseudoLabelConfig(), LabelCache(Path(tmp) / "cache"))
        start = time.perf_counter()
        for root in roots:
            labeller.label(open_view_set(root))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        for root in roots:
            labeller.label(open_view_set(root))
        warm = time.perf_counter() - start

    print(f"{args.scenes} scenes x {args.views} views at {args.size[0]}x{args.size[1]}, {n_pairs} pairs, one process")
    print(f"SIFT features:         {n_images / feature_time:8.1f} images/s")
    print(f"matching + MAGSAC:     {n_pairs / match_time:8.1f} pairs/s  ({sum(matched) / n_pairs:.0f} verified matches per pair)")
    print(f"full labeller, cold:   {n_images / cold:8.1f} images/s  (simulated teacher + SIFT + atomic cache writes)")
    print(f"full labeller, cached: {n_images / warm:8.1f} images/s  ({cold / warm:.0f}x faster than cold)")


if __name__ == "__main__":
    main()
