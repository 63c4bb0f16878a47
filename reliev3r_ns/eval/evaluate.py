"""A prediction against a reference: both read into one form, matched by image name, measured.

Predictions: a dataset written by ``reliev3r-process-data`` (poses, intrinsics, depth maps, cloud) or
a :class:`~reliev3r_ns.process.reconstruct.Reconstruction` made on the spot. References: a nerfstudio
dataset with GT poses (and metric depth, for our synthetic scenes), a COLMAP model read with pycolmap,
or pycolmap's SfM run on the images here. Everything is converted to OpenCV camera-to-world at the
boundary (:mod:`reliev3r_ns.geometry.conventions`; COLMAP's camera axes already are OpenCV's).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.data.ply import read_ply
from reliev3r_ns.data.scene_io import TRANSFORMS_FILE, SceneFormatError, load_scene, read_depth
from reliev3r_ns.eval.metrics import cloud_metrics, depth_metrics, pointmap_metrics, pose_metrics, trajectory_metrics
from reliev3r_ns.geometry import invert_pose, unproject_depth_to_world
from reliev3r_ns.geometry.conventions import frames_from_transforms_json


@dataclass
class CameraSet:
    """Posed views of one image set (prediction or reference). OpenCV conventions throughout."""

    source: str
    names: List[str]  # image file names (basenames): how the two sides are matched
    cam_to_world: np.ndarray  # (N, 4, 4)
    intrinsics: Optional[np.ndarray] = None  # (N, 3, 3) at image_size
    image_size: Optional[Tuple[int, int]] = None  # (H, W)
    depth: Optional[List[np.ndarray]] = None  # per view (h, w) z-depth, any resolution
    points: Optional[np.ndarray] = None  # (M, 3) cloud
    num_images: Optional[int] = None  # images the set was made from (>= len(names) when some are unposed)


# ------------------------------------------------------------------------------------ predictions
def prediction_from_dataset(folder: Path) -> CameraSet:
    folder = Path(folder)
    path = folder / TRANSFORMS_FILE
    if not path.is_file():
        raise SceneFormatError(f"{folder}: no {TRANSFORMS_FILE}; give a dataset written by reliev3r-process-data")
    meta = json.loads(path.read_text())
    frames = frames_from_transforms_json(meta, str(path))
    names = meta.get("reliev3r", {}).get("source_images") or [Path(f["file_path"]).name for f in frames]
    depth = None
    if all("depth_file_path" in f for f in frames):
        depth = [read_depth(folder / f["depth_file_path"]) for f in frames]
    points = read_ply(folder / meta["ply_file_path"])[0] if meta.get("ply_file_path") and (folder / meta["ply_file_path"]).is_file() else None
    sizes = {(f["height"], f["width"]) for f in frames}
    return CameraSet(str(folder), list(names), np.stack([f["cam_to_world"] for f in frames]), np.stack([f["intrinsics"] for f in frames]),
                     sizes.pop() if len(sizes) == 1 else None, depth, points, _source_image_count(meta, len(frames)))


def _source_image_count(meta: Dict, num_frames: int) -> int:
    """Images the dataset was made from: its frames plus those it left out (unregistered)."""
    return num_frames + len(meta.get("reliev3r", {}).get("left_out", {}))


def prediction_from_reconstruction(reconstruction, source: str) -> CameraSet:
    sizes = set(reconstruction.image_sizes)
    return CameraSet(source, [p.name for p in reconstruction.image_paths], reconstruction.cam_to_world, reconstruction.intrinsics,
                     sizes.pop() if len(sizes) == 1 else None, list(reconstruction.depth), reconstruction.points, reconstruction.num_views)


# ------------------------------------------------------------------------------------- references
def _colmap_model_folder(path: Path) -> Optional[Path]:
    for candidate in (path, path / "sparse" / "0", path / "sparse", path / "0", path / "colmap" / "sparse" / "0"):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return candidate
    return None


def camera_set_from_pycolmap(reconstruction, source: str, num_images: Optional[int] = None) -> CameraSet:
    """COLMAP stores world-to-camera (cam_from_world) with OpenCV camera axes."""
    images = sorted(reconstruction.images.values(), key=lambda im: im.name)
    images = [im for im in images if getattr(im, "has_pose", True)]
    if not images:
        raise SceneFormatError(f"{source}: the COLMAP model has no posed images")
    world_to_cam = np.zeros((len(images), 4, 4))
    world_to_cam[:, 3, 3] = 1.0
    intrinsics = []
    for k, image in enumerate(images):
        world_to_cam[k, :3] = image.cam_from_world().matrix()
        camera = reconstruction.cameras[image.camera_id]
        K = np.asarray(camera.calibration_matrix(), dtype=np.float64)
        K[0, 2] -= 0.5  # COLMAP's pixel centres are at half-integers, ours at integers
        K[1, 2] -= 0.5
        intrinsics.append(K)
    camera = reconstruction.cameras[images[0].camera_id]
    points = np.array([p.xyz for p in reconstruction.points3D.values()], dtype=np.float64).reshape(-1, 3)
    cam_to_world = invert_pose(torch.from_numpy(world_to_cam)).numpy()
    return CameraSet(source, [Path(im.name).name for im in images], cam_to_world, np.stack(intrinsics),
                     (int(camera.height), int(camera.width)), None, points if len(points) else None, num_images or len(images))


def load_reference(path: Path) -> CameraSet:
    """A nerfstudio dataset with GT (transforms.json, optional metric depth) or a COLMAP model folder."""
    path = Path(path)
    if (path / TRANSFORMS_FILE).is_file():
        scene = load_scene(path)
        depth = scene.load_depths() if scene.has_depth else None
        return CameraSet(str(path), [p.name for p in scene.image_paths], scene.cam_to_world, scene.intrinsics,
                         (scene.height, scene.width), list(depth) if depth is not None else None, None, scene.num_views)
    model = _colmap_model_folder(path)
    if model is not None:
        import pycolmap

        return camera_set_from_pycolmap(pycolmap.Reconstruction(str(model)), str(model))
    raise SceneFormatError(
        f"{path}: not a reference: expected a nerfstudio dataset (transforms.json) or a COLMAP model "
        "(cameras.bin/.txt, images, points3D, possibly under sparse/0); or pass --reference-sfm to compute one with pycolmap"
    )


def run_colmap_sfm(image_paths: Sequence[Path], workdir: Path, single_camera: bool = False) -> Tuple[CameraSet, Dict[str, float]]:
    """pycolmap's full SfM (SIFT extraction, exhaustive matching, incremental mapping) on the images.

    Cameras as a COLMAP user gets them by default (``CameraMode.AUTO``: one camera per image size and
    EXIF focal length), so a collection of photos of different sizes registers; ``single_camera``
    forces one camera for all. Returns the largest model and the wall time of each stage. The images are linked into one folder
    so names stay unique."""
    import pycolmap

    workdir = Path(workdir)
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    for p in image_paths:
        target = images / Path(p).name
        if not target.exists():
            shutil.copyfile(p, target)
    database = workdir / "database.db"
    if database.exists():
        database.unlink()
    timings: Dict[str, float] = {}
    started = time.perf_counter()
    pycolmap.extract_features(database, images, camera_mode=pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.AUTO,
                              device=pycolmap.Device.cpu)
    timings["colmap_features_s"] = time.perf_counter() - started
    started = time.perf_counter()
    pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
    timings["colmap_matching_s"] = time.perf_counter() - started
    started = time.perf_counter()
    (workdir / "sparse").mkdir(exist_ok=True)
    models = pycolmap.incremental_mapping(database, images, workdir / "sparse")
    timings["colmap_mapping_s"] = time.perf_counter() - started
    timings["colmap_total_s"] = sum(timings.values())
    if not models:
        raise SceneFormatError(f"{images}: COLMAP registered no images (too few features or matches)")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    return camera_set_from_pycolmap(best, f"pycolmap SfM of {len(image_paths)} images", num_images=len(image_paths)), timings


# ------------------------------------------------------------------------------------- evaluation
def _match(pred: CameraSet, ref: CameraSet) -> Tuple[List[int], List[int]]:
    index = {name: k for k, name in enumerate(pred.names)}
    pairs = [(index[name], k) for k, name in enumerate(ref.names) if name in index]
    if len(pairs) < 2:
        raise SceneFormatError(
            f"only {len(pairs)} image name(s) in common between the prediction ({pred.source}: {pred.names[:3]}...) "
            f"and the reference ({ref.source}: {ref.names[:3]}...); both must name the same images"
        )
    return [p for p, _ in pairs], [r for _, r in pairs]


def _resize_depth(depth: np.ndarray, size: Tuple[int, int]) -> torch.Tensor:
    d = torch.from_numpy(np.asarray(depth, dtype=np.float64))
    if tuple(d.shape) == tuple(size):
        return d
    return torch.exp(F.interpolate(d.clamp_min(1e-12).log()[None, None], size=size, mode="bilinear", align_corners=False)[0, 0])


@dataclass
class Evaluation:
    metrics: Dict[str, float]
    matched: List[Tuple[str, int, int]] = field(default_factory=list)  # (name, prediction index, reference index)
    aligned_centres: Optional[np.ndarray] = None  # (K, 3) predicted centres in the reference frame
    reference_centres: Optional[np.ndarray] = None
    depth_error: Optional[np.ndarray] = None  # (H, W) |d - d*| / d* of the first matched view


def evaluate(pred: CameraSet, ref: CameraSet, max_cloud_points: int = 20_000) -> Evaluation:
    pi, ri = _match(pred, ref)
    pred_c2w = torch.from_numpy(pred.cam_to_world[pi]).double()
    ref_c2w = torch.from_numpy(ref.cam_to_world[ri]).double()
    metrics: Dict[str, float] = {"num_matched": float(len(pi))}
    metrics["posed_fraction"] = len(pi) / float(ref.num_images or len(ref.names))
    metrics.update(pose_metrics(pred_c2w, ref_c2w))
    trajectory, sim3 = trajectory_metrics(pred_c2w, ref_c2w)
    metrics.update(trajectory)
    result = Evaluation(metrics, [(ref.names[r], p, r) for p, r in zip(pi, ri)],
                        sim3.apply_to_points(pred_c2w[:, :3, 3]).numpy(), ref_c2w[:, :3, 3].numpy())

    ref_points = ref.points
    if (pred.depth is not None and ref.depth is not None and ref.intrinsics is not None and pred.intrinsics is not None
            and pred.image_size is not None):
        H, W = ref.depth[ri[0]].shape
        pred_depth = torch.stack([_resize_depth(pred.depth[p], (H, W)) for p in pi])
        gt_depth = torch.stack([torch.from_numpy(np.asarray(ref.depth[r], dtype=np.float64)) for r in ri])
        valid = torch.isfinite(gt_depth) & (gt_depth > 0)
        metrics.update(depth_metrics(pred_depth, gt_depth, valid))
        scale = (H / pred.image_size[0], W / pred.image_size[1])
        pred_K = torch.from_numpy(pred.intrinsics[pi]).double().clone()
        pred_K[:, 0] *= scale[1]
        pred_K[:, 1] *= scale[0]
        pred_points = unproject_depth_to_world(pred_depth, pred_K, pred_c2w)
        gt_points = unproject_depth_to_world(gt_depth.clamp_min(1e-12), torch.from_numpy(ref.intrinsics[ri]).double(), ref_c2w)
        metrics.update(pointmap_metrics(pred_points, gt_points, ref_c2w[:, :3, 3], valid))
        first = pred_depth[0] * (gt_depth[0][valid[0]].median() / pred_depth[0][valid[0]].median())
        result.depth_error = torch.where(valid[0], (first - gt_depth[0]).abs() / gt_depth[0].clamp_min(1e-12), torch.nan).numpy()
        if ref_points is None:  # the reference cloud is the GT depth, unprojected
            step = max(1, int(math.sqrt(H * W * len(ri) / max_cloud_points)))
            ref_points = gt_points[:, ::step, ::step][valid[:, ::step, ::step]].numpy()
    if pred.points is not None and ref_points is not None and len(pred.points) and len(ref_points):
        aligned = sim3.apply_to_points(torch.from_numpy(np.asarray(pred.points, dtype=np.float64)))
        metrics.update(cloud_metrics(aligned, torch.from_numpy(np.asarray(ref_points, dtype=np.float64)), max_cloud_points))
    return result


def save_evaluation_plot(evaluation: Evaluation, output: Path, title: str = "") -> Path:
    """Aligned trajectories from above (the reference's two main directions) and a depth error map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, pred = evaluation.reference_centres, evaluation.aligned_centres
    centred = ref - ref.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes2 = vt[:2].T
    columns = 2 if evaluation.depth_error is not None else 1
    fig, axs = plt.subplots(1, columns, figsize=(5.5 * columns, 5), squeeze=False)
    r2, p2 = centred @ axes2, (pred - ref.mean(0)) @ axes2
    ax = axs[0, 0]
    ax.plot(r2[:, 0], r2[:, 1], "o-", color="black", ms=3, lw=1, label="reference")
    ax.plot(p2[:, 0], p2[:, 1], "o-", color="tab:red", ms=3, lw=1, label="prediction (Sim(3)-aligned)")
    for a, b in zip(r2, p2):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:red", lw=0.5, alpha=0.5)
    ax.set_aspect("equal", adjustable="box")
    # a straight walk is flat from above: keep the narrow axis at least 40% of the wide one so it reads
    both = np.concatenate([r2, p2])
    low, high = both.min(0), both.max(0)
    half = np.maximum(0.5 * (high - low), 0.2 * float((high - low).max()) + 1e-9) * 1.1
    middle = 0.5 * (low + high)
    ax.set_xlim(middle[0] - half[0], middle[0] + half[0])
    ax.set_ylim(middle[1] - half[1], middle[1] + half[1])
    ax.legend(fontsize=8)
    m = evaluation.metrics
    ax.set_title(f"{title}\nAUC@30 {m['pose_auc30']:.3f}  ATE {m['ate']:.4g} ({m['ate_normalised']:.3f} of extent)", fontsize=9)
    if evaluation.depth_error is not None:
        image = axs[0, 1].imshow(evaluation.depth_error, cmap="magma", vmin=0, vmax=0.3)
        axs[0, 1].set_title(f"depth |d - d*| / d* ({evaluation.matched[0][0]}), AbsRel {m['depth_abs_rel']:.3f}", fontsize=9)
        axs[0, 1].axis("off")
        fig.colorbar(image, ax=axs[0, 1], fraction=0.035)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def clip_metrics(cam_to_world: torch.Tensor, intrinsics: torch.Tensor, depth: torch.Tensor,
                 gt_cam_to_world: torch.Tensor, gt_intrinsics: torch.Tensor, gt_depth: torch.Tensor) -> Dict[str, float]:
    """The paper's table for one clip of V views (all (V, ...) tensors, OpenCV, same resolution):
    point-map rel / tau, pose ATE (normalised) / AUC@30 and RRA / RTA, depth rel / tau / delta."""
    metrics = pose_metrics(cam_to_world.double(), gt_cam_to_world.double())
    metrics.update(trajectory_metrics(cam_to_world.double(), gt_cam_to_world.double())[0])
    valid = torch.isfinite(gt_depth) & (gt_depth > 0)
    metrics.update(depth_metrics(depth.double(), gt_depth.double(), valid))
    pred_points = unproject_depth_to_world(depth.double(), intrinsics.double(), cam_to_world.double())
    gt_points = unproject_depth_to_world(gt_depth.double().clamp_min(1e-12), gt_intrinsics.double(), gt_cam_to_world.double())
    metrics.update(pointmap_metrics(pred_points, gt_points, gt_cam_to_world[:, :3, 3].double(), valid))
    return metrics
