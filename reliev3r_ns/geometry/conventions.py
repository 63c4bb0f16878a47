"""The one place where camera conventions are decided and converted.

Inside reliev3r-ns every camera is **OpenCV-style**: x right, y down, z forward (the camera looks
along +z), pixel (0, 0) is the *centre* of the top-left pixel, and a pose is a 4x4 matrix named for
the direction it maps points:

- ``cam_to_world``: ``p_world = cam_to_world @ p_cam`` (its translation column is the camera centre).
- ``world_to_cam``: its inverse, ``p_cam = world_to_cam @ p_world``.

nerfstudio (``transforms.json``, ``Cameras.camera_to_worlds``) uses **OpenGL-style** camera axes:
x right, y up, z backward (the camera looks along -z), with ``transform_matrix`` being camera-to-world.
Converting between the two only flips the sign of the camera's y and z axes, i.e. right-multiplies
the camera-to-world matrix by ``diag(1, -1, -1, 1)``. That flip lives here and nowhere else: every
other module works in OpenCV and calls these functions at the nerfstudio boundary.

Intrinsics are the usual ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels, in OpenCV's
pixel-centre-at-integer convention: a centred principal point is ``cx = (w - 1) / 2``. nerfstudio and
COLMAP put the *corner* of the top-left pixel at (0, 0) (nerfstudio casts the ray of pixel (i, j)
through (j + 0.5, i + 0.5)), so their centred principal point is ``cx = w / 2``. Crossing the
boundary therefore shifts the principal point by half a pixel, done here by
:func:`intrinsics_opencv_to_nerfstudio` and :func:`intrinsics_nerfstudio_to_opencv`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

# Right-multiplying a camera-to-world matrix by this swaps OpenCV <-> OpenGL camera axes. It is its
# own inverse, so the same matrix converts in both directions.
_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


def _flip_yz_like(x: ArrayLike) -> ArrayLike:
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(_FLIP_YZ, dtype=x.dtype, device=x.device)
    return _FLIP_YZ.astype(np.asarray(x).dtype if np.asarray(x).dtype.kind == "f" else np.float64)


def _as_homogeneous(pose: ArrayLike) -> ArrayLike:
    """(..., 3, 4) or (..., 4, 4) -> (..., 4, 4)."""
    if pose.shape[-2:] == (4, 4):
        return pose
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"expected a pose of shape (..., 3, 4) or (..., 4, 4), got {tuple(pose.shape)}")
    if isinstance(pose, torch.Tensor):
        bottom = torch.zeros(*pose.shape[:-2], 1, 4, dtype=pose.dtype, device=pose.device)
        bottom[..., 0, 3] = 1
        return torch.cat([pose, bottom], dim=-2)
    bottom = np.zeros((*pose.shape[:-2], 1, 4), dtype=pose.dtype)
    bottom[..., 0, 3] = 1
    return np.concatenate([pose, bottom], axis=-2)


def cam_to_world_opencv_to_opengl(cam_to_world_opencv: ArrayLike) -> ArrayLike:
    """OpenCV camera-to-world (..., 3|4, 4) -> OpenGL / nerfstudio camera-to-world (..., 4, 4)."""
    pose = _as_homogeneous(cam_to_world_opencv)
    return pose @ _flip_yz_like(pose)


def cam_to_world_opengl_to_opencv(cam_to_world_opengl: ArrayLike) -> ArrayLike:
    """OpenGL / nerfstudio camera-to-world (..., 3|4, 4) -> OpenCV camera-to-world (..., 4, 4)."""
    pose = _as_homogeneous(cam_to_world_opengl)
    return pose @ _flip_yz_like(pose)


# nerfstudio / COLMAP place pixel centres at half-integers, OpenCV at integers.
PIXEL_CENTRE_OFFSET_NERFSTUDIO = 0.5


def intrinsics_opencv_to_nerfstudio(intrinsics: ArrayLike) -> ArrayLike:
    """(..., 3, 3) OpenCV intrinsics -> the same camera in nerfstudio's / COLMAP's pixel convention."""
    K = intrinsics.clone() if isinstance(intrinsics, torch.Tensor) else np.array(intrinsics, dtype=np.float64)
    K[..., 0, 2] = K[..., 0, 2] + PIXEL_CENTRE_OFFSET_NERFSTUDIO
    K[..., 1, 2] = K[..., 1, 2] + PIXEL_CENTRE_OFFSET_NERFSTUDIO
    return K


def intrinsics_nerfstudio_to_opencv(intrinsics: ArrayLike) -> ArrayLike:
    """(..., 3, 3) intrinsics in nerfstudio's / COLMAP's pixel convention -> OpenCV convention."""
    K = intrinsics.clone() if isinstance(intrinsics, torch.Tensor) else np.array(intrinsics, dtype=np.float64)
    K[..., 0, 2] = K[..., 0, 2] - PIXEL_CENTRE_OFFSET_NERFSTUDIO
    K[..., 1, 2] = K[..., 1, 2] - PIXEL_CENTRE_OFFSET_NERFSTUDIO
    return K


# ---------------------------------------------------------------------------------------------
# transforms.json (nerfstudio's dataset format)
# ---------------------------------------------------------------------------------------------


def frame_to_transforms_json(
    cam_to_world_opencv: np.ndarray, intrinsics: np.ndarray, width: int, height: int
) -> Dict[str, Any]:
    """One frame's camera as nerfstudio writes it in ``transforms.json`` (per-frame intrinsics).

    Args:
        cam_to_world_opencv: (4, 4) or (3, 4) OpenCV camera-to-world.
        intrinsics: (3, 3) OpenCV pixel intrinsics K.
    """
    c2w_gl = np.asarray(cam_to_world_opencv_to_opengl(np.asarray(cam_to_world_opencv, dtype=np.float64)))
    K = intrinsics_opencv_to_nerfstudio(np.asarray(intrinsics, dtype=np.float64))
    return {
        "camera_model": "PINHOLE",
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "w": int(width),
        "h": int(height),
        "transform_matrix": c2w_gl.tolist(),
    }


_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def frames_from_transforms_json(meta: Dict[str, Any], source: str = "transforms.json", lens_distortion: str = "refuse") -> List[Dict[str, Any]]:
    """Read every frame of a parsed ``transforms.json`` into OpenCV conventions.

    Intrinsics may be given per frame or once at the top level (nerfstudio allows both; a per-frame
    value wins). Returns one dict per frame with ``file_path``, ``cam_to_world`` ((4, 4) OpenCV,
    float64), ``intrinsics`` ((3, 3), OpenCV pixel convention), ``width``, ``height`` and, when present, ``depth_file_path``.
    ``lens_distortion``: 'refuse' a frame with distortion coefficients, or 'ignore' them (keep the pinhole
    part; each frame then carries them under ``distortion``), for a dataset whose poses serve evaluation only.

    Raises:
        ValueError: naming ``source`` and the frame, when a required field is missing or malformed.
    """
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise ValueError(f"{source}: expected a JSON object with a 'frames' list (nerfstudio transforms.json format)")
    if not meta["frames"]:
        raise ValueError(f"{source}: 'frames' is empty; a dataset needs at least one frame")
    out = []
    for index, frame in enumerate(meta["frames"]):
        where = f"{source}: frame {index}"
        if not isinstance(frame, dict):
            raise ValueError(f"{where}: expected an object, got {type(frame).__name__}")
        if "file_path" not in frame:
            raise ValueError(f"{where}: missing 'file_path'")
        values = {}
        for key in _INTRINSIC_KEYS:
            value = frame.get(key, meta.get(key))
            if value is None:
                raise ValueError(f"{where} ({frame['file_path']}): missing '{key}' (neither per frame nor top level)")
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where} ({frame['file_path']}): '{key}' is not a number: {value!r}") from None
        try:
            c2w_gl = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except KeyError:
            raise ValueError(f"{where} ({frame['file_path']}): missing 'transform_matrix'") from None
        except (TypeError, ValueError):
            raise ValueError(f"{where} ({frame['file_path']}): 'transform_matrix' is not a numeric matrix") from None
        if c2w_gl.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(c2w_gl)):
            raise ValueError(
                f"{where} ({frame['file_path']}): 'transform_matrix' must be a finite 4x4 (or 3x4) matrix, "
                f"got shape {c2w_gl.shape}"
            )
        distortion = {k: frame.get(k, meta.get(k, 0.0)) for k in _DISTORTION_KEYS}
        distorted = any(float(v) != 0.0 for v in distortion.values())
        if distorted and lens_distortion != "ignore":
            raise ValueError(
                f"{where} ({frame['file_path']}): lens distortion {distortion} is not supported; "
                "undistort the images first (e.g. with COLMAP's image_undistorter) and write a PINHOLE model"
            )
        K_nerfstudio = np.array(
            [[values["fl_x"], 0.0, values["cx"]], [0.0, values["fl_y"], values["cy"]], [0.0, 0.0, 1.0]]
        )
        entry = {
            "file_path": frame["file_path"],
            "cam_to_world": np.asarray(cam_to_world_opengl_to_opencv(c2w_gl)),
            "intrinsics": intrinsics_nerfstudio_to_opencv(K_nerfstudio),
            "width": int(values["w"]),
            "height": int(values["h"]),
        }
        if "depth_file_path" in frame:
            entry["depth_file_path"] = frame["depth_file_path"]
        if distorted:
            entry["distortion"] = {k: float(v) for k, v in distortion.items()}
        out.append(entry)
    return out
