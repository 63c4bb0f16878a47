"""The live viewer: the predicted cloud and frusta of one clip in viser (checked through a headless
client speaking viser's wire format), the GUI controls, and the model's render of the cloud."""

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from reliev3r_ns import geometry as G
from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.viewer.cloud import live_cloud
from training_helpers import make_trainer


def nerfstudio_camera(cam_to_world_opencv, K_opencv, height, width):
    """The camera as nerfstudio would read it from our transforms.json."""
    from nerfstudio.cameras.cameras import Cameras

    frame = G.frame_to_transforms_json(cam_to_world_opencv.numpy(), K_opencv.numpy(), width, height)
    return Cameras(camera_to_worlds=torch.tensor(frame["transform_matrix"], dtype=torch.float32)[None, :3],
                   fx=frame["fl_x"], fy=frame["fl_y"], cx=frame["cx"], cy=frame["cy"], width=width, height=height)


def test_viewer_scale_matches_nerfstudio():
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

    from reliev3r_ns.viewer.live import VISER_SCALE

    assert VISER_SCALE == VISER_NERFSTUDIO_SCALE_RATIO


def test_render_from_a_views_own_nerfstudio_camera_gives_back_its_image():
    """get_outputs_for_camera splats the cloud through a nerfstudio camera (OpenGL axes, half-pixel
    principal point): a view's unprojected GT depth seen from that view's camera is its own image."""
    from nerfstudio.data.scene_box import SceneBox

    from reliev3r_ns.training.model import Reliev3rModelConfig

    scene = generate_scene(3, SyntheticSceneConfig(width=40, height=30, num_views=2, supersample=1, texture_size=64))
    depth, K, cam_to_world = (torch.from_numpy(x[1]).double() for x in (scene.depths, scene.intrinsics, scene.cam_to_world))
    image = torch.from_numpy(scene.images[1]).float() / 255
    points = G.unproject_depth_to_world(depth, K, cam_to_world).reshape(-1, 3).float()
    model = Reliev3rModelConfig().setup(scene_box=SceneBox(aabb=torch.ones(2, 3)), num_train_data=1, metadata={})
    model.render_source = lambda width: (points, image.reshape(-1, 3), 0)
    outputs = model.get_outputs_for_camera(nerfstudio_camera(cam_to_world, K, 30, 40))
    torch.testing.assert_close(outputs["rgb"], image)
    assert outputs["accumulation"].min() == 1.0
    ray_distance = G.unproject_depth_to_camera(depth, K).norm(dim=-1).float()
    torch.testing.assert_close(outputs["depth"][..., 0], ray_distance, rtol=1e-4, atol=1e-4)


def test_live_cloud_display_frames():
    scene = generate_scene(4, SyntheticSceneConfig(width=32, height=24, num_views=3, supersample=1, texture_size=64))
    depth, K, gt = (torch.from_numpy(x).float() for x in (scene.depths, scene.intrinsics, scene.cam_to_world))
    images = torch.from_numpy(scene.images).permute(0, 3, 1, 2).float() / 255
    # The prediction is GT in another similarity frame: with GT, the display frame is GT's own.
    moved = G.Sim3(torch.tensor(0.3), G.axis_angle_to_rotation(torch.tensor([0.3, -1.0, 2.0])), torch.tensor([5.0, 1.0, -2.0]))
    cloud = live_cloud(depth * 0.3, torch.ones_like(depth), K, moved.apply_to_cam_to_world(gt), images, gt_cam_to_world=gt)
    torch.testing.assert_close(cloud.cam_to_world, gt, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cloud.points, G.unproject_depth_to_world(depth, K, gt), atol=1e-3, rtol=1e-4)
    # Without GT: first camera at the origin looking along +y, z up, median depth 1.
    cloud = live_cloud(depth, torch.ones_like(depth), K, gt, images)
    torch.testing.assert_close(cloud.cam_to_world[0, :3, 3], torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(cloud.cam_to_world[0, :3, 2], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)  # forward
    torch.testing.assert_close(cloud.cam_to_world[0, :3, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-5, rtol=0)  # image down
    distance_along_view = cloud.points[0].reshape(-1, 3)[:, 1]
    assert distance_along_view.median().item() == pytest.approx(1.0, rel=1e-4)
    # The confidence filter keeps the top part.
    confidence = torch.rand_like(depth)
    cloud = live_cloud(depth, confidence, K, gt, images)
    points, colours = cloud.filtered(75.0)
    assert points.shape[0] == colours.shape[0] == pytest.approx(0.25 * depth.numel(), abs=2)


def test_training_with_the_viewer_publishes_and_refreshes_the_live_prediction(small_data, tmp_path):
    from reliev3r_ns.viewer.client import HeadlessViserClient, free_port

    port = free_port()
    trainer = make_trainer(
        small_data, tmp_path, 5, vis="viewer", pipeline=dict(viewer_refresh_every=2),
        viewer=dict(websocket_port=port, quit_on_train_completion=True), clips_per_batch=1, max_views=3,
    )
    clip = trainer.pipeline.datamanager.eval_clip(0)
    views = clip["images"].shape[1]
    with HeadlessViserClient(port) as client:
        client.wait_for(lambda: any(m.get("label") == "Clip" for m in client.received("GuiAddDropdownMessage")), what="the clip picker")
        options = client.gui_element("Clip")["options"]
        assert options[0].startswith("held-out ") and any(o.startswith("train ") for o in options)

        # A browser tab connects (its first camera message; the tab is then framed on the scene), and
        # its user moves the camera to GT view 0: it gets the model's render of the cloud from there.
        client.send_camera([3.0, 3.0, 3.0], [1.0, 0.0, 0.0, 0.0], 1.0, 4 / 3)
        client.wait_for(lambda: client.received("SetCameraLookAtMessage"), what="the framing")
        gt_pose = clip["gt_cam_to_world"][0, 0].double()
        fov_y = 2 * float(torch.atan(0.5 * clip["images"].shape[-2] / clip["intrinsics"][0, 0, 1, 1]))
        renders = len(client.received("BackgroundImageMessage"))
        client.send_camera(gt_pose[:3, 3].numpy() * 10, G.rotation_to_quaternion(gt_pose[:3, :3]).numpy(), fov_y, 4 / 3)
        client.wait_for(lambda: len(client.received("BackgroundImageMessage")) > renders, what="a render")
        time.sleep(2.0)  # a low-resolution render comes first, then the full one
        render = np.asarray(Image.open(io.BytesIO(client.received("BackgroundImageMessage")[-1]["rgb_bytes"])))
        assert render.shape[1] / render.shape[0] == pytest.approx(4 / 3, rel=0.05)
        assert (render.max(-1) > 10).mean() > 0.2  # the cloud covers the view it came from

        clouds = lambda: client.received("PointCloudMessage", "/reliev3r/points")  # noqa: E731
        client.wait_for(lambda: len(clouds()) >= 1, what="the first cloud")
        first = client.points(clouds()[-1])

        # The confidence slider filters the cloud (30 -> 90th percentile keeps ~1/7 of the points).
        client.set_gui_value("Confidence percentile", 90.0)
        client.wait_for(lambda: len(clouds()) >= 2, what="the filtered cloud")
        assert len(client.points(clouds()[-1])) == pytest.approx(len(first) / 7, rel=0.1)
        # The clip picker shows another clip.
        client.set_gui_value("Clip", options[1])
        client.wait_for(lambda: len(clouds()) >= 3, what="the other clip's cloud")
        assert not np.array_equal(client.points(clouds()[-1])[:100], first[:100])
        client.set_gui_value("Clip", options[0])
        client.wait_for(lambda: len(clouds()) >= 4, what="the first clip again")

        before = len(clouds())
        trainer.train()  # refreshes after steps 0, 2 and 4
        client.wait_for(lambda: len(clouds()) >= before + 3, what="refreshes during training")
        refreshed = [client.points(m) for m in clouds()[before:]]
        assert not np.array_equal(refreshed[0], refreshed[-1])  # the model moved

        frusta = client.latest("CameraFrustumMessage", "/reliev3r/")
        assert {f"/reliev3r/predicted/view_{v:02d}" for v in range(views)} <= set(frusta)
        assert {f"/reliev3r/gt/view_{v:02d}" for v in range(views)} <= set(frusta)
        positions = lambda name: [tuple(m["position"]) for m in client.received("SetPositionMessage", name)]  # noqa: E731
        assert len(set(positions("/reliev3r/predicted/view_01")[-3:])) > 1  # predicted cameras move
        assert len(set(positions("/reliev3r/gt/view_01")[-3:])) == 1  # GT ones do not


def _project(points, position, look_at, up):
    """Pinhole projection (normalised image coordinates) of points seen from a look-at camera."""
    forward = (look_at - position) / np.linalg.norm(look_at - position)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rel = points - position
    z = rel @ forward
    return np.stack([rel @ right / z, rel @ down / z], -1), z


@pytest.mark.parametrize("trajectory", ["forward", "orbit"])
def test_framing_shows_every_camera_and_most_of_the_cloud(trajectory):
    from reliev3r_ns.viewer.live import framing

    scene = generate_scene(7 if trajectory == "forward" else 3, SyntheticSceneConfig(num_views=8, trajectories=(trajectory,)))
    cam_to_world = torch.as_tensor(scene.cam_to_world, dtype=torch.float64)
    depth = torch.as_tensor(scene.depths, dtype=torch.float64)
    intrinsics = torch.as_tensor(scene.intrinsics, dtype=torch.float64)
    points = G.unproject_depth_to_world(depth, intrinsics, cam_to_world).reshape(-1, 3)
    points = torch.cat([points, torch.full((50, 3), 1e4, dtype=torch.float64)])  # stray points must not matter
    fov_y = np.radians(50)
    position, look_at, up, radius = framing(points, cam_to_world, fov_y)
    assert np.isfinite(position).all() and radius > 0
    limit = np.tan(0.5 * fov_y)  # a square view: the height's half-angle bounds both axes
    uv, z = _project(cam_to_world[:, :3, 3].numpy(), position, look_at, up)
    assert (z > 0).all() and (np.abs(uv) < limit).all(), "a camera outside the view"
    uv, z = _project(points[:-50].numpy(), position, look_at, up)
    inside = (z > 0) & (np.abs(uv) < limit).all(-1)
    assert inside.mean() > 0.85
    # the view is a camera's up (-y) up, looking down at the scene rather than from below
    assert up @ -cam_to_world[0, :3, 1].numpy() > 0.5
    assert (look_at - position) @ up < 0


def test_a_browser_tab_is_framed_when_it_connects_and_left_alone_once_moved(small_data, tmp_path):
    from reliev3r_ns.viewer.client import HeadlessViserClient, free_port
    from reliev3r_ns.viewer.live import VISER_SCALE, framing

    port = free_port()
    trainer = make_trainer(
        small_data, tmp_path, 4, vis="viewer", pipeline=dict(viewer_refresh_every=1),
        viewer=dict(websocket_port=port, quit_on_train_completion=True), clips_per_batch=1, max_views=3,
    )
    with HeadlessViserClient(port) as client:
        client.wait_for(lambda: client.received("GuiAddDropdownMessage"), what="the viewer's controls")
        # a browser's first message: viser's default camera, near the origin (inside a frustum)
        client.send_camera([3.0, 3.0, 3.0], [1.0, 0.0, 0.0, 0.0], 1.0, 4 / 3)
        trainer.pipeline.live_view.refresh()
        client.wait_for(lambda: client.received("SetCameraLookAtMessage"), what="the framing")
        cloud = trainer.pipeline.live_view.cloud
        cameras = torch.cat([cloud.cam_to_world, cloud.gt_cam_to_world.to(cloud.cam_to_world)])
        position, look_at, _, _ = framing(cloud.filtered(30.0)[0], cameras, 1.0, margin=0.12 * cloud.scene_scale())
        sent_position = np.array(client.received("SetCameraPositionMessage")[-1]["position"])
        sent_look_at = np.array(client.received("SetCameraLookAtMessage")[-1]["look_at"])
        assert sent_look_at == pytest.approx(look_at * VISER_SCALE, abs=1e-4)
        assert sent_position == pytest.approx(position * VISER_SCALE, abs=1e-4)
        # the user drags the view: refreshes during training leave it where they put it
        client.send_camera([1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0], 1.0, 4 / 3)
        time.sleep(0.5)
        framed = len(client.received("SetCameraPositionMessage"))
        trainer.train()
        time.sleep(0.5)
        assert len(client.received("SetCameraPositionMessage")) == framed


def _screenshot(draw):
    """A 1280x800 picture laid out like nerfstudio's page (title bar, panel on the right)."""
    from PIL import ImageDraw

    image = Image.new("RGB", (1280, 800), (0, 0, 0))
    canvas = ImageDraw.Draw(image)
    canvas.rectangle([0, 0, 1280, 51], fill=(37, 38, 43))
    canvas.rectangle([960, 52, 1280, 800], fill=(37, 38, 43))
    draw(canvas)
    return image


def test_the_screenshot_check_tells_a_framed_scene_from_an_empty_or_full_or_cut_one():
    from reliev3r_ns.viewer.browser import scene_coverage
    from reliev3r_ns.viewer.live import GT_COLOUR, PREDICTED_COLOUR

    rng = np.random.default_rng(0)

    def scene(canvas, x0, y0, x1, y1):
        for _ in range(3000):  # the cloud: coloured specks
            x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            canvas.rectangle([x, y, x + 2, y + 2], fill=tuple(int(c) for c in rng.integers(60, 255, 3)))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        canvas.polygon([(cx - 60, cy - 40), (cx + 60, cy - 40), (cx, cy + 50)], outline=tuple(int(0.7 * c) for c in PREDICTED_COLOUR), width=3)
        canvas.rectangle([x0 + 10, y1 - 60, x0 + 90, y1 - 10], outline=GT_COLOUR, width=3)

    read = lambda draw: scene_coverage(_screenshot(draw), PREDICTED_COLOUR, GT_COLOUR).framed()  # noqa: E731
    assert read(lambda c: scene(c, 250, 250, 700, 650)) == (True, "framed")
    assert not read(lambda c: None)[0]  # nothing drawn
    ok, why = read(lambda c: scene(c, -200, 0, 1160, 900))  # a view from inside the scene
    assert not ok and ("full" in why or "off the canvas" in why)
    ok, why = read(lambda c: scene(c, 600, 400, 1000, 800))  # the scene runs under the panel and off the bottom
    assert not ok
    ok, why = read(lambda c: c.rectangle([300, 300, 600, 600], fill=(90, 60, 200)))  # content but no predicted cameras
    assert not ok and "predicted" in why


@pytest.mark.slow
def test_the_viewer_page_in_headless_chromium_shows_the_scene_framed(tmp_path):
    """nerfstudio's viewer page in a real browser during `ns-train reliev3r` (scripts/viewer_snapshot.py
    --browser): the screenshot when the scene arrives and the one after the last refresh both show the
    predicted cameras and a framed scene."""
    import subprocess
    import sys
    from pathlib import Path

    from reliev3r_ns.viewer.browser import find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the real-browser check of the viewer needs one")
    script = Path(__file__).resolve().parents[1] / "scripts" / "viewer_snapshot.py"
    output = tmp_path / "viewer_browser.png"
    result = subprocess.run([sys.executable, str(script), "--browser", "--iterations", "40", "--panels", "3",
                             "--output", str(output), "--output-dir", str(tmp_path / "outputs")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "when the scene arrived: framed" in result.stdout and "after the last refresh: framed" in result.stdout
    assert Image.open(output).size == (1280, 800)
