"""ns-train reliev3r: metrics with known answers, the Trainer end to end on CPU, export."""

import copy
import math

import numpy as np
import pytest
import torch

from reliev3r_ns.eval import depth_metrics, pose_auc, pose_metrics, relative_pose_errors
from reliev3r_ns.geometry import axis_angle_to_rotation, look_at, make_pose
from training_helpers import make_trainer, record_losses


def orbit(V=5):
    angles = torch.linspace(0, 1.2, V)
    centres = torch.stack([3 * torch.cos(angles), 3 * torch.sin(angles), 0.3 * torch.ones(V)], -1)
    return look_at(centres, torch.zeros(V, 3), torch.tensor([0.0, 0.0, 1.0]))


def test_identical_poses_give_auc_one_in_any_world_frame():
    gt = orbit()
    similarity = make_pose(axis_angle_to_rotation(torch.tensor([0.3, -1.0, 0.5])), torch.tensor([4.0, -2.0, 1.0]))
    pred = similarity @ gt
    pred[:, :3, 3] *= 2.5  # a global scale too (applied to the world frame)
    metrics = pose_metrics(pred, gt)
    assert metrics["pose_auc30"] == pytest.approx(1.0)
    assert metrics["rotation_error_deg"] < 1e-3 and metrics["translation_error_deg"] < 1e-2
    assert metrics["rra5"] == metrics["rta5"] == 1.0


def test_a_known_rotation_error_gives_the_expected_rra_and_auc():
    gt = orbit(4)
    pred = gt.clone()
    # Rotate camera 3 about its own optical centre by 10.5 degrees: pairs (0,3), (1,3), (2,3) get a
    # 10.5 degree rotation error; the other 3 pairs none.
    pred[3, :3, :3] = pred[3, :3, :3] @ axis_angle_to_rotation(torch.tensor([0.0, math.radians(10.5), 0.0]))
    rot, trans = relative_pose_errors(pred, gt)
    np.testing.assert_allclose(sorted(rot.tolist()), [0, 0, 0, 10.5, 10.5, 10.5], atol=1e-3)
    metrics = pose_metrics(pred, gt)
    assert metrics["rra5"] == pytest.approx(0.5) and metrics["rra15"] == pytest.approx(1.0)
    # AUC@30: half the pairs are perfect (count at every threshold), half count from 11 degrees on.
    assert pose_auc(rot, trans) == pytest.approx((30 + 20) / 60, abs=1e-6)


def test_depth_metrics_are_scale_invariant_and_count_inliers():
    gt = 1 + torch.rand(2, 16, 16)
    perfect = depth_metrics(3.0 * gt, gt)
    assert perfect["depth_abs_rel"] == pytest.approx(0.0, abs=1e-7) and perfect["depth_tau"] == 1.0
    off = gt.clone()
    off[:, :6] *= 1.2
    metrics = depth_metrics(off, gt)
    # Independent reference in numpy: per-view median scaling, then the three figures, averaged.
    abs_rel, delta, tau = [], [], []
    for p, g in zip(off.numpy().astype(np.float64), gt.numpy().astype(np.float64)):
        p = p * np.median(g) / np.median(p)
        rel = np.abs(p - g) / g
        abs_rel.append(rel.mean()), delta.append((np.maximum(p / g, g / p) < 1.25).mean()), tau.append((rel < 0.1).mean())
    assert metrics["depth_abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-5)
    assert metrics["depth_delta1.25"] == pytest.approx(np.mean(delta))
    assert metrics["depth_tau"] == pytest.approx(np.mean(tau))
    assert 0.0 < metrics["depth_tau"] < 1.0


def test_affine_aligned_depth_metrics_remove_each_views_shift():
    gt = 1 + torch.rand(3, 16, 16, dtype=torch.float64)
    # Each view's depth right up to its own scale and offset: median scaling leaves the offset's error,
    # the affine fit none.
    shifted = torch.stack([2.0 * gt[0] + 1.5, 0.5 * gt[1] - 0.3, 4.0 * gt[2] + 0.0])
    metrics = depth_metrics(shifted, gt)
    assert metrics["depth_affine_abs_rel"] == pytest.approx(0.0, abs=1e-9) and metrics["depth_affine_tau"] == 1.0
    assert metrics["depth_tau"] < 0.9
    # Independent reference: numpy's least squares of the relative error, rows [pred, 1] / gt against 1,
    # per view, on noisy depth with holes.
    noisy = gt * (1 + 0.2 * torch.randn_like(gt)) + 0.4
    valid = torch.rand_like(gt) > 0.3
    metrics = depth_metrics(noisy, gt, valid)
    abs_rel, tau = [], []
    for p, g, m in zip(noisy.numpy(), gt.numpy(), valid.numpy()):
        p, g = p[m], g[m]
        (s, t), *_ = np.linalg.lstsq(np.stack([p / g, 1 / g], 1), np.ones_like(g), rcond=None)
        rel = np.abs(s * p + t - g) / g
        abs_rel.append(rel.mean()), tau.append((rel < 0.1).mean())
    assert metrics["depth_affine_abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-9)
    assert metrics["depth_affine_tau"] == pytest.approx(np.mean(tau))
    assert 0.0 < metrics["depth_affine_tau"] < 1.0
    # A constant prediction has no shape: its best affine fit is the targets' relative-error-weighted
    # mean, not a NaN.
    flat = depth_metrics(torch.ones_like(gt), gt)
    expected = np.mean([(np.abs((1 / g).sum() / (1 / g**2).sum() - g) / g).mean() for g in gt.numpy().reshape(3, -1)])
    assert flat["depth_affine_abs_rel"] == pytest.approx(expected, rel=1e-9)


def test_depth_spread_tells_a_flattened_depth_map_from_a_rescaled_one():
    gt = 1 + torch.rand(2, 16, 16, dtype=torch.float64)
    assert depth_metrics(3.0 * gt, gt)["depth_spread_vs_gt"] == pytest.approx(1.0)
    # The same shape plus an offset of ten mean depths: same std, eleven times the mean.
    offset = torch.stack([g + 10 * g.mean() for g in gt])
    assert depth_metrics(offset, gt)["depth_spread_vs_gt"] == pytest.approx(1 / 11)
    valid = torch.rand_like(gt) > 0.3
    noisy = gt * (1 + 0.3 * torch.rand_like(gt))
    expected = np.mean([(p[m].std(ddof=1) / p[m].mean()) / (g[m].std(ddof=1) / g[m].mean())
                        for p, g, m in zip(noisy.numpy(), gt.numpy(), valid.numpy())])
    assert depth_metrics(noisy, gt, valid)["depth_spread_vs_gt"] == pytest.approx(expected, rel=1e-9)
    # A GT view of one depth has no spread: left out, not divided by zero (NaN when no view is left).
    wall = torch.stack([gt[0], torch.full_like(gt[1], 2.0)])
    assert depth_metrics(noisy, wall)["depth_spread_vs_gt"] == pytest.approx(
        float((noisy[0].std() / noisy[0].mean()) / (gt[0].std() / gt[0].mean())), rel=1e-9)
    assert math.isnan(depth_metrics(noisy, torch.full_like(gt, 2.0))["depth_spread_vs_gt"])


def test_trainer_runs_exports_and_the_export_loads_without_nerfstudio(small_data, tmp_path):
    trainer = make_trainer(small_data, tmp_path, 4, clips_per_batch=1, max_views=3)
    losses = record_losses(trainer)
    trainer.train()
    assert len(losses) == 4 and all(math.isfinite(l) for l in losses)
    metrics = trainer.pipeline.get_average_eval_image_metrics()
    assert 0.0 <= metrics["pose_auc30"] <= 1.0 and "depth_abs_rel" in metrics
    config_path = trainer.base_dir / "config.yml"
    assert config_path.is_file() and list((trainer.base_dir / "nerfstudio_models").glob("*.ckpt"))

    from reliev3r_ns.cli.export_ffrm import ExportFFRM
    from reliev3r_ns.model import FFRM

    path = ExportFFRM(config_path, tmp_path / "ffrm.pt").main()
    model = FFRM.from_checkpoint(path)
    assert model.checkpoint_extra["method"] == "reliev3r" and model.checkpoint_extra["supervision"] == "weak"
    images = trainer.pipeline.datamanager.eval_clip(0)["images"][0]
    prediction = model.infer(images)
    expected = trainer.pipeline.model.ffrm.eval()(images[None])
    torch.testing.assert_close(prediction.depth, expected.depth[0])


def test_model_config_passes_the_camera_translation_init_to_the_network():
    from nerfstudio.data.scene_box import SceneBox

    from reliev3r_ns.training.model import Reliev3rModelConfig

    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    for std in (None, 0.5):
        config = Reliev3rModelConfig() if std is None else Reliev3rModelConfig(camera_translation_init_std=std)
        model = config.setup(scene_box=box, num_train_data=1)
        assert model.ffrm.config.camera_translation_init_std == (1e-3 if std is None else std)
        assert float(model.ffrm.camera_head.translation.weight.detach().std()) == pytest.approx(model.ffrm.config.camera_translation_init_std, rel=0.1)


def test_training_gt_metrics_are_computed_only_on_the_steps_the_trainer_logs(small_data, tmp_path):
    trainer = make_trainer(small_data, tmp_path, 11, clips_per_batch=1, max_views=3, steps_per_log=5)
    with_gt_metrics = {}
    iteration = trainer.train_iteration

    def recording(step):
        loss, loss_dict, metrics = iteration(step)
        with_gt_metrics[step] = "pose_auc30" in metrics and "depth_tau" in metrics
        assert "confidence_mean" in metrics
        return loss, loss_dict, metrics

    trainer.train_iteration = recording
    trainer.train()
    assert [step for step, has in sorted(with_gt_metrics.items()) if has] == [0, 5, 10]
    # Outside training (eval batches, scripts calling the model directly) they are always computed.
    model = trainer.pipeline.model.eval()
    batch, _ = trainer.pipeline.datamanager.next_train(0)
    assert "pose_auc30" in model.get_metrics_dict(model(batch), batch)


def test_supervised_sibling_needs_gt(small_data, tmp_path):
    from reliev3r_ns.losses import ReprojectionLossConfig
    from reliev3r_ns.method_configs.reliev3r import reliev3r_supervised_method

    # A reprojection setting the weak losses refuse: the sibling never uses them, so it is not refused.
    loss = copy.deepcopy(reliev3r_supervised_method.config.pipeline.model.loss)
    loss.reprojection = ReprojectionLossConfig(residual="pixel", radial_weight=1.0)
    trainer = make_trainer(small_data, tmp_path, 2, method="reliev3r-supervised", model={"loss": loss}, clips_per_batch=1, max_views=3)
    trainer.train()  # synthetic scenes have GT: it trains
    batch, _ = trainer.pipeline.datamanager.next_train(0)
    batch = {k: v for k, v in batch.items() if not k.startswith("gt_")}
    outputs = trainer.pipeline.model(batch)
    with pytest.raises(ValueError, match="needs GT depth and poses"):
        trainer.pipeline.model.get_loss_dict(outputs, batch)


@pytest.mark.slow
def test_weak_training_fits_a_scene_through_the_trainer(small_data, tmp_path):
    """The whole loop (labels, clips, FFRM, weak losses, optimiser) recovers the poses of the scene it
    trains on, judged with GT it never sees. Generalising to held-out scenes needs far longer runs
    (see docs/weak_vs_full.md); this is the CPU-sized check that the weak signal reaches the poses."""
    scene = sorted((small_data / "train").glob("scene_*"))[0]
    iterations = 400
    trainer = make_trainer(small_data, tmp_path, iterations, lr=1e-3, clips_per_batch=1, min_views=4, max_views=4, eval_views=4, data=scene, eval_data=scene)
    before = trainer.pipeline.get_average_eval_image_metrics()
    losses = record_losses(trainer)
    trainer.train()
    after = trainer.pipeline.get_average_eval_image_metrics()
    figures = (f"loss {np.mean(losses[:30]):.3f} -> {np.mean(losses[-30:]):.3f}; "
               f"AUC@30 {before['pose_auc30']:.3f} -> {after['pose_auc30']:.3f}; "
               f"rotation error {before['rotation_error_deg']:.1f} -> {after['rotation_error_deg']:.1f} deg; "
               f"translation error {before['translation_error_deg']:.1f} -> {after['translation_error_deg']:.1f} deg")
    print(figures)
    assert np.mean(losses[-30:]) < 0.8 * np.mean(losses[:30]), figures
    # With more than one thread CPU runs are not bit-reproducible (the losses part at step ~12 by float
    # noise and 400 steps amplify it), and another CPU gives another trajectory. Measured on this
    # project's 2-core machine over seeds 1-7 and 42 at 2 threads and 1, 2, 42 at one: rotation
    # 55.6 -> 25-32 deg (ratio 0.45-0.58), AUC@30 +0.15 to +0.29. CI runs (other CPUs, seed 42) ended
    # at 40.4 deg (ratio 0.73) and at 29.9 deg with AUC@30 only +0.045 (0.094 -> 0.139). Without the
    # reprojection loss (seeds 42 and 1) the rotation error stays at 55.6 deg (ratio 1.00) and AUC@30
    # ends at 0, so the bars sit between: the mean rotation error is the steady figure; AUC@30 over this
    # clip's 6 pairs moves in steps and can lag a good rotation fit, so its bar is a small rise, +0.02
    # (falling to 0, as without the reprojection loss, still fails).
    assert after["rotation_error_deg"] < 0.8 * before["rotation_error_deg"], figures
    assert after["pose_auc30"] > before["pose_auc30"] + 0.02, figures


def test_bad_data_folders_get_clear_messages(tmp_path):
    from PIL import Image

    from reliev3r_ns.data.scene_io import SceneFormatError
    from reliev3r_ns.labels import PseudoLabelConfig
    from reliev3r_ns.training.datamanager import Reliev3rDataManagerConfig

    def setup(data):
        config = Reliev3rDataManagerConfig(data=data, label_cache=tmp_path / "labels",
                                           labels=PseudoLabelConfig(depth_teacher="simulated", matcher="sift"))
        return config.setup(device="cpu")

    (tmp_path / "empty").mkdir()
    with pytest.raises(SceneFormatError, match="no scenes found"):
        setup(tmp_path / "empty")
    # Scenes with one image each: skipped with a warning, then a clear error that nothing is left.
    for name in ("a", "b"):
        (tmp_path / "single" / name).mkdir(parents=True)
        Image.new("RGB", (32, 24)).save(tmp_path / "single" / name / "0.png")
    with pytest.warns(UserWarning, match="only one image"), pytest.raises(SceneFormatError, match="no training scene has two overlapping views"):
        setup(tmp_path / "single")
    # Two unrelated noise images with a real (tiny, random) depth teacher and SIFT: no verified
    # matches, so no overlap.
    from test_labels import tiny_depth_anything

    from reliev3r_ns.teachers.depth import TransformersDepthTeacherConfig

    rng = np.random.default_rng(0)
    (tmp_path / "noise" / "s").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "noise" / "s" / f"{k}.png")
    labels = PseudoLabelConfig(depth_teacher="transformers", matcher="sift",
                               transformers=TransformersDepthTeacherConfig(model=str(tiny_depth_anything(tmp_path / "teacher"))))
    config = Reliev3rDataManagerConfig(data=tmp_path / "noise", label_cache=tmp_path / "labels", labels=labels)
    with pytest.warns(UserWarning, match="no pair of views"), pytest.raises(SceneFormatError, match="no training scene has two overlapping views"):
        config.setup(device="cpu")
    # The simulated teacher on plain images says it needs GT.
    with pytest.raises(Exception, match="GT depth"):
        setup(tmp_path / "noise")


def test_a_loss_setting_that_cannot_train_fails_before_any_scene_is_loaded(monkeypatch):
    from reliev3r_ns.losses import ReprojectionLossConfig
    from reliev3r_ns.method_configs.reliev3r import reliev3r_method
    from reliev3r_ns.training.datamanager import Reliev3rDataManagerConfig

    def no_loading(*args, **kwargs):
        raise AssertionError("scenes were loaded before the loss config was checked")

    monkeypatch.setattr(Reliev3rDataManagerConfig, "setup", no_loading)
    config = copy.deepcopy(reliev3r_method.config.pipeline)
    config.model.loss.reprojection = ReprojectionLossConfig(residual="pixel", radial_weight=1.0)
    with pytest.raises(ValueError, match="radial_weight > 0 needs residual='angle'"):
        config.setup(device="cpu")


@pytest.mark.slow
def test_weak_training_improves_poses_on_held_out_scenes(tmp_path):
    """A few hundred weak-label steps on 16 synthetic scenes lift pose AUC@30 on 12 scenes never trained
    on. The scenes are all forward walks (one trajectory family), so the model can pick up their
    motion without a long run; the paper's claim on varied data needs the full reproduction (docs/weak_vs_full.md)."""
    from reliev3r_ns.data.synthetic import SyntheticSceneConfig
    from reliev3r_ns.data.synthetic_dataset import generate_dataset

    config = SyntheticSceneConfig(width=128, height=96, num_views=8, supersample=1, texture_size=256, trajectories=("forward",))
    generate_dataset(tmp_path / "data" / "train", 16, seed=1, config=config, show_progress=False)
    generate_dataset(tmp_path / "data" / "eval", 12, seed=2, config=config, show_progress=False)
    trainer = make_trainer(tmp_path / "data", tmp_path, 300, lr=1e-3, clips_per_batch=1, min_views=4, max_views=4, eval_views=4)
    before = trainer.pipeline.get_average_eval_image_metrics()
    losses = record_losses(trainer)
    trainer.train()
    after = trainer.pipeline.get_average_eval_image_metrics()
    figures = f"loss {np.mean(losses[:30]):.3f} -> {np.mean(losses[-30:]):.3f}; held-out AUC@30 {before['pose_auc30']:.3f} -> {after['pose_auc30']:.3f}"
    print(figures)
    assert np.mean(losses[-30:]) < 0.8 * np.mean(losses[:30]), figures
    # Seen here (Intel Xeon, init seeds 1-4 and 42): AUC@30 gains 0.32-0.52; without the reprojection
    # loss (the pose head's only teacher) -0.03. The same seed trains differently on other CPUs (CI once
    # gained only 0.195 when scored on 6 scenes), so the bar sits well between the two.
    assert after["pose_auc30"] > before["pose_auc30"] + 0.15, figures


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_the_replicas_identical(small_data, tmp_path):
    """--machine.num-devices N goes through nerfstudio's Trainer and our pipeline's DDP wrap; here two
    gloo processes on the CPU (nerfstudio's launcher itself insists on CUDA): each rank trains on
    its own clips and the gradients are averaged, so both end with the same weights."""
    import torch.multiprocessing as mp

    from training_helpers import ddp_worker

    iterations = 3
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), small_data, tmp_path, iterations), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert len(ranks[0]["clips"]) == len(ranks[1]["clips"]) == iterations
    assert ranks[0]["clips"] != ranks[1]["clips"]  # different data per rank
    for key, value in ranks[0]["weights"].items():
        torch.testing.assert_close(value, ranks[1]["weights"][key], rtol=0, atol=1e-6, msg=key)


def test_bf16_autocast_runs_the_network_in_bf16_and_the_geometry_in_float32(small_data, tmp_path):
    trainer = make_trainer(small_data, tmp_path, 2, model=dict(bf16=True), clips_per_batch=1, max_views=3)
    model = trainer.pipeline.model
    seen = []
    first_linear = next(m for m in model.ffrm.backbone.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    batch, _ = trainer.pipeline.datamanager.next_train(0)
    outputs = model(batch)
    loss = model.get_loss_dict(outputs, batch)["loss"]
    loss.backward()
    p = outputs["prediction"]
    assert seen == [torch.bfloat16]
    assert {t.dtype for t in (p.depth, p.confidence, p.cam_to_world, p.intrinsics, p.world_points, loss)} == {torch.float32}
    assert torch.isfinite(loss) and all(torch.isfinite(q.grad).all() for q in model.ffrm.parameters() if q.grad is not None)
    trainer.train()


def test_label_workers_fill_the_cache_with_the_same_labels(small_data, tmp_path):
    from reliev3r_ns.labels import PseudoLabelConfig
    from reliev3r_ns.training.datamanager import Reliev3rDataManagerConfig

    def setup(cache, workers):
        labels = PseudoLabelConfig(depth_teacher="simulated", matcher="sift")
        config = Reliev3rDataManagerConfig(data=small_data / "train", eval_data=small_data / "eval", label_cache=cache,
                                           labels=labels, label_workers=workers)
        return config.setup(device="cpu")

    with_workers = setup(tmp_path / "parallel", 2)
    assert len(list((tmp_path / "parallel" / "matches").rglob("*.npz"))) > 0
    in_process = setup(tmp_path / "serial", 0)
    for a, b in zip(with_workers.train_dataset.scenes + with_workers.eval_dataset.scenes, in_process.train_dataset.scenes + in_process.eval_dataset.scenes):
        torch.testing.assert_close(a.teacher, b.teacher)
        assert a.matches.keys() == b.matches.keys()
        for pair in a.matches:
            for x, y in zip(a.matches[pair], b.matches[pair]):
                torch.testing.assert_close(x, y)


def test_the_model_trains_with_the_warmup_robust_function_then_the_final_one(small_data, tmp_path):
    from dataclasses import replace

    from reliev3r_ns.losses import WeakLabels, compute_loss

    trainer = make_trainer(small_data, tmp_path, 1, clips_per_batch=1, max_views=3)
    model = trainer.pipeline.model
    model.config.loss.reprojection = replace(model.config.loss.reprojection, warmup_robust="l1", warmup_steps=5, warmup_scale_degrees=3.0)
    batch, _ = trainer.pipeline.datamanager.next_train(0)
    outputs = model(batch)  # one forward pass: the losses below differ only in the robust function
    weak = WeakLabels(teacher=batch["teacher"], teacher_space=batch["teacher_space"], matches=batch["matches"])

    def expected(robust, scale):
        config = replace(model.config.loss, reprojection=replace(model.config.loss.reprojection, robust=robust, scale_degrees=scale))
        return compute_loss(config, model._geometry(outputs), weak)[0]

    by_step = {}
    for step in (0, 4, 5):
        model._train_step = step
        by_step[step] = model.get_loss_dict(outputs, batch)["loss"]
    assert torch.allclose(by_step[0], expected("l1", 3.0)) and torch.allclose(by_step[4], expected("l1", 3.0))
    assert torch.allclose(by_step[5], expected("cauchy", 1.0))
    assert not torch.allclose(by_step[0], by_step[5])


def test_ns_train_checkpoints_carry_the_clip_sampler_so_a_resumed_run_draws_the_same_clips(small_data, tmp_path):
    # The datamanager's random state rides in nerfstudio's own checkpoint (module extra state):
    # `ns-train --load-dir` continues with the clips the uninterrupted run draws next.
    def draw(datamanager, count=3):
        batches = [datamanager.next_train(0)[0] for _ in range(count)]
        return [(b["images"].shape, b["images"].sum().item()) for b in batches]

    trained = make_trainer(small_data, tmp_path / "a", 3, clips_per_batch=1, max_views=4)
    trained.train()
    [checkpoint] = (trained.base_dir / "nerfstudio_models").glob("*.ckpt")
    resumed = make_trainer(small_data, tmp_path / "b", 3, clips_per_batch=1, max_views=4, load_dir=checkpoint.parent)
    assert resumed.pipeline.datamanager.train_count == trained.pipeline.datamanager.train_count == 3
    expected = draw(trained.pipeline.datamanager)
    assert draw(resumed.pipeline.datamanager) == expected
    # A checkpoint from before the sampler was kept still loads; its sampler starts afresh (and so
    # draws other clips than the run it continues).
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    del state["pipeline"]["datamanager._extra_state"]
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / checkpoint.name)
    old = make_trainer(small_data, tmp_path / "c", 3, clips_per_batch=1, max_views=4, load_dir=tmp_path / "old")
    assert old.pipeline.datamanager.train_count == 0 and draw(old.pipeline.datamanager) != expected
    # Under DDP only rank 0's sampler is saved: each rank restarts its own from the seed, its rank and
    # the step reached, so two ranks do not draw the same clips.
    saved, dm = trained.pipeline.datamanager.get_extra_state(), resumed.pipeline.datamanager
    saved["world_size"] = dm.world_size = 2
    by_rank = {}
    for rank in (0, 1, 1):
        dm.local_rank = rank
        dm.set_extra_state(saved)
        assert dm.train_count == 6
        by_rank.setdefault(rank, []).append(draw(dm))
    assert by_rank[1][0] == by_rank[1][1] and by_rank[0][0] != by_rank[1][0]
