"""Does the weak objective prefer the true geometry to the collapse a weak model drifts into?

Trained with weak labels, our FFRM's held-out depth / baseline ratio grows to ~10x the truth's
(docs/weak_vs_full.md): its cameras bunch together relative to its depth, as if the scene were at
infinity. The depth loss cannot see this (it removes each view's scale and shift), so the question is
the angular reprojection loss: with cameras at one point, every correspondence's angle is just its
rotation error, and parallax no longer costs anything.

For fixed training clips and their weak labels (the ones training used), this prints the weak loss
terms of

- ``GT``: the true depth, intrinsics and poses;
- ``model``: each ``--checkpoint``'s prediction;

each also with every camera centre moved toward the clip's mean centre, baseline x s for each
``--baseline-scales`` s (s = 0: one centre for all views). The depth term does not change with s; if
the reprojection term of GT at s = 1 is well below its value at s = 0, the objective prefers the truth
and a model that drifts is in a poor basin; if it is about the same, the labels and the robust scale
leave the collapse nearly free.

Two rotation swaps ask the same of rotations, which neither model learns on wide-baseline clips:

- ``GT, one rotation``: the truth with every view given the first view's rotation (what a model that
  learnt no rotation predicts): how much the objective charges for missing rotations;
- ``model NAME, GT rotations``: the model's depth and camera centres with the true relative rotations
  (anchored at its first view): below the model's own term, right rotations would pay even with the
  rest of its geometry as it is; above it, its depth and centres have grown around its wrong rotations.

When the scenes' scene.json names their trajectory kind (the synthetic scenes: forward walk, orbit,
look-at set), a second table splits the terms at baseline x 1 by kind.

    python docs/tools/diagnose_weak_objective.py --data DIR --label-cache LABELS --checkpoint weak=weak.pt full=full.pt [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from reliev3r_ns.losses.objective import GeometryPrediction, Reliev3rLossConfig, WeakLabels, compute_loss

_spec = importlib.util.spec_from_file_location("reproduce_weak_vs_full", Path(__file__).resolve().parents[2] / "scripts" / "reproduce_weak_vs_full.py")
_reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_reproduce)


def shrink_baseline(cam_to_world: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, V, 4, 4) camera-to-world with each clip's camera centres pulled toward their mean by
    ``scale`` (rotations unchanged)."""
    out = cam_to_world.clone()
    centres = cam_to_world[..., :3, 3]
    out[..., :3, 3] = centres.mean(dim=1, keepdim=True) + scale * (centres - centres.mean(dim=1, keepdim=True))
    return out


def with_rotations_of(cam_to_world: torch.Tensor, rotations_from: torch.Tensor) -> torch.Tensor:
    """(B, V, 4, 4) camera-to-world (OpenCV) with the camera centres of ``cam_to_world`` and the relative
    rotations of ``rotations_from`` (B, V, 4, 4 camera-to-world), anchored so that view 0 keeps its
    rotation: R'_i = R_0 R~_0^T R~_i, hence R'_i^T R'_j = R~_i^T R~_j."""
    out = cam_to_world.clone()
    anchor = cam_to_world[:, :1, :3, :3] @ rotations_from[:, :1, :3, :3].transpose(-1, -2)  # (B, 1, 3, 3)
    out[..., :3, :3] = anchor @ rotations_from[..., :3, :3]
    return out


def one_rotation(cam_to_world: torch.Tensor) -> torch.Tensor:
    """(B, V, 4, 4) camera-to-world with every view given view 0's rotation (centres unchanged)."""
    identity = torch.eye(4, dtype=cam_to_world.dtype, device=cam_to_world.device).expand_as(cam_to_world)
    return with_rotations_of(cam_to_world, identity)


def weak_terms(geometry: GeometryPrediction, weak: WeakLabels, config: Reliev3rLossConfig) -> Dict[str, float]:
    # Confidence 1 everywhere, for the model too: the terms then compare geometry alone.
    flat = dataclasses.replace(geometry, confidence=torch.ones_like(geometry.depth))
    _, stats = compute_loss(config, flat, weak)
    return {"depth": float(stats["loss/depth"]), "reprojection": float(stats["loss/reprojection"]),
            "median_angle_deg": float(stats["reprojection/median_error"])}


def subset(data: Path, count: int, workdir: Path) -> Path:
    """A folder of links to the first ``count`` scenes of ``data`` (labels are keyed by content, so
    the label cache still serves them)."""
    from reliev3r_ns.data.scene_io import list_scenes

    scenes = list_scenes(data)
    if not scenes:
        raise SystemExit(f"{data}: no scenes (folders with transforms.json)")
    for scene in scenes[:count]:
        (workdir / scene.name).symlink_to(scene.resolve(), target_is_directory=True)
    return workdir


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a folder with train/ scenes (default: the bundled synthetic dataset)")
    parser.add_argument("--label-cache", type=Path, default=None, help="where the weak labels are (computed on first use)")
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="NAME=PATH", help="FFRM checkpoints to score as well")
    parser.add_argument("--clips", type=int, default=16, help="fixed 8-view clips, one from each of the first N training scenes")
    parser.add_argument("--baseline-scales", type=float, nargs="+", default=[1.0, 0.5, 0.1, 0.0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Trainer config overrides, as reproduce_weak_vs_full.py takes them; give the ones the "
                             "checkpoints trained with that change the labels or the loss, e.g. "
                             "pipeline.datamanager.labels.simulated.space=depth")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    from reliev3r_ns.cli import named_checkpoints
    from reliev3r_ns.data.synthetic_dataset import ensure_default_dataset
    from reliev3r_ns.method_configs.reliev3r import reliev3r_method
    from reliev3r_ns.model import FFRM

    train = args.data / "train" if args.data else ensure_default_dataset()["train"]
    checkpoints = named_checkpoints(args.checkpoint)
    models = {name: FFRM.from_checkpoint(path, map_location="cpu").eval() for name, path in checkpoints.items()}
    config = copy.deepcopy(reliev3r_method.config)
    _reproduce.apply_overrides(config, args.set)
    loss_config = config.pipeline.model.loss
    rows: Dict[str, Dict[str, List[float]]] = {}
    kinds: List = []
    with tempfile.TemporaryDirectory() as tmp:
        dm_config = config.pipeline.datamanager
        dm_config.data = subset(train, args.clips, Path(tmp))
        dm_config.eval_data = dm_config.data
        dm_config.label_cache = args.label_cache
        datamanager = dm_config.setup(device="cpu")
        for index in range(min(args.clips, len(datamanager.train_dataset))):
            batch = datamanager.train_clip(index)
            weak = WeakLabels(teacher=batch["teacher"], teacher_space=batch["teacher_space"], matches=batch["matches"])
            gt_cam_to_world = batch["gt_cam_to_world"]
            kinds.append(datamanager.train_dataset.scenes[index].metadata.get("trajectory"))
            candidates = {"GT": GeometryPrediction(batch["gt_depth"], torch.ones_like(batch["gt_depth"]), batch["intrinsics"], gt_cam_to_world)}
            candidates["GT, one rotation"] = dataclasses.replace(candidates["GT"], cam_to_world=one_rotation(gt_cam_to_world))
            with torch.no_grad():
                for name, model in models.items():
                    p = model(batch["images"], batch.get("intrinsics"))
                    candidates[f"model {name}"] = GeometryPrediction(p.depth, p.confidence, p.intrinsics, p.cam_to_world)
                    candidates[f"model {name}, GT rotations"] = dataclasses.replace(
                        candidates[f"model {name}"], cam_to_world=with_rotations_of(p.cam_to_world, gt_cam_to_world))
            for name, geometry in candidates.items():
                for s in args.baseline_scales:
                    moved = dataclasses.replace(geometry, cam_to_world=shrink_baseline(geometry.cam_to_world, s))
                    for key, value in weak_terms(moved, weak, loss_config).items():
                        rows.setdefault(f"{name} | {s:g}", {}).setdefault(key, []).append(value)
    summary = {row: {key: float(np.mean(values)) for key, values in terms.items()} for row, terms in rows.items()}
    # reproduce_weak_vs_full's per-kind means, over each clip's terms at the cameras' own baseline.
    per_row = {row: _reproduce.summarise_by_kind([dict(zip(terms, clip)) for clip in zip(*terms.values())], kinds)
               for row, terms in rows.items() if row.endswith(" | 1")}
    by_kind = {kind: {row: kind_terms[kind] for row, kind_terms in per_row.items()} for kind in next(iter(per_row.values()), {})}
    print(f"weak loss terms, mean over {args.clips} fixed 8-view training clips (confidence 1 for all; reprojection weight "
          f"{loss_config.reprojection_weight} in training)")
    print("| geometry | baseline x | depth term | reprojection term | median angle (deg) |")
    print("|---|---|---|---|---|")
    for row, terms in summary.items():
        name, s = row.split(" | ")
        print(f"| {name} | {s} | {terms['depth']:.4f} | {terms['reprojection']:.4f} | {terms['median_angle_deg']:.2f} |")
    if by_kind:
        print("\nat baseline x 1, by trajectory kind")
        print("| trajectory | clips | geometry | depth term | reprojection term | median angle (deg) |")
        print("|---|---|---|---|---|---|")
        for kind, kind_rows in by_kind.items():
            for row, terms in kind_rows.items():
                print(f"| {kind} | {terms['clips']} | {row.split(' | ')[0]} | {terms['depth']:.4f} | {terms['reprojection']:.4f} | {terms['median_angle_deg']:.2f} |")
    if args.output:
        args.output.write_text(json.dumps({"data": str(train), "clips": args.clips, "checkpoints": {name: str(path) for name, path in checkpoints.items()},
                                           "set": args.set, "rows": summary, "by_trajectory": by_kind}, indent=2))
    return {"rows": summary, "by_trajectory": by_kind}


if __name__ == "__main__":
    main()
