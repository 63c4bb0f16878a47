"""reliev3r-demo: the main job end to end on the bundled default, with nothing to download.

    reliev3r-demo [--scene 4] [--output-dir reliev3r-demo] [--checkpoint ffrm.pt]

1. renders the default synthetic dataset into the cache (once; later runs reuse it) and its preview;
2. turns a held-out scene's 24 images into a nerfstudio dataset without COLMAP, with the bundled FFRM
   (trained from weak labels only, on other scenes) and the refinement on the images' own SIFT matches:
   what ``reliev3r-process-data images`` does with your photos, except that every view is placed
   (``--capture.place all``): at 128 x 96 pixels SIFT finds too few matches to vouch for most views,
   which on photos would leave them out;
3. measures that dataset against the scene's ground truth (poses and depth: the table ``reliev3r-eval``
   prints) and draws it;
4. prints where everything is, and what to run next.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rich.console import Console

from reliev3r_ns.cli import run_cli
from reliev3r_ns.data.scene_io import SceneFormatError

CONSOLE = Console()
MARKER = "demo.json"


@dataclass
class Demo:
    scene: int = 4
    """Which held-out scene of the default eval split (0-7) to reconstruct. 4 is its first forward walk,
    the trajectory kind the bundled tiny network has learnt poses for (held-out AUC@30 0.45 there);
    orbits (1, 2, 3, 7) and look-at sets (0, 5) it has not (see docs/weak_vs_full.md)."""
    output_dir: Path = Path("reliev3r-demo")
    """Receives dataset/ (the nerfstudio dataset), eval.json + eval.png, scene_preview.png, demo.json.
    A folder of an earlier demo run is replaced; any other non-empty folder is refused."""
    checkpoint: Optional[Path] = None
    """An FFRM checkpoint to use instead of the bundled one."""
    device: str = "cpu"
    """'cpu' (the figures beside the bundled checkpoint were measured there), 'cuda', 'auto'."""

    def _check_scene(self, count: int) -> None:
        if not 0 <= self.scene < count:
            raise ValueError(f"--scene {self.scene}: the default eval split has scenes 0-{count - 1}")

    def _prepare_output(self) -> None:
        out = self.output_dir
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; choose another --output-dir")
        if out.is_dir() and any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise FileExistsError(f"{out}: exists, is not empty and is not an earlier reliev3r-demo output; "
                                      "choose another --output-dir")
            shutil.rmtree(out)  # an earlier demo's own output: replaced whole, so nothing stale mixes in
        out.mkdir(parents=True, exist_ok=True)

    def main(self) -> dict:
        from reliev3r_ns.checkpoints import checkpoint_or_bundled
        from reliev3r_ns.cli.eval import Eval
        from reliev3r_ns.cli.process_data import ProcessImages
        from reliev3r_ns.data.preview import save_scene_preview
        from reliev3r_ns.data.scene_io import load_scene
        from reliev3r_ns.data.synthetic_dataset import DEFAULT_SPLITS, ensure_default_dataset
        from reliev3r_ns.process.dataset import DatasetWriterConfig
        from reliev3r_ns.process.pipeline import CaptureConfig

        started = time.perf_counter()
        self._check_scene(DEFAULT_SPLITS["eval"]["num_scenes"])  # before any slow work
        checkpoint = checkpoint_or_bundled(self.checkpoint, CONSOLE.print)
        self._prepare_output()
        CONSOLE.rule("1/3 the default synthetic dataset (rendered once into the cache)")
        splits = ensure_default_dataset()
        scene = sorted(splits["eval"].glob("scene_*"))[self.scene]
        dataset_preview = splits["train"] / "preview.png"
        if not dataset_preview.is_file():
            save_scene_preview(load_scene(sorted(splits["train"].glob("scene_*"))[0]), dataset_preview)
        scene_preview = save_scene_preview(load_scene(scene), self.output_dir / "scene_preview.png")
        kind = json.loads((scene / "scene.json").read_text()).get("trajectory", "?")
        CONSOLE.print(f"held-out scene: {scene} ({kind}; its images only, poses and depth stay for the evaluation)")

        CONSOLE.rule("2/3 images -> nerfstudio dataset, no COLMAP")
        CONSOLE.print(f"FFRM: {checkpoint}")
        dataset = ProcessImages(data=scene, output_dir=self.output_dir / "dataset", checkpoint=checkpoint,
                                device=self.device, capture=CaptureConfig(place="all"),
                                output=DatasetWriterConfig(overwrite=True)).main()

        CONSOLE.rule("3/3 the dataset against the scene's ground truth")
        report = Eval(prediction=dataset, reference=scene, output=self.output_dir / "eval.json").main()

        seconds = time.perf_counter() - started
        summary = {"scene": str(scene), "checkpoint": str(checkpoint), "dataset": str(dataset),
                   "seconds": round(seconds, 1), "metrics": report["metrics"]}
        (self.output_dir / MARKER).write_text(json.dumps(summary, indent=2))
        metrics = report["metrics"]
        CONSOLE.rule("done")
        CONSOLE.print(
            f"pose AUC@30 {metrics['pose_auc30']:.3f}, rotation error {metrics['rotation_error_deg']:.1f} deg, "
            f"depth tau {metrics.get('depth_tau', float('nan')):.3f} against the ground truth, in {seconds:.0f} s\n"
            f"  dataset (transforms.json, sparse_pc.ply, depth/): {dataset}\n"
            f"  its preview:                        {dataset / 'preview.png'}\n"
            f"  evaluation (JSON, picture):         {self.output_dir / 'eval.json'}, {self.output_dir / 'eval.png'}\n"
            f"  the scene's views, depth, cameras:  {scene_preview}\n"
            f"  the default dataset and preview:    {splits['train'].parent} ({dataset_preview})\n"
            "next: your own photos: reliev3r-process-data images --data PHOTOS --output-dir OUT, then "
            "ns-train splatfacto --data OUT (CUDA) or ns-train nerfacto --data OUT;\n"
            "      train the FFRM yourself: ns-train reliev3r (the live viewer opens at http://localhost:7007)")
        return summary


def entrypoint() -> None:
    run_cli(Demo, __doc__, (FileNotFoundError, FileExistsError, SceneFormatError, ValueError))


if __name__ == "__main__":
    entrypoint()
