"""Synthetic scenes: determinism, multi-view consistency of the written files, nerfstudio loading, bad input."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from reliev3r_ns.data.scene_io import SceneFormatError, load_scene, write_scene
from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.data.synthetic_dataset import dataset_identity, generate_dataset
from reliev3r_ns.geometry import invert_pose, project_world_points, unproject_depth_to_world

SMALL = SyntheticSceneConfig(width=80, height=64, num_views=6, supersample=1, texture_size=128)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, num_scenes=3, seed=7, config=SMALL, show_progress=False)
    return root


def test_same_seed_same_scene_and_different_seeds_differ():
    a = generate_scene(3, SMALL)
    b = generate_scene(3, SMALL)
    c = generate_scene(4, SMALL)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.depths, b.depths)
    assert np.array_equal(a.cam_to_world, b.cam_to_world)
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("trajectory", ["orbit", "forward", "lookat"])
def test_every_trajectory_gives_finite_depth_and_textured_images(trajectory):
    config = SyntheticSceneConfig(width=64, height=48, num_views=4, supersample=1, texture_size=128, trajectories=(trajectory,))
    scene = generate_scene(11, config)
    assert scene.metadata["trajectory"] == trajectory
    assert np.isfinite(scene.depths).all() and scene.depths.min() > 0.3  # no camera inside an object
    assert scene.images.std() > 20  # textured, not flat
    rotations = scene.cam_to_world[:, :3, :3]
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-9)


def _bilinear(image, uv):
    """Bilinear sample of (H, W, C) at (M, 2) pixel-centre coordinates, with the 4 neighbours."""
    u0 = np.floor(uv[:, 0]).astype(int)
    v0 = np.floor(uv[:, 1]).astype(int)
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    n = [image[v0, u0], image[v0, u0 + 1], image[v0 + 1, u0], image[v0 + 1, u0 + 1]]
    w = [(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv]
    value = sum(wi.reshape(-1, *([1] * (image.ndim - 2))) * ni for wi, ni in zip(w, n))
    return value, np.stack(n)


def test_depth_reprojects_consistently_between_views(dataset):
    """A pixel lifted with GT depth in view i lands, in view j, on the same surface point: lifting it
    back from view j's depth and projecting into view i returns within 0.5 px."""
    checked = 0
    for scene_dir in sorted(dataset.glob("scene_*")):
        scene = load_scene(scene_dir)
        depths = scene.load_depths()
        images = scene.load_images().astype(np.float64)
        c2w = torch.from_numpy(scene.cam_to_world)
        K = torch.from_numpy(scene.intrinsics)
        for i, j in [(0, 1), (1, 2), (2, 4)]:
            world = unproject_depth_to_world(torch.from_numpy(depths[i].astype(np.float64)), K[i], c2w[i]).reshape(-1, 3)
            uv_j, z_j = project_world_points(world, K[j], invert_pose(c2w[j]))
            uv_j, z_j = uv_j.numpy(), z_j.numpy()
            H, W = depths[j].shape
            inside = (z_j > 0) & (uv_j[:, 0] >= 0) & (uv_j[:, 0] < W - 1) & (uv_j[:, 1] >= 0) & (uv_j[:, 1] < H - 1)
            idx = np.nonzero(inside)[0]
            depth_at_j, neighbours = _bilinear(depths[j], uv_j[idx])
            smooth = neighbours.max(0) / neighbours.min(0) < 1.02
            visible = np.abs(depth_at_j - z_j[idx]) < 0.01 * z_j[idx]
            keep = idx[smooth & visible]
            if len(keep) < 0.1 * H * W:
                continue
            # Back from view j: lift (u_j, depth_j(u_j)), project into view i.
            rays = np.linalg.inv(scene.intrinsics[j]) @ np.concatenate([uv_j[keep], np.ones((len(keep), 1))], 1).T
            p_cam = (rays * _bilinear(depths[j], uv_j[keep])[0]).T
            p_world = p_cam @ scene.cam_to_world[j, :3, :3].T + scene.cam_to_world[j, :3, 3]
            uv_i, _ = project_world_points(torch.from_numpy(p_world), K[i], invert_pose(c2w[i]))
            pixels_i = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 2)[keep]
            error = np.linalg.norm(uv_i.numpy() - pixels_i, axis=-1)
            assert np.percentile(error, 99) < 0.5, f"{scene_dir} views {i}->{j}: 99th pct {np.percentile(error, 99):.3f} px"
            # The images agree too: the same surface point has (nearly) the same colour in both views.
            colour_j, _ = _bilinear(images[j], uv_j[keep])
            colour_i = images[i].reshape(-1, 3)[keep]
            assert np.median(np.abs(colour_j - colour_i)) < 12
            checked += 1
    assert checked >= 4, "too few overlapping view pairs to check"


def test_scene_loads_with_nerfstudio_dataparser(dataset):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    scene_dir = sorted(dataset.glob("scene_*"))[0]
    scene = load_scene(scene_dir)
    parser = NerfstudioDataParserConfig(data=scene_dir, eval_mode="all").setup()
    outputs = parser.get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == scene.num_views
    assert [p.name for p in outputs.image_filenames] == [p.name for p in scene.image_paths]
    # nerfstudio's pixel convention puts the principal point half a pixel further.
    np.testing.assert_allclose(outputs.cameras.cx[:, 0].numpy(), scene.intrinsics[:, 0, 2] + 0.5, atol=1e-4)
    np.testing.assert_allclose(outputs.cameras.fx[:, 0].numpy(), scene.intrinsics[:, 0, 0], atol=1e-4)
    # Undo nerfstudio's own recentring / rescaling: the OpenCV poses we wrote come back.
    original = outputs.transform_poses_to_original_space(outputs.cameras.camera_to_worlds, camera_convention="opencv")
    np.testing.assert_allclose(original.numpy(), scene.cam_to_world[:, :3], atol=1e-4)
    assert len(outputs.metadata["depth_filenames"]) == scene.num_views


def test_generation_resumes_and_refuses_to_mix_configs(tmp_path):
    config = SyntheticSceneConfig(width=32, height=24, num_views=2, supersample=1, texture_size=64)
    first = generate_dataset(tmp_path, 2, seed=1, config=config, show_progress=False)
    stamp = os.stat(first[0] / "transforms.json").st_mtime_ns
    # A leftover temporary folder from a killed run must not count as a scene.
    (tmp_path / ".scene_00002.tmp-dead").mkdir()
    scenes = generate_dataset(tmp_path, 3, seed=1, config=config, show_progress=False)
    assert len(scenes) == 3 and all((s / "transforms.json").is_file() for s in scenes)
    assert os.stat(first[0] / "transforms.json").st_mtime_ns == stamp  # untouched
    # Scene k does not depend on the dataset size.
    alone = generate_dataset(tmp_path / "other", 3, seed=1, config=config, show_progress=False)
    assert (alone[2] / "images/frame_00001.png").read_bytes() == (scenes[2] / "images/frame_00001.png").read_bytes()
    with pytest.raises(ValueError, match="different version / seed / config"):
        generate_dataset(tmp_path, 3, seed=2, config=config, show_progress=False)


def test_dataset_identity_names_the_generator_seed_config_and_scene_count(dataset, tmp_path):
    identity = dataset_identity(dataset)
    assert (identity["generator"], identity["seed"], identity["num_scenes"]) == ("reliev3r-synthetic", 7, 3)
    assert identity["config"]["width"] == SMALL.width and identity["config"]["num_views"] == SMALL.num_views
    assert dataset_identity(tmp_path) is None  # a folder the generator did not make: nothing to claim
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="dataset.json: not valid JSON"):
        dataset_identity(tmp_path)


def test_worker_processes_write_the_same_scenes_as_one_process(tmp_path):
    config = SyntheticSceneConfig(width=32, height=24, num_views=2, supersample=1, texture_size=64)
    one = generate_dataset(tmp_path / "one", 3, seed=5, config=config, show_progress=False)
    (tmp_path / "two").mkdir()
    shutil.copytree(one[0], tmp_path / "two" / one[0].name)  # resumes: only scenes 1 and 2 are rendered
    two = generate_dataset(tmp_path / "two", 3, seed=5, config=config, show_progress=False, workers=2)
    for a, b in zip(one, two):
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        for name in files:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{b / name} differs"
    assert not list((tmp_path / "two").glob(".*tmp*"))


def test_bad_scene_files_give_errors_naming_the_file(dataset, tmp_path):
    scene_dir = tmp_path / "scene"
    shutil.copytree(sorted(dataset.glob("scene_*"))[0], scene_dir)
    transforms = scene_dir / "transforms.json"
    good = transforms.read_text()

    transforms.write_text(good[:-20])
    with pytest.raises(SceneFormatError, match=r"transforms\.json: not valid JSON"):
        load_scene(scene_dir)

    meta = json.loads(good)
    del meta["frames"][2]["transform_matrix"]
    transforms.write_text(json.dumps(meta))
    with pytest.raises(SceneFormatError, match=r"frame 2 \(images/frame_00002.png\): missing 'transform_matrix'"):
        load_scene(scene_dir)

    transforms.write_text(good)
    (scene_dir / "images/frame_00003.png").unlink()
    with pytest.raises(SceneFormatError, match=r"frame_00003\.png: image listed in .* does not exist"):
        load_scene(scene_dir)

    (scene_dir / "images/frame_00003.png").write_bytes(b"not a png")
    scene = load_scene(scene_dir)
    with pytest.raises(SceneFormatError, match=r"frame_00003\.png: cannot read image"):
        scene.load_images()

    (scene_dir / "depth/frame_00001.npy").unlink()
    with pytest.raises(SceneFormatError, match=r"frame_00001\.npy: depth file listed"):
        load_scene(scene_dir)

    with pytest.raises(SceneFormatError, match="missing; a scene folder needs"):
        load_scene(tmp_path / "nowhere")


def test_write_scene_is_atomic_and_never_overwrites(tmp_path):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    poses = np.tile(np.eye(4), (2, 1, 1))
    K = np.tile(np.diag([10.0, 10.0, 1.0]), (2, 1, 1))
    write_scene(tmp_path / "s", images, poses, K)
    with pytest.raises(FileExistsError):
        write_scene(tmp_path / "s", images, poses, K)
    with pytest.raises(ValueError):
        write_scene(tmp_path / "t", images, poses[:1], K)  # fails before anything is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folder left behind


def test_sift_finds_keypoints_on_rendered_views():
    import cv2

    scene = generate_scene(5, SyntheticSceneConfig(width=256, height=192, num_views=1, supersample=2))
    grey = cv2.cvtColor(scene.images[0], cv2.COLOR_RGB2GRAY)
    keypoints = cv2.SIFT_create().detect(grey, None)
    assert len(keypoints) > 150
