"""reliev3r-eval: metrics with known answers, pycolmap's synthetic reconstruction as an exact reference,
and the CLI end to end on a processed synthetic scene."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reliev3r_ns.cli.eval import Eval
from reliev3r_ns.process.pipeline import CaptureConfig
from reliev3r_ns.data.scene_io import SceneFormatError, write_scene
from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.eval import cloud_metrics, pointmap_metrics, trajectory_metrics
from reliev3r_ns.eval.evaluate import CameraSet, evaluate, load_reference
from reliev3r_ns.geometry import Sim3, axis_angle_to_rotation, frame_to_transforms_json, unproject_depth_to_world
from reliev3r_ns.model import FFRM, ffrm_config

SCENE = SyntheticSceneConfig(width=128, height=96, num_views=6, supersample=1, texture_size=256, trajectories=("orbit",))


def random_similarity(seed=0):
    rng = np.random.default_rng(seed)
    return Sim3(torch.tensor(float(rng.uniform(0.2, 5.0)), dtype=torch.float64),
                axis_angle_to_rotation(torch.tensor(rng.normal(size=3))), torch.tensor(rng.normal(size=3) * 3))


def test_trajectory_is_exact_under_any_similarity_and_ate_measures_centre_noise():
    scene = generate_scene(2, SCENE)
    gt = torch.from_numpy(scene.cam_to_world)
    sim3 = random_similarity(1)
    metrics, fitted = trajectory_metrics(sim3.apply_to_cam_to_world(gt), gt)
    assert metrics["ate"] < 1e-9 and metrics["ate_normalised"] < 1e-9
    assert float(fitted.scale) == pytest.approx(1 / float(sim3.scale), rel=1e-9)
    # Centre noise of known RMS (orthogonal to the fit) shows up as ATE once the similarity is removed.
    noisy = gt.clone()
    offsets = torch.zeros(len(gt), 3, dtype=torch.float64)
    offsets[0::2, 2], offsets[1::2, 2] = 0.05, -0.05  # zero mean: the fit cannot absorb it as translation
    noisy[:, :3, 3] += offsets
    metrics, _ = trajectory_metrics(sim3.apply_to_cam_to_world(noisy), gt)
    assert metrics["ate"] == pytest.approx(0.05, rel=0.15)


def test_pointmap_and_cloud_metrics_known_answers():
    scene = generate_scene(3, SCENE)
    depth = torch.from_numpy(scene.depths).double()
    K, c2w = torch.from_numpy(scene.intrinsics), torch.from_numpy(scene.cam_to_world)
    gt_points = unproject_depth_to_world(depth, K, c2w)
    valid = torch.ones_like(depth, dtype=torch.bool)
    sim3 = random_similarity(2)
    same = pointmap_metrics(sim3.apply_to_points(gt_points.reshape(-1, 3)).reshape(gt_points.shape), gt_points, c2w[:, :3, 3], valid)
    assert same["pointmap_rel"] < 1e-8 and same["pointmap_tau"] == 1.0
    # One view in six pushed 30 % along its rays: its pixels fail the 10 % test, the others pass.
    bent = depth.clone()
    bent[2] *= 1.3
    metrics = pointmap_metrics(unproject_depth_to_world(bent, K, c2w), gt_points, c2w[:, :3, 3], valid)
    assert 0.75 < metrics["pointmap_tau"] < 0.9

    cloud = torch.rand(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    assert cloud_metrics(cloud, cloud)["cloud_chamfer"] == 0.0
    # Every point 0.01 from its twin along x, far closer than to any other point.
    sparse = torch.stack(torch.meshgrid(*[torch.arange(5.0, dtype=torch.float64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    shifted = sparse + torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    metrics = cloud_metrics(shifted, sparse)
    assert metrics["cloud_accuracy"] == pytest.approx(0.01) and metrics["cloud_completeness"] == pytest.approx(0.01)


def synthetic_colmap_reference(folder: Path, num_frames=8):
    pycolmap = pytest.importorskip("pycolmap")
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_cameras_per_rig, options.num_frames_per_rig = 1, 1, num_frames
    options.num_points3D = 200
    options.camera_model_id = pycolmap.CameraModelId.PINHOLE
    options.camera_width, options.camera_height = 640, 480
    options.camera_params = [500.0, 500.0, 320.0, 240.0]
    reconstruction = pycolmap.synthesize_dataset(options)
    folder.mkdir(parents=True)
    reconstruction.write_text(str(folder))
    return reconstruction


def test_pycolmap_synthetic_reference_gives_exact_scores_for_exact_poses(tmp_path):
    reconstruction = synthetic_colmap_reference(tmp_path / "colmap")
    reference = load_reference(tmp_path / "colmap")
    assert len(reference.names) == 8 and reference.points is not None and len(reference.points) == 200
    # Independent check of the conversion: COLMAP's world-to-camera, inverted, projects a 3D point
    # to its recorded 2D observation through the OpenCV intrinsics (integer pixel centres).
    image = next(im for im in reconstruction.images.values() if im.name == reference.names[0])
    point2d = next(p for p in image.points2D if p.has_point3D())
    xyz = reconstruction.points3D[point2d.point3D_id].xyz
    w2c = np.linalg.inv(reference.cam_to_world[0])
    cam = w2c[:3, :3] @ xyz + w2c[:3, 3]
    uv = (reference.intrinsics[0] @ (cam / cam[2]))[:2]
    np.testing.assert_allclose(uv + 0.5, point2d.xy, atol=1e-6)

    # A prediction with the same cameras in another frame and scale: AUC 1, ATE 0.
    sim3 = random_similarity(4)
    pred_c2w = sim3.apply_to_cam_to_world(torch.from_numpy(reference.cam_to_world)).numpy()
    frames = [dict(frame_to_transforms_json(c, K, 640, 480), file_path=f"images/{n}") for c, K, n in zip(pred_c2w, reference.intrinsics, reference.names)]
    prediction = tmp_path / "pred"
    prediction.mkdir()
    (prediction / "transforms.json").write_text(json.dumps({"frames": frames}))
    report = Eval(prediction=prediction, reference=tmp_path / "colmap", output=tmp_path / "report" / "eval.json").main()
    metrics = report["metrics"]
    assert metrics["pose_auc30"] == pytest.approx(1.0) and metrics["ate_normalised"] < 1e-6
    assert metrics["posed_fraction"] == 1.0 and metrics["rra5"] == 1.0
    assert (tmp_path / "report" / "eval.png").is_file()

    # One camera turned by 10.5 degrees: the pairs with it (7 of 28) fail RRA@5, pass RRA@15.
    turned = pred_c2w.copy()
    turned[3, :3, :3] = turned[3, :3, :3] @ axis_angle_to_rotation(torch.tensor([0.0, math.radians(10.5), 0.0], dtype=torch.float64)).numpy()
    result = evaluate(CameraSet("turned", list(reference.names), turned), reference)
    assert result.metrics["rra5"] == pytest.approx(21 / 28) and result.metrics["rra15"] == 1.0


def test_names_must_match(tmp_path):
    synthetic_colmap_reference(tmp_path / "colmap", 4)
    reference = load_reference(tmp_path / "colmap")
    with pytest.raises(SceneFormatError, match="in common"):
        evaluate(CameraSet("other", ["a.png", "b.png", "c.png", "d.png"], reference.cam_to_world), reference)
    with pytest.raises(SceneFormatError, match="not a reference"):
        load_reference(tmp_path)


def test_cli_on_a_processed_synthetic_scene_agrees_with_running_the_checkpoint_directly(tmp_path):
    from reliev3r_ns.cli.process_data import ProcessImages

    scene = generate_scene(7, SCENE)
    scene_dir = write_scene(tmp_path / "scene", scene.images, scene.cam_to_world, scene.intrinsics, scene.depths)
    torch.manual_seed(0)
    checkpoint = FFRM(ffrm_config("tiny")).save_checkpoint(tmp_path / "ffrm.pt", {"image_size": [96, 128]})
    out = ProcessImages(data=scene_dir, output_dir=tmp_path / "out", checkpoint=checkpoint, capture=CaptureConfig(place="all")).main()
    from_dataset = Eval(prediction=out, reference=scene_dir, output=tmp_path / "a.json").main()["metrics"]
    direct = Eval(checkpoint=checkpoint, images=scene_dir, reference=scene_dir, output=tmp_path / "b.json",
                  capture=CaptureConfig(place="all")).main()["metrics"]
    for key in ("pose_auc30", "rotation_error_deg", "ate", "depth_abs_rel", "depth_tau", "pointmap_rel", "pointmap_tau"):
        assert key in from_dataset
        # The dataset stores shared (median) intrinsics; the direct run keeps per-view ones.
        assert from_dataset[key] == pytest.approx(direct[key], rel=0.05, abs=1e-3), key
    assert json.loads((tmp_path / "a.json").read_text())["metrics"]["num_matched"] == 6
    with pytest.raises(ValueError, match="exactly one"):
        Eval(prediction=out, checkpoint=checkpoint, reference=scene_dir).main()


def test_machine_fingerprint_names_the_cpu_and_the_gpu_only_for_gpu_work():
    from reliev3r_ns.eval.machine import machine_fingerprint, machine_label

    cpu = machine_fingerprint("cpu")
    assert cpu["gpu"] is None and cpu["threads"] == torch.get_num_threads() and cpu["torch"] == torch.__version__
    assert all(type(v) in (str, int) for v in cpu.values() if v is not None)  # plain types: torch.load(weights_only=True) reads them back
    assert cpu["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert f"model name\t: {cpu['cpu']}" in cpuinfo.read_text()
    label = machine_label(cpu)
    assert label.startswith(f"CPU {cpu['cpu']} ({cpu['cpu_capability']}), {cpu['threads']} thread(s)") and "GPU" not in label
    # GPU work still names the CPU: COLMAP and data loading run there.
    assert machine_label({**cpu, "gpu": "NVIDIA H100 80GB HBM3"}).startswith(f"GPU NVIDIA H100 80GB HBM3, CPU {cpu['cpu']}")
