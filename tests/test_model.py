"""The FFRM: shapes, permutation behaviour, gradients, checkpoints, inference API."""

import numpy as np
import pytest
import torch
from PIL import Image

from reliev3r_ns.geometry import intrinsics_from_fov, invert_pose, pixel_grid, project_world_points
from reliev3r_ns.model import FFRM, FFRMConfig, ffrm_config


def tiny(**overrides) -> FFRM:
    torch.manual_seed(0)
    # Smaller than the tiny preset so the suite stays fast; same code paths.
    params = dict(embed_dim=64, num_heads=2, depth=2, dense_features=16, dense_layer_dims=(8, 16, 32, 64), camera_hidden=32)
    return FFRM(ffrm_config("tiny", **{**params, **overrides})).eval()


def fields(prediction):
    return ("cam_to_world", "intrinsics", "depth", "confidence", "world_points", "fov_x")


def test_tiny_preset_is_under_five_million_parameters_and_presets_grow():
    counts = []
    for size in ("tiny", "small", "base", "large"):
        with torch.device("meta"):
            counts.append(FFRM(ffrm_config(size)).num_parameters())
    assert counts[0] < 5e6
    assert counts == sorted(counts)
    assert 0.4e9 < counts[-1] < 1.2e9  # pi3 / VGGT scale
    with pytest.raises(ValueError, match="unknown FFRM size"):
        ffrm_config("huge")


@pytest.mark.parametrize("views,height,width,patch", [(1, 64, 64, 16), (2, 96, 128, 16), (5, 128, 64, 16), (3, 56, 98, 14)])
def test_output_shapes_for_several_view_counts_and_aspect_ratios(views, height, width, patch):
    model = tiny(patch_size=patch)
    out = model(torch.rand(2, views, 3, height, width))
    assert out.cam_to_world.shape == (2, views, 4, 4)
    assert out.intrinsics.shape == (2, views, 3, 3)
    assert out.depth.shape == out.confidence.shape == (2, views, height, width)
    assert out.world_points.shape == (2, views, height, width, 3)
    assert out.fov_x.shape == (2, views)
    assert (out.depth > 0).all() and (out.confidence > 0).all() and (out.confidence < 2).all()
    rotation = out.cam_to_world[..., :3, :3]
    torch.testing.assert_close(rotation.transpose(-1, -2) @ rotation, torch.eye(3).expand_as(rotation), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(2, views), atol=1e-5, rtol=0)


def test_image_size_not_a_patch_multiple_is_a_clear_error():
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        tiny()(torch.rand(1, 2, 3, 60, 64))


@pytest.mark.parametrize("position_embedding", ["rope", "learned"])
def test_reference_none_permuting_views_permutes_every_output(position_embedding):
    model = tiny(position_embedding=position_embedding)
    images = torch.rand(1, 5, 3, 64, 96)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out, out_perm = model(images), model(images[:, perm])
    for name in fields(out):
        torch.testing.assert_close(getattr(out_perm, name), getattr(out, name)[:, perm], atol=2e-5, rtol=1e-4)
    # ... and the views really interact: changing one view changes another's prediction.
    changed = images.clone()
    changed[:, 4] = torch.rand_like(changed[:, 4])
    assert not torch.allclose(model(changed).depth[:, 0], out.depth[:, 0], atol=1e-5)


def test_reference_first_view_zero_is_identity_and_other_views_permute():
    model = tiny(reference="first")
    images = torch.rand(1, 5, 3, 64, 64)
    perm = torch.tensor([0, 3, 1, 4, 2])
    out, out_perm = model(images), model(images[:, perm])
    torch.testing.assert_close(out.cam_to_world[:, 0], torch.eye(4).expand(1, 4, 4), atol=1e-6, rtol=0)
    for name in fields(out):
        torch.testing.assert_close(getattr(out_perm, name), getattr(out, name)[:, perm], atol=2e-5, rtol=1e-4)
    # Moving another view into slot 0 changes the world frame: view 0 really is special.
    swapped = model(images[:, torch.tensor([1, 0, 2, 3, 4])])
    torch.testing.assert_close(swapped.cam_to_world[:, 0], torch.eye(4).expand(1, 4, 4), atol=1e-6, rtol=0)
    assert not torch.allclose(swapped.depth[:, 0], out.depth[:, 1], atol=1e-5)


@pytest.mark.parametrize("reference,position_embedding", [("none", "rope"), ("first", "learned")])
def test_gradients_reach_every_parameter(reference, position_embedding):
    model = tiny(reference=reference, position_embedding=position_embedding).train()
    out = model(torch.rand(2, 3, 3, 64, 64))  # no intrinsics, so the fov head is used too
    g = torch.Generator().manual_seed(1)
    loss = sum((getattr(out, n) * torch.randn(getattr(out, n).shape, generator=g)).sum() for n in ("depth", "confidence", "world_points", "cam_to_world"))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


def test_given_intrinsics_are_used_and_world_points_reproject_to_their_pixels():
    model = tiny()
    H, W = 64, 96
    K = intrinsics_from_fov(torch.tensor([[1.0, 0.8]]), W, H)
    K[..., 0, 2] += 3.0  # an off-centre principal point must survive as given
    out = model(torch.rand(1, 2, 3, H, W), K)
    torch.testing.assert_close(out.intrinsics, K)
    pixels, z = project_world_points(out.world_points, out.intrinsics[..., None, None, :, :], invert_pose(out.cam_to_world)[..., None, None, :, :])
    torch.testing.assert_close(pixels, pixel_grid(H, W).expand_as(pixels), atol=1e-3, rtol=0)
    torch.testing.assert_close(z, out.depth, atol=1e-4, rtol=1e-4)
    # Without intrinsics they come from the predicted fov.
    free = model(torch.rand(1, 2, 3, H, W))
    torch.testing.assert_close(free.intrinsics, intrinsics_from_fov(free.fov_x, W, H))


def test_checkpoint_round_trip_reproduces_outputs_exactly(tmp_path):
    model = tiny(reference="first", position_embedding="learned")
    with torch.no_grad():  # make sure trained-looking weights, not just the init, round-trip
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = model.save_checkpoint(tmp_path / "sub" / "ffrm.pt", extra={"step": 7})
    assert [p.name for p in path.parent.iterdir()] == ["ffrm.pt"]  # no temporary left behind
    loaded = FFRM.from_checkpoint(path).eval()
    assert loaded.config.to_dict() == model.config.to_dict()
    assert loaded.checkpoint_extra == {"step": 7}
    images = torch.rand(1, 3, 3, 64, 64)
    a, b = model(images), loaded(images)
    for name in fields(a):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ns-train reliev3r"):
        FFRM.from_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: cannot read"):
        FFRM.from_checkpoint(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a reliev3r FFRM checkpoint"):
        FFRM.from_checkpoint(tmp_path / "other.pt")
    path = tiny().save_checkpoint(tmp_path / "ok.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["depth"] = 3  # config and weights disagree
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt: weights do not fit"):
        FFRM.from_checkpoint(tmp_path / "mismatch.pt")


def test_config_dict_round_trip_rejects_unknown_keys():
    config = ffrm_config("small", reference="first")
    assert FFRMConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="newer reliev3r-ns"):
        FFRMConfig.from_dict({**config.to_dict(), "mystery": 1})


def test_camera_translation_init_std_sets_how_far_apart_cameras_start(tmp_path):
    # Same seed, so the translation weights are the same draw scaled: the camera spread scales with the
    # std exactly, and nothing else in the network changes.
    images = torch.rand(1, 4, 3, 64, 64)
    outputs, spreads = [], []
    for std in (1e-3, 1e-1):
        model = tiny(camera_translation_init_std=std)
        with torch.no_grad():
            outputs.append(model(images))
        centres = outputs[-1].cam_to_world[0, :, :3, 3]
        spreads.append(float((centres - centres.mean(0)).norm(dim=-1).mean()))
    assert ffrm_config("tiny").camera_translation_init_std == 1e-3
    assert spreads[0] > 0 and spreads[1] == pytest.approx(100 * spreads[0], rel=1e-4)
    assert torch.equal(outputs[0].depth, outputs[1].depth)
    torch.testing.assert_close(outputs[0].cam_to_world[..., :3, :3], outputs[1].cam_to_world[..., :3, :3])
    loaded = FFRM.from_checkpoint(model.save_checkpoint(tmp_path / "ffrm.pt"))
    assert loaded.config.camera_translation_init_std == 1e-1
    # A checkpoint written before the field existed loads with the default.
    old = FFRMConfig.from_dict({k: v for k, v in model.config.to_dict().items() if k != "camera_translation_init_std"})
    assert old.camera_translation_init_std == 1e-3


def test_infer_returns_input_resolution_for_any_image_size(tmp_path):
    model = tiny()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 75, 100, 3), dtype=np.uint8)
    assert model.inference_size(75, 100) == (80, 96)
    assert model.inference_size(75, 100, resolution=64) == (48, 64)
    out = model.infer(images, as_numpy=True)
    assert isinstance(out.depth, np.ndarray)
    assert out.depth.shape == (3, 75, 100) and out.world_points.shape == (3, 75, 100, 3)
    assert out.cam_to_world.shape == (3, 4, 4)
    # Intrinsics predicted at the network size are scaled back to the input size.
    assert out.intrinsics[0, 0, 2] == pytest.approx((100 - 1) / 2, abs=1e-3)
    assert out.intrinsics[0, 1, 2] == pytest.approx((75 - 1) / 2, abs=1e-3)
    # Given intrinsics come back unchanged, and world points reproject onto the input pixels.
    K = intrinsics_from_fov(torch.full((3,), 1.1), 100, 75)
    out = model.infer(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, intrinsics=K)
    torch.testing.assert_close(out.intrinsics, K)
    pixels, _ = project_world_points(out.world_points, K[:, None, None], invert_pose(out.cam_to_world)[:, None, None])
    torch.testing.assert_close(pixels, pixel_grid(75, 100).expand_as(pixels), atol=1e-3, rtol=0)
    # One image is a valid view set.
    assert model.infer(images[:1]).depth.shape == (1, 75, 100)


def test_infer_reads_paths_and_names_mismatched_files(tmp_path):
    model = tiny()
    for name, size in [("a.png", (64, 48)), ("b.png", (64, 48)), ("c.png", (80, 48))]:
        Image.fromarray(np.zeros((size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / name)
    out = model.infer([tmp_path / "a.png", tmp_path / "b.png"])
    assert out.depth.shape == (2, 48, 64)
    with pytest.raises(ValueError, match="c.png is 80x48"):
        model.infer([tmp_path / "a.png", tmp_path / "c.png"])
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="broken.png"):
        model.infer([tmp_path / "a.png", tmp_path / "broken.png"])
    with pytest.raises(ValueError, match="NaN"):
        model.infer(torch.full((2, 3, 64, 64), float("nan")))


def test_gradient_checkpointing_gives_the_same_gradients():
    images = torch.rand(1, 3, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        model = tiny(gradient_checkpointing=checkpointing).train()
        out = model(images)
        (out.depth.log().mean() + out.world_points.mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def test_bf16_autocast_runs_and_keeps_geometry_in_fp32():
    model = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 2, 3, 64, 64))
    for name in fields(out):
        value = getattr(out, name)
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
