"""The reproduction and benchmark scripts' --quick modes run end to end (CI-sized; figures are not asserted
beyond being well-formed: the claim itself needs the full runs recorded in docs/)."""

import importlib.util
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TOOLS = Path(__file__).resolve().parents[1] / "docs" / "tools"  # the experiments' plots and diagnoses


def load(name):
    path = SCRIPTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path if path.is_file() else TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reproduce_weak_vs_full_quick(capsys, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"  # where the script's temporary folders go, to see that none stays behind
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    results = load("reproduce_weak_vs_full").main(["--quick", "--train-clips", "2", "--output", str(tmp_path / "r.json")])
    assert not list(scratch.glob("reliev3r-*")), "the quick data or a run's folder was left in the temporary folder"
    assert [r["variant"] for r in results] == ["weak", "full"]
    for r in results:
        for key in ("pointmap_rel", "pointmap_tau", "ate_normalised", "pose_auc30", "depth_abs_rel", "depth_tau"):
            assert math.isfinite(r["metrics"][key]), (r["variant"], key)
        assert math.isfinite(r["training_clips"]["rotation_error_deg"])
        assert r["metrics"]["depth_to_baseline_vs_gt"] > 0
        assert 0 < r["step_seconds"] < r["seconds"] / 10  # quick runs 30 steps
        # the loss terms, step by step at this budget (windows of iterations / 100 steps)
        terms = ("loss_depth", "loss_reprojection") if r["variant"] == "weak" else ("loss_points", "loss_camera")
        assert [c["step"] for c in r["loss_curve"]] == list(range(1, 31))
        assert all(math.isfinite(c[t]) for c in r["loss_curve"] for t in (*terms, "loss_total"))
        # per trajectory kind of the synthetic scenes: every held-out clip counted once, under its kind
        kinds = r["by_trajectory"]["metrics"]
        assert set(kinds) <= {"orbit", "forward", "lookat"} and sum(m["clips"] for m in kinds.values()) == 2
        assert sum(m["clips"] for m in r["by_trajectory"]["training_clips"].values()) == 2
        assert r["metrics"]["identity_rotation_error_deg"] >= 0
    assert results[0]["by_trajectory"]["initial"] and results[1]["by_trajectory"]["initial"] is None
    out = capsys.readouterr().out
    assert "| weak |" in out and "| full |" in out and "weak / full" in out
    assert "| weak | training |" in out and "| full | held-out |" in out
    assert "by trajectory kind" in out and "| (initialisation) | held-out |" in out
    assert (tmp_path / "r.json").is_file()


def _rotation(axis, degrees):
    # Rodrigues in numpy: a reference independent of the geometry module.
    import numpy as np

    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def test_one_rotation_error_is_the_mean_relative_angle_of_the_clip():
    import numpy as np

    script = load("reproduce_weak_vs_full")
    # three views turned 0, 10 and 30 degrees about one axis: pairs differ by 10, 30 and 20 degrees
    poses = np.tile(np.eye(4), (3, 1, 1))
    for v, angle in enumerate((0, 10, 30)):
        poses[v, :3, :3] = _rotation([0, 1, 0], angle)
        poses[v, :3, 3] = [v, 0.5 * v, 0]
    assert script.one_rotation_error_deg(torch.tensor(poses)) == pytest.approx(20.0, abs=1e-4)
    # random rotations against arccos((trace(R_i^T R_j) - 1) / 2)
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (5, 1, 1))
    for v in range(5):
        poses[v, :3, :3] = _rotation(rng.normal(size=3), rng.uniform(0, 170))
    expected = np.mean([np.degrees(np.arccos(np.clip((np.trace(poses[i, :3, :3].T @ poses[j, :3, :3]) - 1) / 2, -1, 1)))
                        for i in range(5) for j in range(i + 1, 5)])
    assert script.one_rotation_error_deg(torch.tensor(poses)) == pytest.approx(expected, abs=1e-3)


def test_summarise_by_kind_groups_clips_and_needs_every_kind():
    script = load("reproduce_weak_vs_full")
    rows = [{"pose_auc30": a, "depth_to_baseline_vs_gt": d} for a, d in ((0.2, 1.0), (0.4, 3.0), (0.9, 100.0), (0.6, 2.0))]
    kinds = ["orbit", "forward", "orbit", "orbit"]
    by_kind = script.summarise_by_kind(rows, kinds)
    assert list(by_kind) == ["forward", "orbit"]
    assert by_kind["forward"] == {"clips": 1, "pose_auc30": pytest.approx(0.4), "depth_to_baseline_vs_gt": 3.0}
    assert by_kind["orbit"]["clips"] == 3 and by_kind["orbit"]["pose_auc30"] == pytest.approx(1.7 / 3)
    assert by_kind["orbit"]["depth_to_baseline_vs_gt"] == 2.0  # the median, like the overall summary
    assert script.summarise_by_kind(rows, ["orbit", None, "orbit", "orbit"]) == {}  # a scene without scene.json


def test_loss_curve_averages_windows_and_keeps_a_short_last_one():
    # 7 steps in windows of 7 // 3 = 2: windows end at steps 2, 4, 6 and a one-step window at 7.
    script = load("reproduce_weak_vs_full")

    class Trainer:
        def train_iteration(self, step):
            # step 2 has no matches (median error NaN); step 4's reprojection loss is NaN (a failure)
            metrics = {"loss_depth": torch.tensor(float(step)), "loss_total": torch.tensor(2.0 * step),
                       "loss_reprojection": torch.tensor(float("nan") if step == 4 else 1.0),
                       "reprojection_median_error": torch.tensor(float("nan") if step == 2 else 1.0 + step % 2),
                       "depth_tau": torch.tensor(9.0)}  # not a curve key
            if step != 2:  # the radial residual's median error is absent on a step without matches
                metrics["reprojection_median_radial_error"] = torch.tensor(0.01 * step)
            return metrics["loss_total"], {}, metrics

    trainer = Trainer()
    curve = script.record_loss_curve(trainer, iterations=7, points=3)
    for step in range(7):
        trainer.train_iteration(step)
    assert [c["step"] for c in curve] == [2, 4, 6, 7]
    assert [c["loss_depth"] for c in curve] == pytest.approx([0.5, 2.5, 4.5, 6.0])
    assert [c["loss_total"] for c in curve] == pytest.approx([1.0, 5.0, 9.0, 12.0])
    # the window of steps 2 and 3 averages the median error of step 3 alone; steps 4 and 5 keep their NaN loss
    assert [c["reprojection_median_error"] for c in curve] == pytest.approx([1.5, 2.0, 1.5, 1.0])
    assert [c["reprojection_median_radial_error"] for c in curve] == pytest.approx([0.005, 0.03, 0.045, 0.06])
    assert [math.isnan(c["loss_reprojection"]) for c in curve] == [False, False, True, False]
    assert all("depth_tau" not in c for c in curve)


def test_plot_loss_curves_draws_each_term_of_each_training(tmp_path, capsys):
    plot = load("plot_loss_curves")
    space = "pipeline.datamanager.labels.simulated.space=depth"

    def row(variant, terms, seed=4, overrides=(), curve=True):
        points = [{"step": s, "loss_total": 1.0 / s, **{t: 0.5 / s for t in terms}} for s in (10, 20, 30)]
        return {"variant": variant, "settings": {"seed": seed, "set": [space, f"machine.seed={seed}", *overrides]},
                "loss_curve": points if curve else None}

    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([row("weak", ["loss_depth", "loss_reprojection", "reprojection_median_error"]),
                                row("weak", ["loss_depth", "loss_reprojection", "reprojection_median_radial_error"],
                                    overrides=["pipeline.model.loss.reprojection_weight=1.0"]),
                                row("full", ["loss_points", "loss_camera"]), row("weak", [], seed=3, curve=False)]))
    output = tmp_path / "curves.png"
    curves = plot.main([str(runs), "--output", str(output)])
    assert [name for name, _ in curves] == ["weak, seed 4, space=depth", "weak, seed 4, space=depth, reprojection_weight=1.0",
                                            "full, seed 4, space=depth"]
    assert plot.terms_of(curves) == ["loss_total", "loss_camera", "loss_depth", "loss_points", "loss_reprojection",
                                     "reprojection_median_error", "reprojection_median_radial_error"]
    captured = capsys.readouterr()
    assert "weak, seed 3" in captured.err and "no loss_curve" in captured.err
    assert "3 windows to step 30" in captured.out and output.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no training with a loss_curve"):
        old = tmp_path / "old.json"
        old.write_text(json.dumps([row("weak", [], curve=False)]))
        plot.main([str(old), "--output", str(output)])


def test_plot_run_history_joins_a_trainings_kept_checkpoints_by_step(tmp_path, capsys):
    plot = load("plot_run_history")
    trained = ["pipeline.datamanager.labels.simulated.space=depth", "machine.seed=4", "pipeline.model.loss.reprojection.robust=l1"]

    def scores(tau):
        return {"pose_auc30": tau / 2, "depth_tau": tau, "depth_affine_tau": tau + 0.1}

    def evaluated(steps, tau, initial=None, trained_set=trained):
        # what --evaluate DIR/step_N --train-clips N writes for one kept checkpoint
        return [{"variant": "weak", "metrics": scores(tau), "training_clips": scores(tau + 0.05), "initial": initial,
                 "settings": {"checkpoint": f"ckpt/step_{steps:06d}/weak.pt", "iterations": steps, "trained_from_seed": 4,
                              "trained_set": trained_set}}]

    files = {"s2000.json": evaluated(2000, 0.4, initial=scores(0.2)), "s4000.json": evaluated(4000, 0.3, initial=scores(0.2)),
             # the training's own row: its last step, held-out only (it ran with --train-clips 0)
             "run.json": [{"variant": "weak", "metrics": scores(0.25), "training_clips": None, "initial": scores(0.2),
                           "settings": {"seed": 4, "iterations": 6000, "set": trained}}],
             "other.json": evaluated(2000, 0.5, trained_set=trained[:2]),
             "old.json": [{"variant": "weak", "metrics": scores(0.1), "settings": {"checkpoint": "old/weak.pt", "trained_set": None}}]}
    for name, rows in files.items():
        (tmp_path / name).write_text(json.dumps(rows))
    output = tmp_path / "history.png"
    rows = plot.main([str(tmp_path / name) for name in files] + ["--output", str(output)])
    l1, cauchy = "weak, seed 4, space=depth, robust=l1", "weak, seed 4, space=depth"
    assert [(r["run"], r["step"]) for r in rows] == [(l1, 0), (l1, 2000), (l1, 4000), (l1, 6000), (cauchy, 2000)]
    assert [r["metrics.depth_tau"] for r in rows[:4]] == [0.2, 0.4, 0.3, 0.25]
    assert rows[1]["training_clips.depth_affine_tau"] == pytest.approx(0.55)
    assert math.isnan(rows[0]["training_clips.depth_tau"]) and math.isnan(rows[3]["training_clips.pose_auc30"])
    captured = capsys.readouterr()
    assert "old.json" in captured.err and "no step count" in captured.err
    assert f"| {l1} | 4000 | 0.150 | 0.300 | 0.400 |" in captured.out and output.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="at step 2000 is already in another file"):
        plot.main([str(tmp_path / "s2000.json"), str(tmp_path / "s2000.json"), "--output", str(output)])
    # The mean over the last kept steps: 2000 / 4000 / 6000 of the l1 training (step 0 never counts)
    history = plot.collect([tmp_path / n for n in ("s2000.json", "s4000.json", "run.json")])[0]
    [mean] = plot.mean_last(history, 3)
    assert mean["steps"] == [2000, 4000, 6000] and mean["metrics.depth_tau"] == pytest.approx(0.95 / 3)
    assert mean["metrics.depth_tau.sd"] == pytest.approx(float(np.std([0.4, 0.3, 0.25], ddof=1)))
    assert plot.mean_last(history, 2)[0]["metrics.pose_auc30"] == pytest.approx(0.1375)
    assert math.isnan(mean["training_clips.depth_tau"])  # the training's own row scored no training clips
    capsys.readouterr()
    plot.main([str(tmp_path / n) for n in ("s2000.json", "s4000.json", "run.json")] + ["--mean-last", "2", "--output", str(output)])
    assert f"| {l1} | 4000, 6000 | 0.138 (0.018) | 0.275 (0.035) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="fewer than --mean-last 4"):
        plot.mean_last(history, 4)


def test_plot_run_history_reads_weak_over_full_per_seed_and_over_seeds(tmp_path, capsys):
    plot = load("plot_run_history")
    space = "pipeline.datamanager.labels.simulated.space=depth"

    def kept(variant, seed, auc, tau, extra=(), schedule=10000):
        # two kept checkpoints' scores of one training, as --evaluate writes them
        return [{"variant": variant, "metrics": {"pose_auc30": a, "depth_tau": t}, "training_clips": None,
                 "settings": {"checkpoint": f"c/step_{step:06d}/{variant}.pt", "iterations": step, "schedule_steps": schedule,
                              "trained_from_seed": seed, "trained_set": [space, f"machine.seed={seed}", *extra]}}
                for step, a, t in ((9000, auc[0], tau[0]), (10000, auc[1], tau[1]))]

    weight = ["pipeline.model.loss.reprojection_weight=1.0"]
    files = {"full3.json": kept("full", 3, (0.2, 0.3), (0.5, 0.7)), "weak3.json": kept("weak", 3, (0.25, 0.25), (0.6, 0.6), weight),
             "full4.json": kept("full", 4, (0.4, 0.4), (0.8, 0.8)), "weak4.json": kept("weak", 4, (0.1, 0.3), (0.4, 0.4), weight),
             "base4.json": kept("weak", 4, (0.1, 0.1), (0.2, 0.2)),  # another weak setting at seed 4: its own mean
             "weak5.json": kept("weak", 5, (0.1, 0.1), (0.2, 0.2), weight)}  # no sibling: left out of the ratios
    for name, rows in files.items():
        (tmp_path / name).write_text(json.dumps(rows))
    history, _, identities = plot.collect([tmp_path / name for name in files])
    pairs, summary = plot.sibling_ratios(plot.mean_last(history, 2), identities)
    by_weak = {(p["seed"], p["weak"]): p for p in pairs}
    weighted, base = "weak, seed {}, space=depth, reprojection_weight=1.0", "weak, seed 4, space=depth"
    assert set(by_weak) == {(3, weighted.format(3)), (4, weighted.format(4)), (4, base)}
    assert by_weak[3, weighted.format(3)]["ratio_pose_auc30"] == pytest.approx(0.25 / 0.25)
    assert by_weak[3, weighted.format(3)]["ratio_depth_tau"] == pytest.approx(0.6 / 0.6)
    assert by_weak[4, weighted.format(4)]["ratio_pose_auc30"] == pytest.approx(0.2 / 0.4)
    assert by_weak[4, base]["full"] == "full, seed 4, space=depth" and by_weak[4, base]["ratio_depth_tau"] == pytest.approx(0.25)
    means = {r["setting"]: r for r in summary}
    assert means["weak, space=depth, reprojection_weight=1.0"]["seeds"] == [3, 4]
    assert means["weak, space=depth, reprojection_weight=1.0"]["ratio_pose_auc30"] == pytest.approx(0.75)
    assert means["weak, space=depth, reprojection_weight=1.0"]["sd_ratio_depth_tau"] == pytest.approx(float(np.std([1.0, 0.5], ddof=1)))
    assert means["weak, space=depth"]["seeds"] == [4] and math.isnan(means["weak, space=depth"]["sd_ratio_pose_auc30"])
    plot.main([str(tmp_path / name) for name in files] + ["--mean-last", "2", "--output", str(tmp_path / "h.png")])
    printed = capsys.readouterr().out
    assert "| weak, space=depth, reprojection_weight=1.0 | 3, 4 | 0.75 (0.35) | 0.75 (0.35) |" in printed
    assert "| weak, space=depth | 4 | 0.25 | 0.25 |" in printed  # one seed: no sd
    (tmp_path / "full3b.json").write_text(json.dumps(kept("full", 3, (0.2, 0.2), (0.5, 0.5), ["pipeline.model.loss.depth_weight=2.0"])))
    history, _, identities = plot.collect([tmp_path / n for n in ("full3.json", "full3b.json", "weak3.json")])
    with pytest.raises(SystemExit, match="two full trainings of seed 3"):
        plot.sibling_ratios(plot.mean_last(history, 2), identities)
    # The same seed trained on a twice as long schedule: its checkpoints at 9000 / 10000 are another
    # training's, each weak training is read against the sibling of its own schedule, and the settings
    # average apart.
    (tmp_path / "full3_20k.json").write_text(json.dumps(kept("full", 3, (0.4, 0.4), (0.8, 0.8), schedule=20000)))
    (tmp_path / "weak3_20k.json").write_text(json.dumps(kept("weak", 3, (0.2, 0.2), (0.4, 0.4), weight, schedule=20000)))
    history, _, identities = plot.collect([tmp_path / n for n in ("full3.json", "weak3.json", "full3_20k.json", "weak3_20k.json")])
    pairs, summary = plot.sibling_ratios(plot.mean_last(history, 2), identities)
    long = weighted.format(3) + ", 20000-step schedule"
    assert {p["weak"]: p["full"] for p in pairs} == {weighted.format(3) + ", 10000-step schedule": "full, seed 3, space=depth, 10000-step schedule",
                                                      long: "full, seed 3, space=depth, 20000-step schedule"}
    assert {p["weak"]: p["ratio_pose_auc30"] for p in pairs}[long] == pytest.approx(0.5)
    assert sorted(r["setting"] for r in summary) == ["weak, space=depth, reprojection_weight=1.0, 10000-step schedule",
                                                     "weak, space=depth, reprojection_weight=1.0, 20000-step schedule"]


def test_depth_to_baseline_known_answer():
    # Two cameras 2 m apart (each 1 m from their centroid) looking at a wall 3 m away: 3 / 1.
    script = load("reproduce_weak_vs_full")
    cam_to_world = torch.eye(4).repeat(2, 1, 1)
    cam_to_world[0, 0, 3], cam_to_world[1, 0, 3] = -1.0, 1.0
    depth = torch.full((2, 4, 5), 3.0)
    assert script.depth_to_baseline(depth, cam_to_world) == pytest.approx(3.0)
    # Scale-free: the same scene in centimetres has the same ratio; a prediction at infinity does not.
    in_centimetres = cam_to_world.clone()
    in_centimetres[:, :3, 3] *= 100
    assert script.depth_to_baseline(depth * 100, in_centimetres) == pytest.approx(3.0)
    assert script.depth_to_baseline(depth * 1e6, cam_to_world) == pytest.approx(3e6)
    assert script.depth_to_baseline(depth, torch.eye(4).repeat(2, 1, 1)) == math.inf


def test_reproduce_variants_start_from_the_same_weights(tmp_path):
    # "Same model" means the same initial weights too: the script seeds before each Trainer is built,
    # as ns-train does, so weak and full (and reruns) start alike.
    import argparse

    from reliev3r_ns.data.synthetic import SyntheticSceneConfig
    from reliev3r_ns.data.synthetic_dataset import generate_dataset

    script = load("reproduce_weak_vs_full")
    config = SyntheticSceneConfig(width=64, height=48, num_views=4, supersample=1, texture_size=64)
    generate_dataset(tmp_path / "train", 2, seed=1, config=config, show_progress=False)
    generate_dataset(tmp_path / "eval", 1, seed=2, config=config, show_progress=False)
    args = argparse.Namespace(iterations=1, clips=1, min_views=2, max_views=4, model_size="tiny", lr=1e-3, set=[])
    weights = []
    for variant in ("weak", "full", "weak"):
        trainer_config = script.make_config(variant, tmp_path / "train", tmp_path / "eval", tmp_path / variant / "out", tmp_path / "labels", args)
        trainer = script.setup_trainer(trainer_config)
        weights.append({k: v.clone() for k, v in trainer.pipeline.model.ffrm.state_dict().items()})
        script.release_event_writers()
        torch.manual_seed(1234)  # whatever ran before must not matter
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        assert all(torch.equal(other[k], weights[0][k]) for k in weights[0])


def test_reproduce_set_overrides_config_fields():
    import copy

    from reliev3r_ns.method_configs.reliev3r import reliev3r_method

    script = load("reproduce_weak_vs_full")
    config = copy.deepcopy(reliev3r_method.config)
    script.apply_overrides(config, ["pipeline.model.loss.reprojection.robust=l1", "pipeline.model.loss.reprojection.scale_degrees=10.0",
                                    "pipeline.model.reference=first"])
    reprojection = config.pipeline.model.loss.reprojection
    assert (reprojection.robust, reprojection.scale_degrees, config.pipeline.model.reference) == ("l1", 10.0, "first")
    for bad, message in (("pipeline.model.loss.reprojection.robustness=l1", "has no field 'robustness'"),
                         ("pipeline.modle.bf16=True", "no 'modle'"), ("pipeline.model.bf16", "expected KEY=VALUE")):
        with pytest.raises(SystemExit, match=message):
            script.apply_overrides(config, [bad])


def test_reproduce_keep_every_needs_a_training_that_keeps_checkpoints(tmp_path, capsys):
    script = load("reproduce_weak_vs_full")
    for argv, message in ((["--keep-every", "10"], "needs --checkpoints"),
                          (["--keep-every", "10", "--checkpoints", str(tmp_path), "--evaluate", str(tmp_path)], "no --evaluate"),
                          (["--keep-every", "30", "--checkpoints", str(tmp_path)], "between 1 and the 30 iterations"),
                          (["--keep-every", "0", "--checkpoints", str(tmp_path)], "between 1 and the 30 iterations")):
        with pytest.raises(SystemExit):
            script.main(["--quick", *argv])
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before any data was generated or checkpoint written


@pytest.mark.slow
def test_reproduce_weak_vs_full_parallel_jobs_keep_checkpoints(tmp_path, capsys, monkeypatch):
    # A subprocess, as people run it: with --jobs the variants train in spawned processes that import the script.
    from reliev3r_ns.model.ffrm import FFRM

    result = subprocess.run([sys.executable, str(SCRIPTS / "reproduce_weak_vs_full.py"), "--quick", "--jobs", "2",
                             "--checkpoints", str(tmp_path / "ckpt"), "--keep-every", "10", "--output", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert [r["variant"] for r in results] == ["weak", "full"]
    assert results[0]["initial"] is not None and results[1]["initial"] is None
    assert results[0]["settings"]["teacher_space"] == "disparity"  # the resolved space, recorded for plot_weak_vs_full
    # which scenes: --quick generates 4 training scenes from seed 1 and 2 held-out ones from seed 2
    datasets = results[0]["settings"]["datasets"]
    assert (datasets["train"]["seed"], datasets["train"]["num_scenes"], datasets["eval"]["seed"], datasets["eval"]["num_scenes"]) == (1, 4, 2, 2)
    assert datasets["eval"]["generator"] == "reliev3r-synthetic" and datasets["eval"]["config"]["width"] == 128
    machine = results[0]["settings"]["machine"]  # rows from different machines are not bit-comparable
    assert machine["cpu"] and machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and machine["threads"] >= 1
    assert "2 variants at a time" in result.stdout and "| weak |" in result.stdout
    for variant in ("weak", "full"):
        model = FFRM.from_checkpoint(tmp_path / "ckpt" / f"{variant}.pt")
        assert model.num_parameters() > 0
        # reliev3r-process-data runs the network at the size it trained at (it did not: 518 pixels)
        assert model.checkpoint_extra["image_size"] == [96, 128]
        # --keep-every 10 of 30 steps: the run's history at 10 and 20 steps; the end stays VARIANT.pt.
        kept = sorted(p.parent.name for p in (tmp_path / "ckpt").glob(f"step_*/{variant}.pt"))
        assert kept == ["step_000010", "step_000020"]
        early = FFRM.from_checkpoint(tmp_path / "ckpt" / "step_000010" / f"{variant}.pt")
        assert early.checkpoint_extra["steps"] == 10 and model.checkpoint_extra["steps"] == 30
        assert early.checkpoint_extra["variant"] == variant and early.checkpoint_extra["image_size"] == [96, 128]
        assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(), model.state_dict().values()))
    # --evaluate scores the kept checkpoints without training: on the same (regenerated) quick data they
    # give the run's own held-out figures back (up to float noise from another thread count).
    rescored = load("reproduce_weak_vs_full").main(["--quick", "--evaluate", str(tmp_path / "ckpt"), "--train-clips", "0"])
    assert [r["variant"] for r in rescored] == ["weak", "full"]
    for trained, again in zip(results, rescored):
        assert again["seconds"] is None and again["settings"]["iterations"] == 30
        assert again["metrics"]["depth_abs_rel"] == pytest.approx(trained["metrics"]["depth_abs_rel"], rel=1e-3)
        assert again["metrics"]["pose_auc30"] == pytest.approx(trained["metrics"]["pose_auc30"], abs=0.05)
        assert again["settings"]["trained_from_seed"] == 42
        # the training's overrides, teacher space and machine come with the checkpoint
        assert again["settings"]["trained_set"] == trained["settings"]["set"] == []
        assert again["settings"]["trained_teacher_space"] == trained["settings"]["teacher_space"]
        assert again["settings"]["trained_on"] == trained["settings"]["machine"]
        assert again["settings"]["machine"]["cpu_capability"] == machine["cpu_capability"]
        assert again["settings"]["datasets"] == datasets  # regenerated, the same scenes
    # ... and the first variant's initialisation row is the untrained network the run started from.
    assert rescored[1]["initial"] is None and rescored[0]["settings"]["initialisation_seed"] == 42
    assert rescored[0]["initial"]["depth_abs_rel"] == pytest.approx(results[0]["initial"]["depth_abs_rel"], rel=1e-3)
    assert rescored[0]["initial"]["depth_abs_rel"] != pytest.approx(rescored[0]["metrics"]["depth_abs_rel"], rel=1e-3)
    # Another seed's untrained network is still scored, but the mismatch is said out loud.
    other = load("reproduce_weak_vs_full").main(["--quick", "--evaluate", str(tmp_path / "ckpt"), "--variants", "weak",
                                                 "--train-clips", "0", "--set", "machine.seed=7"])
    assert "trained from machine.seed=42; the initialisation row is seed 7's" in capsys.readouterr().err
    assert other[0]["settings"]["initialisation_seed"] == 7
    # (an untrained network's depth barely depends on its seed; its camera directions do)
    assert other[0]["initial"]["translation_error_deg"] != pytest.approx(results[0]["initial"]["translation_error_deg"], abs=0.1)
    assert other[0]["metrics"]["depth_abs_rel"] == pytest.approx(rescored[0]["metrics"]["depth_abs_rel"], rel=1e-6)
    # A run's history in one call: one row per folder, the untrained network scored once (first row).
    capsys.readouterr()
    history = load("reproduce_weak_vs_full").main(["--quick", "--evaluate", str(tmp_path / "ckpt" / "step_000010"),
                                                   str(tmp_path / "ckpt" / "step_000020"), str(tmp_path / "ckpt"), "--variants", "weak",
                                                   "--train-clips", "0", "--output", str(tmp_path / "history.json")])
    assert [(r["variant"], r["settings"]["iterations"]) for r in history] == [("weak", 10), ("weak", 20), ("weak", 30)]
    assert history[0]["initial"] is not None and history[1]["initial"] is None and history[2]["initial"] is None
    assert history[0]["initial"]["depth_abs_rel"] == pytest.approx(rescored[0]["initial"]["depth_abs_rel"], rel=1e-6)
    assert history[2]["metrics"]["depth_abs_rel"] == pytest.approx(rescored[0]["metrics"]["depth_abs_rel"], rel=1e-6)
    assert history[0]["metrics"]["depth_abs_rel"] != pytest.approx(history[2]["metrics"]["depth_abs_rel"], rel=1e-3)
    assert "| weak (step_000010, 10 steps) |" in capsys.readouterr().out
    steps = load("plot_run_history").collect([tmp_path / "history.json"])[0]
    assert [sorted(by_step) for by_step in steps.values()] == [[0, 10, 20, 30]]
    with pytest.raises(FileNotFoundError, match="nothing/weak.pt: no FFRM checkpoint"):
        load("reproduce_weak_vs_full").main(["--quick", "--evaluate", str(tmp_path / "nothing"), "--variants", "weak", "--train-clips", "0"])
    # A scoring that fails after the Trainer is built leaves no nerfstudio event writer behind (they are
    # module-level; later Trainers in the process would write into the run's deleted folder).
    from nerfstudio.utils import writer

    script = load("reproduce_weak_vs_full")

    def fail(*args, **kwargs):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(script, "evaluate_clips", fail)
    with pytest.raises(RuntimeError, match="scoring failed"):
        script.main(["--quick", "--evaluate", str(tmp_path / "ckpt"), "--variants", "weak", "--train-clips", "0"])
    assert writer.EVENT_WRITERS == []
    # An unreadable checkpoint fails before anything is scored, wherever it is among the folders and
    # variants (here the second variant's, which used to be read only after the first's minutes of scoring)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "weak.pt").write_text("not a checkpoint")
    (tmp_path / "half").mkdir()
    shutil.copy(tmp_path / "ckpt" / "weak.pt", tmp_path / "half" / "weak.pt")
    (tmp_path / "half" / "full.pt").write_text("not a checkpoint")
    for folders, variants in (([tmp_path / "bad"], ["weak"]), ([tmp_path / "ckpt", tmp_path / "bad"], ["weak"]),
                              ([tmp_path / "half"], ["weak", "full"])):
        capsys.readouterr()
        with pytest.raises(ValueError, match=f"{folders[-1].name}/{variants[-1]}.pt: cannot read as a torch checkpoint"):
            load("reproduce_weak_vs_full").main(["--quick", "--evaluate", *map(str, folders), "--variants", *variants,
                                                 "--train-clips", "0"])
        assert "scoring" not in capsys.readouterr().out and writer.EVENT_WRITERS == []


def _spawned_workers(pid: int) -> list:
    """Pids of the multiprocessing spawn workers among a process's children (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if not children.exists():
        return []
    pids = [int(c) for c in children.read_text().split()]
    return [c for c in pids if b"spawn_main" in _read(f"/proc/{c}/cmdline")]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(b")", 1)[1].split()[0] != b"Z"


@pytest.mark.slow
def test_reproduce_resume_continues_a_stopped_training_where_it_stopped(tmp_path, capsys):
    # One training to the end, keeping its state at 10 and 20 of 30 steps; then the same command resumed
    # from the state at 10: with weights, optimiser, schedule and clip sampler restored, it reaches the
    # uninterrupted run's weights (same process and threads, so to float noise at most).
    from reliev3r_ns.model.ffrm import FFRM

    script = load("reproduce_weak_vs_full")
    common = ["--quick", "--variants", "weak", "--train-clips", "0", "--keep-every", "10"]
    whole = script.main([*common, "--checkpoints", str(tmp_path / "whole")])[0]
    assert sorted(p.name for p in (tmp_path / "whole" / "step_000010").iterdir()) == ["weak.ckpt", "weak.pt"]
    kept = FFRM.from_checkpoint(tmp_path / "whole" / "step_000010" / "weak.pt")
    assert kept.checkpoint_extra["steps"] == 10 and kept.checkpoint_extra["schedule_steps"] == 30
    resumed = script.main([*common, "--resume", str(tmp_path / "whole" / "step_000010"), "--checkpoints", str(tmp_path / "resumed")])[0]
    assert resumed["settings"]["resumed_at_step"] == 10 and resumed["initial"] is None
    # The row covers the whole training: the stopped run's loss curve and seconds came with its state.
    assert [p["step"] for p in resumed["loss_curve"]] == [p["step"] for p in whole["loss_curve"]]
    assert [p["loss_depth"] for p in resumed["loss_curve"]] == pytest.approx([p["loss_depth"] for p in whole["loss_curve"]], rel=1e-4)
    assert 0 < resumed["settings"]["seconds_before_resume"] < resumed["seconds"]
    # nerfstudio's progress line counts the resumed run's steps against the whole schedule, not past 100 %.
    done = [float(p) for p in re.findall(r"\((\d+\.\d+)%\)", capsys.readouterr().out)]
    assert done and max(done) <= 100, done
    # ... and so does a state the resumed run kept in turn; a state from before these were kept has neither.
    settings = resumed["settings"]
    again = script.read_training_state(tmp_path / "resumed" / "step_000020" / "weak.ckpt", settings)
    assert [p["step"] for p in again["loss_curve"]] == list(range(1, 21)) and again["seconds"] > settings["seconds_before_resume"]
    state = torch.load(tmp_path / "whole" / "step_000010" / "weak.ckpt", weights_only=True)
    del state[script.RESUME_KEY]["progress"]
    torch.save(state, tmp_path / "old.ckpt")
    old = script.read_training_state(tmp_path / "old.ckpt", settings)
    assert old["steps"] == 10 and old["loss_curve"] == [] and old["seconds"] is None
    for name in ("step_000020/weak.pt", "weak.pt"):
        a, b = (FFRM.from_checkpoint(tmp_path / run / name).state_dict() for run in ("whole", "resumed"))
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    assert resumed["metrics"]["depth_abs_rel"] == pytest.approx(whole["metrics"]["depth_abs_rel"], rel=1e-4)
    # ... and the equality above is not of an untouched network: the 20 steps after the state moved the weights
    # (that the restored sampler matters was checked by hand: without it, step 20 differs; the sampler's
    # own restore is tested in tests/test_training.py)
    a = FFRM.from_checkpoint(tmp_path / "whole" / "step_000010" / "weak.pt").state_dict()
    b = FFRM.from_checkpoint(tmp_path / "whole" / "weak.pt").state_dict()
    assert any(not torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)
    # Another training's state, a folder without states, or a file that is no state: refused before training.
    with pytest.raises(SystemExit, match="iterations 30 there, 40 here"):
        script.main([*common, "--iterations", "40", "--resume", str(tmp_path / "whole" / "step_000010")])
    with pytest.raises(SystemExit, match=r"seed 42 there, 7 here"):
        script.main([*common, "--set", "machine.seed=7", "--resume", str(tmp_path / "whole" / "step_000010")])
    with pytest.raises(SystemExit):
        script.main([*common, "--resume", str(tmp_path / "whole")])
    assert "no training state" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "weak.ckpt").write_text("not a checkpoint")
    with pytest.raises(SystemExit, match="is not a training state this script saved"):
        script.main([*common, "--resume", str(tmp_path / "bad")])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux /proc")
def test_reproduce_jobs_end_with_the_script_when_it_is_killed():
    # A kill of the script (SIGTERM, as a scheduler or `kill` sends) must not leave its training workers running on.
    process = subprocess.Popen([sys.executable, str(SCRIPTS / "reproduce_weak_vs_full.py"), "--quick", "--jobs", "2", "--iterations", "100000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(workers := _spawned_workers(process.pid)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert len(workers) == 2, "the two variant workers never started"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) != 0
        deadline = time.monotonic() + 60
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(_alive(w) for w in workers), "variant workers outlived the killed script"
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_bench_vs_colmap_quick(capsys, tmp_path):
    pytest.importorskip("pycolmap")
    rows = load("bench_vs_colmap").main(["--quick", "--views", "10", "--output", str(tmp_path / "rows.json")])
    assert len(rows) == 1 and rows[0]["views"] == 10 and rows[0]["ffrm_s"] > 0 and rows[0]["colmap_s"] > 0
    assert rows[0]["ffrm_reconstruct_s"] > 0 and rows[0]["ffrm_write_s"] > 0
    assert rows[0]["ffrm_reconstruct_s"] + rows[0]["ffrm_write_s"] == pytest.approx(rows[0]["ffrm_s"])
    assert 0.0 <= rows[0]["ffrm"]["pose_auc30"] <= 1.0
    assert "COLMAP took" in capsys.readouterr().out
    assert json.loads((tmp_path / "rows.json").read_text())[0]["scene"] == rows[0]["scene"]
    assert rows[0]["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # timings compare on one machine only


@pytest.mark.slow
def test_bench_training_quick(tmp_path):
    # A subprocess, as people run it: its measurements run in spawned processes that import the script.
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_training.py"), "--quick", "--json", str(tmp_path / "rows.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads((tmp_path / "rows.json").read_text())
    rows = recorded["rows"]
    assert recorded["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and recorded["device"].startswith("GPU " if torch.cuda.is_available() else "CPU ")
    assert len(rows) == 1 and rows[0]["views_per_s"] > 0 and rows[0]["peak_MiB"] > 0 and 0 < rows[0]["batching_share"] < 1
    # The GT metrics run on logged steps only.
    assert 0 < rows[0]["ops_unlogged_step"] < rows[0]["ops_logged_step"]
    assert "views / s" in result.stdout


@pytest.mark.slow
def test_viewer_snapshot_writes_a_picture(tmp_path, small_data):
    from PIL import Image

    path = load("viewer_snapshot").main(["--data", str(small_data / "train"), "--iterations", "4", "--panels", "2",
                                         "--output", str(tmp_path / "snapshot.png"), "--output-dir", str(tmp_path / "outputs")])
    image = Image.open(path)
    assert image.width == 2 * image.height * 4 // 3  # one overview panel and the view / render pair


def test_named_checkpoints_parse_and_name_what_is_wrong(tmp_path):
    from reliev3r_ns.cli import named_checkpoints

    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "b.pt").write_bytes(b"x")
    assert named_checkpoints([f"weak={tmp_path / 'a.pt'}", f"full={tmp_path / 'b.pt'}"]) == {"weak": tmp_path / "a.pt", "full": tmp_path / "b.pt"}
    for items, message in (([str(tmp_path / "a.pt")], "expected NAME=PATH"), ([f"weak={tmp_path / 'c.pt'}"], "c.pt.*expected NAME=PATH"),
                           ([f"={tmp_path / 'a.pt'}"], "expected NAME=PATH"),
                           ([f"weak={tmp_path / 'a.pt'}", f"weak={tmp_path / 'b.pt'}"], "'weak' is given twice")):
        with pytest.raises(SystemExit, match=message):
            named_checkpoints(items)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message for machines without CUDA")
def test_splatfacto_on_ffrm_says_it_needs_cuda(tmp_path):
    # splatfacto runs only on CUDA (gsplat's kernels); without it the script says so before any work.
    with pytest.raises(SystemExit, match="needs CUDA"):
        load("splatfacto_on_ffrm").main(["--scene", str(tmp_path), "--checkpoint", f"weak={tmp_path / 'ffrm.pt'}"])


def test_diagnose_weak_objective_ranks_the_truth_below_its_collapse(small_data, tmp_path):
    # Known answer: on true geometry the simulated matches agree to a fraction of a degree, and pulling
    # the cameras together (parallax gone) costs the angular loss; the depth term does not see it.
    from reliev3r_ns.model import FFRM, ffrm_config

    checkpoint = FFRM(ffrm_config("tiny")).save_checkpoint(tmp_path / "ffrm.pt", {"image_size": [96, 128]})
    result = load("diagnose_weak_objective").main(["--data", str(small_data), "--label-cache", str(small_data / "label_cache"),
                                                   "--clips", "2", "--checkpoint", f"random={checkpoint}",
                                                   "--set", "pipeline.model.loss.reprojection_weight=1.0",
                                                   "--output", str(tmp_path / "d.json")])
    rows = result["rows"]
    truth, collapsed = rows["GT | 1"], rows["GT | 0"]
    assert truth["median_angle_deg"] < 1.0 < collapsed["median_angle_deg"]
    assert truth["reprojection"] < 0.5 * collapsed["reprojection"]
    assert truth["depth"] == collapsed["depth"]
    # Taking the clip's rotations away costs the angular loss too (these clips turn by several degrees).
    assert truth["reprojection"] < 0.5 * rows["GT, one rotation | 1"]["reprojection"]
    assert set(rows) >= {"model random | 1", "model random | 0", "model random, GT rotations | 1"}
    written = json.loads((tmp_path / "d.json").read_text())
    assert written["rows"] == rows and written["set"] == ["pipeline.model.loss.reprojection_weight=1.0"]
    # The synthetic scenes name their trajectory kind: the per-kind split holds every clip once.
    by_kind = result["by_trajectory"]
    assert sum(terms["GT | 1"]["clips"] for terms in by_kind.values()) == 2
    assert written["by_trajectory"] == by_kind


def test_diagnose_rotation_swaps_keep_centres_and_take_relative_rotations():
    # Reference: relative rotations R_i^T R_j computed directly from random rotation matrices.
    from test_geometry import random_poses

    diagnose = load("diagnose_weak_objective")
    rng = np.random.default_rng(0)
    mine, theirs = (torch.from_numpy(random_poses(10, rng)).reshape(2, 5, 4, 4) for _ in range(2))
    swapped = diagnose.with_rotations_of(mine, theirs)
    assert torch.equal(swapped[..., :3, 3], mine[..., :3, 3])
    assert torch.allclose(swapped[:, 0], mine[:, 0])
    for i in range(5):
        for j in range(5):
            expected = theirs[:, i, :3, :3].transpose(-1, -2) @ theirs[:, j, :3, :3]
            assert torch.allclose(swapped[:, i, :3, :3].transpose(-1, -2) @ swapped[:, j, :3, :3], expected, atol=1e-12)
    flat = diagnose.one_rotation(mine)
    assert torch.allclose(flat[..., :3, :3], mine[:, :1, :3, :3].expand(-1, 5, -1, -1))
    assert torch.equal(flat[..., :3, 3], mine[..., :3, 3])


def test_plot_weak_vs_full_pairs_runs_by_seed_and_budget(tmp_path, capsys):
    plot = load("plot_weak_vs_full")

    def row(variant, auc, tau, seed=None, steps=None, overrides=()):
        settings = {} if seed is None else {"iterations": steps, "seed": seed, "set": list(overrides)}
        return {"variant": variant, "settings": settings, "metrics": {"pose_auc30": auc, "depth_tau": tau}}

    depth = "pipeline.datamanager.labels.simulated.space=depth"
    recorded, older = tmp_path / "recorded.json", tmp_path / "older.json"
    recorded.write_text(json.dumps([
        row("weak", 0.1, 0.3, 1, 6000, [depth, "machine.seed=1"]), row("full", 0.2, 0.6, 1, 6000, [depth, "machine.seed=1"]),
        row("weak", 0.3, 0.4, 1, 3000, [depth, "machine.seed=1"]),
        row("weak", 0.9, 0.9, 1, 6000, ["pipeline.model.loss.reprojection.scale_degrees=10", "machine.seed=1"]),  # a tried change
        row("no-depth", 0.0, 0.0, 1, 6000, [depth, "machine.seed=1"])]))
    older.write_text(json.dumps([row("weak", 0.05, 0.1), row("full", 0.15, 0.5)]))  # disparity teacher, no settings
    output = tmp_path / "plot.png"
    table = plot.main([str(recorded), str(older), "--unrecorded", f"{older}=1:3000", "--output", str(output)])
    assert [(r["seed"], r["iterations"]) for r in table] == [(1, 3000), (1, 6000)]
    # at 3000 steps: the depth-teacher weak run with the older file's sibling; its disparity-teacher weak run left out
    assert table[0]["ratio_pose_auc30"] == pytest.approx(0.3 / 0.15) and table[0]["ratio_depth_tau"] == pytest.approx(0.4 / 0.5)
    assert table[1]["ratio_pose_auc30"] == pytest.approx(0.5) and table[1]["ratio_depth_tau"] == pytest.approx(0.5)
    captured = capsys.readouterr()
    assert "| 1 | 6000 | 0.100 | 0.200 | 0.50 |" in captured.out and "scale_degrees=10" in captured.err
    assert output.stat().st_size > 10_000

    # without --unrecorded the older file's rows are named and left out; the 3000-step weak run is drawn alone
    table = plot.main([str(recorded), str(older), "--output", str(output)])
    assert [r["iterations"] for r in table] == [6000]
    captured = capsys.readouterr()
    assert "no recorded iterations / seed" in captured.err and "seed 1 at 3000 steps (weak only)" in captured.out
    # a kept checkpoint's score (an --evaluate row) is not a training of its step's length: named and left out
    scored = tmp_path / "scored.json"
    checkpoint_row = row("full", 0.5, 0.5)
    checkpoint_row["settings"] = {"checkpoint": "ckpt/step_003000/full.pt", "iterations": 3000, "schedule_steps": 6000,
                                  "trained_from_seed": 1, "trained_set": [depth, "machine.seed=1"]}
    scored.write_text(json.dumps([checkpoint_row]))
    table = plot.main([str(recorded), str(scored), "--output", str(output)])
    assert [r["iterations"] for r in table] == [6000]
    captured = capsys.readouterr()
    assert "ckpt/step_003000/full.pt (an --evaluate row" in captured.err and "(weak only)" in captured.out
    with pytest.raises(SystemExit, match="also in"):
        plot.main([str(recorded), str(recorded), "--output", str(output)])
    with pytest.raises(SystemExit, match="FILE=SEED:STEPS"):
        plot.main([str(older), "--unrecorded", f"{older}=1", "--output", str(output)])
    # a run that recorded its resolved teacher space is drawn by it, with or without an override saying so
    resolved = tmp_path / "resolved.json"
    rows = [row("weak", 0.2, 0.3, 2, 6000), row("full", 0.4, 0.6, 2, 6000), row("weak", 0.1, 0.1, 3, 6000), row("full", 0.4, 0.6, 3, 6000)]
    rows[0]["settings"]["teacher_space"], rows[2]["settings"]["teacher_space"] = "depth", "disparity"
    resolved.write_text(json.dumps(rows))
    assert [(r["seed"], r["ratio_pose_auc30"]) for r in plot.main([str(resolved), "--output", str(output)])] == [(2, 0.5)]


def test_plot_sweep_averages_trainings_per_seed_against_the_swept_value(tmp_path, capsys):
    sweep = load("plot_sweep")
    key, depth = "pipeline.model.loss.reprojection_weight", "pipeline.datamanager.labels.simulated.space=depth"

    def row(variant, auc, tau, seed, steps=100, overrides=()):
        return {"variant": variant, "settings": {"iterations": steps, "seed": seed, "set": [depth, f"machine.seed={seed}", *overrides]},
                "metrics": {"pose_auc30": auc, "depth_tau": tau}}

    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([
        row("full", 0.2, 0.5, 1), row("full", 0.4, 0.5, 2), row("full", 0.6, 0.5, 2),  # seed 2's sibling trained twice
        row("weak", 0.1, 0.25, 1), row("weak", 0.2, 0.5, 1, overrides=[f"{key}=2.0"]),
        row("weak", 0.3, 0.4, 2), row("weak", 0.5, 0.2, 2),  # two trainings of seed 2 at the default
        row("weak", 0.9, 0.9, 1, overrides=[f"{key}=2.0", "pipeline.model.loss.depth_weight=0"]),  # another change
        row("weak", 0.9, 0.9, 1, steps=50), row("weak", 0.9, 0.9, 3)]))  # another budget; a seed without sibling
    # a held-out summary: one row that records what its checkpoint trained with, one that predates that
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"runs": {
        "recorded": [{"variant": "weak", "metrics": {"pose_auc30": 0.3, "depth_tau": 0.45},
                      "settings": {"iterations": 100, "trained_from_seed": 2, "trained_set": [depth, f"{key}=2"], "trained_teacher_space": "depth"}}],
        "older": [{"variant": "weak", "metrics": {"pose_auc30": 0.05, "depth_tau": 0.05}, "settings": {"iterations": 100}}],
        # not whole trainings of 100 steps: a checkpoint at step 100 of 200, an average of checkpoints 80-100
        "midway": [{"variant": "weak", "metrics": {"pose_auc30": 0.9, "depth_tau": 0.9},
                    "settings": {"iterations": 100, "schedule_steps": 200, "trained_from_seed": 1, "trained_set": [depth],
                                 "trained_teacher_space": "depth"}}],
        "averaged": [{"variant": "weak", "metrics": {"pose_auc30": 0.9, "depth_tau": 0.9},
                      "settings": {"iterations": 100, "schedule_steps": 100, "averaged_steps": [80, 90, 100],
                                   "trained_from_seed": 1, "trained_set": [depth], "trained_teacher_space": "depth"}}]}}))
    # a list of --evaluate rows: a kept checkpoint's score, whatever its step
    scored = tmp_path / "scored.json"
    scored.write_text(json.dumps([{"variant": "weak", "metrics": {"pose_auc30": 0.9, "depth_tau": 0.9},
                                   "settings": {"checkpoint": "/runs/ckpt/step_000100/weak.pt", "iterations": 100,
                                                "schedule_steps": 100, "trained_from_seed": 1, "trained_set": [depth]}}]))
    output = tmp_path / "sweep.png"
    table = sweep.main([str(runs), str(summary), str(scored), "--sweep", key, "--default", "0.5", "--steps", "100",
                        "--output", str(output)])
    by = {(r["value"], r["seed"]): r for r in table}
    assert set(by) == {(0.5, 1), (0.5, 2), (0.5, "mean"), (2.0, 1), (2.0, 2), (2.0, "mean")}
    assert by[(0.5, 1)]["ratio_pose_auc30"] == pytest.approx(0.5) and by[(0.5, 1)]["ratio_depth_tau"] == pytest.approx(0.5)
    # seed 2: mean of two weak trainings over the mean of two siblings; each training's own ratio kept for the plot
    assert by[(0.5, 2)]["ratio_pose_auc30"] == pytest.approx(0.4 / 0.5) and by[(0.5, 2)]["weak_runs"] == 2
    assert by[(0.5, 2)]["ratios_pose_auc30"] == pytest.approx([0.6, 1.0])
    assert by[(0.5, "mean")]["ratio_pose_auc30"] == pytest.approx((0.5 + 0.8) / 2) and by[(0.5, "mean")]["seeds"] == 2
    assert by[(0.5, "mean")]["sd_ratio_pose_auc30"] == pytest.approx(0.3 / 2 ** 0.5)  # sample sd of 0.5 and 0.8
    assert by[(2.0, 2)]["ratio_pose_auc30"] == pytest.approx(0.6) and by[(2.0, 1)]["ratio_depth_tau"] == pytest.approx(1.0)
    captured = capsys.readouterr()
    assert "depth_weight=0" in captured.err and "summary.json:older" in captured.err
    assert "summary.json:midway: weak scores a checkpoint at step 100 of a 200-step schedule" in captured.err
    assert "summary.json:averaged: weak scores an average of the checkpoints at steps [80, 90, 100]" in captured.err
    assert "scored.json: weak scores checkpoint /runs/ckpt/step_000100/weak.pt (an --evaluate row" in captured.err
    assert "scored.json: weak does not say" not in captured.err
    assert "seed 3 at 0.5" in captured.out and "| 2 | mean of 2 |" in captured.out and "| 0.500 |" in captured.out
    assert "| 0.650 (sd 0.212) |" in captured.out
    assert output.stat().st_size > 10_000

    # --unrecorded says what the older summary row trained with; a name no summary holds is refused
    table = sweep.main([str(runs), str(summary), "--sweep", key, "--default", "0.5", "--steps", "100", "--output", str(output),
                        "--unrecorded", "older=1:2"])
    assert {(r["value"], r["seed"]): r["weak_runs"] for r in table}[(2.0, 1)] == 2
    # --seeds keeps the initialisations named: the values then compare on the same seeds
    table = sweep.main([str(runs), str(summary), "--sweep", key, "--default", "0.5", "--steps", "100", "--output", str(output),
                        "--seeds", "2"])
    by = {(r["value"], r["seed"]): r for r in table}
    assert set(by) == {(0.5, 2), (0.5, "mean"), (2.0, 2), (2.0, "mean")}
    assert by[(0.5, "mean")]["ratio_pose_auc30"] == pytest.approx(0.8) and by[(0.5, "mean")]["sd_ratio_pose_auc30"] is None
    with pytest.raises(SystemExit, match="no summary given holds: typo"):
        sweep.main([str(summary), "--sweep", key, "--default", "0.5", "--steps", "100", "--unrecorded", "typo=1"])
    with pytest.raises(SystemExit, match="same figures"):
        sweep.main([str(runs), str(runs), "--sweep", key, "--default", "0.5", "--steps", "100", "--output", str(output)])
    with pytest.raises(SystemExit, match="no weak training at 7 steps"):
        sweep.main([str(runs), "--sweep", key, "--default", "0.5", "--steps", "7", "--output", str(output)])


def test_plot_by_trajectory_pairs_weak_with_its_sibling_per_kind(tmp_path, capsys):
    def kinds(auc_forward, auc_orbit, tau):
        return {"forward": {"clips": 3, "pose_auc30": auc_forward, "rotation_error_deg": 6.0, "identity_rotation_error_deg": 8.0, "depth_tau": tau},
                "orbit": {"clips": 2, "pose_auc30": auc_orbit, "rotation_error_deg": 70.0, "identity_rotation_error_deg": 74.0, "depth_tau": tau}}

    def row(variant, trained_set, by_kind):
        # --evaluate rows: labelled by what their checkpoint trained with
        return {"variant": variant, "settings": {"trained_from_seed": 3, "trained_set": trained_set},
                "metrics": {}, "by_trajectory": {"metrics": by_kind, "initial": None, "training_clips": None}}

    weight = "pipeline.model.loss.reprojection_weight=1.0"
    (tmp_path / "runs.json").write_text(json.dumps([row("weak", ["machine.seed=3", weight], kinds(0.3, 0.02, 0.4)),
                                                    row("full", ["machine.seed=3"], kinds(0.6, 0.08, 0.5))]))
    (tmp_path / "old.json").write_text(json.dumps([{"variant": "weak", "settings": {"seed": 1}, "metrics": {}}]))
    script = load("plot_by_trajectory")
    entries = script.main([str(tmp_path / "runs.json"), str(tmp_path / "old.json"), "--output", str(tmp_path / "k.png")])
    assert [name for name, _, _ in entries] == ["weak, seed 3, reprojection_weight=1.0, runs", "full, seed 3, runs"]
    (weak, full, by_kind), = script.ratios(entries)[0]
    assert by_kind["forward"] == {"pose_auc30": pytest.approx(0.5), "depth_tau": pytest.approx(0.8)}
    assert by_kind["orbit"]["pose_auc30"] == pytest.approx(0.25)
    captured = capsys.readouterr()
    assert "old.json: weak, seed 1, old has no metrics per trajectory kind" in captured.err
    assert "forward AUC@30 0.50, depth tau 0.80; orbit AUC@30 0.25" in captured.out
    assert (tmp_path / "k.png").stat().st_size > 0
    # a seed with two siblings gets no ratio, and says why
    (tmp_path / "two.json").write_text(json.dumps([row("full", ["machine.seed=3"], kinds(0.5, 0.1, 0.5))]))
    paired, unpaired = script.ratios(script.collect([tmp_path / "runs.json", tmp_path / "two.json"])[0])
    assert paired == [] and "2 supervised siblings" in unpaired[0]
    # a sibling scored on other held-out scenes is not one to divide by
    elsewhere = row("full", ["machine.seed=3"], kinds(0.5, 0.1, 0.5))
    elsewhere["settings"]["data"] = "/other/scenes"
    (tmp_path / "elsewhere.json").write_text(json.dumps([elsewhere]))
    paired, unpaired = script.ratios(script.collect([tmp_path / "runs.json", tmp_path / "elsewhere.json"])[0])
    assert len(paired) == 1 and paired[0][1] == "full, seed 3, runs" and unpaired == []
    # a checkpoint older than the settings it records: named by its folder
    older = {"variant": "weak", "settings": {"trained_from_seed": 42, "trained_set": None, "checkpoint": "/runs/ckpt_w1/weak.pt"}}
    assert load("plot_weak_vs_full").run_label(older, tmp_path / "x.json", False) == "weak, seed 42, checkpoint ckpt_w1"
    with pytest.raises(SystemExit, match="no row with metrics per trajectory kind"):
        script.main([str(tmp_path / "old.json"), "--output", str(tmp_path / "none.png")])


def test_matched_pair_fraction_counts_unordered_pairs_with_enough_matches():
    from reliev3r_ns.losses import Matches

    script = load("reproduce_weak_vs_full")
    # 4 views, 6 pairs: (0, 1) 3 matches, (2, 1) 2 + (1, 2) 1 = 3 (either order counts), (0, 3) 1
    view_i = torch.tensor([0, 0, 0, 2, 2, 1, 0])
    view_j = torch.tensor([1, 1, 1, 1, 1, 2, 3])
    m = len(view_i)
    matches = Matches(torch.zeros(m, dtype=torch.long), view_i, view_j, torch.zeros(m, 2), torch.zeros(m, 2), torch.ones(m))
    assert script.matched_pair_fraction(matches, 4, 3) == pytest.approx(2 / 6)
    assert script.matched_pair_fraction(matches, 4, 1) == pytest.approx(3 / 6)
    assert script.matched_pair_fraction(matches, 4, 4) == 0.0


def test_average_checkpoints_means_each_weight_and_refuses_other_networks(tmp_path, capsys):
    from reliev3r_ns.model import FFRM, ffrm_config

    script = load("average_checkpoints")
    paths = []
    for step in (1, 2, 3):
        torch.manual_seed(step)  # three differently initialised copies of one network
        paths.append(FFRM(ffrm_config("tiny")).save_checkpoint(tmp_path / f"s{step}.pt", {"steps": step * 1000, "seed": 4}))
    out = script.main([*map(str, paths), "--output", str(tmp_path / "avg" / "weak.pt")])
    averaged = FFRM.from_checkpoint(out)
    states = [torch.load(p, weights_only=True)["state_dict"] for p in paths]
    for key, value in averaged.state_dict().items():
        expected = (states[0][key] + states[1][key] + states[2][key]) / 3 if value.is_floating_point() else states[2][key]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=key)
    assert averaged.checkpoint_extra["averaged_steps"] == [1000, 2000, 3000] and averaged.checkpoint_extra["seed"] == 4
    other = FFRM(ffrm_config("tiny", depth=2)).save_checkpoint(tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="another network's config"):
        script.main([str(paths[0]), str(other), "--output", str(tmp_path / "bad.pt")])
    with pytest.raises(SystemExit, match="two or more"):
        script.main([str(paths[0]), "--output", str(tmp_path / "bad.pt")])
    with pytest.raises(SystemExit, match="missing.pt: no FFRM checkpoint there"):
        script.main([str(paths[0]), str(tmp_path / "missing.pt"), "--output", str(tmp_path / "bad.pt")])
    assert not (tmp_path / "bad.pt").exists()
