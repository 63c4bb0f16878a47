"""Weak labels: SIFT accuracy against GT, the content-addressed cache, teachers, the CLI (kill + resume)."""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reliev3r_ns.data.scene_io import SceneFormatError, read_rgb, write_scene
from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene
from reliev3r_ns.data.synthetic_dataset import generate_dataset
from reliev3r_ns.geometry import invert_pose, project_world_points
from reliev3r_ns.labels import (
    LabelCache,
    Labeller,
    PairSelectionConfig,
    PseudoLabelConfig,
    ViewSet,
    discover_view_sets,
    open_view_set,
    select_pairs,
)
from reliev3r_ns.losses.reprojection import lift_matches
from reliev3r_ns.teachers.depth import DepthTeacherError, TransformersDepthTeacher, TransformersDepthTeacherConfig
from reliev3r_ns.teachers.sift import SiftMatcher, verify_matches

SMALL = SyntheticSceneConfig(width=160, height=120, num_views=4, supersample=1, texture_size=256, trajectories=("forward",))


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    scene = generate_scene(5, SMALL)
    return write_scene(tmp_path_factory.mktemp("scenes") / "scene", scene.images, scene.cam_to_world, scene.intrinsics, scene.depths)


def copy_scene(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


class Counting:
    """Wraps a Labeller's teacher and matcher to count the work actually done."""

    def __init__(self, labeller):
        self.depth_calls, self.match_calls = 0, 0
        predict, match = labeller.depth_teacher.predict, labeller.matcher.match

        def counted_predict(view_set, indices, keys):
            self.depth_calls += len(indices)
            return predict(view_set, indices, keys)

        def counted_match(a, b):
            self.match_calls += 1
            return match(a, b)

        labeller.depth_teacher.predict, labeller.matcher.match = counted_predict, counted_match


def test_sift_matches_agree_with_gt_geometry_at_256px():
    scene = generate_scene(3, SyntheticSceneConfig(width=256, height=192, num_views=4, trajectories=("forward",)))
    matcher = SiftMatcher()
    features = [matcher.features(image) for image in scene.images]
    depth = torch.from_numpy(scene.depths.astype(np.float64))[None]
    K = torch.from_numpy(scene.intrinsics)[None]
    c2w = torch.from_numpy(scene.cam_to_world)[None]
    errors = []
    for i, j in select_pairs(4):
        uv_i, uv_j, _ = matcher.match(features[i], features[j])
        if not len(uv_i):
            continue
        n = len(uv_i)
        points = lift_matches(depth, K, c2w, torch.zeros(n, dtype=torch.long), torch.full((n,), i), torch.from_numpy(uv_i.astype(np.float64)))
        pixels, z = project_world_points(points, K[0, j], invert_pose(c2w[0, j]))
        errors.append((pixels - torch.from_numpy(uv_j.astype(np.float64))).norm(dim=-1)[z > 0].numpy())
    errors = np.concatenate(errors)
    assert len(errors) > 100
    assert np.median(errors) < 1.5


# Two SIFT matches of a 128x96 synthetic pair (scene_00000 of the 400-scene set, views 17 and 18): SIFT
# keypoints repeated per orientation make four of the 17 candidates copies, which made OpenCV 4.10's
# MAGSAC abort with "!model.empty()" and took the whole labelling run down.
_REPEATED_A = [[4.06878662109375, 60.216583251953125], [4.06878662109375, 60.216583251953125], [5.475566864013672, 10.854935646057129],
               [14.818708419799805, 24.550113677978516], [14.818708419799805, 24.550113677978516], [15.047994613647461, 43.740814208984375],
               [33.27519607543945, 55.19416427612305], [38.5416145324707, 65.8888931274414], [60.22469711303711, 21.211071014404297],
               [61.258567810058594, 48.160213470458984], [61.258567810058594, 48.160213470458984], [71.45689392089844, 45.90151596069336],
               [72.45391845703125, 58.94438171386719], [78.0204086303711, 38.650634765625], [89.35228729248047, 66.21990203857422],
               [89.35228729248047, 66.21990203857422], [91.07400512695312, 72.88675689697266]]
_REPEATED_B = [[3.0422167778015137, 73.04960632324219], [3.0422167778015137, 73.04960632324219], [19.405075073242188, 20.616840362548828],
               [28.955047607421875, 32.75227737426758], [28.955047607421875, 32.75227737426758], [26.911046981811523, 52.70073318481445],
               [40.54893493652344, 65.28844451904297], [46.14459228515625, 75.9813003540039], [63.86602020263672, 26.71608543395996],
               [66.56556701660156, 56.49853515625], [66.56556701660156, 56.49853515625], [79.69090270996094, 52.57403564453125],
               [81.8213882446289, 67.57939147949219], [86.76139831542969, 39.0009880065918], [101.57231140136719, 75.46485137939453],
               [101.57231140136719, 75.46485137939453], [101.7101058959961, 84.33077239990234]]


def test_match_verification_counts_a_repeated_correspondence_once():
    uv_a, uv_b = np.array(_REPEATED_A, np.float32), np.array(_REPEATED_B, np.float32)
    conf = np.linspace(1.0, 0.2, len(uv_a)).astype(np.float32)
    # 17 candidates but 13 distinct: below a 16-match floor the pair has no matches, not 17 copies' worth.
    assert len(verify_matches(uv_a, uv_b, conf, 1.0, 16, 2048)[0]) == 0
    kept_a, kept_b, kept_conf = verify_matches(uv_a, uv_b, conf, 1.0, 8, 2048)
    pairs = np.concatenate([kept_a, kept_b], 1)
    assert len(np.unique(pairs, axis=0)) == len(pairs) > 0
    # Of two copies the more confident one is kept.
    assert conf[0] in kept_conf and conf[1] not in kept_conf


def test_match_verification_treats_an_opencv_abort_as_no_geometry(monkeypatch):
    # OpenCV's USAC asserts on some degenerate samples instead of returning None: for the pair that
    # means no fundamental matrix explains its matches, so no matches, and labelling goes on.
    import cv2

    def abort(*args, **kwargs):
        raise cv2.error("OpenCV(4.10.0) estimator.cpp:353: error: (-215:Assertion failed) !model.empty()")

    monkeypatch.setattr(cv2, "findFundamentalMat", abort)
    uv_a = np.random.default_rng(0).uniform(0, 100, (40, 2)).astype(np.float32)
    kept = verify_matches(uv_a, uv_a + 3, np.ones(40, np.float32), 1.0, 8, 2048)
    assert [len(k) for k in kept] == [0, 0, 0]


def test_labels_are_cached_and_a_changed_image_invalidates_exactly_its_labels(scene_dir, tmp_path, monkeypatch):
    scene = copy_scene(scene_dir, tmp_path / "scene")
    cache = LabelCache(tmp_path / "cache")
    labeller = Labeller(PseudoLabelConfig(), cache)
    count = Counting(labeller)
    first = labeller.label(open_view_set(scene))
    assert (count.depth_calls, count.match_calls) == (4, 6)
    assert first.teacher.shape == (4, 120, 160) and first.teacher_space == "disparity" and first.teacher_name == "simulated"
    assert first.num_matches > 0 and first.overlap()[0, 1] == len(first.matches[(0, 1)][2])

    decoded = []
    with monkeypatch.context() as patch:
        load_image = ViewSet.load_image
        patch.setattr(ViewSet, "load_image", lambda self, i: decoded.append(i) or load_image(self, i))
        again = labeller.label(open_view_set(scene))
    assert (count.depth_calls, count.match_calls) == (4, 6)  # nothing recomputed
    assert decoded == []  # and no image decoded: a cached scene costs file hashes and header reads only
    np.testing.assert_array_equal(again.teacher, first.teacher)
    for pair in first.pairs:
        for a, b in zip(first.matches[pair], again.matches[pair]):
            np.testing.assert_array_equal(a, b)

    # Change one image: its depth label and its 3 pairs are recomputed, nothing else.
    image_path = open_view_set(scene).image_paths[2]
    pixels = read_rgb(image_path).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image_path)
    labeller.label(open_view_set(scene))
    assert (count.depth_calls, count.match_calls) == (5, 9)

    # Another teacher setting gets its own labels; the old ones stay.
    other = Labeller(PseudoLabelConfig(simulated_seed=1), cache)
    assert other.depth_key != labeller.depth_key and other.match_key == labeller.match_key
    assert len(list((cache.root / "depth").iterdir())) == 2


def test_a_corrupt_label_file_is_detected_and_recomputed(scene_dir, tmp_path):
    cache = LabelCache(tmp_path / "cache")
    labeller = Labeller(PseudoLabelConfig(), cache)
    first = labeller.label(open_view_set(scene_dir))
    depth_file = sorted((cache.root / "depth" / labeller.depth_key).glob("*.npz"))[0]
    match_file = sorted((cache.root / "matches" / labeller.match_key).glob("*.npz"))[0]
    depth_file.write_bytes(depth_file.read_bytes()[:100])  # truncated
    match_file.write_bytes(b"garbage")
    count = Counting(labeller)
    with pytest.warns(UserWarning, match="unreadable label file"):
        again = labeller.label(open_view_set(scene_dir))
    assert (count.depth_calls, count.match_calls) == (1, 1)
    np.testing.assert_array_equal(again.teacher, first.teacher)
    assert again.num_matches == first.num_matches


def test_bad_scenes_give_clear_errors(scene_dir, tmp_path):
    labeller = Labeller(PseudoLabelConfig(depth_teacher="simulated"), LabelCache(tmp_path / "cache"))
    # Image folders (no transforms.json, so no GT depth): the simulated teacher says what to use instead.
    folder = tmp_path / "photos"
    folder.mkdir()
    images = open_view_set(scene_dir).image_paths
    for p in images[:3]:
        Image.open(p).save(folder / p.name)
    with pytest.raises(DepthTeacherError, match="needs GT depth.*transformers depth teacher"):
        labeller.label(open_view_set(folder))
    # Mixed sizes name the files.
    Image.open(images[3]).resize((50, 40)).save(folder / "odd.png")
    with pytest.raises(SceneFormatError, match="odd.png is 50x40"):
        labeller.label(open_view_set(folder))
    # An unreadable image is named.
    (folder / "odd.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SceneFormatError, match="odd.png: cannot read image"):
        labeller.label(open_view_set(folder))
    # Empty folders.
    (tmp_path / "empty").mkdir()
    with pytest.raises(SceneFormatError, match="no scenes found"):
        discover_view_sets(tmp_path / "empty")
    with pytest.raises(SceneFormatError, match="no images found"):
        open_view_set(tmp_path / "empty")


def test_a_scene_with_one_image_gets_depth_but_no_pairs(tmp_path):
    scene = generate_scene(1, SyntheticSceneConfig(width=64, height=48, num_views=1, supersample=1, texture_size=128))
    root = write_scene(tmp_path / "one", scene.images, scene.cam_to_world, scene.intrinsics, scene.depths)
    labeller = Labeller(PseudoLabelConfig(), LabelCache(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="only one image"):
        labels = labeller.label(open_view_set(root))
    assert labels.teacher.shape == (1, 48, 64) and labels.pairs == [] and labels.num_matches == 0


def test_read_rgb_handles_grey_rgba_16bit_and_exif(tmp_path):
    grey = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert read_rgb(tmp_path / "grey.png").shape == (48, 64, 3)
    Image.fromarray(np.zeros((48, 64, 4), np.uint8)).save(tmp_path / "rgba.png")
    assert read_rgb(tmp_path / "rgba.png").shape == (48, 64, 3)
    sixteen = (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    rgb = read_rgb(tmp_path / "sixteen.png")
    assert rgb.dtype == np.uint8 and rgb.max() == 255 and rgb[0, 0, 0] == 0  # scaled, not clipped to white
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): applied only when asked.
    image = Image.fromarray(np.zeros((48, 64, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_rgb(tmp_path / "rotated.jpg").shape == (48, 64, 3)
    assert read_rgb(tmp_path / "rotated.jpg", exif_transpose=True).shape == (64, 48, 3)


def test_pair_selection():
    assert select_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert select_pairs(5, PairSelectionConfig(mode="window", window=1)) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert len(select_pairs(40, PairSelectionConfig(window=2))) == 39 + 38  # auto: more than 32 views -> window


def tiny_depth_anything(folder: Path) -> Path:
    """A randomly initialised Depth Anything, saved the way `save_pretrained` saves real ones."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=56,
                            patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def test_transformers_teacher_loads_a_local_checkpoint_and_declares_its_space(scene_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_depth_anything(tmp_path / "tiny-da")
    config = PseudoLabelConfig(depth_teacher="transformers", transformers=TransformersDepthTeacherConfig(str(model), device="cpu"))
    labeller = Labeller(config, LabelCache(tmp_path / "cache"))
    assert labeller.depth_teacher.space == "disparity"  # Depth Anything (relative) predicts disparity
    labels = labeller.label(open_view_set(scene_dir))
    assert labels.teacher.shape == (4, 120, 160) and np.isfinite(labels.teacher).all()
    assert labels.teacher_name == f"transformers:{model}"
    # The declared space can be overridden, and that is a different teacher for the cache.
    as_depth = Labeller(PseudoLabelConfig(depth_teacher="transformers", transformers=TransformersDepthTeacherConfig(str(model), space="depth", device="cpu")), LabelCache(tmp_path / "cache"))
    assert as_depth.depth_key != labeller.depth_key
    with pytest.raises(DepthTeacherError, match="'no-such-org/no-such-model' is not in the local Hugging Face cache.*HF_HUB_OFFLINE.*huggingface-cli download no-such-org/no-such-model"):
        TransformersDepthTeacher(TransformersDepthTeacherConfig("no-such-org/no-such-model"))
    with pytest.raises(DepthTeacherError, match="missing-folder: cannot load a depth teacher from this folder"):
        TransformersDepthTeacher(TransformersDepthTeacherConfig(str(tmp_path / "missing-folder")))
    with pytest.raises(DepthTeacherError, match="needs a model"):
        TransformersDepthTeacher(TransformersDepthTeacherConfig(""))


def cache_content(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*.npz")):
        with np.load(path) as data:
            out[str(path.relative_to(root))] = {k: data[k].copy() for k in data.files}
    return out


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_to_the_same_cache(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, 3, seed=11, config=SyntheticSceneConfig(width=128, height=96, num_views=6, supersample=1, texture_size=256), show_progress=False)
    cli = [sys.executable, "-m", "reliev3r_ns.cli.pseudolabel", "--data", str(data)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    reference = subprocess.run(cli + ["--cache-dir", str(tmp_path / "reference")], env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(cli + ["--cache-dir", str(interrupted)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120

    def written():
        return len(list(interrupted.rglob("*.npz"))) if interrupted.exists() else 0

    while time.time() < deadline and written() < 8:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(list(interrupted.rglob("*.npz")))
    assert 0 < partial < len(cache_content(tmp_path / "reference"))  # it really stopped part-way
    # A kill may leave a hidden temporary file; it is never read as a label.
    resumed = subprocess.run(cli + ["--cache-dir", str(interrupted)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = cache_content(tmp_path / "reference"), cache_content(interrupted)
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")


def test_cli_reports_a_bad_scene_and_labels_the_others(scene_dir, tmp_path):
    data = tmp_path / "data"
    copy_scene(scene_dir, data / "good")
    bad = data / "bad"
    bad.mkdir(parents=True)
    (bad / "a.png").write_bytes(b"not an image")
    (bad / "b.png").write_bytes(b"not an image either")
    from reliev3r_ns.cli.pseudolabel import PseudoLabel, run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = run(PseudoLabel(data=data, cache_dir=tmp_path / "cache"))
    assert code == 1
    assert len(list((tmp_path / "cache" / "depth").rglob("*.npz"))) == 4  # the good scene was labelled


def test_simulated_matcher_is_dense_accurate_and_cached(scene_dir, tmp_path):
    from reliev3r_ns.data.scene_io import load_scene
    from reliev3r_ns.teachers.simulated import SimulatedMatcherConfig

    config = PseudoLabelConfig(matcher="simulated", simulated_matches=SimulatedMatcherConfig(pixel_noise=0.5, outlier_fraction=0.1))
    labeller = Labeller(config, LabelCache(tmp_path / "cache"))
    labels = labeller.label(open_view_set(scene_dir))
    again = labeller.label(open_view_set(scene_dir))
    uv_i, uv_j, conf = labels.matches[(0, 1)]
    np.testing.assert_array_equal(uv_j, again.matches[(0, 1)][1])  # deterministic, from the cache
    assert len(conf) > 50  # far denser than SIFT at this size
    scene = load_scene(scene_dir)
    depth = torch.from_numpy(scene.load_depths().astype(np.float64))[None]
    K, c2w = torch.from_numpy(scene.intrinsics)[None], torch.from_numpy(scene.cam_to_world)[None]
    n = len(uv_i)
    points = lift_matches(depth, K, c2w, torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.from_numpy(uv_i.astype(np.float64)))
    pixels, _ = project_world_points(points, K[0, 1], invert_pose(c2w[0, 1]))
    error = (pixels - torch.from_numpy(uv_j.astype(np.float64))).norm(dim=-1).numpy()
    inliers = error < 3.0
    assert 0.8 < inliers.mean() < 0.97  # about 10 % outliers
    assert 0.4 < np.median(error[inliers]) < 0.8  # 2D Gaussian noise of 0.5 px: median radius ~0.59
    # Image folders have no GT: a clear error.
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in open_view_set(scene_dir).image_paths[:2]:
        Image.open(p).save(folder / p.name)
    with pytest.raises(SceneFormatError):
        Labeller(PseudoLabelConfig(depth_teacher="simulated", matcher="simulated"), LabelCache(tmp_path / "c2")).label(open_view_set(folder))


def test_a_dataset_preview_beside_scene_folders_is_not_a_scene(scene_dir, tmp_path):
    """`reliev3r-synthetic default` writes preview.png at the dataset root; the root is a container."""
    root = tmp_path / "dataset"
    copy_scene(scene_dir, root / "scene_a")
    copy_scene(scene_dir, root / "scene_b")
    Image.new("RGB", (8, 8)).save(root / "preview.png")
    assert discover_view_sets(root) == [root / "scene_a", root / "scene_b"]
    loose = tmp_path / "photos"
    loose.mkdir()
    for k in range(2):
        Image.new("RGB", (8, 8)).save(loose / f"{k}.png")
    assert discover_view_sets(loose) == [loose]


def test_linked_scene_folders_are_found_and_a_link_loop_ends(scene_dir, tmp_path):
    """A dataset assembled from links to scene folders (a subset of a big set, say) is a dataset."""
    store = tmp_path / "store"
    copy_scene(scene_dir, store / "scene_a")
    copy_scene(scene_dir, store / "scene_b")
    root = tmp_path / "subset"
    root.mkdir()
    for name in ("scene_a", "scene_b"):
        (root / name).symlink_to(store / name, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a link back up: walked once, not forever
    assert discover_view_sets(root) == [root / "scene_a", root / "scene_b"]


def _gt_tracks(scene_dir):
    """Tracks of a grid of view-0 pixels through every view, from GT depth and poses (independent of the matcher)."""
    from reliev3r_ns.data.scene_io import load_scene
    from reliev3r_ns.geometry import unproject_depth_to_world

    scene = load_scene(scene_dir)
    depth = torch.from_numpy(scene.load_depths()).double()
    points = unproject_depth_to_world(depth[:1], torch.from_numpy(scene.intrinsics[:1]), torch.from_numpy(scene.cam_to_world[:1]))[0]
    points = points[4::16, 4::16].reshape(-1, 3)
    world_to_cam = invert_pose(torch.from_numpy(scene.cam_to_world))
    projected = [project_world_points(points, torch.from_numpy(scene.intrinsics[v]), world_to_cam[v]) for v in range(scene.num_views)]
    uv, z = torch.stack([p[0] for p in projected]), torch.stack([p[1] for p in projected])
    H, W = depth.shape[-2:]
    visible = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= W - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= H - 1)
    return scene, uv.permute(1, 0, 2).numpy(), visible.T.numpy()


def test_imported_tracks_and_matches_are_ingested_validated_and_keyed(scene_dir, tmp_path):
    folder = copy_scene(scene_dir, tmp_path / "scene")
    scene, tracks, visible = _gt_tracks(folder)
    names = np.array([p.name for p in scene.image_paths])
    # Written in reversed image order: the importer must map names, not positions.
    np.savez(folder / "tracks.npz", image_names=names[::-1], tracks=tracks[:, ::-1], visible=visible[:, ::-1])
    config = PseudoLabelConfig(matcher="imported", simulated_seed=0)
    cache = LabelCache(tmp_path / "cache")
    labels = Labeller(config, cache).label(open_view_set(folder))
    both = visible[:, 0] & visible[:, 2]
    uv_0, uv_2, conf = labels.matches[(0, 2)]
    np.testing.assert_allclose(uv_0, tracks[both, 0], atol=1e-4)
    np.testing.assert_allclose(uv_2, tracks[both, 2], atol=1e-4)
    assert len(conf) == both.sum() > 10 and (conf == 1).all()

    # Editing the file re-keys the pairs: new content is used, not the cached one.
    np.savez(folder / "tracks.npz", image_names=names, tracks=tracks + 0.25, visible=visible)
    again = Labeller(config, cache).label(open_view_set(folder))
    np.testing.assert_allclose(again.matches[(0, 2)][0], tracks[both, 0] + 0.25, atol=1e-4)

    # Per-pair matches, one pair given as (2, 0): stored as (0, 2) with the sides swapped.
    (folder / "tracks.npz").unlink()
    np.savez(folder / "matches.npz", image_names=names, pairs=np.array([[2, 0]]), pair_index=np.zeros(both.sum(), int),
             uv_i=tracks[both, 2], uv_j=tracks[both, 0])
    pairs = Labeller(config, cache).label(open_view_set(folder))
    np.testing.assert_allclose(pairs.matches[(0, 2)][0], tracks[both, 0], atol=1e-4)
    assert len(pairs.matches[(0, 1)][2]) == 0  # a pair the file does not mention has no matches

    # Validation names the file and the problem.
    bad = tracks.copy()
    bad[np.argmax(both), 2] = [5000.0, 3.0]
    np.savez(folder / "matches.npz", image_names=names, pairs=np.array([[0, 2]]), pair_index=np.zeros(both.sum(), int),
             uv_i=tracks[both, 0], uv_j=bad[both, 2])
    with pytest.raises(SceneFormatError, match="matches.npz: uv_j entry 0 .* outside"):
        Labeller(config, cache).label(open_view_set(folder))
    np.savez(folder / "matches.npz", image_names=np.array(["nope.png"] + list(names[1:])), pairs=np.array([[0, 2]]),
             pair_index=np.zeros(both.sum(), int), uv_i=tracks[both, 0], uv_j=tracks[both, 2])
    with pytest.raises(SceneFormatError, match="nope.png"):
        Labeller(config, cache).label(open_view_set(folder))
    (folder / "matches.npz").unlink()
    with pytest.raises(SceneFormatError, match="tracks.npz or matches.npz"):
        Labeller(config, cache).label(open_view_set(folder))


# ----------------------------------------------------------------------------------- kornia matchers


def kornia_weight_files(tmp_path):
    """Randomly initialised DISK and LightGlue-for-DISK weights saved the way their releases are (DISK
    under 'extractor', LightGlue with the original 'self_attn.i' names), and a LoFTR checkpoint."""
    import kornia.feature as KF

    torch.manual_seed(0)
    disk = KF.DISK()
    torch.save({"extractor": disk.state_dict()}, tmp_path / "disk.pth")
    glue = KF.LightGlue(features=None, **{k: v for k, v in KF.LightGlue.features["disk"].items() if k != "weights"})
    original_names = {}
    for key, value in glue.state_dict().items():
        for i in range(glue.conf.n_layers):
            for kind in ("self_attn", "cross_attn"):
                key = key.replace(f"transformers.{i}.{kind}.", f"{kind}.{i}.")
        original_names[key] = value
    torch.save(original_names, tmp_path / "lightglue.pth")
    torch.save({"state_dict": KF.LoFTR(pretrained=None).state_dict()}, tmp_path / "loftr.ckpt")
    return tmp_path / "disk.pth", tmp_path / "lightglue.pth", tmp_path / "loftr.ckpt"


def put_in_hub_cache(cache: Path, repo: str, filename: str, source: Path) -> None:
    """A file laid out as huggingface_hub caches a download of it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True, exist_ok=True)
    (folder / "snapshots" / ("0" * 40) / filename).write_bytes(source.read_bytes())
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)


def test_kornia_matchers_take_local_files_or_kornias_hub_weights_and_say_which_is_missing(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    from reliev3r_ns.teachers.depth import TeacherError
    from reliev3r_ns.teachers.kornia_matchers import KorniaMatcher, KorniaMatcherConfig

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    disk, glue, loftr = kornia_weight_files(tmp_path)
    with pytest.raises(TeacherError, match=r"kornia/disk/depth-save.pth is not in the local Hugging Face cache.*"
                                           r"huggingface.co/kornia/disk/resolve/main/depth-save.pth.*--kornia.detector-weights PATH"):
        KorniaMatcher(KorniaMatcherConfig(weights=glue))
    put_in_hub_cache(cache, "kornia/disk", "depth-save.pth", disk)  # as a download would have left it
    put_in_hub_cache(cache, "kornia/lightglue", "disk_lightglue.pth", glue)
    assert KorniaMatcher(KorniaMatcherConfig()).description()["weights"] == KorniaMatcher(KorniaMatcherConfig(detector_weights=disk, weights=glue)).description()["weights"]
    with pytest.raises(TeacherError, match="no such weights file.*--kornia.weights"):
        KorniaMatcher(KorniaMatcherConfig(detector_weights=disk, weights=tmp_path / "missing.pth"))
    with pytest.raises(TeacherError, match="do not fit the LightGlue"):
        KorniaMatcher(KorniaMatcherConfig(detector_weights=disk, weights=loftr))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="junk.ckpt: not a readable torch checkpoint"):
        KorniaMatcher(KorniaMatcherConfig(method="loftr", weights=tmp_path / "junk.ckpt"))


def test_disk_lightglue_labels_a_scene_from_local_files_and_caches_by_weights(scene_dir, tmp_path):
    from reliev3r_ns.teachers.kornia_matchers import KorniaMatcherConfig

    disk, glue, _ = kornia_weight_files(tmp_path)
    kornia = KorniaMatcherConfig(detector_weights=disk, weights=glue, resolution=96, max_keypoints=256, device="cpu")
    config = PseudoLabelConfig(depth_teacher="simulated", matcher="kornia", kornia=kornia)
    labeller = Labeller(config, LabelCache(tmp_path / "cache"))
    labels = labeller.label(open_view_set(scene_dir))
    assert len(labels.matches) == len(select_pairs(4))
    for uv_i, uv_j, conf in labels.matches.values():  # random weights: few or no verified matches, but well-formed
        assert uv_i.shape == uv_j.shape == (len(conf), 2) and np.isfinite(uv_i).all()
        assert (uv_i >= -0.5).all() and (uv_i[:, 0] <= 159.5).all() and (uv_i[:, 1] <= 119.5).all()
    again = Labeller(config, LabelCache(tmp_path / "cache"))
    counting = Counting(again)
    again.label(open_view_set(scene_dir))
    assert counting.match_calls == 0  # all from the cache
    # Other weights bytes are another matcher: nothing reused.
    torch.save({"extractor": {k: v + 0.01 for k, v in torch.load(disk)["extractor"].items()}}, tmp_path / "disk2.pth")
    other = Labeller(PseudoLabelConfig(depth_teacher="simulated", matcher="kornia", kornia=KorniaMatcherConfig(
        detector_weights=tmp_path / "disk2.pth", weights=glue, resolution=96, max_keypoints=256, device="cpu")), LabelCache(tmp_path / "cache"))
    assert other.match_key != labeller.match_key


def test_loftr_pixels_come_back_in_the_images_own_frame(scene_dir, tmp_path):
    """LoFTR runs on a resized image and reports pixel centres at +0.5: a stand-in network that returns
    exact GT correspondences in that frame must come back as the GT pixels of the original images."""
    from reliev3r_ns.geometry import scale_pixels
    from reliev3r_ns.teachers.kornia_matchers import KorniaMatcher, KorniaMatcherConfig

    _, _, loftr = kornia_weight_files(tmp_path)
    matcher = KorniaMatcher(KorniaMatcherConfig(method="loftr", weights=loftr, resolution=80, device="cpu", ransac_threshold_px=0.5))
    view_set = open_view_set(scene_dir)
    scene = view_set.scene
    i, j = 0, 1
    a, b = matcher.features(view_set.load_image(i)), matcher.features(view_set.load_image(j))
    assert a.image.shape[-2:] == (64, 80)  # 160 x 120 -> longest side 80, multiples of 8
    depth = torch.from_numpy(scene.load_depths().astype(np.float64))[None]
    K, c2w = torch.from_numpy(scene.intrinsics)[None], torch.from_numpy(scene.cam_to_world)[None]
    v, u = np.mgrid[4:116:6, 4:156:6]
    uv_i = torch.from_numpy(np.stack([u.ravel(), v.ravel()], -1).astype(np.float64))
    points = lift_matches(depth, K, c2w, torch.zeros(len(uv_i), dtype=torch.long), torch.full((len(uv_i),), i), uv_i)
    uv_j, z = project_world_points(points, K[0, j], invert_pose(c2w[0, j]))
    inside = (z > 0) & (uv_j[:, 0] > 0) & (uv_j[:, 0] < 159) & (uv_j[:, 1] > 0) & (uv_j[:, 1] < 119)
    uv_i, uv_j = uv_i[inside], uv_j[inside]
    assert len(uv_i) > 50
    to_loftr = lambda uv: scale_pixels(uv, 80 / 160, 64 / 120) + 0.5  # noqa: E731
    matcher.loftr = lambda data: {"keypoints0": to_loftr(uv_i).float(), "keypoints1": to_loftr(uv_j).float(), "confidence": torch.ones(len(uv_i))}
    got_i, got_j, conf = matcher.match(a, b)
    assert len(conf) > 0.9 * len(uv_i)
    truth = {tuple(np.round(p, 3)) : q for p, q in zip(uv_i.numpy(), uv_j.numpy())}
    for p, q in zip(got_i, got_j):
        np.testing.assert_allclose(q, truth[tuple(np.round(p.astype(np.float64), 3))], atol=2e-3)


def test_pseudolabel_cli_without_kornia_weights_stops_before_any_work(scene_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty_hub")}
    result = subprocess.run([sys.executable, "-m", "reliev3r_ns.cli.pseudolabel", "--data", str(scene_dir), "--matcher", "kornia",
                             "--workers", "2", "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "--kornia.detector-weights PATH" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cache" / "matches").exists()


def test_shards_split_the_scenes_and_fill_one_cache_as_one_run_would(tmp_path):
    """N machines each labelling --shard K/N into one shared cache: every scene in exactly one shard, a
    scene's shard independent of the others present, and the cache the same as a single run's."""
    from reliev3r_ns.cli.pseudolabel import PseudoLabel, parse_shard, run, scene_shard

    data = tmp_path / "data"
    generate_dataset(data, 6, seed=5, config=SyntheticSceneConfig(width=96, height=64, num_views=4, supersample=1, texture_size=128), show_progress=False)
    scenes = discover_view_sets(data)
    shards = {scene: scene_shard(scene, data, 3) for scene in scenes}
    assert set(shards.values()) <= {1, 2, 3}
    assert len(set(shards.values())) > 1  # the six scenes do not all land in one shard
    # adding a scene moves no other scene to another shard
    generate_dataset(tmp_path / "more", 1, seed=6, config=SyntheticSceneConfig(width=96, height=64, num_views=4, supersample=1, texture_size=128), show_progress=False)
    shutil.copytree(tmp_path / "more" / "scene_00000", data / "extra")
    assert {scene: scene_shard(scene, data, 3) for scene in scenes} == shards
    shutil.rmtree(data / "extra")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run(PseudoLabel(data=data, cache_dir=tmp_path / "single", matcher="simulated")) == 0
        for k in (1, 2, 3):
            assert run(PseudoLabel(data=data, cache_dir=tmp_path / "shared", matcher="simulated", shard=f"{k}/3")) == 0
        # a shard run again finds all of its labels in the cache and writes nothing new
        before = {p: p.stat().st_mtime_ns for p in (tmp_path / "shared").rglob("*.npz")}
        assert run(PseudoLabel(data=data, cache_dir=tmp_path / "shared", matcher="simulated", shard="2/3")) == 0
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "shared").rglob("*.npz")} == before
    a, b = cache_content(tmp_path / "single"), cache_content(tmp_path / "shared")
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")
    for bad in ("3", "0/3", "4/3", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_a_hub_id_not_in_the_cache_is_downloaded_when_online_as_from_pretrained_does(tmp_path, monkeypatch):
    """No network here: the hub is stood in for by a loader whose cache is empty and whose download
    gives back a tiny model saved in this test; what is checked is that a hub id is looked up in the
    cache first, then downloaded, and not downloaded when the user said offline."""
    import transformers

    from reliev3r_ns.teachers import depth as depth_module

    folder = tiny_depth_anything(tmp_path / "hub-copy")
    calls = []

    def stand_in(real):
        class Loader:
            @staticmethod
            def from_pretrained(name, local_files_only=False):
                calls.append((real.__name__, name, local_files_only))
                if local_files_only:
                    raise OSError(f"{name} is not in the cache")
                return real.from_pretrained(folder)
        return Loader

    monkeypatch.setattr(transformers, "AutoImageProcessor", stand_in(transformers.AutoImageProcessor))
    monkeypatch.setattr(transformers, "AutoModelForDepthEstimation", stand_in(transformers.AutoModelForDepthEstimation))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    teacher = TransformersDepthTeacher(TransformersDepthTeacherConfig("someone/tiny-depth", device="cpu"))
    assert teacher.space == "disparity" and teacher.name == "transformers:someone/tiny-depth"
    assert calls == [("AutoImageProcessor", "someone/tiny-depth", True), ("AutoImageProcessor", "someone/tiny-depth", False),
                     ("AutoModelForDepthEstimation", "someone/tiny-depth", True), ("AutoModelForDepthEstimation", "someone/tiny-depth", False)]
    calls.clear()
    with pytest.raises(DepthTeacherError, match="downloads are off .*download=False.*huggingface-cli download someone/tiny-depth"):
        TransformersDepthTeacher(TransformersDepthTeacherConfig("someone/tiny-depth", device="cpu", download=False))
    assert calls == [("AutoImageProcessor", "someone/tiny-depth", True)]  # looked in the cache only
    assert depth_module.hub_offline() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert depth_module.hub_offline() is True
