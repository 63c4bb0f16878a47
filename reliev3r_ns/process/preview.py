"""A picture of a reconstruction: the cloud and cameras from above, and a few depth maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reliev3r_ns.process.reconstruct import Reconstruction


def top_view_axes(points: np.ndarray) -> np.ndarray:
    """(3, 2) projection onto the two principal directions of the points (the 'floor' of most captures)."""
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred[: min(len(centred), 200_000)], full_matrices=False)
    return vt[:2].T


def save_reconstruction_preview(reconstruction: Reconstruction, output: Path, max_depths: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = reconstruction.cam_to_world[:, :3, 3]
    cloud = reconstruction.points if len(reconstruction.points) else centres
    axes2 = top_view_axes(np.concatenate([cloud, centres]))
    mean = cloud.mean(0)
    shown = np.linspace(0, reconstruction.num_views - 1, min(max_depths, reconstruction.num_views)).round().astype(int)
    fig, axs = plt.subplots(1, 1 + len(shown), figsize=(4 * (1 + len(shown)), 4))
    p2 = (cloud - mean) @ axes2
    sample = np.random.default_rng(0).choice(len(p2), min(len(p2), 30_000), replace=False)
    if len(reconstruction.points):
        axs[0].scatter(p2[sample, 0], p2[sample, 1], s=0.3, c=reconstruction.colours[sample] / 255.0)
    c2 = (centres - mean) @ axes2
    forward = reconstruction.cam_to_world[:, :3, 2] @ axes2  # OpenCV camera looks along +z
    scale = 0.05 * max(np.ptp(p2, axis=0).max(), 1e-6)
    axs[0].plot(c2[:, 0], c2[:, 1], "-", color="0.5", lw=0.8)
    axs[0].quiver(c2[:, 0], c2[:, 1], forward[:, 0] * scale, forward[:, 1] * scale, color="red", angles="xy", scale_units="xy", scale=1)
    axs[0].set_aspect("equal")
    axs[0].set_title(f"{len(reconstruction.points)} points, {reconstruction.num_views} cameras (top view)")
    for ax, i in zip(axs[1:], shown):
        ax.imshow(np.log(reconstruction.depth[i]), cmap="turbo")
        ax.set_title(f"log depth: {reconstruction.image_paths[i].name}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
