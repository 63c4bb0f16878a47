"""The live viewer: the predicted cloud and frusta of one clip in viser (checked through a headless
client speaking viser's wire format), the GUI controls, and the model's render of the cloud."""

import io

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

        # A browser camera placed at GT view 0 gets the model's render of the cloud as its background.
        gt_pose = clip["gt_cam_to_world"][0, 0].double()
        fov_y = 2 * float(torch.atan(0.5 * clip["images"].shape[-2] / clip["intrinsics"][0, 0, 1, 1]))
        client.send_camera(gt_pose[:3, 3].numpy() * 10, G.rotation_to_quaternion(gt_pose[:3, :3]).numpy(), fov_y, 4 / 3)
        client.wait_for(lambda: client.received("BackgroundImageMessage"), what="a render")
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
