"""Real captures: pycolmap's SfM, the raw FFRM and the refined FFRM on the same images, side by side.

For every image set (the shared real sets in ../shared/data/pi3_examples when present, any folder
given with --folders, frames of any video given with --videos) it runs, in one go:
  - pycolmap: SIFT extraction, exhaustive matching, incremental mapping (CPU, CameraMode.AUTO), timed;
  - raw FFRM: reliev3r-process-data's pipeline with every image placed where the network puts it
    (``--capture.place all --capture.refine-views.steps 0``);
  - refined FFRM: the default pipeline (views without enough verified matches left out, cameras
    and depth refined with the weak losses on the images' own SIFT matches, no weights downloaded),
    and where that refuses a set, the same with --capture.matching.min-view-matches 16 ("refined 16");
and prints per row: AUC@5 / @15 / @30, RRA@15 / RTA@15 against the reference (room: its
reference.npz; elsewhere pycolmap's model, over the views both placed), the fraction of images
placed, the median reprojection error of verified SIFT matches under the row's cameras *and* depth
(pycolmap: its own tracks' mean reprojection error), wall time and its ratio to pycolmap's. A PNG
shows the aligned trajectories.

    python scripts/bench_real_captures.py                                  # the shared sets
    python scripts/bench_real_captures.py --videos clip.mp4 --frames 80    # and a video's frames
    python scripts/bench_real_captures.py --folders PHOTOS --checkpoint ffrm.pt --output rows.json

Without --checkpoint the FFRM is a randomly initialised tiny network (seed 0): its raw figures are
labelled so; the refined ones show what the weak losses on the matches do from such a start.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from reliev3r_ns.eval.machine import machine_fingerprint, machine_label

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pi3_examples"


def reference_of(name: str, folder: Path, colmap):
    """room's own reference poses; pycolmap's model elsewhere (None where it registered < 2 views)."""
    from reliev3r_ns.eval.evaluate import CameraSet

    npz = folder / "reference.npz"
    if npz.is_file():
        ref = np.load(npz)
        names = sorted((p.name for p in (folder / "images").iterdir()), key=lambda n: int(Path(n).stem.split("_")[-1]))
        return CameraSet(f"{name}/reference.npz", names, ref["poses"].astype(np.float64), ref["intrinsics"].astype(np.float64),
                         num_images=len(names)), "reference.npz"
    if colmap is None or len(colmap.names) < 2:
        return None, "none (pycolmap registered < 2 images)"
    return colmap, "pycolmap"


def pose_row(prediction, reference) -> Dict[str, float]:
    from reliev3r_ns.eval.evaluate import evaluate
    from reliev3r_ns.eval.metrics import pose_auc, relative_pose_errors

    from reliev3r_ns.data.scene_io import SceneFormatError

    try:
        evaluation = evaluate(prediction, reference)
    except SceneFormatError:  # the two placed fewer than two images in common: nothing to compare
        return {"compared_views": len(set(prediction.names) & set(reference.names))}
    m = evaluation.metrics
    pi = [p for _, p, _ in evaluation.matched]
    ri = [r for _, _, r in evaluation.matched]
    rot, trans = relative_pose_errors(torch.from_numpy(prediction.cam_to_world[pi]), torch.from_numpy(reference.cam_to_world[ri]))
    return {"auc5": pose_auc(rot, trans, 5), "auc15": pose_auc(rot, trans, 15), "auc30": m["pose_auc30"], "rra15": m["rra15"],
            "rta15": m["rta15"], "compared_views": len(pi), "aligned_centres": evaluation.aligned_centres.tolist(),
            "reference_centres": evaluation.reference_centres.tolist()}


def run_set(name: str, folder: Path, model, args) -> List[Dict]:
    from reliev3r_ns.eval.evaluate import prediction_from_reconstruction, run_colmap_sfm
    from reliev3r_ns.process.bundle import ViewRefineConfig, match_reprojection_errors
    from reliev3r_ns.process.matching import MatchingConfig
    from reliev3r_ns.process.pipeline import CaptureConfig, capture_files, process_capture
    from reliev3r_ns.process.reconstruct import ReconstructionConfig

    images = sorted(capture_files(folder)[0])
    rows: List[Dict] = []
    colmap, colmap_error = None, None
    with tempfile.TemporaryDirectory(prefix="reliev3r-bench-sfm-") as workdir:
        started = time.perf_counter()
        try:
            colmap, _ = run_colmap_sfm(images, Path(workdir))
            import pycolmap

            model_dir = max((p for p in (Path(workdir) / "sparse").iterdir()), key=lambda p: pycolmap.Reconstruction(str(p)).num_reg_images())
            colmap_error = pycolmap.Reconstruction(str(model_dir)).compute_mean_reprojection_error()
        except Exception as error:  # noqa: BLE001 - a failed SfM is a result to report, not a crash
            print(f"{name}: pycolmap: {error}")
        colmap_s = time.perf_counter() - started
    reference, reference_name = reference_of(name, folder, colmap)
    rows.append({"set": name, "method": "pycolmap", "images": len(images), "placed": len(colmap.names) if colmap else 0,
                 "median_match_error_px": colmap_error, "match_error_kind": "pycolmap's own tracks, mean",
                 "seconds": colmap_s, "reference": reference_name})
    if reference is not None and reference_name != "pycolmap" and colmap is not None:
        rows[-1].update(pose_row(colmap, reference))

    reconstruction = ReconstructionConfig(resolution=args.resolution)
    variants = {"raw FFRM": CaptureConfig(place="all", refine_views=ViewRefineConfig(steps=0)),
                "refined FFRM": CaptureConfig(refine_views=ViewRefineConfig(steps=args.steps)),
                # Only where the default refuses the set: what the error message suggests.
                "refined 16": CaptureConfig(refine_views=ViewRefineConfig(steps=args.steps), matching=MatchingConfig(min_view_matches=16))}
    for method, config in list(variants.items()):
        if method == "refined 16" and not any(r.get("failed") for r in rows if r["method"] == "refined FFRM"):
            continue
        started = time.perf_counter()
        try:
            processed = process_capture(model, folder, reconstruction, config)
        except Exception as error:  # noqa: BLE001 - e.g. no two images overlap: reported as such
            rows.append({"set": name, "method": method, "images": len(images), "placed": 0, "seconds": time.perf_counter() - started,
                         "failed": str(error), "reference": reference_name})
            continue
        seconds = time.perf_counter() - started
        r = processed.reconstruction
        errors = match_reprojection_errors(processed.graph, r.image_sizes, r.cam_to_world, r.intrinsics, r.depth)
        row = {"set": name, "method": method, "images": len(images), "placed": r.num_views,
               "median_match_error_px": float(np.median(errors)) if len(errors) else None, "match_error_kind": "SIFT matches, median",
               "seconds": seconds, "reference": reference_name, "timings_s": processed.timings, "left_out": processed.left_out}
        if processed.refinement is not None:
            row["initialisation"] = processed.refinement.initialisation
            row["refinement_steps"] = processed.refinement.steps
            row["focal_start"] = processed.refinement.focal_start
            row["focal_trials"] = processed.refinement.focal_trials
        if reference is not None:
            row.update(pose_row(prediction_from_reconstruction(r, method), reference))
        rows.append(row)
    for row in rows:
        row["time_vs_pycolmap"] = row["seconds"] / colmap_s
    return rows


def print_table(rows: List[Dict]) -> None:
    head = f"{'set':18s} {'method':13s} {'AUC@5':>6s} {'AUC@15':>6s} {'AUC@30':>6s} {'RRA15':>6s} {'RTA15':>6s} {'placed':>7s} {'match px':>8s} {'s':>7s} {'x pycolmap':>10s}"
    print(head)
    for r in rows:
        def f(key, fmt="{:6.3f}"):
            return fmt.format(r[key]) if r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key])) else f"{'-':>6s}"
        placed = f"{r['placed']}/{r['images']}"
        error = f"{r['median_match_error_px']:8.2f}" if r.get("median_match_error_px") is not None else f"{'-':>8s}"
        print(f"{r['set']:18s} {r['method']:13s} {f('auc5')} {f('auc15')} {f('auc30')} {f('rra15')} {f('rta15')} {placed:>7s} {error} "
              f"{r['seconds']:7.1f} {r['time_vs_pycolmap']:10.2f}" + (f"  FAILED: {r['failed'][:90]}" if r.get("failed") else ""))
    print("reference: " + "; ".join(sorted({f"{r['set']}: {r['reference']}" for r in rows})))


def plot(rows: List[Dict], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in dict.fromkeys(r["set"] for r in rows) if any("reference_centres" in r for r in rows if r["set"] == s)]
    if not sets:
        return
    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for r in rows:
            if r["set"] != name or "reference_centres" not in r or r["method"] == "pycolmap":
                continue
            ref, pred = np.asarray(r["reference_centres"]), np.asarray(r["aligned_centres"])
            centre = ref.mean(0)
            _, _, vt = np.linalg.svd(ref - centre, full_matrices=False)
            r2, p2 = (ref - centre) @ vt[:2].T, (pred - centre) @ vt[:2].T
            style = "o-" if r["method"] == "refined FFRM" else "x--"
            ax.plot(p2[:, 0], p2[:, 1], style, ms=3, lw=1, label=f"{r['method']} (AUC@30 {r['auc30']:.2f})")
        ax.plot(r2[:, 0], r2[:, 1], "s-", color="black", ms=3, lw=0.8, label=f"reference ({next(x['reference'] for x in rows if x['set'] == name)})")
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("camera centres, Sim(3)-aligned to the reference, top view", fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    print(f"wrote {output}")


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="FFRM checkpoint, pi3 weights or a hub id such as yyfz233/Pi3 (default: a random tiny network)")
    parser.add_argument("--folders", type=Path, nargs="*", default=[], help="more image folders")
    parser.add_argument("--videos", type=Path, nargs="*", default=[], help="videos, sampled to --frames frames each")
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--no-shared", action="store_true", help="skip the shared sets")
    parser.add_argument("--steps", type=int, default=400, help="view refinement steps")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here (the PNG goes beside it)")
    args = parser.parse_args(argv)

    from reliev3r_ns.model import FFRM, ffrm_config, load_ffrm
    from reliev3r_ns.process.video import extract_frames

    if args.checkpoint is not None:
        model = load_ffrm(args.checkpoint).eval()
        label = str(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = FFRM(ffrm_config("tiny")).eval()
        model.checkpoint_extra = {"image_size": [96, 128]}
        label = "random tiny FFRM (seed 0): raw accuracy meaningless"
    sets = []
    if not args.no_shared:
        if (SHARED / "valley").is_dir():
            sets += [(name, SHARED / name) for name in ("valley", "room", "house")]
        else:
            print(f"{SHARED} absent: only the given folders and videos")
    sets += [(p.name, p) for p in args.folders]
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="reliev3r-bench-videos-") as frames_root:
        for video in args.videos:
            folder = Path(frames_root) / video.stem
            extract_frames(video, folder, args.frames)
            sets.append((f"{video.stem} ({len(list(folder.iterdir()))} fr)", folder))
        for name, folder in sets:
            print(f"--- {name}: {folder}", flush=True)
            rows += run_set(name, folder, model, args)
            print_table([r for r in rows if r["set"] == name])
    print(f"\nFFRM: {label}; machine: {machine_label(machine_fingerprint('cpu'))}")
    print_table(rows)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"checkpoint": label, "machine": machine_fingerprint("cpu"), "rows": rows}, indent=1))
        print(f"wrote {args.output}")
        plot(rows, args.output.with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
