"""Labelling throughput, to plan a DL3DV-sized labelling run: each teacher and matcher alone, and the labeller.

    python scripts/bench_labels.py [--size 960 540] [--views 8] [--scenes 2] [--device auto]
                                   [--teachers depth-anything-v2-small disk-lightglue loftr] [--depth-model PATH_OR_ID]

Renders a few synthetic scenes (not timed), then times SIFT feature extraction per image and
matching per pair separately, and the full labeller (simulated teacher + SIFT + cache writes) per
scene. ``--teachers`` times the learned teachers at their released sizes with *random* weights: a
network's speed does not depend on its weights, and none can be downloaded where this runs; the
weights only change how many keypoints survive, so DISK keeps its full ``max_keypoints`` here (a
worst case for LightGlue). ``--depth-model`` times a real depth model instead (a folder or hub id).
``--device auto`` labels on the GPU when there is one, as reliev3r-pseudolabel does.
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

# Depth Anything V2 Small's shape (24.8 M parameters): DINOv2 ViT-S/14 and its DPT head.
DEPTH_ANYTHING_V2_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, neck=[48, 96, 192, 384],
                               fusion_hidden_size=64, head_hidden_size=32, image_size=518)


def random_depth_anything_v2_small(folder: Path) -> Path:
    """Depth Anything V2 Small's architecture and preprocessing, random weights, saved as save_pretrained does."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    shape = DEPTH_ANYTHING_V2_SMALL
    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_hidden_layers"], num_attention_heads=shape["num_attention_heads"],
                            intermediate_size=shape["intermediate_size"], image_size=shape["image_size"], patch_size=14,
                            out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=shape["hidden_size"], neck_hidden_sizes=shape["neck"],
                                 fusion_hidden_size=shape["fusion_hidden_size"], head_hidden_size=shape["head_hidden_size"])
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def random_kornia_weights(folder: Path) -> dict:
    """DISK, LightGlue-for-DISK and LoFTR state dicts with kornia's shapes and random values, as files."""
    import kornia.feature as KF
    import torch

    torch.manual_seed(0)
    glue_conf = {k: v for k, v in KF.LightGlue.features["disk"].items() if k != "weights"}
    files = {"disk": folder / "disk.pth", "lightglue": folder / "lightglue.pth", "loftr": folder / "loftr.ckpt"}
    torch.save(KF.DISK().state_dict(), files["disk"])
    torch.save(KF.LightGlue(features=None, **glue_conf).state_dict(), files["lightglue"])
    torch.save({"state_dict": KF.LoFTR(pretrained=None).state_dict()}, files["loftr"])
    return files


def time_teachers(names, depth_model, roots, device: str, n_pairs_per_scene: int) -> list:
    """(label, figure) rows: depth teachers in images/s, matchers' features in images/s and matching in pairs/s."""
    import torch

    from reliev3r_ns.teachers.depth import TransformersDepthTeacher, TransformersDepthTeacherConfig
    from reliev3r_ns.teachers.kornia_matchers import KorniaMatcher, KorniaMatcherConfig

    def synchronise():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    view_sets = [open_view_set(root) for root in roots]
    n_images = sum(v.num_views for v in view_sets)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        depth_models = []
        if depth_model:
            depth_models.append((depth_model, depth_model))
        if "depth-anything-v2-small" in names:
            depth_models.append(("Depth Anything V2 Small shape, random weights", str(random_depth_anything_v2_small(Path(tmp) / "da2s"))))
        for label, model in depth_models:
            teacher = TransformersDepthTeacher(TransformersDepthTeacherConfig(model=model, device=device))
            teacher.predict(view_sets[0], [0], [""])  # warm-up (first call allocates)
            synchronise()
            start = time.perf_counter()
            for view_set in view_sets:
                teacher.predict(view_set, list(range(view_set.num_views)), [""] * view_set.num_views)
            synchronise()
            rows.append((f"depth: {label}", f"{n_images / (time.perf_counter() - start):8.2f} images/s"))
        kornia_methods = [m for m in ("disk-lightglue", "loftr") if m in names]
        if kornia_methods:
            files = random_kornia_weights(Path(tmp))
        for method in kornia_methods:
            config = (KorniaMatcherConfig(method="disk-lightglue", detector_weights=files["disk"], weights=files["lightglue"], device=device)
                      if method == "disk-lightglue" else KorniaMatcherConfig(method="loftr", weights=files["loftr"], device=device))
            matcher = KorniaMatcher(config)
            start = time.perf_counter()
            features = [[matcher.features(v.load_image(i)) for i in range(v.num_views)] for v in view_sets]
            synchronise()
            feature_time = time.perf_counter() - start
            pairs = select_pairs(view_sets[0].num_views)[:n_pairs_per_scene]
            start = time.perf_counter()
            for f in features:
                for i, j in pairs:
                    matcher.match(f[i], f[j])
            synchronise()
            match_time = time.perf_counter() - start
            rows.append((f"{method} (random weights): features", f"{n_images / feature_time:8.2f} images/s"))
            rows.append((f"{method} (random weights): matching + MAGSAC", f"{len(pairs) * len(features) / match_time:8.2f} pairs/s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs=2, type=int, default=[256, 192], metavar=("W", "H"))
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto: the GPU when there is one, else the CPU")
    parser.add_argument("--teachers", nargs="*", default=["depth-anything-v2-small", "disk-lightglue", "loftr"],
                        choices=["depth-anything-v2-small", "disk-lightglue", "loftr"], help="learned teachers to time (random weights)")
    parser.add_argument("--depth-model", default=None, help="also time this depth model (a save_pretrained folder or a hub id)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per scene the learned matchers are timed on")
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
        teacher_rows = time_teachers(args.teachers, args.depth_model, roots, args.device, args.pairs)

    from reliev3r_ns.model.ffrm import resolve_device

    print(f"{args.scenes} scenes x {args.views} views at {args.size[0]}x{args.size[1]}, {n_pairs} pairs, one process")
    print(f"SIFT features:         {n_images / feature_time:8.1f} images/s")
    print(f"matching + MAGSAC:     {n_pairs / match_time:8.1f} pairs/s  ({sum(matched) / n_pairs:.0f} verified matches per pair)")
    print(f"full labeller, cold:   {n_images / cold:8.1f} images/s  (simulated teacher + SIFT + atomic cache writes)")
    print(f"full labeller, cached: {n_images / warm:8.1f} images/s  ({cold / warm:.0f}x faster than cold)")
    if teacher_rows:
        print(f"learned teachers on {resolve_device(args.device)} (learned matchers on {args.pairs} pairs per scene):")
    for label, figure in teacher_rows:
        print(f"  {label + ':':52s} {figure}")


if __name__ == "__main__":
    main()
