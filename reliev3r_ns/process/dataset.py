"""Write a :class:`Reconstruction` as a nerfstudio dataset (and optionally a COLMAP text model).

Layout (what ``ns-process-data`` writes, so every nerfstudio method reads it)::

    OUT/
      transforms.json        PINHOLE intrinsics (shared at the top level, or per frame), OpenGL
                             camera-to-world ``transform_matrix`` per frame, ``ply_file_path``
      depth/frame_00001.npy ...     the FFRM's depth maps (float32, network size), named by depth_file_path
      sparse_pc.ply          confidence-filtered, voxel-downsampled coloured points (splatfacto's init)
      images/frame_00001.png ...    the images as the FFRM saw them (EXIF orientation applied)
      images_2/ images_4/ ...       downscaled by 2, 4, ... (nerfstudio picks one by --downscale-factor)
      sparse/0/cameras.txt images.txt points3D.txt   with --colmap (COLMAP's text format)
      preview.png            the cloud and cameras from above, a few depth maps

OUT is assembled in a hidden temporary folder beside it and renamed into place at the end, so it is
either the previous content or the complete new dataset, never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from reliev3r_ns.data.ply import write_ply
from reliev3r_ns.data.scene_io import EXIF_ORIENTATION, TRANSFORMS_FILE, read_rgb
from reliev3r_ns.geometry import invert_pose, rotation_to_quaternion
from reliev3r_ns.geometry.conventions import frame_to_transforms_json, intrinsics_opencv_to_nerfstudio
from reliev3r_ns.process.reconstruct import Reconstruction, shared_intrinsics

PLY_FILE = "sparse_pc.ply"
_COPYABLE = {".png", ".jpg", ".jpeg"}


@dataclass
class DatasetWriterConfig:
    camera_intrinsics: Literal["shared", "per-frame"] = "shared"
    """'shared': one camera per image size (the median of the FFRM's per-view intrinsics of that
    size; for a video or one camera that is one camera for every frame, COLMAP's ``CameraMode.AUTO``);
    'per-frame': each view's own prediction. Images of different sizes always carry their own
    w / h / fl_x / fl_y / cx / cy per frame, which nerfstudio reads."""
    num_downscales: int = 3
    """Also write images_2, images_4, ... up to 2**num_downscales (as ns-process-data does)."""
    colmap: bool = False
    """Also write a COLMAP text model in sparse/0 (cameras.txt, images.txt, points3D.txt)."""
    overwrite: bool = False
    """Replace an existing non-empty output folder (atomically)."""
    depth: bool = True
    """Also write the FFRM's depth maps (depth/frame_*.npy, float32 in the dataset's units, at the
    network size; nerfstudio resizes them) and name them in transforms.json (depth_file_path), for
    depth-supervised methods and reliev3r-eval."""
    preview: bool = True
    """Also draw preview.png (cloud and cameras from above, depth maps)."""


def _needs_reencode(path: Path, exif_transpose: bool) -> bool:
    """True when the stored pixels are not what the FFRM saw (EXIF turn, odd modes or formats)."""
    if path.suffix.lower() not in _COPYABLE:
        return True
    with Image.open(path) as image:
        if image.mode != "RGB":
            return True
        return exif_transpose and image.getexif().get(EXIF_ORIENTATION, 1) != 1


def _save(image: Image.Image, path: Path) -> None:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)


def write_images(image_paths: List[Path], root: Path, num_downscales: int, exif_transpose: bool,
                 progress: Optional[Callable[[int, int], None]] = None) -> List[str]:
    """Images into root/images (and root/images_2, ...); returns their paths relative to root."""
    folders = [root / ("images" if k == 0 else f"images_{2 ** k}") for k in range(num_downscales + 1)]
    for folder in folders:
        folder.mkdir(parents=True)
    relative = []
    for index, source in enumerate(image_paths):
        suffix = source.suffix.lower() if not _needs_reencode(source, exif_transpose) else ".png"
        name = f"frame_{index + 1:05d}{suffix}"
        rgb = read_rgb(source, exif_transpose=exif_transpose)
        if suffix == source.suffix.lower():
            shutil.copyfile(source, folders[0] / name)
        else:
            Image.fromarray(rgb).save(folders[0] / name)
        full = Image.fromarray(rgb)
        for k in range(1, num_downscales + 1):
            size = (max(1, round(full.width / 2**k)), max(1, round(full.height / 2**k)))
            _save(full.resize(size, Image.Resampling.LANCZOS), folders[k] / name)
        relative.append(f"images/{name}")
        if progress:
            progress(index + 1, len(image_paths))
    return relative


def camera_intrinsics_per_view(reconstruction: Reconstruction, camera_intrinsics: str) -> Tuple[np.ndarray, List[int]]:
    """(N, 3, 3) intrinsics as written and each view's camera number: with 'shared', views of one
    image size share one camera (the median of theirs); with 'per-frame', every view is its own."""
    N = reconstruction.num_views
    if camera_intrinsics == "per-frame":
        return reconstruction.intrinsics.copy(), list(range(N))
    cameras: Dict[Tuple[int, int], int] = {}
    camera_of = [cameras.setdefault(size, len(cameras)) for size in reconstruction.image_sizes]
    K = np.zeros_like(reconstruction.intrinsics)
    for c in range(len(cameras)):
        members = [i for i in range(N) if camera_of[i] == c]
        K[members] = shared_intrinsics(reconstruction.intrinsics[members])
    return K, camera_of


def transforms_json(reconstruction: Reconstruction, file_paths: List[str], camera_intrinsics: str,
                    metadata: Optional[Dict[str, Any]] = None, depth_paths: Optional[List[str]] = None) -> Dict[str, Any]:
    meta: Dict[str, Any] = {}
    intrinsics, camera_of = camera_intrinsics_per_view(reconstruction, camera_intrinsics)
    frames = []
    for i, file_path in enumerate(file_paths):
        H, W = reconstruction.image_sizes[i]
        frame = frame_to_transforms_json(reconstruction.cam_to_world[i], intrinsics[i], W, H)
        frame["file_path"] = file_path
        if depth_paths is not None:
            frame["depth_file_path"] = depth_paths[i]
        frames.append(frame)
    if len(set(camera_of)) == 1:
        # nerfstudio reads a camera given once at the top level for every frame.
        for key in ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h"):
            meta[key] = frames[0][key]
            for frame in frames:
                del frame[key]
    else:
        meta["camera_model"] = "PINHOLE"
        for frame in frames:
            del frame["camera_model"]
    meta["frames"] = [{"file_path": f.pop("file_path"), **f} for f in frames]
    meta["ply_file_path"] = PLY_FILE
    # Which input image each frame is (reliev3r-eval matches frames to a reference by these names).
    meta["reliev3r"] = {**(metadata or {}), "source_images": [p.name for p in reconstruction.image_paths]}
    return meta


def write_colmap_text(reconstruction: Reconstruction, file_paths: List[str], folder: Path, camera_intrinsics: str) -> None:
    """COLMAP's text model: PINHOLE cameras, world-to-camera poses (COLMAP's camera axes are
    OpenCV's), the cloud as points3D without tracks. COLMAP's pixel convention is nerfstudio's."""
    folder.mkdir(parents=True)
    N = reconstruction.num_views
    intrinsics, camera_index = camera_intrinsics_per_view(reconstruction, camera_intrinsics)
    camera_of = [c + 1 for c in camera_index]
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    for c in range(len(set(camera_index))):
        i = camera_index.index(c)
        H, W = reconstruction.image_sizes[i]
        K = intrinsics_opencv_to_nerfstudio(intrinsics[i])
        lines.append(f"{c + 1} PINHOLE {W} {H} {K[0, 0]:.10g} {K[1, 1]:.10g} {K[0, 2]:.10g} {K[1, 2]:.10g}")
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")

    world_to_cam = invert_pose(torch.from_numpy(reconstruction.cam_to_world))
    quaternions = rotation_to_quaternion(world_to_cam[:, :3, :3])  # (N, 4) w, x, y, z
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i in range(N):
        q, t = quaternions[i].tolist(), world_to_cam[i, :3, 3].tolist()
        name = Path(file_paths[i]).name
        lines.append(f"{i + 1} " + " ".join(f"{v:.12g}" for v in q + t) + f" {camera_of[i]} {name}")
        lines.append("")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")

    with open(folder / "points3D.txt", "w") as f:
        f.write("# 3D point list with one line of data per point:\n#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]\n")
        for k, (p, c) in enumerate(zip(reconstruction.points, reconstruction.colours)):
            f.write(f"{k + 1} {p[0]:.7g} {p[1]:.7g} {p[2]:.7g} {c[0]} {c[1]} {c[2]} 0\n")


def write_dataset(
    reconstruction: Reconstruction,
    output_dir: Path,
    config: DatasetWriterConfig = DatasetWriterConfig(),
    exif_transpose: bool = True,
    metadata: Optional[Dict[str, Any]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """Write the dataset into ``output_dir`` atomically; returns ``output_dir``."""
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not config.overwrite:
        raise FileExistsError(f"{output_dir}: exists and is not empty; pass --overwrite to replace it, or choose another --output-dir")
    if any(output_dir == p.resolve().parent or output_dir in p.resolve().parents for p in reconstruction.image_paths):
        raise ValueError(f"{output_dir}: the output folder must not contain the input images")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        file_paths = write_images(reconstruction.image_paths, staging, config.num_downscales, exif_transpose, progress)
        depth_paths = None
        if config.depth:
            (staging / "depth").mkdir()
            depth_paths = [f"depth/{Path(f).stem}.npy" for f in file_paths]
            for d, relative in zip(reconstruction.depth, depth_paths):
                np.save(staging / relative, d.astype(np.float32))
        meta = transforms_json(reconstruction, file_paths, config.camera_intrinsics, metadata, depth_paths)
        (staging / TRANSFORMS_FILE).write_text(json.dumps(meta, indent=2))
        write_ply(staging / PLY_FILE, reconstruction.points, reconstruction.colours)
        if config.colmap:
            write_colmap_text(reconstruction, file_paths, staging / "sparse" / "0", config.camera_intrinsics)
        if config.preview:
            from reliev3r_ns.process.preview import save_reconstruction_preview

            save_reconstruction_preview(reconstruction, staging / "preview.png")
        _swap_into_place(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _swap_into_place(staging: Path, output_dir: Path) -> None:
    """Replace ``output_dir`` by ``staging`` with renames only (the old content survives a crash)."""
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
    backup.rmdir()
    os.replace(output_dir, backup)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        os.replace(backup, output_dir)
        raise
    shutil.rmtree(backup, ignore_errors=True)
