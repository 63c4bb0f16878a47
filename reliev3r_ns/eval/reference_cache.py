"""A pycolmap reference for a held-out real capture, computed once and cached.

A real capture has no ground truth. To score the FFRM on held-out captures during training (AUC@30,
RRA, RTA in tensorboard, as on DL3DV's COLMAP poses), pycolmap's SfM (SIFT, exhaustive matching,
incremental mapping, one camera per image size as a COLMAP user gets by default) is run once on the
capture and its registered poses are kept. pycolmap stays the evaluation tool: nothing it returns
reaches a loss or the network's inputs.

Cache layout, beside the labels (same root, so machines sharing a label cache share references)::

    references/<key>.npz    views (K,) registered view indices, cam_to_world (K, 4, 4) OpenCV, names

The key hashes the images' bytes and the reference's settings (pycolmap version included). A capture
where pycolmap registers nothing is stored with K = 0, so it is not tried again. Files are written
atomically (see :func:`reliev3r_ns.labels.cache.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.labels.cache import atomic_write_bytes, config_key, file_key
from reliev3r_ns.labels.view_sets import ViewSet

_EXIF_ORIENTATION = 0x0112


@dataclass
class CaptureReference:
    views: List[int]
    """Indices (into the view set) of the views pycolmap registered, in order."""
    cam_to_world: np.ndarray  # (len(views), 4, 4) OpenCV
    num_views: int
    """Views in the capture."""


def _reference_key(view_set: ViewSet) -> str:
    import pycolmap

    settings = config_key({"reference": "pycolmap incremental mapping", "camera_mode": "auto", "pycolmap": pycolmap.__version__,
                           "upright": view_set.exif_transpose})
    return f"{settings}-{file_key(view_set.image_paths)}"


def _stage_images(view_set: ViewSet, folder: Path) -> List[Path]:
    """The capture's files as pycolmap should read them: as they are, or upright where EXIF rotates
    them (the network sees them upright; COLMAP would not apply the EXIF orientation)."""
    staged = []
    for index, path in enumerate(view_set.image_paths):
        name = f"{index:05d}_{path.name}"
        with Image.open(path) as image:
            rotated = view_set.exif_transpose and image.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
        if rotated:
            target = folder / f"{name}.png"
            Image.fromarray(view_set.load_image(index)).save(target)
        else:
            target = folder / name
            target.symlink_to(path.resolve())
        staged.append(target)
    return staged


def capture_reference(view_set: ViewSet, cache_root: Path) -> CaptureReference:
    """pycolmap's registered poses of ``view_set`` (cached under ``cache_root/references``)."""
    path = Path(cache_root) / "references" / f"{_reference_key(view_set)}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return CaptureReference([int(v) for v in stored["views"]], stored["cam_to_world"], view_set.num_views)
        except Exception as error:  # a damaged file: say so, recompute
            warnings.warn(f"{path}: unreadable cached reference ({error}); computing it again")
            path.unlink(missing_ok=True)
    from reliev3r_ns.eval.evaluate import run_colmap_sfm

    with tempfile.TemporaryDirectory(prefix="reliev3r-reference-") as work:
        staging = Path(work) / "staged"
        staging.mkdir()
        staged = _stage_images(view_set, staging)
        index = {p.name: k for k, p in enumerate(staged)}
        try:
            reference, _ = run_colmap_sfm(staged, Path(work) / "sfm")
            views = [index[name] for name in reference.names]
            order = np.argsort(views)
            views, cam_to_world = [views[k] for k in order], np.asarray(reference.cam_to_world)[order]
        except SceneFormatError:  # registered nothing
            views, cam_to_world = [], np.zeros((0, 4, 4))
    buffer = io.BytesIO()
    np.savez(buffer, views=np.asarray(views, dtype=np.int64), cam_to_world=cam_to_world.astype(np.float64),
             names=np.asarray([view_set.image_paths[v].name for v in views]))
    atomic_write_bytes(path, buffer.getvalue())
    return CaptureReference(views, cam_to_world, view_set.num_views)
