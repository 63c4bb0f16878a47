"""reliev3r-eval: measure a reconstruction against a reference, the way the field does.

    reliev3r-eval --prediction OUT --reference GT_SCENE                 # a processed dataset vs GT
    reliev3r-eval --checkpoint ffrm.pt --images IMAGES --reference GT   # predict here, then measure
    reliev3r-eval --prediction OUT --reference colmap/sparse/0          # vs a COLMAP model
    reliev3r-eval --prediction OUT --reference-sfm --images IMAGES      # vs pycolmap SfM run now

Writes a JSON report, prints a table, draws a PNG (aligned trajectories from above, a depth error map).
Metrics: pairwise RRA / RTA at 5/15/30 degrees and AUC@30, Sim(3)-aligned ATE, posed fraction;
with GT depth: depth AbsRel / delta<1.25 / tau and point-map rel / tau; cloud accuracy / completeness /
Chamfer against the reference points.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from reliev3r_ns.cli import run_cli
from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.process.pipeline import CaptureConfig
from reliev3r_ns.process.reconstruct import ReconstructionConfig

CONSOLE = Console()

ORDER = ["num_matched", "posed_fraction", "pose_auc30", "rra5", "rra15", "rra30", "rta5", "rta15", "rta30",
         "rotation_error_deg", "translation_error_deg", "ate", "ate_normalised", "depth_abs_rel", "depth_delta1.25",
         "depth_tau", "depth_affine_abs_rel", "depth_affine_tau", "depth_spread_vs_gt", "pointmap_rel", "pointmap_tau", "cloud_accuracy", "cloud_completeness", "cloud_chamfer"]


@dataclass
class Eval:
    prediction: Optional[Path] = None
    """A dataset written by reliev3r-process-data."""
    checkpoint: Optional[Path] = None
    """Or: an FFRM checkpoint, pi3 weights (model.safetensors) or a hub id (yyfz233/Pi3), run here on --images."""
    images: Optional[Path] = None
    """The images (a folder, or a nerfstudio dataset) for --checkpoint and --reference-sfm."""
    reference: Optional[Path] = None
    """GT nerfstudio dataset (transforms.json, optional metric depth) or a COLMAP model folder."""
    reference_sfm: bool = False
    """Compute the reference with pycolmap's SfM on --images (when there is nothing better)."""
    output: Path = Path("eval.json")
    """JSON report; the plot goes beside it with .png."""
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    """With --checkpoint: matching, ordering and view refinement, as in reliev3r-process-data."""
    device: str = "auto"

    def _prediction(self):
        from reliev3r_ns.eval.evaluate import prediction_from_dataset, prediction_from_reconstruction

        if (self.prediction is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of --prediction DATASET or --checkpoint CKPT (with --images)")
        if self.prediction is not None:
            return prediction_from_dataset(self.prediction)
        if self.images is None:
            raise ValueError("--checkpoint needs --images (the image folder to reconstruct)")
        from reliev3r_ns.model import load_ffrm, resolve_device
        from reliev3r_ns.process.pipeline import process_capture

        model = load_ffrm(self.checkpoint, map_location=resolve_device(self.device)).eval()
        processed = process_capture(model, self.images, self.reconstruction, self.capture)
        prediction = prediction_from_reconstruction(processed.reconstruction, f"{self.checkpoint} on {self.images}")
        prediction.num_images = processed.reconstruction.num_views + len(processed.left_out)
        return prediction

    def main(self) -> dict:
        from reliev3r_ns.eval.evaluate import evaluate, load_reference, run_colmap_sfm, save_evaluation_plot

        if (self.reference is None) == (not self.reference_sfm):
            raise ValueError("give exactly one of --reference PATH or --reference-sfm (with --images)")
        prediction = self._prediction()
        timings = {}
        if self.reference_sfm:
            if self.images is None:
                raise ValueError("--reference-sfm needs --images")
            from reliev3r_ns.labels import open_view_set

            with tempfile.TemporaryDirectory(prefix="reliev3r-sfm-") as workdir:
                reference, timings = run_colmap_sfm(open_view_set(self.images).image_paths, Path(workdir))
        else:
            reference = load_reference(self.reference)
        evaluation = evaluate(prediction, reference)
        report = {"prediction": prediction.source, "reference": reference.source, "metrics": evaluation.metrics, **timings,
                  "matched_images": [m[0] for m in evaluation.matched]}
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_name(self.output.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, self.output)
        plot = save_evaluation_plot(evaluation, self.output.with_suffix(".png"), title=f"{Path(prediction.source).name} vs {Path(reference.source).name}")
        table = Table(title=f"{prediction.source}  vs  {reference.source}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in ORDER:
            if key in evaluation.metrics:
                table.add_row(key, f"{evaluation.metrics[key]:.4f}")
        CONSOLE.print(table)
        CONSOLE.print(f"wrote {self.output} and {plot}")
        return report


def entrypoint() -> None:
    run_cli(Eval, __doc__, (FileNotFoundError, SceneFormatError, ValueError))


if __name__ == "__main__":
    entrypoint()
