"""Scenes on disk: a nerfstudio dataset folder, optionally with metric depth and our metadata.

Layout of one scene (a valid nerfstudio dataset; ``ns-train nerfacto --data SCENE`` reads it)::

    SCENE/
      transforms.json      nerfstudio format: per-frame PINHOLE intrinsics (fl_x, fl_y, cx, cy, w, h),
                           OpenGL camera-to-world ``transform_matrix``, ``depth_file_path`` when depth exists
      images/frame_00000.png ...   8-bit RGB
      depth/frame_00000.npy  ...   float32 z-depth in metres, (H, W); written only for scenes with GT depth
      scene.json           what made the scene (generator, seed, config); optional

nerfstudio's depth loaders multiply depth files by ``depth_unit_scale_factor`` (1e-3 by default, for
millimetre PNGs); our depth is in metres, so pass ``--pipeline.datamanager.dataparser.depth-unit-scale-factor 1``
when training depth-supervised nerfstudio methods on these scenes.

Writes are atomic: a scene is assembled in a hidden temporary folder beside its destination and
renamed into place, so a folder named like a scene is always complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps

from reliev3r_ns.geometry.camera import scale_intrinsics
from reliev3r_ns.geometry.conventions import frame_to_transforms_json, frames_from_transforms_json

TRANSFORMS_FILE = "transforms.json"
SCENE_META_FILE = "scene.json"


class SceneFormatError(ValueError):
    """A scene folder is missing a file or holds a malformed one; the message names the file."""


@dataclass
class Scene:
    """A scene as read from disk. Cameras are OpenCV; poses and depths are None when absent."""

    root: Path
    image_paths: List[Path]
    cam_to_world: np.ndarray  # (N, 4, 4) float64, OpenCV
    intrinsics: np.ndarray  # (N, 3, 3) float64, OpenCV pixel convention
    width: int
    height: int
    depth_paths: Optional[List[Path]] = None
    metadata: Dict = field(default_factory=dict)
    distortion: Optional[Dict[str, float]] = None
    """Lens distortion the cameras have and ``intrinsics`` leave out (read with lens_distortion='ignore')."""

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    @property
    def has_depth(self) -> bool:
        return self.depth_paths is not None

    def load_images(self, indices: Optional[List[int]] = None) -> np.ndarray:
        """(n, H, W, 3) uint8 RGB of the chosen views (all by default)."""
        indices = range(self.num_views) if indices is None else indices
        return np.stack([read_rgb(self.image_paths[i], (self.height, self.width)) for i in indices])

    def load_depths(self, indices: Optional[List[int]] = None) -> np.ndarray:
        """(n, H, W) float32 metric z-depth of the chosen views."""
        if self.depth_paths is None:
            raise SceneFormatError(f"{self.root / TRANSFORMS_FILE}: this scene has no depth_file_path entries (no GT depth)")
        indices = range(self.num_views) if indices is None else indices
        return np.stack([read_depth(self.depth_paths[i], (self.height, self.width)) for i in indices])


def read_rgb(path: Path, expected_hw: Optional[tuple] = None, exif_transpose: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB; an unreadable or truncated file raises naming it.

    Grey, RGBA and palette images are converted to RGB; 16-bit and float images are scaled to 8 bits
    by their own maximum. ``exif_transpose`` applies the EXIF orientation (what a photo viewer shows):
    right for raw captures, wrong for nerfstudio datasets, whose intrinsics refer to the stored pixels.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if exif_transpose:
                image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                values = np.asarray(image, dtype=np.float64)
                peak = values.max() if values.size and values.max() > 0 else 1.0
                grey = np.clip(np.rint(values / peak * 255.0), 0, 255).astype(np.uint8)
                rgb = np.repeat(grey[..., None], 3, axis=-1)
            else:
                rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: image file is missing") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise SceneFormatError(f"{path}: cannot read image ({error}); replace or remove the file") from None
    if expected_hw is not None and rgb.shape[:2] != tuple(expected_hw):
        raise SceneFormatError(
            f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]} but transforms.json says {expected_hw[1]}x{expected_hw[0]}"
        )
    return rgb


EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how the stored pixels are turned


def image_size(path: Path, exif_transpose: bool = False) -> Tuple[int, int]:
    """(H, W) of an image as :func:`read_rgb` will return it, from the header only (no decode)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1) if exif_transpose else 1
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: image file is missing") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise SceneFormatError(f"{path}: cannot read image ({error}); replace or remove the file") from None
    # EXIF orientations 5-8 turn the picture by 90 degrees.
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def common_image_size(
    image_paths: Sequence[Path], exif_transpose: bool = False, where: Optional[Path] = None, advice: str = "resize them to one size"
) -> Tuple[int, int]:
    """(H, W) shared by every image (headers only); a mixed set raises naming one file of each size.

    The one check behind labelling, processing and ``FFRM.infer``: a view set is one camera."""
    if len(image_paths) == 0:
        raise SceneFormatError(f"{where or 'view set'}: no images given")
    sizes = {Path(p): image_size(Path(p), exif_transpose) for p in image_paths}
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        first = {s: next(p for p, q in sizes.items() if q == s) for s in distinct}
        detail = ", ".join(f"{first[s].name} is {s[1]}x{s[0]}" for s in distinct)
        prefix = f"{where}: " if where is not None else ""
        raise SceneFormatError(f"{prefix}images have different sizes ({detail}); {advice}")
    return distinct[0]


def read_depth(path: Path, expected_hw: Optional[tuple] = None) -> np.ndarray:
    try:
        depth = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: depth file is missing") from None
    except (OSError, ValueError) as error:
        raise SceneFormatError(f"{path}: cannot read depth ({error}); expected a float .npy array") from None
    if depth.ndim != 2 or (expected_hw is not None and depth.shape != tuple(expected_hw)):
        raise SceneFormatError(f"{path}: depth has shape {depth.shape}, expected {tuple(expected_hw or ('H', 'W'))}")
    return depth.astype(np.float32, copy=False)


# DL3DV and nerfstudio datasets list ``images/NAME`` while shipping (or keeping only) downscaled copies
# under images_N/ (DL3DV's 960P release has images_4/ alone): the first found in this order is read.
DOWNSCALED_FOLDERS = ("images_4", "images_2", "images_8")


def _resolve_frame_image(root: Path, frame: Dict) -> Path:
    """The frame's image, or its downscaled copy with the intrinsics scaled to that copy's pixels."""
    path = root / frame["file_path"]
    parts = Path(frame["file_path"]).parts
    if path.is_file() or len(parts) < 2 or parts[0] != "images":
        return path
    for folder in DOWNSCALED_FOLDERS:
        candidate = root.joinpath(folder, *parts[1:])
        if candidate.is_file():
            with Image.open(candidate) as image:
                width, height = image.size
            K = scale_intrinsics(torch.from_numpy(frame["intrinsics"]), width / frame["width"], height / frame["height"])
            frame.update(intrinsics=K.numpy(), width=width, height=height)
            return candidate
    return path


def load_scene(root: Path, lens_distortion: str = "refuse") -> Scene:
    """Read and validate a scene folder (see the module docstring for the layout).

    ``lens_distortion='ignore'`` reads a dataset whose cameras have distortion coefficients (DL3DV's
    OPENCV cameras) with their pinhole part, for uses that take its poses for evaluation only.

    Raises:
        SceneFormatError: naming the file, for a missing or malformed transforms.json, frames with
            different image sizes, or a missing image / depth file.
    """
    root = Path(root)
    transforms_path = root / TRANSFORMS_FILE
    if not transforms_path.is_file():
        raise SceneFormatError(f"{transforms_path}: missing; a scene folder needs a nerfstudio transforms.json")
    try:
        meta = json.loads(transforms_path.read_text())
    except json.JSONDecodeError as error:
        raise SceneFormatError(f"{transforms_path}: not valid JSON ({error})") from None
    try:
        frames = frames_from_transforms_json(meta, source=str(transforms_path), lens_distortion=lens_distortion)
    except ValueError as error:
        raise SceneFormatError(str(error)) from None
    image_paths = [_resolve_frame_image(root, f) for f in frames]
    sizes = {(f["width"], f["height"]) for f in frames}
    if len(sizes) != 1:
        raise SceneFormatError(
            f"{transforms_path}: frames have different image sizes {sorted(sizes)}; resize them to one size"
        )
    width, height = sizes.pop()
    for path in image_paths:
        if not path.is_file():
            raise SceneFormatError(f"{path}: image listed in {transforms_path} does not exist")
    with_depth = ["depth_file_path" in f for f in frames]
    depth_paths = None
    if any(with_depth):
        if not all(with_depth):
            raise SceneFormatError(f"{transforms_path}: only some frames have 'depth_file_path'; give it for all or none")
        depth_paths = [root / f["depth_file_path"] for f in frames]
        for path in depth_paths:
            if not path.is_file():
                raise SceneFormatError(f"{path}: depth file listed in {transforms_path} does not exist")
    metadata = {}
    meta_path = root / SCENE_META_FILE
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise SceneFormatError(f"{meta_path}: not valid JSON ({error})") from None
    return Scene(
        root=root,
        image_paths=image_paths,
        cam_to_world=np.stack([f["cam_to_world"] for f in frames]),
        intrinsics=np.stack([f["intrinsics"] for f in frames]),
        width=width,
        height=height,
        depth_paths=depth_paths,
        metadata=metadata,
        distortion=next((f["distortion"] for f in frames if "distortion" in f), None),
    )


def write_scene(
    root: Path,
    images: np.ndarray,
    cam_to_world: np.ndarray,
    intrinsics: np.ndarray,
    depths: Optional[np.ndarray] = None,
    metadata: Optional[Dict] = None,
) -> Path:
    """Write a scene atomically (temporary folder, then rename). Refuses to overwrite an existing folder.

    Args:
        images: (N, H, W, 3) uint8; cam_to_world: (N, 4, 4) OpenCV; intrinsics: (N, 3, 3) OpenCV;
        depths: optional (N, H, W) metric z-depth.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root}: already exists; remove it or choose another output folder")
    n, height, width = images.shape[:3]
    if cam_to_world.shape != (n, 4, 4) or intrinsics.shape != (n, 3, 3):
        raise ValueError(f"poses {cam_to_world.shape} / intrinsics {intrinsics.shape} do not match {n} images")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        if depths is not None:
            (tmp / "depth").mkdir()
        frames = []
        for i in range(n):
            name = f"frame_{i:05d}"
            Image.fromarray(images[i]).save(tmp / "images" / f"{name}.png")
            frame = {"file_path": f"images/{name}.png", **frame_to_transforms_json(cam_to_world[i], intrinsics[i], width, height)}
            if depths is not None:
                np.save(tmp / "depth" / f"{name}.npy", depths[i].astype(np.float32))
                frame["depth_file_path"] = f"depth/{name}.npy"
            frames.append(frame)
        (tmp / TRANSFORMS_FILE).write_text(json.dumps({"frames": frames}, indent=2))
        if metadata is not None:
            (tmp / SCENE_META_FILE).write_text(json.dumps(metadata, indent=2))
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def list_scenes(root: Path) -> List[Path]:
    """Scene folders under ``root`` (``root`` itself when it is one), sorted; hidden folders skipped."""
    root = Path(root)
    if (root / TRANSFORMS_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise SceneFormatError(f"{root}: no such folder")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / TRANSFORMS_FILE).is_file())
