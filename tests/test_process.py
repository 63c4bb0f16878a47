"""COLMAP-free processing: windows + Sim(3), the written dataset read back by nerfstudio and pycolmap,
atomic output, bad input, video, test-time refinement, the reliev3r-data dataparser."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reliev3r_ns.cli.process_data import ProcessImages, ProcessVideo
from reliev3r_ns.data.ply import read_ply, write_ply
from reliev3r_ns.data.scene_io import SceneFormatError, write_scene
from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.geometry import (
    axis_angle_to_rotation,
    cam_to_world_opencv_to_opengl,
    intrinsics_opencv_to_nerfstudio,
    invert_pose,
    make_pose,
    unproject_depth_to_world,
)
from reliev3r_ns.model import FFRM, ffrm_config
from reliev3r_ns.model.ffrm import Prediction
from reliev3r_ns.process.dataset import DatasetWriterConfig, write_dataset
from reliev3r_ns.process.pipeline import CaptureConfig
from reliev3r_ns.process.reconstruct import ReconstructionConfig, plan_windows, reconstruct

# Small textureless renders give SIFT almost nothing to match: these tests place every image where
# the FFRM puts it (test_real_captures.py covers matching, leaving out and refinement on real images).
PLACE_ALL = CaptureConfig(place="all")
SCENE = SyntheticSceneConfig(width=128, height=96, num_views=10, supersample=1, texture_size=256, trajectories=("orbit",))


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    scene = generate_scene(11, SCENE)
    return write_scene(tmp_path_factory.mktemp("scenes") / "scene", scene.images, scene.cam_to_world, scene.intrinsics, scene.depths)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "ffrm.pt"
    FFRM(ffrm_config("tiny")).save_checkpoint(path, {"image_size": [96, 128]})
    return path


def images_of(scene_dir: Path):
    return sorted((scene_dir / "images").iterdir())


def nerfstudio_outputs(dataset: Path, split: str = "train"):
    """Read a dataset back with nerfstudio's own parser, no re-orientation / centring / scaling."""
    from reliev3r_ns.process.dataparser import PlyfileNerfstudioDataParserConfig

    config = PlyfileNerfstudioDataParserConfig(data=dataset, orientation_method="none", center_method="none", auto_scale_poses=False,
                                               eval_mode="all")
    return config.setup().get_dataparser_outputs(split)


# ----------------------------------------------------------------------------------------- windows
def test_windows_cover_every_view_with_the_overlap_asked_for():
    assert plan_windows(5, 8, 2) == [[0, 1, 2, 3, 4]]
    for n, size, overlap in [(9, 8, 2), (30, 8, 3), (17, 16, 4), (100, 10, 1)]:
        windows = plan_windows(n, size, overlap)
        assert sorted({i for w in windows for i in w}) == list(range(n))
        assert all(len(w) == size for w in windows)
        for a, b in zip(windows, windows[1:]):
            assert len(set(a) & set(b)) >= overlap
        assert windows[-1][-1] == n - 1


class OracleFFRM(torch.nn.Module):
    """Stands in for the FFRM: returns the *true* geometry of each window, each in its own random
    similarity frame (as a real FFRM would: arbitrary world frame and scale per forward pass)."""

    def __init__(self, scene, windows, seed=0):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.scene, self.windows, self.calls = scene, windows, 0
        self.rng = np.random.default_rng(seed)
        self.similarities = []

    def inference_size(self, H, W, resolution=None):
        return H, W

    def infer(self, images, autocast_dtype=None, **_):
        window = self.windows[self.calls]
        self.calls += 1
        rotation = axis_angle_to_rotation(torch.tensor(self.rng.normal(size=3)))
        scale, shift = float(self.rng.uniform(0.3, 3.0)), torch.tensor(self.rng.normal(size=3) * 2)
        self.similarities.append((scale, rotation, shift))
        gt_c2w = torch.from_numpy(self.scene.cam_to_world[window])
        c2w = make_pose(rotation @ gt_c2w[:, :3, :3], scale * gt_c2w[:, :3, 3] @ rotation.T + shift)
        depth = scale * torch.from_numpy(self.scene.depths[window]).double()
        K = torch.from_numpy(self.scene.intrinsics[window])
        points = unproject_depth_to_world(depth, K, c2w)
        ones = torch.ones_like(depth)
        return Prediction(c2w.float(), K.float(), depth.float(), ones.float(), points.float(), torch.zeros(len(window)))


def test_windows_registered_by_sim3_recover_the_truth_up_to_one_similarity(tmp_path):
    scene = generate_scene(11, SCENE)
    paths = []
    for i, image in enumerate(scene.images):
        paths.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(image).save(paths[-1])
    config = ReconstructionConfig(window_size=4, window_overlap=1, confidence_percentile=0.0)
    windows = plan_windows(len(paths), 4, 1)
    assert len(windows) == 3
    oracle = OracleFFRM(scene, windows)
    result = reconstruct(oracle, paths, config, exif_transpose=False)
    gt = torch.from_numpy(scene.cam_to_world)
    pred = torch.from_numpy(result.cam_to_world)
    # Everything lands in the first window's frame: one similarity maps the truth onto it exactly.
    scale, rotation, shift = oracle.similarities[0]
    expected = make_pose(rotation @ gt[:, :3, :3], scale * gt[:, :3, 3] @ rotation.T + shift)
    np.testing.assert_allclose(pred.numpy(), expected.numpy(), atol=2e-4 * scale)
    np.testing.assert_allclose(result.depth, scale * scene.depths, rtol=1e-4)
    assert result.window_transforms[0]["scale"] == 1.0
    # Each later window's recorded similarity undoes that window's frame (relative to the first).
    for k in (1, 2):
        s_k = oracle.similarities[k][0]
        assert result.window_transforms[k]["scale"] == pytest.approx(scale / s_k, rel=1e-4)


def test_one_window_exports_exactly_the_ffrm_prediction_and_nerfstudio_reads_it_back(scene_dir, checkpoint, tmp_path):
    model = FFRM.from_checkpoint(checkpoint)
    paths = images_of(scene_dir)[:6]
    result = reconstruct(model, paths, ReconstructionConfig(window_size=8))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    direct = model.infer(images, resolution=128)
    np.testing.assert_allclose(result.cam_to_world, direct.cam_to_world.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(result.intrinsics, direct.intrinsics.double().numpy(), rtol=1e-5)

    out = write_dataset(result, tmp_path / "out", DatasetWriterConfig(camera_intrinsics="per-frame", num_downscales=1), exif_transpose=False)
    outputs = nerfstudio_outputs(out)
    cameras = outputs.cameras
    assert len(outputs.image_filenames) == 6 and all(Path(f).is_file() for f in outputs.image_filenames)
    # nerfstudio's camera: OpenGL camera-to-world, half-pixel principal point.
    expected_c2w = cam_to_world_opencv_to_opengl(direct.cam_to_world.double())[:, :3, :]
    np.testing.assert_allclose(cameras.camera_to_worlds.numpy(), expected_c2w.numpy(), atol=1e-5)
    K_ns = intrinsics_opencv_to_nerfstudio(direct.intrinsics.double())
    np.testing.assert_allclose(cameras.fx[:, 0].numpy(), K_ns[:, 0, 0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(cameras.cx[:, 0].numpy(), K_ns[:, 0, 2].numpy(), rtol=1e-5)
    assert int(cameras.width[0]) == 128 and int(cameras.height[0]) == 96
    # The cloud arrives as splatfacto's initial points, in the same world frame.
    points, colours = read_ply(out / "sparse_pc.ply")
    np.testing.assert_allclose(outputs.metadata["points3D_xyz"].numpy(), points, atol=1e-5)
    assert outputs.metadata["points3D_rgb"].dtype == torch.uint8 and len(points) > 100
    assert (out / "images_2" / "frame_00001.png").is_file()
    assert Image.open(out / "images_2" / "frame_00001.png").size == (64, 48)
    assert (out / "preview.png").is_file()


def test_later_windows_are_the_ffrm_prediction_moved_by_their_recorded_sim3(scene_dir, checkpoint):
    model = FFRM.from_checkpoint(checkpoint)
    paths = images_of(scene_dir)
    result = reconstruct(model, paths, ReconstructionConfig(window_size=4, window_overlap=2))
    assert len(result.windows) == 4
    seen = set()
    for window, transform in zip(result.windows, result.window_transforms):
        images = np.stack([np.asarray(Image.open(paths[i]).convert("RGB")) for i in window])
        c2w = model.infer(images, resolution=128).cam_to_world.double()
        s, R, t = transform["scale"], torch.tensor(transform["rotation"], dtype=torch.float64), torch.tensor(transform["translation"], dtype=torch.float64)
        moved = make_pose(R @ c2w[:, :3, :3], s * c2w[:, :3, 3] @ R.T + t)
        new = [k for k, i in enumerate(window) if i not in seen]
        np.testing.assert_allclose(result.cam_to_world[[window[k] for k in new]], moved[new].numpy(), atol=1e-5)
        seen.update(window)


def test_shared_intrinsics_and_the_colmap_model_read_back_with_pycolmap(scene_dir, checkpoint, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    model = FFRM.from_checkpoint(checkpoint)
    result = reconstruct(model, images_of(scene_dir)[:5], ReconstructionConfig())
    out = write_dataset(result, tmp_path / "out", DatasetWriterConfig(colmap=True, num_downscales=0))
    meta = json.loads((out / "transforms.json").read_text())
    assert "fl_x" in meta and "fl_x" not in meta["frames"][0] and meta["ply_file_path"] == "sparse_pc.ply"
    K = np.median(result.intrinsics, axis=0)
    assert meta["fl_x"] == pytest.approx(K[0, 0]) and meta["cx"] == pytest.approx(K[0, 2] + 0.5)

    reconstruction = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert reconstruction.num_images() == 5 and reconstruction.num_cameras() == 1
    assert reconstruction.num_points3D() == len(result.points)
    camera = next(iter(reconstruction.cameras.values()))
    assert camera.model.name == "PINHOLE"
    np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5], rtol=1e-6)
    for image in reconstruction.images.values():
        index = int(image.name.split("_")[1].split(".")[0]) - 1
        world_to_cam = invert_pose(torch.from_numpy(result.cam_to_world[index])).numpy()
        np.testing.assert_allclose(image.cam_from_world().matrix(), world_to_cam[:3], atol=1e-6)


# ------------------------------------------------------------------------------------ atomic output
def test_output_is_never_half_written(scene_dir, checkpoint, tmp_path, monkeypatch):
    model = FFRM.from_checkpoint(checkpoint)
    result = reconstruct(model, images_of(scene_dir)[:3], ReconstructionConfig())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_dataset(result, out, DatasetWriterConfig(num_downscales=0))

    import reliev3r_ns.process.dataset as dataset_module

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(dataset_module, "write_ply", broken)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(result, out, DatasetWriterConfig(num_downscales=0, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(dataset_module, "write_ply", write_ply)
    write_dataset(result, out, DatasetWriterConfig(num_downscales=0, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "transforms.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------------------- bad input
def test_bad_inputs_get_clear_messages(scene_dir, checkpoint, tmp_path):
    def run(data, **kwargs):
        return ProcessImages(data=data, output_dir=tmp_path / "out", checkpoint=checkpoint, capture=copy.deepcopy(PLACE_ALL), **kwargs).main()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SceneFormatError, match="no images found"):
        run(empty)
    one = tmp_path / "one"
    one.mkdir()
    Image.open(images_of(scene_dir)[0]).save(one / "a.png")
    (one / "notes.txt").write_text("not an image")
    with pytest.raises(SceneFormatError, match="only one usable image"):
        run(one)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG not really")
    (broken / "b.png").write_bytes(images_of(scene_dir)[0].read_bytes())
    with pytest.raises(SceneFormatError, match="only one usable image.*a.png: unreadable"):
        run(broken)
    with pytest.raises(FileNotFoundError, match="missing.pt: no such FFRM checkpoint or weights file"):
        ProcessImages(data=scene_dir, output_dir=tmp_path / "out", checkpoint=tmp_path / "missing.pt").main()
    assert not (tmp_path / "out").exists()


def test_without_a_checkpoint_the_bundled_ffrm_makes_the_dataset(scene_dir, tmp_path, capsys):
    import json

    from reliev3r_ns.checkpoints import BUNDLED_CHECKPOINT

    out = ProcessImages(data=scene_dir, output_dir=tmp_path / "out", capture=copy.deepcopy(PLACE_ALL)).main()
    assert "no --checkpoint: using the bundled tiny FFRM" in capsys.readouterr().err
    metadata = json.loads((out / "transforms.json").read_text())
    assert len(metadata["frames"]) == len(images_of(scene_dir))
    assert Path(metadata["reliev3r"]["checkpoint"]) == BUNDLED_CHECKPOINT


def test_exif_rotated_photos_are_written_as_the_model_saw_them(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        exif = image.getexif()
        exif[0x0112] = 6  # stored landscape, shown portrait
        image.save(folder / f"{k}.jpg", exif=exif)
    out = ProcessImages(data=folder, output_dir=tmp_path / "out", checkpoint=checkpoint, capture=copy.deepcopy(PLACE_ALL)).main()
    meta = json.loads((out / "transforms.json").read_text())
    assert (meta["w"], meta["h"]) == (48, 64)
    stored = Image.open(out / meta["frames"][0]["file_path"])
    assert stored.size == (48, 64)


# ------------------------------------------------------------------------------------------- video
def test_video_frames_are_sampled_and_processed(scene_dir, checkpoint, tmp_path):
    import cv2

    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for p in images_of(scene_dir):
        for _ in range(3):  # 30 frames
            writer.write(cv2.imread(str(p)))
    writer.release()
    out = ProcessVideo(data=video, output_dir=tmp_path / "out", checkpoint=checkpoint, num_frames_target=6, capture=copy.deepcopy(PLACE_ALL)).main()
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) == 6

    empty = tmp_path / "empty.mp4"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96)).release()
    with pytest.raises(SceneFormatError, match="empty.mp4"):
        ProcessVideo(data=empty, output_dir=tmp_path / "out2", checkpoint=checkpoint).main()
    with pytest.raises(SceneFormatError, match="no such video"):
        ProcessVideo(data=tmp_path / "missing.mp4", output_dir=tmp_path / "out2", checkpoint=checkpoint).main()
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------- refinement
def test_test_time_refinement_lowers_the_weak_loss_on_the_set(scene_dir, checkpoint, tmp_path):
    command = ProcessImages(data=scene_dir, output_dir=tmp_path / "out", checkpoint=checkpoint)
    command.refine.steps = 25
    command.refine.lr = 3e-4
    command.refine.views = 4
    command.refine.labels.depth_teacher = "simulated"  # the synthetic scene's GT made relative (tests only)
    command.refine.labels.matcher = "simulated"
    command.refine.label_cache = tmp_path / "labels"
    out = command.main()
    refinement = json.loads((out / "transforms.json").read_text())["reliev3r"]["refinement"]
    assert refinement["steps"] == 25
    assert refinement["loss_after"] < 0.9 * refinement["loss_before"], refinement


def test_refinement_without_a_depth_teacher_says_what_to_pass(scene_dir, checkpoint, tmp_path):
    from reliev3r_ns.teachers.depth import DepthTeacherError

    command = ProcessImages(data=scene_dir, output_dir=tmp_path / "out", checkpoint=checkpoint)
    command.refine.steps = 5
    with pytest.raises(DepthTeacherError, match=r"--refine\.labels\.transformers\.model PATH_OR_HUB_ID.*needs no weights"):
        command.main()
    assert not (tmp_path / "out").exists()  # refused before any work


# -------------------------------------------------------------------------------------- dataparser
def test_reliev3r_data_dataparser_reconstructs_once_and_feeds_nerfstudio(scene_dir, checkpoint, tmp_path, monkeypatch):
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    from reliev3r_ns.process import dataparser as module

    assert {"reliev3r-data", "reliev3r-dataset"} <= set(discover_dataparsers()[0])
    calls = []
    real = module.process_capture

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "process_capture", counted)
    config = module.Reliev3rDataParserConfig(data=scene_dir / "images", checkpoint=checkpoint, processed_cache=tmp_path / "processed",
                                             capture=copy.deepcopy(PLACE_ALL))
    outputs = config.setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 9  # nerfstudio's 90 % train split of 10 frames
    assert outputs.metadata["points3D_xyz"].shape[1] == 3 and len(outputs.metadata["points3D_rgb"]) > 0
    assert config.setup().get_dataparser_outputs("val").cameras.shape[0] == 1
    assert len(calls) == 1  # the second parser found the cached reconstruction
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint.*reliev3r-export-ffrm"):
        module.Reliev3rDataParserConfig(data=scene_dir / "images", checkpoint=tmp_path / "missing.pt").setup().get_dataparser_outputs("train")
    # no --checkpoint: the bundled FFRM, said on the console
    from reliev3r_ns.checkpoints import BUNDLED_CHECKPOINT

    bundled = module.Reliev3rDataParserConfig(data=scene_dir / "images", processed_cache=tmp_path / "processed", capture=copy.deepcopy(PLACE_ALL))
    assert len(bundled.setup().get_dataparser_outputs("train").image_filenames) == 9
    assert bundled.checkpoint == BUNDLED_CHECKPOINT and len(calls) == 2


# ---------------------------------------------------------------------------- nerfacto on the output
@pytest.mark.slow
def test_nerfacto_trains_on_the_processed_dataset_on_cpu(scene_dir, checkpoint, tmp_path, monkeypatch):
    """ns-train nerfacto --machine.device-type cpu --max-num-iterations 5 on our output.

    nerfacto builds LPIPS in populate_modules, which downloads AlexNet weights; offline that fails, so
    this test swaps LPIPS for a local stand-in (a constant). No image-quality figure comes from it."""
    import torchmetrics.image.lpip as lpip_module
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.scripts.train import main as train_main

    class LPIPSStandIn(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, a, b):
            return torch.zeros((), device=a.device)

    # nerfacto imports it inside populate_modules, from this module.
    monkeypatch.setattr(lpip_module, "LearnedPerceptualImagePatchSimilarity", LPIPSStandIn)
    out = ProcessImages(data=scene_dir, output_dir=tmp_path / "dataset", checkpoint=checkpoint).main()
    config = copy.deepcopy(method_configs["nerfacto"])
    config.data = out
    config.pipeline.datamanager.data = out
    config.machine.device_type = "cpu"
    config.max_num_iterations = 5
    config.vis = "tensorboard"
    config.output_dir = tmp_path / "outputs"
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.train_num_rays_per_batch = 512
    config.pipeline.datamanager.eval_num_rays_per_batch = 512
    config.pipeline.model.eval_num_rays_per_chunk = 512
    config.steps_per_eval_batch = 1000
    config.steps_per_eval_image = 1000
    config.steps_per_eval_all_images = 1000
    config.steps_per_save = 5
    config.set_timestamp()
    train_main(config)
    checkpoints = list((tmp_path / "outputs").rglob("*.ckpt"))
    assert checkpoints, "nerfacto wrote no checkpoint"
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert state["step"] >= 4


def _voxel_downsample_reference(points, colours, voxel):
    # Independent reference: a dict of per-voxel sums, voxels in lexicographic order.
    sums = {}
    for p, c in zip(points.astype(np.float64), colours.astype(np.float64)):
        key = tuple(np.floor(p / voxel).astype(np.int64))
        total = sums.setdefault(key, [np.zeros(3), np.zeros(3), 0])
        total[0] += p
        total[1] += c
        total[2] += 1
    keys = sorted(sums)
    mean_p = np.array([sums[k][0] / sums[k][2] for k in keys], np.float32)
    mean_c = np.clip(np.rint([sums[k][1] / sums[k][2] for k in keys]), 0, 255).astype(np.uint8)
    return mean_p, mean_c


@pytest.mark.parametrize("spread", [1.0, 1e12])
def test_voxel_downsample_matches_a_reference(spread):
    from reliev3r_ns.process.reconstruct import _voxel_downsample

    rng = np.random.default_rng(0)
    points = rng.normal(size=(3000, 3)) * np.array([1.0, 0.5, 2.0])
    points[:5] *= spread  # 1e12: a few points near infinity, more voxels than one int64 can key
    colours = rng.integers(0, 256, (3000, 3)).astype(np.uint8)
    got_p, got_c = _voxel_downsample(points, colours, 0.25)
    want_p, want_c = _voxel_downsample_reference(points, colours, 0.25)
    assert len(got_p) == len(want_p) < 3000
    np.testing.assert_allclose(got_p, want_p, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got_c, want_c)
