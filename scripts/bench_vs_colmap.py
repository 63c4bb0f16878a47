"""FFRM processing vs pycolmap's full SfM on the same images: wall time, ratio, pose accuracy.

FFRM side: ``reconstruct`` (windows + Sim(3)) and writing the nerfstudio dataset, as
``reliev3r-process-data images`` does. COLMAP side: pycolmap SIFT extraction, exhaustive matching and
incremental mapping (CPU), as ``ns-process-data`` runs COLMAP. Both are scored against the scene's GT
poses with reliev3r-eval's metrics (pairs of images COLMAP did not register count as failures through
``posed_fraction``; AUC is over the pairs it did register).

    python scripts/bench_vs_colmap.py --quick                       # one small synthetic scene (CI)
    python scripts/bench_vs_colmap.py --checkpoint ffrm.pt          # 4 synthetic scenes, 24 views at 256x192
    python scripts/bench_vs_colmap.py --checkpoint ffrm.pt --views 96 --scenes 2   # how the ratio grows with views
    python scripts/bench_vs_colmap.py --checkpoint ffrm.pt --scene SCENE_WITH_GT [...]

Without --checkpoint a randomly initialised tiny FFRM is timed (its accuracy is meaningless and is
labelled so).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reliev3r_ns.eval.machine import machine_fingerprint, machine_label


def synthetic_scenes(count: int, views: int, width: int, height: int, root: Path) -> list:
    from reliev3r_ns.data.synthetic import SyntheticSceneConfig
    from reliev3r_ns.data.synthetic_dataset import generate_dataset

    config = SyntheticSceneConfig(width=width, height=height, num_views=views, supersample=1, trajectories=("orbit", "forward"))
    generate_dataset(root, count, seed=5, config=config, show_progress=False)
    return sorted(p for p in root.iterdir() if (p / "transforms.json").is_file())


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--scene", type=Path, nargs="*", default=None, help="nerfstudio datasets with GT poses")
    parser.add_argument("--resolution", type=int, default=None, help="FFRM network size (longest side)")
    parser.add_argument("--views", type=int, default=None, help="views per synthetic scene (default 24; 12 with --quick)")
    parser.add_argument("--scenes", type=int, default=None, help="synthetic scenes (default 4; 1 with --quick)")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows (with every timing) as JSON here")
    args = parser.parse_args(argv)

    from reliev3r_ns.eval.evaluate import evaluate, load_reference, prediction_from_reconstruction, run_colmap_sfm
    from reliev3r_ns.labels import open_view_set
    from reliev3r_ns.model import FFRM, ffrm_config, load_ffrm
    from reliev3r_ns.process.dataset import DatasetWriterConfig, write_dataset
    from reliev3r_ns.process.reconstruct import ReconstructionConfig, reconstruct

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.checkpoint is not None:
        model, trained = load_ffrm(args.checkpoint, map_location=device).eval(), True
    else:
        torch.manual_seed(0)
        model, trained = FFRM(ffrm_config("tiny")).to(device).eval(), False
        args.resolution = args.resolution or 256  # the images' own size; an untrained model records none
    rows, machine = [], machine_fingerprint(device)  # in every row: timings compare only on one machine
    with tempfile.TemporaryDirectory(prefix="reliev3r-bench-colmap-") as workdir:
        workdir = Path(workdir)
        count, views = args.scenes or (1 if args.quick else 4), args.views or (12 if args.quick else 24)
        scenes = args.scene or synthetic_scenes(count, views, 256, 192, workdir / "scenes")
        for scene in scenes:
            view_set = open_view_set(scene)
            reference = load_reference(scene)
            # Warm-up outside the timing (first-call allocations, thread pools), like any benchmark.
            reconstruct(model, view_set.image_paths[:2], ReconstructionConfig(resolution=args.resolution), exif_transpose=False)
            started = time.perf_counter()
            result = reconstruct(model, view_set.image_paths, ReconstructionConfig(resolution=args.resolution), exif_transpose=False)
            reconstruct_seconds = time.perf_counter() - started
            write_dataset(result, workdir / "out" / scene.name, DatasetWriterConfig(preview=False), exif_transpose=False)
            ffrm_seconds = time.perf_counter() - started
            ffrm_eval = evaluate(prediction_from_reconstruction(result, "ffrm"), reference).metrics
            colmap_eval, timings = None, {}
            started = time.perf_counter()
            try:
                colmap_set, timings = run_colmap_sfm(view_set.image_paths, workdir / "colmap" / scene.name)
                colmap_eval = evaluate(colmap_set, reference).metrics
            except Exception as error:  # noqa: BLE001 - COLMAP failing on a scene is a result, recorded as such
                print(f"{scene.name}: COLMAP failed: {error}")
            colmap_seconds = time.perf_counter() - started
            rows.append({"scene": scene.name, "views": view_set.num_views, "ffrm_s": ffrm_seconds, "colmap_s": colmap_seconds,
                         "ffrm_reconstruct_s": reconstruct_seconds, "ffrm_write_s": ffrm_seconds - reconstruct_seconds,
                         "ffrm": ffrm_eval, "colmap": colmap_eval, **timings, "machine": machine})

    print(f"\n{machine_label(machine)}; "
          f"FFRM {'from ' + str(args.checkpoint) if trained else 'randomly initialised (accuracy meaningless)'}")
    # Where each side's time goes: FFRM = network + fusion / dataset writing; COLMAP = features / matching / mapping.
    print("| scene | views | FFRM s | FFRM split s | COLMAP s | COLMAP split s | COLMAP / FFRM time | FFRM AUC@30 | COLMAP AUC@30 "
          "| COLMAP posed | FFRM ATE | COLMAP ATE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["colmap"]
        colmap_split = " / ".join(f"{r[k]:.2f}" for k in ("colmap_features_s", "colmap_matching_s", "colmap_mapping_s") if k in r) or "-"
        print(f"| {r['scene']} | {r['views']} | {r['ffrm_s']:.2f} | {r['ffrm_reconstruct_s']:.2f} / {r['ffrm_write_s']:.2f} | "
              f"{r['colmap_s']:.2f} | {colmap_split} | {r['colmap_s'] / r['ffrm_s']:.1f}x | "
              f"{r['ffrm']['pose_auc30']:.3f} | {c['pose_auc30'] if c else float('nan'):.3f} | {c['posed_fraction'] if c else 0:.2f} | "
              f"{r['ffrm']['ate_normalised']:.3f} | {c['ate_normalised'] if c else float('nan'):.3f} |")
    ratio = np.sum([r["colmap_s"] for r in rows]) / np.sum([r["ffrm_s"] for r in rows])
    print(f"\nall scenes: COLMAP took {ratio:.1f}x the FFRM's time (target: >= 50x at comparable pose accuracy)")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2, default=float))
    return rows


if __name__ == "__main__":
    main()
