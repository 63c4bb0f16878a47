"""Reliev3R's losses: invariances, exact-geometry zeros, degenerate inputs, and what each residual measures."""

import math

import numpy as np
import pytest
import torch

from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.geometry import axis_angle_to_rotation, make_pose
from reliev3r_ns.losses import (
    GeometryPrediction,
    GroundTruth,
    Matches,
    Reliev3rLossConfig,
    RelativeDepthLossConfig,
    ReprojectionLossConfig,
    compute_loss,
    relative_depth_loss,
    reprojection_loss,
    sample_depth,
    supervised_losses,
    weighted_median,
)
from reliev3r_ns.teachers.simulated import gt_correspondences, simulated_relative_depth



@pytest.fixture(autouse=True)
def float64_by_default():
    """Exact-geometry checks need float64; restored afterwards so other test modules are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def scene():
    return generate_scene(21, SyntheticSceneConfig(width=64, height=48, num_views=4, supersample=1, texture_size=64, trajectories=("orbit",)))


def scene_tensors(scene):
    depth = torch.from_numpy(scene.depths.astype(np.float64))[None]
    K = torch.from_numpy(scene.intrinsics)[None]
    c2w = torch.from_numpy(scene.cam_to_world)[None]
    return depth, K, c2w


def all_matches(scene, stride=4, pixel_noise=0.0):
    parts = []
    V = scene.depths.shape[0]
    for i in range(V):
        for j in range(i + 1, V):
            uv_i, uv_j = gt_correspondences(scene.depths, scene.intrinsics, scene.cam_to_world, i, j, stride=stride, pixel_noise=pixel_noise)
            parts.append((i, j, uv_i, uv_j))
    M = sum(len(p[2]) for p in parts)
    assert M > 100
    return Matches(
        batch=torch.zeros(M, dtype=torch.long),
        view_i=torch.cat([torch.full((len(p[2]),), p[0]) for p in parts]),
        view_j=torch.cat([torch.full((len(p[2]),), p[1]) for p in parts]),
        uv_i=torch.from_numpy(np.concatenate([p[2] for p in parts]).astype(np.float64)),
        uv_j=torch.from_numpy(np.concatenate([p[3] for p in parts]).astype(np.float64)),
        confidence=torch.ones(M),
    )


# ----------------------------------------------------------------------------- relative depth


def test_weighted_median_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(1, 30)
        x = rng.normal(size=n)
        w = rng.uniform(0, 1, size=n) * (rng.uniform(size=n) > 0.2)
        if w.sum() == 0:
            w[0] = 1.0
        # Lower weighted median: the smallest x whose cumulative weight reaches half the total.
        order = np.argsort(x)
        cumulative = np.cumsum(w[order])
        expected = x[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
        assert weighted_median(torch.from_numpy(x), torch.from_numpy(w)).item() == pytest.approx(expected)


@pytest.mark.parametrize("space", ["depth", "disparity"])
@pytest.mark.parametrize("alignment", ["median_mad", "least_squares"])
def test_depth_loss_invariant_to_teacher_affine_and_prediction_scale(scene, space, alignment):
    config = RelativeDepthLossConfig(alignment=alignment)
    depth = torch.from_numpy(scene.depths.astype(np.float64))
    teacher = torch.from_numpy(simulated_relative_depth(scene.depths, np.random.default_rng(1)).astype(np.float64))
    if space == "depth":
        teacher = 1.0 / teacher
    rng = np.random.default_rng(2)
    pred = depth * torch.exp(0.2 * torch.from_numpy(rng.normal(size=depth.shape)))  # structure differs a bit
    conf = torch.from_numpy(rng.uniform(0.5, 1.5, size=depth.shape))
    base, _ = relative_depth_loss(pred, conf, teacher, space, config=config)
    for s, t in [(3.7, 0.0), (0.01, 5.0), (250.0, -0.3 * teacher.min().item())]:
        moved, _ = relative_depth_loss(pred, conf, s * teacher + t, space, config=config)
        assert moved.item() == pytest.approx(base.item(), rel=1e-6, abs=1e-9)
    for c in (0.001, 42.0):
        scaled, _ = relative_depth_loss(c * pred, conf, teacher, space, config=config)
        assert scaled.item() == pytest.approx(base.item(), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("space", ["depth", "disparity"])
def test_depth_loss_zero_for_ambiguous_copy_and_positive_for_other_structure(scene, space):
    depth = torch.from_numpy(scene.depths.astype(np.float64))
    in_space = depth if space == "depth" else 1.0 / depth
    teacher = 2.5 * in_space + 0.7 * in_space.median()
    ones = torch.ones_like(depth)
    loss, stats = relative_depth_loss(depth * 0.3, ones, teacher, space)
    assert abs(loss.item()) < 1e-9
    assert stats["depth/valid_views"].item() == 4
    other = torch.flip(depth, dims=[-1]) + torch.linspace(0, 3, depth.shape[-2])[:, None]
    wrong, _ = relative_depth_loss(other, ones, teacher, space)
    assert wrong.item() > 0.3


def test_shift_unaware_variant_is_fooled_by_a_shift(scene):
    depth = torch.from_numpy(scene.depths.astype(np.float64))
    ones = torch.ones_like(depth)
    disparity = 1.0 / depth
    config = RelativeDepthLossConfig(alignment="scale_only")
    exact, _ = relative_depth_loss(depth, ones, 2.0 * disparity, "disparity", config=config)
    shifted, _ = relative_depth_loss(depth, ones, 2.0 * disparity + disparity.max(), "disparity", config=config)
    assert abs(exact.item()) < 1e-9 and shifted.item() > 0.05


def test_depth_loss_degenerate_inputs_are_finite_and_counted():
    H, W = 12, 16
    rng = np.random.default_rng(3)
    pred = torch.from_numpy(rng.uniform(1, 4, size=(5, H, W))).requires_grad_(True)
    conf = torch.full((5, H, W), 1.0, requires_grad=True)
    teacher = torch.from_numpy(rng.uniform(0.2, 1.0, size=(5, H, W)))
    teacher[0] = 0.5  # constant teacher: MAD = 0
    teacher[1, :, : W // 2] = float("inf")  # sky in depth space: half the view invalid, still usable
    teacher[2] = float("nan")  # nothing valid
    teacher[3, :6] = 0.0  # no-data zeros
    mask = torch.ones(5, H, W, dtype=torch.bool)
    mask[4] = False
    mask[4, 0, :3] = True  # 3 valid pixels < min_valid_pixels
    loss, stats = relative_depth_loss(pred, conf, teacher, "depth", valid_mask=mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all() and torch.isfinite(conf.grad).all()
    assert stats["depth/skipped_views"].item() == 3 and stats["depth/valid_views"].item() == 2
    # Every view degenerate: a zero loss that still back-propagates.
    none, stats = relative_depth_loss(pred, conf, torch.full_like(teacher, 0.5), "disparity")
    none.backward()
    assert none.item() == 0.0 and stats["depth/valid_views"].item() == 0


def test_confidence_learns_where_the_teacher_is_wrong(scene):
    depth = torch.from_numpy(scene.depths[:1].astype(np.float64))
    teacher = (1.0 / depth).clone()
    teacher[:, :, :16] = teacher[:, :, :16].flip(-2)  # a wrong band
    logit = torch.zeros_like(depth, requires_grad=True)
    optim = torch.optim.Adam([logit], lr=0.1)
    for _ in range(200):
        conf = 2 * torch.sigmoid(logit)
        loss, _ = relative_depth_loss(depth, conf, teacher, "disparity")
        optim.zero_grad()
        loss.backward()
        optim.step()
    conf = 2 * torch.sigmoid(logit.detach())
    assert conf[..., :16].mean() < 0.8 * conf[..., 24:].mean()


# ----------------------------------------------------------------------------- reprojection


def test_sample_depth_matches_reference_bilinear():
    rng = np.random.default_rng(4)
    depth = torch.from_numpy(rng.uniform(1, 2, size=(2, 3, 5, 7)))
    uv = torch.tensor([[0.0, 0.0], [6.0, 4.0], [2.25, 1.5], [3.0, 2.0]])
    batch = torch.tensor([0, 1, 1, 0])
    view = torch.tensor([2, 0, 1, 1])
    got = sample_depth(depth, batch, view, uv)
    for k in range(4):
        d = depth[batch[k], view[k]].numpy()
        x, y = uv[k].tolist()
        x0, y0 = min(int(x), 5), min(int(y), 3)
        fx, fy = x - x0, y - y0
        ref = (1 - fy) * ((1 - fx) * d[y0, x0] + fx * d[y0, x0 + 1]) + fy * ((1 - fx) * d[y0 + 1, x0] + fx * d[y0 + 1, x0 + 1])
        assert got[k].item() == pytest.approx(ref)


def test_reprojection_zero_for_exact_geometry_and_scale_free(scene):
    depth, K, c2w = scene_tensors(scene)
    matches = all_matches(scene)
    for residual in ("angle", "pixel"):
        loss, stats = reprojection_loss(depth, K, c2w, matches, ReprojectionLossConfig(residual=residual))
        assert loss.item() < 1e-4, residual
    base, _ = reprojection_loss(depth * 1.3, K, c2w, matches)  # wrong scale of depth alone: not zero
    assert base.item() > 1e-3
    scaled_c2w = c2w.clone()
    scaled_c2w[..., :3, 3] *= 7.5
    rescaled, _ = reprojection_loss(depth * 1.3 * 7.5, K, scaled_c2w, matches)
    assert rescaled.item() == pytest.approx(base.item(), rel=1e-9)


def test_angle_matches_pixel_error_over_focal_to_first_order():
    # Camera j at the origin looking down +z; view i elsewhere sees the same point p exactly.
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    H, W = 81, 101
    c2w_j = torch.eye(4)
    c2w_i = make_pose(torch.eye(3), torch.tensor([1.0, 0.0, 0.0]))
    z = 4.0
    p = torch.tensor([0.0, 0.0, z])  # on j's optical axis, pixel (50, 40)
    uv_i = K @ (p - c2w_i[:3, 3]) / z
    depth = torch.full((1, 2, H, W), z)
    for delta in (0.05, 0.2, 0.5):
        matches = Matches(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), uv_i[None, :2], torch.tensor([[50.0 + delta, 40.0]]), torch.ones(1))
        loss, stats = reprojection_loss(depth, K.expand(1, 2, 3, 3), torch.stack([c2w_i, c2w_j])[None], matches, ReprojectionLossConfig(robust="l2", scale_degrees=1.0))
        # The angle at t_j is exactly the bearing change of the shifted pixel, about delta / f.
        from reliev3r_ns.losses.reprojection import angle_between, lift_matches

        p_j = lift_matches(depth, K.expand(1, 2, 3, 3), torch.stack([c2w_i, c2w_j])[None], matches.batch, matches.view_j, matches.uv_j)
        p_i = lift_matches(depth, K.expand(1, 2, 3, 3), torch.stack([c2w_i, c2w_j])[None], matches.batch, matches.view_i, matches.uv_i)
        theta_j = angle_between(p_j[0], p_i[0]).item()
        assert theta_j == pytest.approx(delta / 100.0, rel=1e-3)


def test_point_behind_camera_costs_more_than_any_point_in_front():
    # Camera i at the origin; camera j at (1, 0, -3) looking along +z. The match's ray in j passes
    # through p_i = (0, 0, 2) at depth 5 and behind camera i for depths below 3.
    H, W = 21, 21
    K = torch.tensor([[10.0, 0, 10], [0, 10.0, 10], [0, 0, 1]])
    c2w = torch.stack([torch.eye(4), make_pose(torch.eye(3), torch.tensor([1.0, 0.0, -3.0]))])[None]
    uv_i = torch.tensor([[10.0, 10.0]])
    uv_j = torch.tensor([[10.0 - 0.2 * 10.0, 10.0]])
    matches = Matches(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), uv_i, uv_j, torch.ones(1))

    def loss_at(depth_j, residual="angle"):
        depth = torch.stack([torch.full((H, W), 2.0), torch.full((H, W), depth_j)])[None].requires_grad_(True)
        loss, _ = reprojection_loss(depth, K.expand(1, 2, 3, 3), c2w, matches, ReprojectionLossConfig(residual=residual))
        loss.backward()
        assert torch.isfinite(depth.grad).all()
        return loss.item(), depth.grad.abs().sum().item()

    assert loss_at(5.0)[0] < 1e-10
    in_front = [loss_at(d)[0] for d in np.linspace(3.01, 200.0, 60)]
    behind = [loss_at(d) for d in np.linspace(0.05, 2.99, 30)]
    assert min(b[0] for b in behind) > max(in_front)
    assert all(b[1] > 0 for b in behind)  # and the gradient still says which way to go
    # The pixel residual has nothing to say there: the point is masked out.
    assert loss_at(1.0, residual="pixel")[0] == 0.0


def test_gradient_step_on_a_perturbed_pose_reduces_the_loss(scene):
    depth, K, c2w = scene_tensors(scene)
    matches = all_matches(scene)
    rotation_delta = torch.tensor([0.02, -0.03, 0.01], requires_grad=True)
    translation_delta = torch.tensor([0.1, 0.05, -0.08], requires_grad=True)

    def loss_fn():
        perturbed = c2w.clone()
        pose = make_pose(axis_angle_to_rotation(rotation_delta) @ c2w[0, 1, :3, :3], c2w[0, 1, :3, 3] + translation_delta)
        perturbed = torch.cat([c2w[:, :1], pose[None, None], c2w[:, 2:]], dim=1)
        return reprojection_loss(depth, K, perturbed, matches)[0]

    before = loss_fn()
    before.backward()
    with torch.no_grad():
        rotation_delta -= 1e-4 * rotation_delta.grad / rotation_delta.grad.norm() * 100
        translation_delta -= 1e-3 * translation_delta.grad / translation_delta.grad.norm() * 10
    assert loss_fn().item() < before.item()


# ----------------------------------------------------------------------------- supervised + objective


def test_supervised_losses_zero_up_to_scale_and_world_frame(scene):
    depth, K, c2w = scene_tensors(scene)
    # The prediction lives in another world frame at another scale.
    angle = 0.7
    R = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1.0]])
    world = make_pose(R, torch.tensor([3.0, -1.0, 2.0]))
    pred_c2w = world @ c2w
    pred_c2w[..., :3, 3] *= 0.25
    point, camera, stats = supervised_losses(depth * 0.25, torch.ones_like(depth), K, pred_c2w, depth, K, c2w)
    assert point.item() < 1e-9 and camera.item() < 1e-9
    assert stats["supervised/scale"].item() == pytest.approx(4.0)
    bad_c2w = pred_c2w.clone()
    bad_c2w[0, 1, :3, 3] += 0.5
    _, camera_bad, _ = supervised_losses(depth * 0.25, torch.ones_like(depth), K, bad_c2w, depth, K, c2w)
    assert camera_bad.item() > 1e-3


def test_objective_switches_and_explains_missing_labels(scene):
    depth, K, c2w = scene_tensors(scene)
    prediction = GeometryPrediction(depth, torch.ones_like(depth), K, c2w)
    with pytest.raises(ValueError, match="weak labels"):
        compute_loss(Reliev3rLossConfig(), prediction)
    with pytest.raises(ValueError, match="ground truth"):
        compute_loss(Reliev3rLossConfig(supervision="full"), prediction)
    total, stats = compute_loss(Reliev3rLossConfig(supervision="full"), prediction, gt=GroundTruth(depth, K, c2w))
    assert total.item() < 1e-9 and "loss/camera" in stats


def test_reprojection_warmup_uses_its_robust_function_for_the_first_steps_only():
    final = ReprojectionLossConfig(robust="cauchy", scale_degrees=1.0, warmup_robust="l1", warmup_steps=2000, warmup_scale_degrees=2.0)
    for step in (0, 1999):
        in_force = final.at_step(step)
        assert (in_force.robust, in_force.scale_degrees) == ("l1", 2.0)
    for step in (2000, 9999, None):  # None: outside training
        assert final.at_step(step) is final
    plain = ReprojectionLossConfig()
    assert plain.at_step(0) is plain
    for half_set in (ReprojectionLossConfig(warmup_robust="l1"), ReprojectionLossConfig(warmup_steps=100)):
        with pytest.raises(ValueError, match="set together"):
            half_set.at_step(0)


# ----------------------------------------------------------------------------- radial residual


def test_radial_residual_against_a_reference_and_zero_for_exact_geometry(scene):
    depth, K, c2w = scene_tensors(scene)
    matches = all_matches(scene)
    config = ReprojectionLossConfig(radial_weight=0.7, scale_radial=0.05)
    exact, stats = reprojection_loss(depth, K, c2w, matches, config)
    # (Not exactly 0: bilinear depth at sub-pixel matches.)
    assert exact.item() < 1e-4 and stats["reprojection/median_radial_error"].item() < 1e-3

    # Random depths: the loss is the angle loss plus 0.7 x a radial term computed here, independently,
    # with numpy: lift each pixel by K^-1 [u, v, 1] * z, then the log ratio of distances to each centre.
    rng = np.random.default_rng(8)
    noisy = depth * torch.from_numpy(rng.uniform(0.8, 1.25, size=depth.shape))
    angle_only, _ = reprojection_loss(noisy, K, c2w, matches, ReprojectionLossConfig())
    with_radial, _ = reprojection_loss(noisy, K, c2w, matches, config)
    Kn, poses = K[0].numpy(), c2w[0].numpy()

    def lift(view, uv):
        z = sample_depth(noisy, matches.batch, view, uv).numpy()
        rays = np.linalg.solve(Kn[view.numpy()], np.concatenate([uv.numpy(), np.ones((len(z), 1))], axis=1)[..., None])[..., 0]
        R, t = poses[view.numpy(), :3, :3], poses[view.numpy(), :3, 3]
        return np.einsum("mij,mj->mi", R, rays * z[:, None]) + t, t

    p_i, t_i = lift(matches.view_i, matches.uv_i)
    p_j, t_j = lift(matches.view_j, matches.uv_j)
    r_i = np.log(np.linalg.norm(p_j - t_i, axis=1) / np.linalg.norm(p_i - t_i, axis=1))
    r_j = np.log(np.linalg.norm(p_i - t_j, axis=1) / np.linalg.norm(p_j - t_j, axis=1))
    radial = 0.5 * (np.log1p((r_i / 0.05) ** 2) + np.log1p((r_j / 0.05) ** 2))
    assert with_radial.item() - angle_only.item() == pytest.approx(0.7 * radial.mean(), rel=1e-9)


def test_radial_residual_sees_a_views_depth_offset_that_the_angle_barely_sees():
    # A forward walk: rays of matched pixels are nearly parallel, so a wrong depth offset in one view
    # hardly turns the angle, while the distances along the rays disagree by about the offset.
    walk = generate_scene(5, SyntheticSceneConfig(width=64, height=48, num_views=4, supersample=1, texture_size=64, trajectories=("forward",)))
    depth, K, c2w = scene_tensors(walk)
    matches = all_matches(walk)
    offset = 0.1 * depth[0, 1].median()
    shifted = depth.clone()
    shifted[0, 1] += offset  # view 1's depth 10 % (of its median) too far
    touching = (matches.view_i == 1) | (matches.view_j == 1)
    assert touching.sum() > 50
    only = Matches(*(getattr(matches, f)[touching] for f in ("batch", "view_i", "view_j", "uv_i", "uv_j", "confidence")))
    radial_cfg = ReprojectionLossConfig(radial_weight=1.0)
    both_loss, stats = reprojection_loss(shifted, K, c2w, only, radial_cfg)
    angle_radians = math.radians(stats["reprojection/median_error"].item())
    radial = stats["reprojection/median_radial_error"].item()
    # The distances disagree by several per cent; the rays by a fraction of that in radians.
    assert radial > 0.03
    assert radial > 4 * angle_radians, (radial, angle_radians)
    # Scale-free: world and depths scaled together leave it unchanged.
    scaled_c2w = c2w.clone()
    scaled_c2w[..., :3, 3] *= 3.0
    rescaled, _ = reprojection_loss(shifted * 3.0, K, scaled_c2w, only, radial_cfg)
    assert rescaled.item() == pytest.approx(both_loss.item(), rel=1e-9)


def test_radial_residual_needs_the_angle_residual(scene):
    depth, K, c2w = scene_tensors(scene)
    with pytest.raises(ValueError, match="radial_weight"):
        reprojection_loss(depth, K, c2w, all_matches(scene), ReprojectionLossConfig(residual="pixel", radial_weight=1.0))


@pytest.mark.parametrize("settings, message", [
    (dict(residual="pixel", radial_weight=1.0), "needs residual='angle'"),
    (dict(radial_weight=-0.5), "radial_weight=-0.5"),
    (dict(scale_degrees=0.0), "scale_degrees=0.0"),
    (dict(scale_radial=-1.0), "scale_radial=-1.0"),
    (dict(warmup_robust="l1"), "set together"),
])
def test_loss_configs_that_cannot_train_are_refused_with_the_setting_named(settings, message):
    from reliev3r_ns.losses import Reliev3rLossConfig

    ReprojectionLossConfig().validate()
    Reliev3rLossConfig().validate()
    with pytest.raises(ValueError, match=message):
        ReprojectionLossConfig(**settings).validate()
    with pytest.raises(ValueError, match=message):  # through the objective's config too
        Reliev3rLossConfig(reprojection=ReprojectionLossConfig(**settings)).validate()
    with pytest.raises(ValueError, match="reprojection_weight=-1"):
        Reliev3rLossConfig(reprojection_weight=-1).validate()


@pytest.mark.parametrize("supervision, part, settings, message", [
    ("weak", "depth", dict(alpha=0.0), "depth alpha=0.0"),
    ("weak", "depth", dict(min_valid_pixels=0), "min_valid_pixels=0"),
    ("weak", "depth", dict(min_depth=0.0), "min_depth=0.0"),
    ("weak", "depth", dict(rel_eps=-1e-3), "rel_eps=-0.001"),
    ("full", "supervised", dict(alpha=-1.0), "supervised alpha=-1.0"),
    ("full", "supervised", dict(camera_weight=-0.1), "camera_weight=-0.1"),
    ("full", "supervised", dict(huber_delta=0.0), "huber_delta=0.0"),
])
def test_the_depth_and_supervised_loss_settings_are_checked_where_they_are_used(supervision, part, settings, message):
    from reliev3r_ns.losses import Reliev3rLossConfig
    from reliev3r_ns.losses.relative_depth import RelativeDepthLossConfig
    from reliev3r_ns.losses.supervised import SupervisedLossConfig

    bad = (RelativeDepthLossConfig if part == "depth" else SupervisedLossConfig)(**settings)
    with pytest.raises(ValueError, match=message):
        bad.validate()
    with pytest.raises(ValueError, match=message):
        Reliev3rLossConfig(supervision=supervision, **{part: bad}).validate()
    # The other supervision does not use these settings, so it trains with them.
    Reliev3rLossConfig(supervision="full" if supervision == "weak" else "weak", **{part: bad}).validate()


def test_the_sibling_is_not_refused_for_weak_loss_settings_it_does_not_use():
    from reliev3r_ns.losses import Reliev3rLossConfig

    unused = ReprojectionLossConfig(residual="pixel", radial_weight=1.0)
    with pytest.raises(ValueError, match="needs residual='angle'"):
        Reliev3rLossConfig(reprojection=unused).validate()
    Reliev3rLossConfig(supervision="full", reprojection=unused, reprojection_weight=-1).validate()
