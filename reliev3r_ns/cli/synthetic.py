"""``reliev3r-synthetic``: render procedural multi-view scenes (RGB, GT depth, poses) as nerfstudio datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import tyro
from typing_extensions import Annotated

from reliev3r_ns.cli import run_cli
from reliev3r_ns.data.synthetic import SyntheticSceneConfig


@dataclass
class Generate:
    """Render NUM_SCENES scenes into OUTPUT_DIR (resumes an interrupted run; refuses to mix configs)."""

    output_dir: Path
    """Folder that receives dataset.json and scene_00000/, scene_00001/, ..."""
    num_scenes: int = 8
    seed: int = 0
    """Base seed; scene k's seed derives from (seed, k)."""
    scene: SyntheticSceneConfig = field(default_factory=SyntheticSceneConfig)
    preview: bool = True
    """Also write OUTPUT_DIR/preview.png showing the first scene."""
    workers: int = 1
    """Scenes rendered in parallel worker processes (the same scenes as with one)."""

    def main(self) -> None:
        from reliev3r_ns.data.synthetic_dataset import generate_dataset

        if self.workers < 1:
            raise ValueError("--workers must be >= 1")
        scenes = generate_dataset(self.output_dir, self.num_scenes, seed=self.seed, config=self.scene, workers=self.workers)
        _finish(self.output_dir, scenes[0] if self.preview else None)


@dataclass
class Default:
    """Render the bundled default dataset (train + eval splits) into the cache, once, and print where it is."""

    preview: bool = True
    """Also write a preview.png of the first training scene."""

    def main(self) -> None:
        from reliev3r_ns.data.synthetic_dataset import ensure_default_dataset

        splits = ensure_default_dataset()
        _finish(splits["train"], sorted(splits["train"].glob("scene_*"))[0] if self.preview else None)
        print(f"eval split: {splits['eval']}")


@dataclass
class Preview:
    """Draw one scene (views, depth, cameras from above) into a PNG."""

    scene: Path
    output: Optional[Path] = None
    """Defaults to SCENE/preview.png."""

    def main(self) -> None:
        from reliev3r_ns.data.preview import save_scene_preview
        from reliev3r_ns.data.scene_io import load_scene

        out = save_scene_preview(load_scene(self.scene), self.output or self.scene / "preview.png")
        print(f"wrote {out}")


def _finish(dataset_dir: Path, preview_scene: Optional[Path]) -> None:
    print(f"dataset: {dataset_dir}")
    if preview_scene is not None:
        from reliev3r_ns.data.preview import save_scene_preview
        from reliev3r_ns.data.scene_io import load_scene

        print(f"preview: {save_scene_preview(load_scene(preview_scene), dataset_dir / 'preview.png')}")


Commands = Union[
    Annotated[Generate, tyro.conf.subcommand("generate")],
    Annotated[Default, tyro.conf.subcommand("default")],
    Annotated[Preview, tyro.conf.subcommand("preview")],
]


def entrypoint() -> None:
    run_cli(Commands, __doc__, (ValueError, FileExistsError))


if __name__ == "__main__":
    entrypoint()
