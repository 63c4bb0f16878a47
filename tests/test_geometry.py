"""Each geometry function against an independent computation: scipy, plain numpy loops, or nerfstudio."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from reliev3r_ns import geometry as G

RNG = np.random.default_rng(1234)


def random_poses(n, rng=RNG, translation_scale=3.0):
    R = Rotation.random(n, random_state=rng.integers(1 << 31)).as_matrix()
    t = rng.normal(size=(n, 3)) * translation_scale
    pose = np.tile(np.eye(4), (n, 1, 1))
    pose[:, :3, :3] = R
    pose[:, :3, 3] = t
    return pose


def test_quaternion_round_trip_against_scipy():
    rot = Rotation.random(200, random_state=0)
    # Include the hard cases: identity and 180 degree turns about each axis.
    extra = Rotation.from_rotvec(np.array([[0, 0, 0], [math.pi, 0, 0], [0, math.pi, 0], [0, 0, math.pi], [1, 1, 0]]) * np.array([[1], [1], [1], [1], [math.pi / math.sqrt(2)]]))
    rot = Rotation.concatenate([rot, extra])
    matrices = torch.from_numpy(rot.as_matrix())
    quat_xyzw = rot.as_quat()
    quat_wxyz = np.concatenate([quat_xyzw[:, 3:], quat_xyzw[:, :3]], axis=1)
    quat_wxyz *= np.where(quat_wxyz[:, :1] < 0, -1, 1)
    ours = G.rotation_to_quaternion(matrices).numpy()
    # q and -q are the same rotation; where w == 0 the sign is a free choice, so compare up to sign.
    dots = np.abs((ours * quat_wxyz).sum(-1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-9)
    np.testing.assert_allclose(G.quaternion_to_rotation(torch.from_numpy(quat_wxyz)).numpy(), rot.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(G.quaternion_to_rotation(torch.from_numpy(ours)).numpy(), rot.as_matrix(), atol=1e-12)


def test_rotation_angle_matches_scipy_and_is_differentiable_at_zero():
    rot = Rotation.random(100, random_state=3)
    np.testing.assert_allclose(G.rotation_angle(torch.from_numpy(rot.as_matrix())).numpy(), rot.magnitude(), atol=1e-7)
    a, b = Rotation.random(2, random_state=5)
    expected = (a.inv() * b).magnitude()
    got = G.rotation_geodesic_distance(torch.from_numpy(a.as_matrix()), torch.from_numpy(b.as_matrix()))
    assert abs(got.item() - expected) < 1e-7
    identity = torch.eye(3, dtype=torch.float64, requires_grad=True)
    G.rotation_angle(identity).backward()
    assert torch.isfinite(identity.grad).all()


def test_invert_and_compose_against_numpy():
    poses = random_poses(50)
    inv = G.invert_pose(torch.from_numpy(poses)).numpy()
    np.testing.assert_allclose(inv, np.linalg.inv(poses), atol=1e-10)
    a, b = random_poses(2)
    np.testing.assert_allclose(G.compose_poses(torch.from_numpy(a), torch.from_numpy(b)).numpy(), a @ b)
    points = RNG.normal(size=(50, 3))
    expected = np.einsum("nij,nj->ni", poses[:, :3, :3], points) + poses[:, :3, 3]
    np.testing.assert_allclose(G.transform_points(torch.from_numpy(poses), torch.from_numpy(points)).numpy(), expected)


def test_relative_and_pairwise_poses():
    cam_to_world = torch.from_numpy(random_poses(6))
    rel = G.relative_poses_to_reference(cam_to_world, reference_index=2)
    np.testing.assert_allclose(rel[2].numpy(), np.eye(4), atol=1e-12)
    # Re-expressing in another world frame leaves pairwise relative poses unchanged.
    world_change = torch.from_numpy(random_poses(1)[0])
    pairwise = G.pairwise_relative_poses(cam_to_world)
    pairwise_moved = G.pairwise_relative_poses(world_change @ cam_to_world)
    np.testing.assert_allclose(pairwise.numpy(), pairwise_moved.numpy(), atol=1e-10)
    c2w = cam_to_world.numpy()
    np.testing.assert_allclose(pairwise[1, 4].numpy(), np.linalg.inv(c2w[1]) @ c2w[4], atol=1e-10)


def test_intrinsics_fov_round_trip():
    fov_x = torch.tensor([0.5, 1.0, 1.6], dtype=torch.float64)
    K = G.intrinsics_from_fov(fov_x, width=160, height=90)
    fx, fy = G.fov_from_intrinsics(K, 160, 90)
    np.testing.assert_allclose(fx.numpy(), fov_x.numpy(), atol=1e-12)
    # Square pixels: the vertical fov follows from the aspect ratio.
    np.testing.assert_allclose(np.tan(fy.numpy() / 2), np.tan(fov_x.numpy() / 2) * 90 / 160, atol=1e-12)
    assert K[0, 0, 2].item() == pytest.approx(79.5) and K[0, 1, 2].item() == pytest.approx(44.5)


def test_scale_intrinsics_matches_resampling():
    # A point at pixel centre u in the original image sits at (u + 0.5) * s - 0.5 after resizing by s.
    K = G.intrinsics_from_fov(torch.tensor(1.0, dtype=torch.float64), 100, 80)
    point = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    uv, _ = G.project_camera_points(point, K)
    K2 = G.scale_intrinsics(K, 0.5, 0.25)
    uv2, _ = G.project_camera_points(point, K2)
    np.testing.assert_allclose(uv2.numpy(), [(uv[0].item() + 0.5) * 0.5 - 0.5, (uv[1].item() + 0.5) * 0.25 - 0.5])


def test_unproject_project_round_trip_against_numpy_loop():
    H, W = 7, 9
    K = np.array([[20.0, 0, 4.2], [0, 22.0, 3.1], [0, 0, 1]])
    c2w = random_poses(1)[0]
    depth = RNG.uniform(1, 5, size=(H, W))
    world = G.unproject_depth_to_world(torch.from_numpy(depth), torch.from_numpy(K), torch.from_numpy(c2w)).numpy()
    for v in range(H):
        for u in range(W):
            p_cam = depth[v, u] * np.linalg.inv(K) @ np.array([u, v, 1.0])
            np.testing.assert_allclose(world[v, u], c2w[:3, :3] @ p_cam + c2w[:3, 3], atol=1e-10)
    uv, z = G.project_world_points(torch.from_numpy(world), torch.from_numpy(K), G.invert_pose(torch.from_numpy(c2w)))
    np.testing.assert_allclose(z.numpy(), depth, atol=1e-10)
    np.testing.assert_allclose(uv.numpy(), G.pixel_grid(H, W, dtype=torch.float64).numpy(), atol=1e-9)


def test_bearing_vectors_are_unit_and_point_at_the_pixel():
    K = torch.tensor([[30.0, 0, 10], [0, 30.0, 8], [0, 0, 1]], dtype=torch.float64)
    pixels = torch.from_numpy(RNG.uniform(0, 20, size=(100, 2)))
    bearings = G.bearing_vectors(pixels, K)
    np.testing.assert_allclose(torch.linalg.norm(bearings, dim=-1).numpy(), 1.0)
    uv, z = G.project_camera_points(bearings * 3.7, K)
    np.testing.assert_allclose(uv.numpy(), pixels.numpy(), atol=1e-10)
    assert (z > 0).all()


def test_look_at_is_opencv():
    c2w = G.look_at(torch.tensor([0.0, 0, 1]), torch.tensor([5.0, 0, 1]), torch.tensor([0.0, 0, 1]))
    R = c2w[:3, :3]
    np.testing.assert_allclose(R[:, 2].numpy(), [1, 0, 0], atol=1e-7)  # z forward
    np.testing.assert_allclose(R[:, 1].numpy(), [0, 0, -1], atol=1e-7)  # y down
    np.testing.assert_allclose(R[:, 0].numpy(), [0, -1, 0], atol=1e-7)  # x right
    assert torch.det(R).item() == pytest.approx(1.0)


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_a_known_similarity(with_scale):
    source = torch.from_numpy(RNG.normal(size=(40, 3)))
    R = torch.from_numpy(Rotation.random(random_state=7).as_matrix())
    s = 2.5 if with_scale else 1.0
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    target = s * source @ R.T + t
    sim = G.umeyama_alignment(source, target, with_scale=with_scale)
    np.testing.assert_allclose(sim.rotation.numpy(), R.numpy(), atol=1e-10)
    assert sim.scale.item() == pytest.approx(s)
    np.testing.assert_allclose(sim.translation.numpy(), t.numpy(), atol=1e-10)
    np.testing.assert_allclose(sim.apply_to_points(source).numpy(), target.numpy(), atol=1e-10)


def test_umeyama_matches_brute_force_optimum_with_noise_and_reflection_guard():
    source = RNG.normal(size=(30, 3))
    target = source @ np.diag([1, 1, -1]) + 0.01 * RNG.normal(size=(30, 3))  # a mirror: no rotation fits exactly
    sim = G.umeyama_alignment(torch.from_numpy(source), torch.from_numpy(target))
    assert np.linalg.det(sim.rotation.numpy()) == pytest.approx(1.0)
    cost = lambda s, R, t: ((target - (s * source @ R.T + t)) ** 2).sum()  # noqa: E731
    best = cost(sim.scale.item(), sim.rotation.numpy(), sim.translation.numpy())
    for seed in range(200):
        R = Rotation.random(random_state=seed).as_matrix()
        # Given R, the optimal t and s are closed form; the Umeyama optimum must beat every sampled R.
        mu_s, mu_t = source.mean(0), target.mean(0)
        sc, tc = source - mu_s, target - mu_t
        s = max((tc * (sc @ R.T)).sum() / (sc**2).sum(), 1e-9)
        assert best <= cost(s, R, mu_t - s * R @ mu_s) + 1e-9


def test_sim3_moves_cameras_consistently():
    c2w = torch.from_numpy(random_poses(5))
    sim = G.Sim3(scale=torch.tensor(3.0, dtype=torch.float64), rotation=torch.from_numpy(Rotation.random(random_state=2).as_matrix()), translation=torch.tensor([1.0, 2, 3], dtype=torch.float64))
    moved = sim.apply_to_cam_to_world(c2w)
    # A world point seen by a camera at depth z is seen at the same pixel after the similarity, at depth s z.
    point_world = torch.tensor([0.5, -0.3, 1.2], dtype=torch.float64)
    K = torch.eye(3, dtype=torch.float64)
    uv, z = G.project_world_points(point_world, K, G.invert_pose(c2w))
    uv2, z2 = G.project_world_points(sim.apply_to_points(point_world[None])[0], K, G.invert_pose(moved))
    np.testing.assert_allclose(uv2.numpy(), uv.numpy(), atol=1e-10)
    np.testing.assert_allclose(z2.numpy(), 3.0 * z.numpy(), atol=1e-10)
    aligned = G.align_camera_centres(c2w, moved)
    assert aligned.scale.item() == pytest.approx(3.0)


def test_opencv_opengl_round_trip_and_axes():
    c2w = torch.from_numpy(random_poses(10))
    gl = G.cam_to_world_opencv_to_opengl(c2w)
    np.testing.assert_allclose(G.cam_to_world_opengl_to_opencv(gl).numpy(), c2w.numpy())
    # OpenGL looks along -z: its -z axis equals the OpenCV +z axis; its +y (up) is OpenCV's -y (down).
    np.testing.assert_allclose(-gl[:, :3, 2].numpy(), c2w[:, :3, 2].numpy())
    np.testing.assert_allclose(-gl[:, :3, 1].numpy(), c2w[:, :3, 1].numpy())
    np.testing.assert_allclose(gl[:, :3, 3].numpy(), c2w[:, :3, 3].numpy())
    np.testing.assert_allclose(G.cam_to_world_opencv_to_opengl(c2w.numpy()[:, :3]), gl.numpy())


def test_transforms_json_conversion_matches_nerfstudio_rays():
    """Rays nerfstudio casts from our transforms.json frame equal our OpenCV bearings."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    W, H = 40, 30
    c2w = random_poses(1)[0]
    K = np.array([[35.0, 0, 19.2], [0, 33.0, 15.7], [0, 0, 1]])
    frame = G.frame_to_transforms_json(c2w, K, W, H)
    cameras = Cameras(
        camera_to_worlds=torch.tensor(frame["transform_matrix"], dtype=torch.float32)[None, :3],
        fx=frame["fl_x"], fy=frame["fl_y"], cx=frame["cx"], cy=frame["cy"], width=W, height=H,
        camera_type=CameraType.PERSPECTIVE,
    )
    rays = cameras.generate_rays(camera_indices=0)  # (H, W) rays through pixel centres
    bearings_cam = G.bearing_vectors(G.pixel_grid(H, W, dtype=torch.float64), torch.from_numpy(K))
    bearings_world = bearings_cam @ torch.from_numpy(c2w[:3, :3]).T
    np.testing.assert_allclose(rays.directions.numpy(), bearings_world.numpy(), atol=1e-5)
    np.testing.assert_allclose(rays.origins[0, 0].numpy(), c2w[:3, 3], atol=1e-5)
    # And back.
    (back,) = G.frames_from_transforms_json({"frames": [{"file_path": "x.png", **frame}]})
    np.testing.assert_allclose(back["cam_to_world"], c2w, atol=1e-12)
    np.testing.assert_allclose(back["intrinsics"], K, atol=1e-12)


def test_transforms_json_errors_name_the_problem():
    good = G.frame_to_transforms_json(np.eye(4), np.diag([10.0, 10.0, 1.0]), 8, 8)
    with pytest.raises(ValueError, match="frames"):
        G.frames_from_transforms_json({"no_frames": []}, source="t.json")
    with pytest.raises(ValueError, match="t.json: frame 0.*fl_x"):
        bad = {k: v for k, v in good.items() if k != "fl_x"}
        G.frames_from_transforms_json({"frames": [{"file_path": "a.png", **bad}]}, source="t.json")
    with pytest.raises(ValueError, match="transform_matrix"):
        G.frames_from_transforms_json({"frames": [{"file_path": "a.png", **good, "transform_matrix": [[1, 2], [3, 4]]}]})
    with pytest.raises(ValueError, match="distortion"):
        G.frames_from_transforms_json({"frames": [{"file_path": "a.png", **good, "k1": 0.1}]})
    # Shared top-level intrinsics are allowed, as in nerfstudio.
    shared = {k: good[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    (frame,) = G.frames_from_transforms_json({**shared, "frames": [{"file_path": "a.png", "transform_matrix": good["transform_matrix"]}]})
    assert frame["width"] == 8


def test_axis_angle_to_rotation_matches_scipy_rotvec():
    rng = np.random.default_rng(7)
    rotvec = rng.normal(size=(32, 3)) * rng.uniform(0, 3.0, size=(32, 1))
    ours = G.axis_angle_to_rotation(torch.tensor(rotvec)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-10)
    # Differentiable at the identity (Rodrigues' formula divides by the angle there).
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    G.axis_angle_to_rotation(zero)[0, 1].backward()
    assert torch.isfinite(zero.grad).all() and zero.grad.abs().sum() > 0


def test_rotation_from_6d_matches_numpy_qr():
    rng = np.random.default_rng(8)
    six = rng.normal(size=(64, 6))
    ours = G.rotation_from_6d(torch.tensor(six)).numpy()
    for k in range(64):
        # QR of [a1 a2] orthonormalises the columns in order; fix QR's sign freedom with diag(R) > 0.
        q, r = np.linalg.qr(np.stack([six[k, :3], six[k, 3:]], axis=1))
        q = q * np.sign(np.diag(r))
        np.testing.assert_allclose(ours[k][:, :2], q, atol=1e-10)
        np.testing.assert_allclose(np.linalg.det(ours[k]), 1.0, atol=1e-10)
        np.testing.assert_allclose(ours[k].T @ ours[k], np.eye(3), atol=1e-10)
    # A rotation's own first two columns map back to it.
    rot = torch.tensor(Rotation.random(5, random_state=3).as_matrix())
    back = G.rotation_from_6d(torch.cat([rot[..., :, 0], rot[..., :, 1]], dim=-1))
    torch.testing.assert_close(back, rot)


def test_scale_pixels_agrees_with_scale_intrinsics():
    # A camera point projects to the same place whether the pixel or the intrinsics are rescaled.
    K = G.intrinsics_from_fov(torch.tensor(1.0, dtype=torch.float64), 160, 120)
    point = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    pixel, _ = G.project_camera_points(point, K)
    scaled, _ = G.project_camera_points(point, G.scale_intrinsics(K, 0.4, 0.8))
    torch.testing.assert_close(G.scale_pixels(pixel, 0.4, 0.8), scaled)


def reference_splat(points_cam, colours, K, H, W, radius, near=1e-3, background=0.0):
    """Painter's loop: every point paints its square if it is nearer (or equally near with a lower index)."""
    colour = np.full((H, W, colours.shape[1]), background)
    depth = np.full((H, W), np.inf)
    index = np.full((H, W), -1)
    for i, (x, y, z) in enumerate(points_cam):
        if not (np.isfinite([x, y, z]).all() and z > near):
            continue
        u = math.floor(K[0, 0] * x / z + K[0, 2] + 0.5)
        v = math.floor(K[1, 1] * y / z + K[1, 2] + 0.5)
        for dv in range(-radius, radius + 1):
            for du in range(-radius, radius + 1):
                r, c = v + dv, u + du
                if 0 <= r < H and 0 <= c < W and (z < depth[r, c] or (z == depth[r, c] and i < index[r, c])):
                    depth[r, c], index[r, c], colour[r, c] = z, i, colours[i]
    return colour, depth, index


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_splat_points_matches_a_painters_loop(radius):
    rng = np.random.default_rng(radius)
    H, W = 24, 32
    K = np.array([[30.0, 0, (W - 1) / 2], [0, 28.0, (H - 1) / 2], [0, 0, 1]])
    points = rng.normal(size=(400, 3)) * [1.0, 0.8, 1.5] + [0, 0, 2.0]  # some behind the camera, some outside
    points[:20, 2] = np.round(points[:20, 2], 1)  # exact depth ties
    points[5] = np.nan
    colours = rng.random((400, 3))
    splat = G.splat_points(torch.from_numpy(points), torch.from_numpy(colours), torch.from_numpy(K), H, W, radius=radius, background=0.25)
    colour, depth, index = reference_splat(points, colours, K, H, W, radius, background=0.25)
    np.testing.assert_array_equal(splat.index.numpy(), index)
    np.testing.assert_array_equal(splat.depth.numpy(), depth)
    np.testing.assert_allclose(splat.colour.numpy(), colour)
    assert 0 < splat.mask.float().mean() < 1


def test_splatting_a_depth_map_from_its_own_camera_gives_back_the_image():
    """Unprojecting every pixel and splatting it through the same camera returns each pixel to itself."""
    rng = np.random.default_rng(7)
    H, W = 20, 28
    K = torch.tensor([[25.0, 0, 13.2], [0, 24.0, 9.7], [0, 0, 1]], dtype=torch.float64)
    depth = torch.from_numpy(rng.uniform(1.0, 4.0, (H, W)))
    image = torch.from_numpy(rng.random((H, W, 3)))
    cam_to_world = torch.from_numpy(random_poses(1, rng)[0])
    world = G.unproject_depth_to_world(depth, K, cam_to_world)
    points_cam = G.transform_points(G.invert_pose(cam_to_world), world.reshape(-1, 3))
    splat = G.splat_points(points_cam, image.reshape(-1, 3), K, H, W)
    np.testing.assert_array_equal(splat.index.numpy(), np.arange(H * W).reshape(H, W))
    torch.testing.assert_close(splat.colour, image)
    torch.testing.assert_close(splat.depth, depth)


@pytest.mark.parametrize("views", [2, 5])
def test_align_cam_to_world_recovers_a_similarity_from_two_views(views):
    rng = np.random.default_rng(views)
    source = torch.from_numpy(random_poses(views, rng))
    truth = G.Sim3(scale=torch.tensor(2.5, dtype=torch.float64),
                   rotation=torch.from_numpy(Rotation.random(random_state=3).as_matrix()),
                   translation=torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    target = truth.apply_to_cam_to_world(source)
    fitted = G.align_cam_to_world(source, target)
    torch.testing.assert_close(fitted.matrix(), truth.matrix())
    if views >= 3:  # where Umeyama on centres is defined, the two agree on exact data
        torch.testing.assert_close(G.align_camera_centres(source, target).matrix(), truth.matrix())
