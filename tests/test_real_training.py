"""Training on real capture collections: videos beside image folders, DL3DV's layout, and held-out
captures scored against a cached pycolmap reference (evaluation only)."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliev3r_ns.data.scene_io import load_scene
from reliev3r_ns.labels import LabelCache, Labeller, PseudoLabelConfig, discover_view_sets, open_view_set

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pi3_examples"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (the shared real frames are not in a user's clone)")


def write_video(path: Path, frames) -> Path:
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def test_dl3dv_scenes_read_their_downscaled_images_with_scaled_intrinsics_and_note_the_distortion(small_data, tmp_path):
    """DL3DV lists images/frame_*.png in transforms.json but ships images_4/; its cameras are OPENCV."""
    source = sorted((small_data / "train").glob("scene_*"))[0]
    original = load_scene(source)
    scene = tmp_path / "dl3dv" / "0a1b2c"
    (scene / "images_4").mkdir(parents=True)
    for path in original.image_paths:
        with Image.open(path) as image:
            image.resize((image.width // 2, image.height // 2), Image.BILINEAR).save(scene / "images_4" / path.name)
    meta = json.loads((source / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame.pop("depth_file_path", None)
        frame.update(k1=-0.01, k2=0.002, p1=0.0, p2=0.0)
    (scene / "transforms.json").write_text(json.dumps(meta))

    assert discover_view_sets(tmp_path / "dl3dv") == [scene]
    with pytest.warns(UserWarning, match=r"lens distortion .*k1.*-0.01.* left out"):
        view_set = open_view_set(scene)
    assert [p.parent.name for p in view_set.image_paths] == ["images_4"] * original.num_views
    assert (view_set.scene.width, view_set.scene.height) == (original.width // 2, original.height // 2)
    K, K0 = view_set.scene.intrinsics[0], original.intrinsics[0]
    assert np.allclose(K[0, 0], K0[0, 0] / 2) and np.allclose(K[0, 2], (K0[0, 2] + 0.5) / 2 - 0.5)
    assert np.allclose(view_set.scene.cam_to_world, original.cam_to_world)  # poses: for evaluation only
    with pytest.raises(Exception, match="lens distortion"):  # nerfstudio-dataset readers elsewhere still refuse it
        load_scene(scene)


def test_videos_beside_image_folders_are_scenes_whose_frames_are_sampled_once_into_the_cache(small_data, tmp_path, monkeypatch):
    source = load_scene(sorted((small_data / "train").glob("scene_*"))[0])
    data = tmp_path / "captures"
    (data / "walk").mkdir(parents=True)
    for path in source.image_paths[:4]:
        shutil.copy(path, data / "walk" / path.name)
    (data / "phone").mkdir()
    video = write_video(data / "phone" / "clip.mp4", source.load_images())
    (data / "notes.txt").write_text("not a scene")
    assert discover_view_sets(data) == [data / "phone" / "clip.mp4", data / "walk"]

    cache = LabelCache(tmp_path / "cache")
    labeller = Labeller(PseudoLabelConfig(matcher="sift", video_frames=5), cache)
    view_set = labeller.open_view_set(video)
    assert view_set.num_views == 5 and all(p.is_relative_to(cache.root / "frames") for p in view_set.image_paths)
    assert view_set.load_image(0).shape == (source.height, source.width, 3)
    assert not [p for p in (cache.root / "frames").iterdir() if p.name.startswith(".")]  # no half-written folder left

    import reliev3r_ns.process.video as video_module

    monkeypatch.setattr(video_module, "extract_frames", lambda *a, **k: pytest.fail("frames were extracted again"))
    assert labeller.open_view_set(video).image_paths == view_set.image_paths
    with pytest.raises(Exception, match="clip.mp4: a video"):
        open_view_set(video)  # outside a training / labelling run there is no frame cache to put them in


@needs_shared
@pytest.mark.slow
def test_ns_train_on_real_videos_and_folders_shows_held_out_auc_against_a_cached_pycolmap_reference(small_data, tmp_path, monkeypatch):
    """The issue's 'done means': a folder holding a real video and a real image folder, SIFT matches and a
    (tiny, random) Depth Anything given by path; held out, the valley frames (pycolmap registers all 11)
    and the house frames (pycolmap registers none: reported and not scored). AUC@30 reaches tensorboard."""
    from test_labels import tiny_depth_anything
    from training_helpers import make_trainer, record_losses

    from reliev3r_ns.teachers.depth import TransformersDepthTeacherConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, held_out = tmp_path / "captures", tmp_path / "held_out"
    data.mkdir()
    shutil.copy(SHARED / "videos" / "valley.mp4", data / "valley.mp4")
    shutil.copytree(SHARED / "house", data / "house")
    held_out.mkdir()
    for scene in ("valley", "house"):
        shutil.copytree(SHARED / scene, held_out / scene)
    labels = PseudoLabelConfig(depth_teacher="transformers", matcher="sift", video_frames=6,
                               transformers=TransformersDepthTeacherConfig(model=str(tiny_depth_anything(tmp_path / "teacher")), device="cpu"))
    cache = tmp_path / "labels"
    settings = dict(clips_per_batch=1, max_views=3, eval_views=4, image_size=(64, 112), data=data, eval_data=held_out,
                    labels=labels, label_cache=cache, model=None)
    with pytest.warns(UserWarning, match=r"house: pycolmap registered 0 of 8 views; this held-out capture has no reference"):
        trainer = make_trainer(small_data, tmp_path, 4, **settings)
    assert [s.name for s in trainer.pipeline.datamanager.train_dataset.scenes] == ["house", "valley.mp4"]
    assert [s.name for s in trainer.pipeline.datamanager.eval_dataset.scenes] == ["valley"]
    assert len(list((cache / "references").glob("*.npz"))) == 2  # valley's poses, and house's empty result
    trainer.config.steps_per_eval_batch = 2
    losses = record_losses(trainer)
    trainer.train()
    assert len(losses) == 4 and all(math.isfinite(l) for l in losses)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trainer.base_dir)).Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("Eval") and t.endswith("pose_auc30")]
    assert tags, events.Tags()["scalars"]
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars(tags[0]))

    # The references are cached: a second set-up runs no SfM.
    import reliev3r_ns.eval.evaluate as evaluate

    monkeypatch.setattr(evaluate, "run_colmap_sfm", lambda *a, **k: pytest.fail("pycolmap ran again"))
    with pytest.warns(UserWarning, match="house: pycolmap registered 0"):
        again = make_trainer(small_data, tmp_path / "again", 1, **settings)
    assert [s.name for s in again.pipeline.datamanager.eval_dataset.scenes] == ["valley"]


def test_bench_labels_prints_each_learned_teachers_throughput():
    """The labelling-throughput script on tiny scenes: every teacher it times gets its figure."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_labels.py"
    result = subprocess.run([sys.executable, str(script), "--size", "128", "96", "--scenes", "1", "--views", "3", "--pairs", "1",
                             "--teachers", "depth-anything-v2-small", "disk-lightglue", "--device", "cpu"],
                            capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    for label in ("SIFT features:", "depth: Depth Anything V2 Small shape, random weights:", "disk-lightglue (random weights): features:",
                  "disk-lightglue (random weights): matching + MAGSAC:"):
        line = next((l for l in result.stdout.splitlines() if label in l), None)
        assert line is not None and float(line.split(":")[-1].split()[0]) > 0, result.stdout


FAKE_HUBCONF = '''
"""A stand-in CoTracker checkout for tests: the frames are windows sliding right over one texture by
SHIFT input pixels per frame, so a point at x in frame t is at x - (k - t) * SHIFT in frame k."""
import json
from pathlib import Path

import torch

SHIFT = json.loads((Path(__file__).parent / "shift.json").read_text())["shift"]


class SlidingWindowTracker(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))  # something for the weights fingerprint

    def forward(self, video, queries=None, backward_tracking=False):  # video (B, T, 3, H, W), queries (B, N, 3) = (t, x, y)
        B, T, _, H, W = video.shape
        k = torch.arange(T, dtype=torch.float32)[None, :, None]
        x = queries[:, None, :, 1] - (k - queries[:, None, :, 0]) * SHIFT
        y = queries[:, None, :, 2].expand_as(x)
        tracks = torch.stack([x, y], -1)  # (B, T, N, 2)
        return tracks, (x >= 0) & (x <= W - 1)


def cotracker3_offline(pretrained=True, **kwargs):
    return SlidingWindowTracker()
'''


def test_cotracker_through_torch_hub_tracks_a_view_set_into_verified_cached_matches(tmp_path, monkeypatch):
    """CoTracker loaded as its users load it (torch.hub), here from a local checkout holding a stand-in
    tracker whose tracks are known; frames resized for it and the tracks mapped back to the images' pixels."""
    import torch

    from reliev3r_ns.teachers.cotracker import CoTrackerMatcher, CoTrackerMatcherConfig, TrackerError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    with pytest.raises(TrackerError, match=r"facebookresearch/co-tracker is not in torch.hub's cache.*HF_HUB_OFFLINE.*--cotracker.repo"):
        CoTrackerMatcher(CoTrackerMatcherConfig())
    repo = tmp_path / "co-tracker"
    repo.mkdir()
    (repo / "hubconf.py").write_text(FAKE_HUBCONF)
    step, scale = 8, 0.5  # 8 image pixels per frame; the tracker sees the frames at half size
    (repo / "shift.json").write_text(json.dumps({"shift": step * scale}))
    texture = np.random.default_rng(0).integers(0, 255, (96, 160 + 5 * step, 3), dtype=np.uint8)
    folder = tmp_path / "slide"
    folder.mkdir()
    for k in range(6):
        Image.fromarray(texture[:, k * step : k * step + 160]).save(folder / f"frame_{k:02d}.png")

    from test_labels import tiny_depth_anything

    from reliev3r_ns.teachers.depth import TransformersDepthTeacherConfig

    teacher = TransformersDepthTeacherConfig(model=str(tiny_depth_anything(tmp_path / "teacher")), device="cpu")
    config = PseudoLabelConfig(depth_teacher="transformers", transformers=teacher, matcher="cotracker", cotracker=CoTrackerMatcherConfig(repo=str(repo), max_side=80, grid_size=10, query_every=3,
                                                                                    device="cpu", min_matches=8))
    labeller = Labeller(config, LabelCache(tmp_path / "cache"))
    labels = labeller.label(open_view_set(folder))
    assert labels.num_matches > 0
    for (i, j), (uv_i, uv_j, _) in labels.matches.items():
        if len(uv_i):
            assert np.allclose(uv_j[:, 0], uv_i[:, 0] - (j - i) * step, atol=1e-3) and np.allclose(uv_j[:, 1], uv_i[:, 1], atol=1e-3)
    assert len(labels.matches[(0, 1)][0]) >= 50  # neighbours share most of the grid
    monkeypatch.setattr(CoTrackerMatcher, "track", lambda *a: pytest.fail("tracked again"))
    again = Labeller(config, LabelCache(tmp_path / "cache")).label(open_view_set(folder))
    assert again.num_matches == labels.num_matches
