"""The shipped checkpoint and ``reliev3r-demo``, the README's first command."""

import json
import subprocess
import sys

import pytest
import torch

from reliev3r_ns.checkpoints import BUNDLED_CHECKPOINT, bundled_record, describe_bundled
from reliev3r_ns.model import FFRM


def test_the_bundled_checkpoint_is_the_recorded_tiny_weak_network_and_runs():
    assert BUNDLED_CHECKPOINT.is_file(), "the shipped checkpoint is missing from this checkout"
    assert BUNDLED_CHECKPOINT.stat().st_size <= 20 * 2**20
    model = FFRM.from_checkpoint(BUNDLED_CHECKPOINT).eval()
    record = bundled_record()
    assert model.config.size == "tiny"
    extra = model.checkpoint_extra
    assert extra["variant"] == "weak" and extra["steps"] == 10000 and extra["seed"] == 3
    # the record beside it says how it was made and what it scores on held-out scenes
    assert any("reproduce_weak_vs_full.py" in line and "machine.seed=3" in line for line in record["reproduce"])
    assert 0 < record["held_out"]["pose_auc30"] < 1 and 0 < record["held_out"]["depth_tau"] < 1
    assert f"{record['held_out']['pose_auc30']:.2f}" in describe_bundled()
    images = torch.rand(1, 3, 3, 96, 128)
    with torch.no_grad():
        prediction = model(images)
    assert torch.isfinite(prediction.depth).all() and torch.isfinite(prediction.cam_to_world).all()


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path):
    from reliev3r_ns.cli.demo import Demo

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier reliev3r-demo output"):
        Demo(output_dir=tmp_path).main()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="scenes 0-7"):
        Demo(output_dir=tmp_path / "new", scene=8).main()  # refused before any slow work
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_the_demo_runs_the_main_job_end_to_end(tmp_path):
    """`reliev3r-demo` as the README's first command runs it: the default data (rendered into the cache
    when absent), a COLMAP-free dataset of a held-out scene, its evaluation, the pictures; then again
    into the same folder (an earlier demo output is replaced)."""
    out = tmp_path / "demo"
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "reliev3r_ns.cli.demo", "--output-dir", str(out)],
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    for path in ("dataset/transforms.json", "dataset/sparse_pc.ply", "dataset/preview.png", "eval.json", "eval.png", "scene_preview.png"):
        assert (out / path).is_file(), path
    frames = json.loads((out / "dataset" / "transforms.json").read_text())["frames"]
    assert len(frames) == 24
    metrics = summary["metrics"]
    # the recorded run (README): AUC@30 0.624, depth tau 0.674 on held-out scene 4; an untrained
    # network reads about 0.02 and 0.19 on these scenes
    assert metrics["pose_auc30"] > 0.3 and metrics["depth_tau"] > 0.4
    assert "pose AUC@30" in result.stdout and str(out / "eval.png") in result.stdout.replace("\n", "")
