"""A real capture to a registered reconstruction: the one pipeline behind every command that processes images.

    scan the folder   (capture.py: sizes, bad files left out and named, duplicates, conversions)
    match             (matching.py: SIFT at a bounded size, the match graph; views that overlap
                       nothing are left out and named, as COLMAP leaves an image unregistered)
    order             (consecutive views overlap: the graph's walk, or file names)
    FFRM windows      (reconstruct.py: one network input size for all, per-view intrinsics)
    refine views      (bundle.py: Reliev3R's weak losses on the matches, explicit per-view
                       parameters, the FFRM's own depth as the frozen teacher)

``reliev3r-process-data``, the ``reliev3r-data`` dataparser, ``reliev3r-eval --checkpoint`` and
``scripts/bench_real_captures.py`` all call :func:`process_capture`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional

from rich.table import Table

from reliev3r_ns.data.scene_io import TRANSFORMS_FILE, SceneFormatError, load_scene
from reliev3r_ns.labels.view_sets import IMAGE_EXTENSIONS
from reliev3r_ns.model import FeedForwardReconstructor as FFRM  # ours or pi3 (reliev3r_ns.model.pi3)
from reliev3r_ns.process.bundle import ViewRefineConfig, ViewRefineResult, refine_views
from reliev3r_ns.process.capture import Capture, read_rgb_reduced, require_two, scan_capture
from reliev3r_ns.process.matching import MatchGraph, MatchingConfig, build_match_graph, visual_order
from reliev3r_ns.process.reconstruct import Reconstruction, ReconstructionConfig, build_cloud, reconstruct

# progress(stage, done, total, info): stage is one of "matching", "reconstructing", "refining".
Progress = Callable[[str, int, Optional[int], str], None]


@dataclass
class CaptureConfig:
    place: Literal["matched", "all"] = "matched"
    """'matched': a view is placed only with enough verified matches to the others (as COLMAP
    registers images); 'all': every readable image is placed where the FFRM puts it, matched or not
    (for sets SIFT cannot see, e.g. small textureless renders; refinement then runs only when the
    matches connect every view)."""
    order: Literal["visual", "name"] = "visual"
    """How views are ordered into windows: 'visual' walks the match graph so consecutive views
    see each other (an unordered collection works; a video keeps about its order); 'name' keeps
    file-name order."""
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    refine_views: ViewRefineConfig = field(default_factory=ViewRefineConfig)
    max_view_error_px: float = 4.0
    """After refinement, a view whose matches' median error stays above this (in pixels of the image
    as SIFT saw it) is left out (named) and the rest refined again, at most twice."""


@dataclass
class ProcessedCapture:
    reconstruction: Reconstruction
    capture: Capture
    graph: MatchGraph  # over reconstruction.image_paths, in their order
    left_out: Dict[str, str]  # file name -> why (unreadable, duplicate, no overlap)
    refinement: Optional[ViewRefineResult]
    timings: Dict[str, float]

    def report(self) -> Dict[str, Any]:
        """What a dataset's metadata records about how it was made."""
        out: Dict[str, Any] = {"left_out": self.left_out, "conversions": self.capture.notes, "ignored_files": self.capture.ignored,
                               "matches": self.graph.num_matches(), "matched_pairs": len(self.graph.pairs),
                               "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}
        if self.refinement is not None:
            r = self.refinement
            out["view_refinement"] = {"steps": r.steps, "initialisation": r.initialisation, "loss_before": r.loss_before,
                                      "loss_after": r.loss_after, "median_match_error_px_before": r.median_error_px_before,
                                      "median_match_error_px_after": r.median_error_px_after, "focal_start": r.focal_start,
                                      "focal_trials": r.focal_trials}
        return out


def capture_files(folder: Path) -> tuple:
    """(files, exif_transpose) of an image folder or a nerfstudio dataset (whose poses are ignored;
    its images are read as stored, since its intrinsics refer to the stored pixels)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneFormatError(f"{folder}: not a folder of images")
    if (folder / TRANSFORMS_FILE).is_file():
        return load_scene(folder).image_paths, False
    images = folder / "images"
    source = images if images.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in images.iterdir()) else folder
    return [p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")], True


def process_capture(model: FFRM, folder: Path, reconstruction: ReconstructionConfig = ReconstructionConfig(),
                    config: CaptureConfig = CaptureConfig(), progress: Optional[Progress] = None) -> ProcessedCapture:
    """Scan, match, order, reconstruct and refine one capture folder (see the module docstring)."""
    timings: Dict[str, float] = {}
    started = time.perf_counter()
    files, exif_transpose = capture_files(folder)
    capture = scan_capture(files, exif_transpose)
    require_two(capture, Path(folder))
    paths, sizes = capture.paths, capture.sizes
    left_out = dict(capture.left_out)
    timings["scan"] = time.perf_counter() - started

    started = time.perf_counter()
    max_side = config.matching.max_side
    graph = build_match_graph(lambda v: read_rgb_reduced(paths[v], max_side, exif_transpose), sizes, config.matching,
                              (lambda done, total: progress("matching", done, total, "")) if progress else None)
    if config.place == "all":
        main = list(range(len(paths)))
    else:
        weak = graph.weakly_matched(config.matching.min_view_matches)
        for v, count in weak.items():
            left_out[paths[v].name] = ("overlaps no other image (no verified SIFT matches); it is not placed" if count == 0 else
                                       f"only {count} verified SIFT matches with the other images (fewer than "
                                       f"{config.matching.min_view_matches}, --capture.matching.min-view-matches); it is not placed")
        graph = graph.without(list(weak))
        groups = [g for g in graph.components() if not (len(g) == 1 and g[0] in weak)]
        main = groups[0] if groups else []
        for group in groups[1:]:
            for v in group:
                left_out[paths[v].name] = ("overlaps no other image (no verified SIFT matches); it is not placed" if len(group) == 1 else
                                           f"in a separate group of {len(group)} images that shares no verified match with the "
                                           f"main group of {len(main)}; process that group on its own")
        if len(main) < 2:
            names = ", ".join(p.name for p in paths[:5])
            raise SceneFormatError(f"{folder}: no two images overlap enough (no image has {config.matching.min_view_matches} verified SIFT matches "
                                   f"with the others, each pair counting from {config.matching.min_pair_matches}, among {names}"
                                   f"{', ...' if len(paths) > 5 else ''}); a reconstruction needs overlapping views. For a weakly "
                                   f"overlapping set, try --capture.matching.min-view-matches 16; to place every image where the FFRM puts it, --capture.place all")
    order = visual_order(graph, main) if config.order == "visual" else sorted(main)
    graph = graph.subset(order)
    timings["matching"] = time.perf_counter() - started

    started = time.perf_counter()
    result = reconstruct(model, [paths[v] for v in order], reconstruction, exif_transpose=exif_transpose,
                         progress=(lambda done, total: progress("reconstructing", done, total, "")) if progress else None,
                         image_sizes=[sizes[v] for v in order])
    timings["ffrm"] = time.perf_counter() - started

    refinement = None
    connected = len(graph.components()) == 1
    if config.refine_views.steps > 0 and not connected and progress:
        progress("refining", 0, 0, "skipped: the matches do not connect every view")
    if config.refine_views.steps > 0 and connected:
        started = time.perf_counter()
        for round_ in range(3):
            exif_focal = [capture.focal_px.get(p.name) for p in result.image_paths]
            refinement = refine_views(graph, result.image_sizes, result.cam_to_world, result.intrinsics, result.depth, config.refine_views,
                                      exif_focal=exif_focal,
                                      progress=(lambda done, total, loss: progress("refining", done, total, f"loss {loss:.4f}")) if progress else None)
            # As COLMAP gives up on an image whose matches its model cannot explain, a view whose
            # matches still disagree with the refined geometry is left out, and the rest refined again.
            bad = [v for v, e in enumerate(refinement.view_error_px) if not e <= config.max_view_error_px]
            if not bad or round_ == 2:
                break
            for v in bad:
                left_out[result.image_paths[v].name] = (f"its matches disagree with the refined cameras (median error "
                                                        f"{refinement.view_error_px[v]:.1f} px at the matching size > {config.max_view_error_px}); it is not placed")
            kept_graph = graph.without(bad)
            keep = max(kept_graph.components(), key=len)
            for v in range(result.num_views):
                if v not in keep and v not in bad:
                    left_out[result.image_paths[v].name] = "separated from the main group once badly matched views were left out"
            if len(keep) < 2:
                raise SceneFormatError(f"{folder}: no two images remain whose matches agree with one geometry; the views do not overlap enough")
            result, graph = result.subset(keep), kept_graph.subset(keep)
        result.cam_to_world, result.intrinsics, result.depth = refinement.cam_to_world, refinement.intrinsics, refinement.depth
        result.points, result.colours = build_cloud(result, reconstruction)
        timings["refine_views"] = time.perf_counter() - started
    return ProcessedCapture(result, capture, graph, left_out, refinement, timings)


def print_capture_report(processed: ProcessedCapture, console) -> None:
    """What was left out or converted, and what refinement did: a user must see both."""
    capture = processed.capture
    if processed.left_out:
        table = Table(title=f"left out ({len(processed.left_out)} of {len(capture.images) + len(capture.left_out)} images)")
        table.add_column("image")
        table.add_column("why")
        for name, why in processed.left_out.items():
            table.add_row(name, why)
        console.print(table)
    if capture.notes:
        console.print("converted to 8-bit RGB: " + "; ".join(f"{name} ({note})" for name, note in list(capture.notes.items())[:10])
                      + (f"; and {len(capture.notes) - 10} more" if len(capture.notes) > 10 else ""))
    if capture.ignored:
        console.print(f"ignored {len(capture.ignored)} non-image file(s): {', '.join(capture.ignored[:5])}")
    r = processed.refinement
    if r is not None:
        focal = f", focal length started at {r.focal_start}" + (" px, chosen by the focal search" if r.focal_trials else "")
        table = Table(title=f"view refinement ({r.steps} steps, started from the {r.initialisation} cameras{focal})")
        for column in ("", "weak loss", "median match reprojection error (px)"):
            table.add_column(column)
        table.add_row("before", f"{r.loss_before:.4f}", f"{r.median_error_px_before:.2f}")
        table.add_row("after", f"{r.loss_after:.4f}", f"{r.median_error_px_after:.2f}")
        console.print(table)
