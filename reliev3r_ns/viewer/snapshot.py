"""Draw what a viser client received (a point cloud and camera frustums) into an image, off-screen.

A stand-in for a browser screenshot on machines without one: the cloud is splatted through a virtual
camera looking down at it from above and behind, the frustums are drawn as wireframes on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from reliev3r_ns.geometry import invert_pose, look_at, project_world_points, quaternion_to_rotation, splat_points, transform_points


@dataclass
class Frustum:
    position: np.ndarray  # (3,) viser coordinates
    wxyz: np.ndarray  # (4,) OpenCV camera-to-world rotation
    fov_y: float
    aspect: float
    scale: float
    colour: Tuple[int, int, int]
    name: str = ""

    def forward(self) -> np.ndarray:
        return quaternion_to_rotation(torch.tensor(self.wxyz, dtype=torch.float64)).numpy()[:, 2]

    def corners(self) -> np.ndarray:
        """(5, 3) apex and the four corners of the image plane at distance ``scale``."""
        half_h = np.tan(self.fov_y / 2) * self.scale
        half_w = half_h * self.aspect
        local = np.array([[0, 0, 0], [-half_w, -half_h, self.scale], [half_w, -half_h, self.scale], [half_w, half_h, self.scale], [-half_w, half_h, self.scale]])
        R = quaternion_to_rotation(torch.tensor(self.wxyz, dtype=torch.float64)).numpy()
        return local @ R.T + self.position


def frusta_from_messages(messages: Sequence[Dict], prefix: str = "/reliev3r/") -> List[Frustum]:
    """The frustums a client holds after ``messages`` (the latest state of each node)."""
    state: Dict[str, Dict] = {}
    for m in messages:
        name = str(m.get("name", ""))
        if not name.startswith(prefix):
            continue
        if m["type"] == "CameraFrustumMessage":
            state[name] = {"message": m, "position": np.zeros(3), "wxyz": np.array([1.0, 0, 0, 0])}
        elif m["type"] == "SetPositionMessage" and name in state:
            state[name]["position"] = np.asarray(m["position"], dtype=np.float64)
        elif m["type"] == "SetOrientationMessage" and name in state:
            state[name]["wxyz"] = np.asarray(m["wxyz"], dtype=np.float64)
        elif m["type"] == "RemoveSceneNodeMessage":
            state.pop(name, None)
    frusta = []
    for entry in state.values():
        m = entry["message"]
        colour = int(m["color"])
        frusta.append(Frustum(entry["position"], entry["wxyz"], float(m["fov"]), float(m["aspect"]), float(m["scale"]), ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255), m["name"]))
    return frusta


def draw_scene(points: np.ndarray, colours: np.ndarray, frusta: Sequence[Frustum], size: Tuple[int, int] = (480, 640),
               title: Optional[str] = None, up: Sequence[float] = (0.0, 0.0, 1.0)) -> Image.Image:
    """(N, 3) points and (N, 3) uint8 colours (viser coordinates) plus frustums, seen from above and behind."""
    H, W = size
    points = points.reshape(-1, 3)
    # Frame the reference cameras (GT when drawn, they do not move between refreshes) and the nearer
    # half of the cloud, from behind their mean viewing direction and above.
    framing = [f for f in frusta if "/gt/" in f.name] or list(frusta)
    if framing:
        centre = np.mean([f.position for f in framing], 0)
        spread = max(float(np.linalg.norm(f.position - g.position)) for f in framing for g in framing)
        back = -np.mean([f.forward() for f in framing], 0)
    else:
        centre, spread, back = np.median(points, 0), 0.0, np.array([0.0, -1.0, 0.0])
    near_points = float(np.quantile(np.linalg.norm(points - centre, axis=-1), 0.5)) if len(points) else 1.0
    radius = max(spread, near_points, 1e-6)
    up = np.asarray(up, dtype=np.float64)
    back = back - np.dot(back, up) * up
    back = back / (np.linalg.norm(back) + 1e-9)
    eye = centre + radius * (1.3 * back + 1.0 * up)
    cam_to_world = look_at(torch.tensor(eye)[None], torch.tensor(centre)[None], torch.tensor(up))[0]
    focal = 0.5 * W / np.tan(np.radians(30))
    K = torch.tensor([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    world_to_cam = invert_pose(cam_to_world)
    splat = splat_points(transform_points(world_to_cam, torch.from_numpy(points.astype(np.float64))),
                         torch.from_numpy(colours.astype(np.float64)), K, H, W, radius=1, background=28.0)
    image = Image.fromarray(splat.colour.clamp(0, 255).numpy().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for frustum in frusta:
        pixels, depth = project_world_points(torch.from_numpy(frustum.corners()), K, world_to_cam)
        if (depth <= 0).any():
            continue
        p = [tuple(map(float, uv)) for uv in pixels.numpy()]
        for a, b in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)]:
            draw.line([p[a], p[b]], fill=frustum.colour, width=2)
    if title:
        draw.text((8, 8), title, fill=(255, 255, 255))
    return image
