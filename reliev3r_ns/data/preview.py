"""A picture of a scene for people: RGB and depth of a few views, and a top view of the cameras
over the scene's points (lifted from GT depth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reliev3r_ns.data.scene_io import Scene
from reliev3r_ns.geometry.camera import unproject_depth_to_world


def save_scene_preview(scene: Scene, output: Path, max_views: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = np.linspace(0, scene.num_views - 1, min(max_views, scene.num_views)).round().astype(int).tolist()
    images = scene.load_images(views)
    depths = scene.load_depths(views) if scene.has_depth else None
    rows = 2 if depths is not None else 1
    fig = plt.figure(figsize=(2.4 * len(views) + 5, 2.2 * rows + 0.6))
    grid = fig.add_gridspec(rows, len(views) + 2)
    for col, view in enumerate(views):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(images[col])
        ax.set_title(f"view {view}", fontsize=8)
        ax.axis("off")
        if depths is not None:
            ax = fig.add_subplot(grid[1, col])
            ax.imshow(depths[col], cmap="turbo")
            ax.set_title(f"depth {depths[col].min():.1f}-{depths[col].max():.1f} m", fontsize=8)
            ax.axis("off")
    ax = fig.add_subplot(grid[:, len(views) :])
    centres = scene.cam_to_world[:, :3, 3]
    if depths is not None:
        all_depths = scene.load_depths()
        points = unproject_depth_to_world(
            torch.from_numpy(all_depths[:, ::4, ::4].astype(np.float64)),
            torch.from_numpy(scene.intrinsics / np.array([4.0, 4.0, 1.0])[:, None]),
            torch.from_numpy(scene.cam_to_world),
        ).reshape(-1, 3).numpy()
        colours = scene.load_images()[:, ::4, ::4].reshape(-1, 3) / 255.0
        keep = points[:, 2] < np.percentile(points[:, 2], 90)  # drop the ceiling from the top view
        ax.scatter(points[keep, 0], points[keep, 1], c=colours[keep], s=1, linewidths=0)
    forward = scene.cam_to_world[:, :3, 2]  # OpenCV: the camera looks along its +z axis
    ax.plot(centres[:, 0], centres[:, 1], "-", color="k", lw=0.8)
    ax.quiver(centres[:, 0], centres[:, 1], forward[:, 0], forward[:, 1], color="crimson", scale=12, width=0.006)
    ax.set_aspect("equal")
    ax.set_title("cameras (top view, world z up)", fontsize=9)
    fig.suptitle(str(scene.root), fontsize=9)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
