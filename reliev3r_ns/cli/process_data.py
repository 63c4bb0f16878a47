"""reliev3r-process-data: images or a video -> a nerfstudio dataset, with the FFRM instead of COLMAP.

    reliev3r-process-data images --data IMAGES --output-dir OUT --checkpoint ffrm.pt
    reliev3r-process-data video  --data VIDEO.mp4 --output-dir OUT --checkpoint ffrm.pt [--num-frames-target 300]
    ns-train splatfacto --data OUT

Images may differ in size and orientation; unreadable files, exact duplicates and images that overlap
no other are left out and named. The FFRM's cameras and depth are then refined on the images' own
SIFT matches with Reliev3R's weak losses (no weights to download; ``--capture.refine-views.steps 0``
keeps the raw FFRM). OUT gets transforms.json (per-frame intrinsics where sizes differ),
sparse_pc.ply (splatfacto's initial points), depth maps, images/ and downscaled copies, preview.png,
and with --output.colmap a COLMAP text model. ``--refine.steps N`` also fine-tunes the network first
(needs a depth model: ``--refine.labels.transformers.model PATH``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from typing_extensions import Annotated

import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reliev3r_ns.cli import run_cli
from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.labels import open_view_set
from reliev3r_ns.model import FeedForwardReconstructor as FFRM, resolve_device
from reliev3r_ns.process.dataset import DatasetWriterConfig, write_dataset
from reliev3r_ns.process.pipeline import CaptureConfig, print_capture_report, process_capture
from reliev3r_ns.process.reconstruct import ReconstructionConfig, default_resolution, focal_spread
from reliev3r_ns.process.refine import RefineConfig, refine
from reliev3r_ns.teachers.depth import TeacherError

CONSOLE = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), console=CONSOLE, transient=False)


@dataclass
class _ProcessData:
    data: Path
    output_dir: Path
    checkpoint: Optional[Path] = None
    """Standalone FFRM checkpoint (reliev3r-export-ffrm), pi3's released weights (model.safetensors, or the hub id
    yyfz233/Pi3: downloaded once when online). Default: the bundled tiny FFRM (weak labels on
    synthetic rooms; the refinement on the photos' own matches does most of the work on real images)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ..."""
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    """How images are matched, ordered into windows and refined (``--capture.refine-views.steps 0``: the raw FFRM)."""
    output: DatasetWriterConfig = field(default_factory=DatasetWriterConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    """Network fine-tuning before reconstruction (off by default; needs a depth model and one image size)."""

    def _load_model(self) -> FFRM:
        from reliev3r_ns.checkpoints import checkpoint_or_bundled

        self.checkpoint = checkpoint_or_bundled(self.checkpoint, CONSOLE.print)
        from reliev3r_ns.model import load_ffrm

        return load_ffrm(self.checkpoint, map_location=resolve_device(self.device)).eval()

    def _images_folder(self, workdir: Path) -> Path:
        raise NotImplementedError  # each subcommand says where its images come from

    def _refine_network(self, model: FFRM, folder: Path) -> Optional[dict]:
        view_set = open_view_set(folder)
        first = view_set.load_image(0)
        size = model.inference_size(*first.shape[:2], self.reconstruction.resolution or default_resolution(model))
        with _progress() as progress:
            task = progress.add_task("network fine-tuning", total=self.refine.steps, info="")
            report = refine(model, view_set, self.refine, size,
                            lambda done, total, loss: progress.update(task, completed=done, info=f"loss {loss:.4f}"))
        table = Table(title=f"network fine-tuning ({report.steps} steps, weak loss on fixed clips)")
        for column in ("", "total", "depth", "reprojection"):
            table.add_column(column)
        for name, terms in (("before", report.terms_before), ("after", report.terms_after)):
            table.add_row(name, *(f"{terms[k]:.4f}" for k in ("loss/total", "loss/depth", "loss/reprojection")))
        CONSOLE.print(table)
        return {"steps": report.steps, "loss_before": report.loss_before, "loss_after": report.loss_after}

    def main(self) -> Path:
        model = self._load_model()  # before any slow work: a missing checkpoint fails at once
        labels = self.refine.labels
        if self.refine.steps > 0 and labels.depth_teacher == "transformers" and not labels.transformers.model:
            from reliev3r_ns.teachers.depth import DepthTeacherError

            raise DepthTeacherError("--refine.steps fine-tunes the network and needs a depth model for its labels: "
                             "--refine.labels.transformers.model PATH_OR_HUB_ID (e.g. a local Depth Anything folder). "
                             "Without one, leave --refine.steps at 0: the cameras are still refined on the photos' own "
                             "matches (--capture.refine-views), which needs no weights")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="reliev3r-process-") as workdir:
            folder = self._images_folder(Path(workdir))
            network_report = self._refine_network(model, folder) if self.refine.steps > 0 else None
            with _progress() as progress:
                tasks = {}

                def show(stage: str, done: int, total: Optional[int], info: str) -> None:
                    if stage not in tasks:
                        tasks[stage] = progress.add_task(STAGES[stage], total=total, info="")
                    progress.update(tasks[stage], completed=done, total=total, info=info)

                processed = process_capture(model, folder, self.reconstruction, self.capture, show)
            result = processed.reconstruction
            print_capture_report(processed, CONSOLE)
            spread = focal_spread(result.intrinsics)
            if self.output.camera_intrinsics == "shared" and spread > 0.1 and len(set(result.image_sizes)) == 1:
                CONSOLE.print(f"[yellow]the per-view focal lengths vary by {spread:.0%}; if these images come from "
                              "different cameras or zoom settings, use --output.camera-intrinsics per-frame")
            metadata = {
                "generator": "reliev3r-process-data",
                "checkpoint": str(self.checkpoint.resolve()),
                "checkpoint_extra": {k: v for k, v in getattr(model, "checkpoint_extra", {}).items() if isinstance(v, (str, int, float, list))},
                "source": str(self.data.resolve()),
                "windows": len(result.windows),
                "window_size": self.reconstruction.window_size,
                "window_overlap": self.reconstruction.window_overlap,
                "network_size": list(result.depth_size),
                **processed.report(),
            }
            if network_report is not None:
                metadata["refinement"] = network_report
            with _progress() as progress:
                task = progress.add_task("writing dataset", total=result.num_views, info="")
                out = write_dataset(result, self.output_dir, self.output, processed.capture.exif_transpose, metadata,
                                    lambda done, total: progress.update(task, completed=done))
        CONSOLE.print(
            f"[green]wrote {out}[/green]: {result.num_views} frames, {len(result.points)} points, "
            f"{len(result.windows)} window(s), {time.perf_counter() - started:.1f} s. Next: ns-train splatfacto --data {out}"
        )
        return out


STAGES = {"matching": "matching images (SIFT)", "reconstructing": "FFRM windows", "refining": "refining views (weak losses)"}


@dataclass
class ProcessImages(_ProcessData):
    """A folder of images (or a nerfstudio dataset, whose poses are ignored) -> a nerfstudio dataset."""

    def _images_folder(self, workdir: Path) -> Path:
        if not self.data.is_dir():
            raise SceneFormatError(f"{self.data}: not a folder of images")
        return self.data


@dataclass
class ProcessVideo(_ProcessData):
    """A video -> evenly sampled frames -> a nerfstudio dataset."""

    num_frames_target: int = 300
    """About this many frames are sampled evenly from the video (as ns-process-data does)."""

    def _images_folder(self, workdir: Path) -> Path:
        from reliev3r_ns.process.video import extract_frames

        with _progress() as progress:
            task = progress.add_task("extracting frames", total=None, info="")
            extract_frames(self.data, workdir / "frames", self.num_frames_target,
                           lambda done, total: progress.update(task, completed=done, total=total))
        return workdir / "frames"


Commands = Union[
    Annotated[ProcessImages, tyro.conf.subcommand("images")],
    Annotated[ProcessVideo, tyro.conf.subcommand("video")],
]


def entrypoint() -> None:
    run_cli(Commands, __doc__, (FileNotFoundError, FileExistsError, SceneFormatError, TeacherError, ValueError, FloatingPointError))


if __name__ == "__main__":
    entrypoint()
