"""The FFRM's current belief in nerfstudio's viser viewer.

:class:`LiveView` holds the viewer controls (found by nerfstudio on the pipeline, shown under
"Custom Elements"), runs the model on one fixed clip when asked (every ``refresh_every`` training
steps, when another clip is picked, or on "Refresh now") and publishes:

- ``/reliev3r/points``: the predicted coloured point cloud, confidence-filtered;
- ``/reliev3r/predicted/view_XX``: predicted camera frustums, with the view's image;
- ``/reliev3r/gt/view_XX``: GT frustums in another colour, when the clip has GT.

Each browser tab that connects is framed on the cloud and the cameras (it would otherwise start at
viser's default camera, inside a frustum near the origin); while its user has not moved it, the tab is
framed again when a refresh moves or resizes the prediction much (:func:`framing`).

Positions are multiplied by nerfstudio's viewer scale (``VISER_NERFSTUDIO_SCALE_RATIO``) like its own
camera frustums, so the model's render of the same cloud (``get_outputs_for_camera``) lines up with
them. Without a viewer (``--vis tensorboard``) nothing runs: refreshing costs a forward pass only when
someone can see it.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerControl, ViewerDropdown, ViewerSlider
from torch import nn

from reliev3r_ns.geometry import rotation_to_quaternion
from reliev3r_ns.viewer.cloud import LiveCloud, live_cloud

# nerfstudio's viewer shows its world 10x larger (nerfstudio.viewer.viewer.VISER_NERFSTUDIO_SCALE_RATIO;
# importing that module pulls in every nerfstudio model, so the value is repeated and checked by a test).
VISER_SCALE = 10.0
PREDICTED_COLOUR = (255, 170, 40)
GT_COLOUR = (60, 200, 90)


def framing(points: torch.Tensor, cam_to_world: torch.Tensor, fov_y: float, margin: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A camera that shows the whole cloud and every camera: (position, look_at, up, radius), display units.

    points: (M, 3) display-frame points; cam_to_world: (V, 4, 4) OpenCV, every camera drawn (predicted
    and GT); fov_y: the tab's vertical field of view in radians; margin: how far a drawn frustum
    reaches beyond its centre. It looks at the cloud's median (robust to stray points) from behind the
    cameras' mean viewing direction, tilted 30 degrees down along their mean up (-y), back by 0.85 times the
    distance at which a sphere holding 90% of the points and every frustum just fits the view's height
    (that sphere is a loose bound: the scene then fills most of the canvas without touching its edges).
    Cameras on an orbit look every way (their mean direction is short): then the first camera's
    direction is the one looked along.
    """
    centres = cam_to_world[:, :3, 3].double()
    points = points.double()
    points = points[torch.isfinite(points).all(-1)]
    look_at = points.median(dim=0).values if len(points) else centres.mean(0)
    radius = float((centres - look_at).norm(dim=-1).max()) + margin
    if len(points):
        radius = max(radius, float(torch.quantile((points - look_at).norm(dim=-1)[:100_000], 0.9)))
    radius = max(radius, 1e-3)
    up = -cam_to_world[:, :3, 1].double().mean(0)
    up = up / up.norm().clamp_min(1e-9)
    forward = cam_to_world[:, :3, 2].double().mean(0)
    if forward.norm() < 0.3:  # an orbit or a look-at set: no common direction
        forward = cam_to_world[0, :3, 2].double()
    forward = forward - (forward @ up) * up  # level, then tilt down by a fixed angle
    if forward.norm() < 1e-6:  # cameras looking straight down (or up): any level direction
        forward = torch.linalg.svd(up[None])[2][1]
    forward = forward / forward.norm()
    direction = forward * np.cos(np.pi / 6) - up * np.sin(np.pi / 6)
    distance = 0.85 * radius / np.sin(0.5 * min(max(fov_y, 0.2), 2.5))
    position = look_at - direction * distance
    return position.numpy(), look_at.numpy(), up.numpy(), radius


class LiveView(nn.Module):
    """Viewer controls and scene nodes for one clip's prediction. Holds no parameters or buffers,
    so checkpoints do not change."""

    def __init__(
        self,
        clips: Dict[str, Callable[[], Dict]],
        predict: Callable[[Dict], object],
        confidence_percentile: float = 30.0,
        thumbnail_height: int = 48,
    ) -> None:
        super().__init__()
        if not clips:
            raise ValueError("the live view needs at least one clip")
        self.clips = clips
        self.predict = predict
        self.thumbnail_height = thumbnail_height
        self.step = 0
        self.cloud: Optional[LiveCloud] = None
        self._predicted_handles: Dict[int, object] = {}
        self._gt_handles: Dict[int, object] = {}
        # per browser tab: the (position, look_at, radius) we last framed it at, display units x VISER_SCALE
        self._framed: Dict[int, Tuple[np.ndarray, np.ndarray, float]] = {}
        self._hooked_server = None
        labels = list(clips)
        self.viewer_control = ViewerControl()
        self.clip = ViewerDropdown("Clip", labels[0], labels, cb_hook=lambda _: self.refresh(), hint="which clip the model reconstructs live")
        self.confidence_percentile = ViewerSlider(
            "Confidence percentile", float(confidence_percentile), 0.0, 99.0, 1.0, cb_hook=lambda _: self.publish(),
            hint="hide points below this percentile of the predicted confidence",
        )
        self.point_size = ViewerSlider("Point size", 1.0, 0.1, 5.0, 0.1, cb_hook=lambda _: self.publish(), hint="points in the 3D view and splats in the render")
        self.show_gt = ViewerCheckbox("GT cameras", True, cb_hook=lambda _: self.publish(), hint="GT frustums (green) when the clip has GT")
        self.refresh_now = ViewerButton("Refresh now", cb_hook=lambda _: self.refresh())

    @property
    def server(self):
        """The viser server once nerfstudio's viewer has set up our controls, else None."""
        return getattr(self.viewer_control, "viser_server", None)

    # ------------------------------------------------------------------------------------ updates
    def on_training_step(self, step: int) -> None:
        self.step = step
        if self.server is not None:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> LiveCloud:
        """Run the model on the chosen clip and publish the result."""
        label = self.clip.value
        batch = self.clips[label]()
        prediction = self.predict(batch)
        gt_poses, gt_depth = batch.get("gt_cam_to_world"), batch.get("gt_depth")
        self.cloud = live_cloud(
            prediction.depth[0], prediction.confidence[0], prediction.intrinsics[0], prediction.cam_to_world[0], batch["images"][0],
            None if gt_poses is None else gt_poses[0], None if gt_depth is None else gt_depth[0], label=label, step=self.step,
        )
        self.publish()
        return self.cloud

    def points_for_render(self, render_width: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """(M, 3) display-frame points and (M, 3) colours of the current cloud (computed on first use),
        and a splat radius in pixels for a render ``render_width`` wide: half the spacing the points
        had in their own view (times the point-size slider), so a view seen from its own camera has no holes."""
        cloud = self.cloud if self.cloud is not None else self.refresh()
        radius = round(float(self.point_size.value) * 0.5 * render_width / cloud.image_size[1])
        return (*cloud.filtered(float(self.confidence_percentile.value)), radius)

    def publish(self) -> None:
        server, cloud = self.server, self.cloud
        if server is None or cloud is None:
            return
        points, colours = cloud.filtered(float(self.confidence_percentile.value))
        size = cloud.scene_scale()
        H, W = cloud.image_size
        thumbnail_width = max(1, round(self.thumbnail_height * W / H))
        images = torch.nn.functional.interpolate(cloud.colours.permute(0, 3, 1, 2), size=(self.thumbnail_height, thumbnail_width), mode="area")
        images = (images.permute(0, 2, 3, 1).clamp(0, 1) * 255).to(torch.uint8).numpy()
        with server.atomic():
            server.scene.add_point_cloud(
                "/reliev3r/points",
                points=(points * VISER_SCALE).numpy().astype(np.float32),
                colors=(colours.clamp(0, 1) * 255).to(torch.uint8).numpy(),
                point_size=float(0.005 * size * VISER_SCALE * self.point_size.value),
                point_shape="rounded",
            )
            for v in range(cloud.cam_to_world.shape[0], len(self._predicted_handles)):
                self._predicted_handles.pop(v).remove()
            for v in range(cloud.cam_to_world.shape[0]):
                fov_y = 2.0 * float(torch.atan(0.5 * H / cloud.intrinsics[v, 1, 1]))
                self._predicted_handles[v] = self._frustum(server, f"/reliev3r/predicted/view_{v:02d}", cloud.cam_to_world[v], fov_y, W / H, 0.12 * size, PREDICTED_COLOUR, images[v])
                if cloud.gt_cam_to_world is not None and self.show_gt.value:
                    self._gt_handles[v] = self._frustum(server, f"/reliev3r/gt/view_{v:02d}", cloud.gt_cam_to_world[v], fov_y, W / H, 0.12 * size, GT_COLOUR, None)
            stale = [v for v in self._gt_handles if cloud.gt_cam_to_world is None or not self.show_gt.value or v >= cloud.cam_to_world.shape[0]]
            for v in stale:
                self._gt_handles.pop(v).remove()
        if self._hooked_server is not server:  # tabs opened from now on are framed when they connect
            server.on_client_connect(lambda client: self.frame(client))
            self._hooked_server = server
        for client in list(server.get_clients().values()):
            self.frame(client, only_if_moved_far=True)

    def frame(self, client, only_if_moved_far: bool = False) -> bool:
        """Point a browser tab's camera at the current cloud and cameras (:func:`framing`). With
        ``only_if_moved_far``: only a tab never framed, or one still where we left it (its user has not
        moved it) whose framing is now far off (the cloud's centre moved by half its radius, or its
        radius changed by half). Returns whether the tab was moved."""
        cloud = self.cloud
        if cloud is None:
            return False
        camera = client.camera
        try:
            current = np.asarray(camera.position, dtype=np.float64)
            fov_y = float(camera.fov)
        except AssertionError:  # viser has no camera state from this tab yet; its connect callback comes later
            return False
        previous = self._framed.get(client.client_id) if only_if_moved_far else None
        if previous is not None and np.linalg.norm(current - previous[0]) > 1e-3 * max(previous[2], 1e-6):
            return False  # its user has moved the view: it stays where they put it
        points, _ = cloud.filtered(float(self.confidence_percentile.value))
        cameras = cloud.cam_to_world
        if cloud.gt_cam_to_world is not None and self.show_gt.value:
            cameras = torch.cat([cameras, cloud.gt_cam_to_world.to(cameras)])
        position, look_at, up, radius = framing(points, cameras, fov_y, margin=0.12 * cloud.scene_scale())
        position, look_at, radius = position * VISER_SCALE, look_at * VISER_SCALE, radius * VISER_SCALE
        if previous is not None:
            _, last_look_at, last_radius = previous
            far_off = np.linalg.norm(look_at - last_look_at) > 0.5 * last_radius or not 2 / 3 < radius / last_radius < 1.5
            if not far_off:
                return False
        # viser keeps the look-at offset when the position is set, so set the position first
        camera.position = position
        camera.look_at = look_at
        camera.up_direction = up
        self._framed[client.client_id] = (position, look_at, radius)
        return True

    @staticmethod
    def _frustum(server, name: str, cam_to_world: torch.Tensor, fov_y: float, aspect: float, scale: float, colour, image):
        # viser frustums are OpenCV cameras (+z forward, y down), like ours: no axis flip here.
        return server.scene.add_camera_frustum(
            name,
            fov=fov_y,
            aspect=aspect,
            scale=scale * VISER_SCALE,
            color=colour,
            image=image,
            wxyz=rotation_to_quaternion(cam_to_world[:3, :3].double()).numpy(),
            position=(cam_to_world[:3, 3] * VISER_SCALE).double().numpy(),
        )
