"""What a 'scene' is for labelling: a set of images of one place, found under a data folder.

Four layouts are recognised, checked in this order for every folder under ``--data``:
  1. a nerfstudio dataset (``transforms.json``; our synthetic scenes are these, with GT depth). DL3DV's
     scenes are these too: their ``images/`` paths are read from ``images_4/`` (or images_2, images_8)
     when only the downscaled copy is there, with the intrinsics scaled to it, and their lens
     distortion is left out with a note (their poses serve evaluation only; the weak losses never see them);
  2. a folder with an ``images/`` subfolder of images (e.g. the output of a capture app);
  3. a folder holding images directly;
  4. a video file (see :mod:`reliev3r_ns.labels.video_frames`: frames sampled once, cached).
Videos and image folders may stand side by side under one ``--data``. Hidden folders and files (a
leading '.') are skipped; they hold unfinished writes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from reliev3r_ns.data.scene_io import TRANSFORMS_FILE, Scene, SceneFormatError, load_scene, read_depth, read_rgb
from reliev3r_ns.labels.video_frames import DEFAULT_VIDEO_FRAMES, cached_video_frames, is_video

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class ViewSet:
    root: Path
    image_paths: List[Path]
    exif_transpose: bool
    """Raw captures are shown upright (EXIF applied); nerfstudio datasets are read as stored."""
    scene: Optional[Scene] = None
    """The parsed nerfstudio dataset (cameras, GT depth paths) when the view set is one."""

    @property
    def depth_paths(self) -> Optional[List[Path]]:
        """GT depth, only for scenes that carry it (the simulated teachers need it)."""
        return self.scene.depth_paths if self.scene is not None else None

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_paths[index], exif_transpose=self.exif_transpose)

    def load_gt_depth(self, index: int) -> np.ndarray:
        if self.depth_paths is None:
            raise SceneFormatError(f"{self.root}: this scene has no GT depth (needed by the simulated teacher only)")
        return read_depth(self.depth_paths[index])


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def is_view_set(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / TRANSFORMS_FILE).is_file() or ((folder / "images").is_dir() and bool(_images_in(folder / "images"))) or bool(_images_in(folder))


def open_view_set(folder: Path, frames_cache: Optional[Path] = None, video_frames: int = DEFAULT_VIDEO_FRAMES) -> ViewSet:
    """Read one scene's image list; raises SceneFormatError naming the folder for an empty one.

    A video's frames are sampled into ``frames_cache`` (``<label cache>/frames`` for the labeller and
    the training) on first use."""
    folder = Path(folder)
    if is_video(folder):
        if frames_cache is None:
            raise SceneFormatError(f"{folder}: a video; give it to `reliev3r-process-data video`, or put it under a training --data")
        return ViewSet(folder, cached_video_frames(folder, frames_cache, video_frames), exif_transpose=False)
    if (folder / TRANSFORMS_FILE).is_file():
        scene = load_scene(folder, lens_distortion="ignore")
        if scene.distortion:
            warnings.warn(f"{folder / TRANSFORMS_FILE}: lens distortion {scene.distortion} left out; its pinhole part is used "
                          "as the known intrinsics (undistort the images for exact ones)")
        return ViewSet(folder, scene.image_paths, exif_transpose=False, scene=scene)
    for candidate in (folder / "images", folder):
        if candidate.is_dir():
            images = _images_in(candidate)
            if images:
                return ViewSet(folder, images, exif_transpose=True)
    raise SceneFormatError(
        f"{folder}: no images found (looked for {TRANSFORMS_FILE}, images/ and image files with extensions "
        f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
    )


def discover_view_sets(data: Path) -> List[Path]:
    """Every scene folder under ``data`` (``data`` itself when it is one), sorted."""
    data = Path(data)
    if is_video(data):
        return [data]
    if not data.is_dir():
        raise SceneFormatError(f"{data}: not a folder")
    found: List[Path] = []
    visited = set()
    # Links are followed (a dataset assembled from linked scene folders), each real folder once (a
    # link back up the tree would otherwise loop).
    for current, dirs, files in os.walk(data, followlinks=True):
        real = os.path.realpath(current)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        current_path = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        structured = (current_path / TRANSFORMS_FILE).is_file() or (current_path / "images").is_dir()
        # Loose images beside scene folders (a dataset's preview.png) do not make the container a scene.
        loose = bool(_images_in(current_path)) and not any(is_view_set(current_path / d) for d in dirs)
        if is_view_set(current_path) and (structured or loose):
            found.append(current_path)
            dirs[:] = []  # a scene's own subfolders (images/, depth/) and videos are not scenes
        else:
            found.extend(current_path / name for name in files if is_video(current_path / name))
    if not found:
        raise SceneFormatError(
            f"{data}: no scenes found. Give a folder of images, a nerfstudio dataset, videos, or a folder of "
            "these (e.g. the output of `reliev3r-synthetic generate`)"
        )
    return sorted(found)
