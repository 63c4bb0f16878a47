"""Two nerfstudio dataparsers.

``reliev3r-data`` runs the FFRM on a folder of images inline:

    ns-train splatfacto reliev3r-data --data IMAGES --checkpoint ffrm.pt
    ns-train splatfacto --pipeline.model.camera-optimizer.mode SO3xR3 reliev3r-data --data IMAGES --checkpoint ffrm.pt

The first use reconstructs the images (as ``reliev3r-process-data images`` does) into a content-keyed
folder of the cache (the images' bytes, the checkpoint's bytes and the reconstruction options name it),
later uses read it back. From there on it is nerfstudio's own ``nerfstudio-data`` parser (orientation,
centring, scaling, train / eval split, ``sparse_pc.ply`` as splatfacto's initial points), so the
camera optimiser of splatfacto / nerfacto can refine the FFRM's poses like any other dataset's.

``reliev3r-dataset`` is ``nerfstudio-data`` reading ``sparse_pc.ply`` with plyfile instead of open3d,
for a dataset that ``reliev3r-process-data`` wrote, on machines where open3d does not import (its wheel
needs system libraries such as libusb) or is not installed; everything else is nerfstudio's parser:

    ns-train splatfacto reliev3r-dataset --data OUT
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import torch
from nerfstudio.data.dataparsers.base_dataparser import DataParser
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from rich.console import Console

from reliev3r_ns.data.ply import read_ply
from reliev3r_ns.data.synthetic_dataset import cache_dir
from reliev3r_ns.labels import config_key, file_key
from reliev3r_ns.process.dataset import DatasetWriterConfig, write_dataset
from reliev3r_ns.process.pipeline import CaptureConfig, capture_files, print_capture_report, process_capture
from reliev3r_ns.process.reconstruct import ReconstructionConfig

CONSOLE = Console()
NO_CHECKPOINT = ("pass an FFRM checkpoint: --checkpoint ffrm.pt (or none, for the bundled one). Train one with `ns-train reliev3r`, "
                 "export it with `reliev3r-export-ffrm --load-config outputs/.../config.yml --output ffrm.pt`")


class PlyfileNerfstudio(Nerfstudio):
    """nerfstudio's parser, reading sparse_pc.ply with plyfile instead of open3d (same points)."""

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float):
        points, colours = read_ply(ply_file_path)
        if len(points) == 0:
            return None
        xyz = torch.from_numpy(points)
        xyz = torch.cat([xyz, torch.ones_like(xyz[..., :1])], -1) @ transform_matrix.T
        return {"points3D_xyz": xyz * scale_factor, "points3D_rgb": torch.from_numpy(colours)}


@dataclass
class PlyfileNerfstudioDataParserConfig(NerfstudioDataParserConfig):
    _target: Type = field(default_factory=lambda: PlyfileNerfstudio)
    load_3D_points: bool = True
    """Pass sparse_pc.ply on as splatfacto's initial points."""


@dataclass
class Reliev3rDataParserConfig(NerfstudioDataParserConfig):
    _target: Type = field(default_factory=lambda: Reliev3rDataParser)
    data: Path = Path()
    """A folder of images (or a nerfstudio dataset, whose poses are ignored)."""
    checkpoint: Optional[Path] = None
    """Standalone FFRM checkpoint (reliev3r-export-ffrm), pi3's released weights (model.safetensors, or the hub id
    yyfz233/Pi3: downloaded once when online). Default: the bundled tiny FFRM (weak labels on
    synthetic rooms), as in reliev3r-process-data."""
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    """Matching, ordering and view refinement, as in reliev3r-process-data."""
    camera_intrinsics: Literal["shared", "per-frame"] = "shared"
    device: str = "auto"
    processed_cache: Optional[Path] = None
    """Where reconstructions are kept (default <cache>/processed)."""
    load_3D_points: bool = True
    """Pass the FFRM's cloud on as splatfacto's initial points."""


class Reliev3rDataParser(DataParser):
    config: Reliev3rDataParserConfig

    def __init__(self, config: Reliev3rDataParserConfig) -> None:
        super().__init__(config)
        self._inner: Optional[PlyfileNerfstudio] = None

    def processed_dir(self) -> Path:
        """Reconstruct (once per images + checkpoint + options) and return the dataset folder."""
        config = self.config
        from reliev3r_ns.checkpoints import checkpoint_or_bundled

        config.checkpoint = checkpoint_or_bundled(config.checkpoint, lambda line: CONSOLE.print(f"reliev3r-data: {line}"))
        from reliev3r_ns.model.loading import checkpoint_file

        try:
            weights = checkpoint_file(config.checkpoint)  # a hub id or a folder: the file itself, for the cache key
        except FileNotFoundError:
            raise FileNotFoundError(f"{config.checkpoint}: no such checkpoint. {NO_CHECKPOINT}") from None
        files, exif_transpose = capture_files(config.data)
        options = {"reconstruction": dataclasses.asdict(config.reconstruction), "capture": dataclasses.asdict(config.capture),
                   "camera_intrinsics": config.camera_intrinsics, "exif_transpose": exif_transpose}
        key = config_key({"images": file_key(sorted(files)), "checkpoint": file_key([weights]), "options": options})
        target = (config.processed_cache or cache_dir() / "processed") / key
        if (target / "transforms.json").is_file():
            CONSOLE.print(f"reliev3r-data: using the reconstruction in {target}")
            return target
        from reliev3r_ns.model import load_ffrm, resolve_device

        model = load_ffrm(weights, map_location=resolve_device(config.device)).eval()
        CONSOLE.print(f"reliev3r-data: reconstructing the images of {config.data} with {config.checkpoint}")
        processed = process_capture(model, config.data, config.reconstruction, config.capture)
        print_capture_report(processed, CONSOLE)
        metadata = {"generator": "reliev3r-data", "checkpoint": str(config.checkpoint), "checkpoint_file": str(weights.resolve()), "source": str(Path(config.data).resolve()),
                    **options, **processed.report()}
        write_dataset(processed.reconstruction, target, DatasetWriterConfig(camera_intrinsics=config.camera_intrinsics), exif_transpose,
                      json.loads(json.dumps(metadata)))
        return target

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs):
        if self._inner is None:
            names = {f.name for f in dataclasses.fields(NerfstudioDataParserConfig)}
            inner_config = PlyfileNerfstudioDataParserConfig(**{n: getattr(self.config, n) for n in names if n != "_target"})
            inner_config.data = self.processed_dir()
            self._inner = inner_config.setup()
        return self._inner._generate_dataparser_outputs(split, **kwargs)


reliev3r_dataparser = DataParserSpecification(
    config=Reliev3rDataParserConfig(),
    description="Images in, poses and initial points from a reliev3r FFRM (no COLMAP)",
)

reliev3r_dataset = DataParserSpecification(
    config=PlyfileNerfstudioDataParserConfig(),
    description="A dataset written by reliev3r-process-data (nerfstudio-data, sparse_pc.ply read without open3d)",
)
