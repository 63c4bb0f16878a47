"""Reproduce Reliev3R's claim at CPU scale: weak labels only vs the fully supervised sibling.

Every variant trains the same FFRM (same preset, data, clips, optimiser and budget) through
nerfstudio's Trainer (the ``reliev3r`` / ``reliev3r-supervised`` method configs) on the synthetic
training scenes, then is evaluated on held-out synthetic scenes with fixed 8-view clips (the paper's
protocol). Printed: the paper's table (point-map rel / tau, pose ATE / AUC@30, depth rel / tau) for
each variant, and weak / full ratios. Variants:

    weak            Reliev3R: relative depth loss (median / MAD alignment) + angular reprojection
    full            the supervised sibling (GT point maps and cameras)
    no-depth        weak without the relative depth loss
    no-reprojection weak without the reprojection loss
    pixel-reprojection   pixel residuals instead of angles
    shift-unaware   the depth loss aligns scale only (ignores the teacher's shift)

    python scripts/reproduce_weak_vs_full.py --quick          # CI-sized: minutes on 2 CPU cores
    python scripts/reproduce_weak_vs_full.py --jobs 2         # full: the default dataset, 3000 steps each
    python scripts/reproduce_weak_vs_full.py --variants weak full --jobs 2   # the claim alone (docs/weak_vs_full.md)

A long training stopped part-way (``--keep-every N --checkpoints DIR`` saves its whole state every N
steps) continues with the same command plus ``--resume DIR/step_NNNNNN``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from reliev3r_ns.eval.machine import machine_fingerprint, machine_label

VARIANTS = ["weak", "full", "no-depth", "no-reprojection", "pixel-reprojection", "shift-unaware"]
COLUMNS = [("pointmap_rel", "pm rel"), ("pointmap_tau", "pm tau"), ("ate_normalised", "ATE"), ("pose_auc30", "AUC@30"),
           ("depth_abs_rel", "depth rel"), ("depth_tau", "depth tau")]
FIT_COLUMNS = [("pose_auc30", "AUC@30", ".3f"), ("rotation_error_deg", "rotation err (deg)", ".1f"),
               ("identity_rotation_error_deg", "identity's rotation err (deg)", ".1f"),
               ("translation_error_deg", "translation err (deg)", ".1f"), ("depth_abs_rel", "depth rel", ".3f"), ("depth_tau", "depth tau", ".3f"),
               ("depth_affine_tau", "depth tau, scale + shift", ".3f"), ("depth_to_baseline_vs_gt", "depth/baseline vs GT", ".3g")]


def make_config(variant: str, train: Path, evaluation: Path, output: Path, labels: Path, args):
    from reliev3r_ns.method_configs.reliev3r import reliev3r_method, reliev3r_supervised_method

    config = copy.deepcopy((reliev3r_supervised_method if variant == "full" else reliev3r_method).config)
    config.output_dir = output
    config.max_num_iterations = args.iterations
    config.steps_per_save = args.iterations
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.machine.device_type = "cuda" if torch.cuda.is_available() else "cpu"
    config.vis = "tensorboard"
    dm = config.pipeline.datamanager
    dm.data, dm.eval_data, dm.label_cache = train, evaluation, labels
    dm.clips_per_batch, dm.min_views, dm.max_views, dm.eval_views = args.clips, args.min_views, args.max_views, 8
    model = config.pipeline.model
    model.model_size = args.model_size
    loss = model.loss
    if variant == "no-depth":
        loss.depth_weight = 0.0
    elif variant == "no-reprojection":
        loss.reprojection_weight = 0.0
    elif variant == "pixel-reprojection":
        loss.reprojection.residual = "pixel"
    elif variant == "shift-unaware":
        loss.depth.alignment = "scale_only"
    optimiser = config.optimizers["ffrm"]
    optimiser["optimizer"].lr = args.lr
    optimiser["scheduler"].max_steps = args.iterations
    optimiser["scheduler"].warm_up_end = min(100, args.iterations // 10)
    apply_overrides(config, args.set)
    config.set_timestamp()
    return config


def apply_overrides(config, overrides: list) -> None:
    """``KEY=VALUE`` pairs on the Trainer config, KEY a dotted attribute path
    (``pipeline.model.loss.reprojection.robust=l1``); VALUE a Python literal, else a string."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. pipeline.model.loss.reprojection.scale_degrees=10")
        *parents, name = key.split(".")
        target = config
        for part in parents:
            target = getattr(target, part, None)
            if target is None:
                raise SystemExit(f"--set {item!r}: the config has no {part!r} on the way to {key!r}")
        if not hasattr(target, name):
            raise SystemExit(f"--set {item!r}: {type(target).__name__} has no field {name!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        setattr(target, name, value)


TRAJECTORY_COLUMNS = [("pose_auc30", "AUC@30", ".3f"), ("rotation_error_deg", "rotation err (deg)", ".1f"),
                      ("identity_rotation_error_deg", "identity's rotation err (deg)", ".1f"),
                      ("translation_error_deg", "translation err (deg)", ".1f"), ("depth_tau", "depth tau", ".3f"),
                      ("depth_affine_tau", "depth tau, scale + shift", ".3f"), ("matched_pair_fraction", "pairs with matches", ".2f")]


@torch.no_grad()
def evaluate_clips(pipeline, split: str = "eval", count: Optional[int] = None) -> Tuple[Dict[str, float], Dict[str, dict]]:
    """Mean clip metrics over the fixed 8-view clips of the held-out scenes (``split="eval"``) or of the
    first ``count`` training scenes (``"train"``: how well the model fits what it trained on), and the
    same means per trajectory kind of the synthetic scenes (``{kind: {"clips": n, metric: mean}}``;
    empty when the scenes' scene.json names none). Every clip also gets the rotation error of a model
    that gives all views one rotation (``identity_rotation_error_deg``): below it, rotations are learnt;
    and the share of its view pairs the weak labels tie together (``matched_pair_fraction``)."""
    from reliev3r_ns.eval.evaluate import clip_metrics

    datamanager, model = pipeline.datamanager, pipeline.model
    model.eval()
    dataset, clip = (datamanager.eval_dataset, datamanager.eval_clip) if split == "eval" else (datamanager.train_dataset, datamanager.train_clip)
    rows, kinds = [], []
    for index in range(min(len(dataset), count or len(dataset))):
        batch = clip(index)
        p = model.ffrm(batch["images"], batch.get("intrinsics"))
        gt_cam_to_world = batch["gt_cam_to_world"][0]
        K_gt = batch["intrinsics"][0] if batch.get("intrinsics") is not None else p.intrinsics[0]
        row = clip_metrics(p.cam_to_world[0], p.intrinsics[0], p.depth[0], gt_cam_to_world, K_gt, batch["gt_depth"][0])
        row["depth_to_baseline_vs_gt"] = (depth_to_baseline(p.depth[0], p.cam_to_world[0])
                                          / depth_to_baseline(batch["gt_depth"][0], gt_cam_to_world))
        row["identity_rotation_error_deg"] = one_rotation_error_deg(gt_cam_to_world)
        row["matched_pair_fraction"] = matched_pair_fraction(batch["matches"], batch["views"], datamanager.config.min_pair_matches)
        rows.append(row)
        kinds.append(dataset.scenes[index].metadata.get("trajectory"))
    return summarise_clips(rows), summarise_by_kind(rows, kinds)


def one_rotation_error_deg(gt_cam_to_world: torch.Tensor) -> float:
    """Mean pairwise rotation error (deg) of a prediction that gives every view of the clip the same
    rotation (GT cam_to_world (V, 4, 4), OpenCV): the mean GT relative rotation angle of the clip."""
    from reliev3r_ns.eval.metrics import relative_pose_errors

    one_rotation = gt_cam_to_world.clone()
    one_rotation[:, :3, :3] = torch.eye(3, dtype=one_rotation.dtype, device=one_rotation.device)
    return relative_pose_errors(one_rotation, gt_cam_to_world)[0].mean().item()


def matched_pair_fraction(matches, views: int, min_matches: int) -> float:
    """Share of the unordered view pairs of a one-clip batch's ``Matches`` linked by at least
    ``min_matches`` correspondences (what the clip sampler counts as overlapping)."""
    low, high = torch.minimum(matches.view_i, matches.view_j), torch.maximum(matches.view_i, matches.view_j)
    counts = torch.bincount(low * views + high, minlength=views * views).reshape(views, views)
    upper = torch.triu_indices(views, views, offset=1)
    return float((counts[upper[0], upper[1]] >= min_matches).float().mean())


def summarise_by_kind(rows: List[Dict[str, float]], kinds: List[Optional[str]]) -> Dict[str, dict]:
    """{kind: {"clips": n, metric: summary}} of the clips of each kind; {} unless every clip has one."""
    if not rows or not all(kinds):
        return {}
    return {kind: {"clips": kinds.count(kind), **summarise_clips([r for r, k in zip(rows, kinds) if k == kind])}
            for kind in sorted(set(kinds))}


def summarise_clips(rows: List[Dict[str, float]]) -> Dict[str, float]:
    # The depth-to-baseline ratio spans orders of magnitude when a model collapses, so its clips are
    # summarised by the median; every other metric by the mean, as the paper reports them.
    return {key: float((np.median if key == "depth_to_baseline_vs_gt" else np.mean)([r[key] for r in rows])) for key in rows[0]}


def depth_to_baseline(depth: torch.Tensor, cam_to_world: torch.Tensor) -> float:
    """Median depth over the mean distance of the camera centres from their centroid, for one clip
    (depth (V, H, W), cam_to_world (V, 4, 4) OpenCV). Scale-free, so a prediction's value over the GT's
    is 1 for a model that has the geometry right up to scale; far above 1 means the points drift to
    infinity (parallax vanishes), far below 1 that the cameras fly apart or the depth collapses."""
    centres = cam_to_world[:, :3, 3].double()
    spread = float((centres - centres.mean(0)).norm(dim=-1).mean())
    return float(depth.double().median()) / spread if spread > 0 else float("inf")


def release_event_writers() -> None:
    """nerfstudio keeps its event writers in module-level lists that every Trainer appends to; close
    and drop them, or the next Trainer in this process writes into this run's (deleted) folder."""
    from nerfstudio.utils import writer

    for event_writer in writer.EVENT_WRITERS:
        inner = getattr(event_writer, "tb_writer", None)
        if inner is not None:
            inner.close()
    writer.EVENT_WRITERS.clear()
    writer.EVENT_STORAGE.clear()


def setup_trainer(config):
    """The Trainer, set up after seeding as ``ns-train`` does (its train_loop seeds with machine.seed
    before building anything): every variant then starts from the same initial weights, and a rerun
    from the same ones."""
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def run_variant(variant: str, train: Path, evaluation: Path, workdir: Path, args, threads: int = 0) -> List[dict]:
    """The variant's result rows: its training's, or (--evaluate) one per checkpoint folder."""
    if threads:
        torch.set_num_threads(threads)
    config = make_config(variant, train, evaluation, workdir / "outputs", args.label_cache or workdir / "labels", args)
    settings = training_settings(config, args)
    resumed = read_training_state(args.resume / f"{variant}.ckpt", settings) if args.resume is not None else None
    if resumed is not None:
        # nerfstudio loads weights, optimiser, schedule and step in Trainer.setup, then trains
        # max_num_iterations more steps: the rest of the schedule.
        config.load_checkpoint = args.resume / f"{variant}.ckpt"
        config.max_num_iterations = args.iterations - resumed["steps"]
    try:
        trainer = setup_trainer(config)
        if args.evaluate is not None:
            return evaluate_checkpoints(variant, trainer, args)
        if resumed is not None:
            from nerfstudio.utils import writer

            restore_sampling(trainer, resumed)
            # nerfstudio's progress line and ETA read the step against max_num_iterations, the steps left
            # (above), while the step counts on from the resumed one ("9450 (945.00%)", ETA 23 h): give
            # them the whole schedule's length.
            writer.GLOBAL_BUFFER["max_iter"] = args.iterations
        return [train_variant(variant, trainer, args, settings, resumed)]
    finally:
        # Setting the Trainer up registered nerfstudio's event writers; drop them however the run ends,
        # or a later Trainer in this process writes into this run's folder (deleted with the workdir).
        release_event_writers()


def training_settings(config, args) -> dict:
    """What makes a training's row, so a JSON kept in docs/results says which overrides and seed it
    measured (and a resumed training can be checked to continue the same one)."""
    dm = config.pipeline.datamanager
    return {"iterations": args.iterations, "lr": args.lr, "model_size": args.model_size, "seed": config.machine.seed,
            "set": list(args.set), "clips": args.clips, "views": [args.min_views, args.max_views],
            "data": str(args.data) if args.data else None, "datasets": datasets(config), "teacher_space": dm.labels.simulated.space}


def train_variant(variant: str, trainer, args, settings: dict, resumed: Optional[dict] = None) -> dict:
    """Train (or, ``resumed``, continue training) one variant and score it; its result row."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    stamps = []  # wall clock after each step: a step time without start-up and warm-up, to size later runs
    trainer.callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                              func=lambda step: stamps.append(time.perf_counter())))
    curve = record_loss_curve(trainer, args.iterations)
    settings = {**settings, "machine": machine_fingerprint(str(trainer.pipeline.device))}
    # What the stopped run had done before its state was kept: the row then covers the whole training.
    # States kept before these were recorded have neither (seconds_before_resume None): the row's seconds
    # and curve then cover the resumed steps only.
    earlier_curve, earlier_seconds = (resumed.get("loss_curve", []), resumed.get("seconds")) if resumed is not None else ([], 0.0)
    if resumed is not None:
        settings.update(resumed_from=resumed["path"], resumed_at_step=resumed["steps"], seconds_before_resume=earlier_seconds)
    started = time.perf_counter()

    def progress() -> dict:
        # the loss curve and seconds so far, whole run as far as known (a state kept by a resumed run carries both parts)
        return {"loss_curve": earlier_curve + curve, "seconds": (earlier_seconds or 0.0) + time.perf_counter() - started}

    if args.keep_every:
        # A run's history, not only its end: each kept FFRM scores later with --evaluate CHECKPOINTS/step_N.
        trainer.callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                                  func=lambda step: keep_intermediate(trainer, variant, step + 1, settings, args, progress)))
    # the untrained network's row: not the resumed network's (that is an earlier --evaluate's row)
    before = evaluate_clips(trainer.pipeline) if variant == args.variants[0] and resumed is None else (None, None)
    trainer.pipeline.model.train()
    trainer.train()
    seconds = progress()["seconds"]
    after = evaluate_clips(trainer.pipeline)
    fit = evaluate_clips(trainer.pipeline, "train", args.train_clips) if args.train_clips else (None, None)
    if args.checkpoints is not None:
        export_checkpoint(trainer, variant, args.checkpoints / f"{variant}.pt", args.iterations, settings)
    late = np.diff(stamps[len(stamps) // 2:])
    step_seconds = float(late.mean()) if len(late) else None  # mean over the second half of the run
    return {"variant": variant, "seconds": seconds, "step_seconds": step_seconds, "settings": settings,
            **scores(after, before, fit), "loss_curve": earlier_curve + curve}


def datasets(config) -> dict:
    """The training and held-out folders' generator seed, config and scene count (of a Trainer config):
    rows measured on rebuilt data can then be checked to be on the same scenes."""
    from reliev3r_ns.data.synthetic_dataset import dataset_identity

    dm = config.pipeline.datamanager
    return {"train": dataset_identity(dm.data), "eval": dataset_identity(dm.eval_data)}


def export_checkpoint(trainer, variant: str, path: Path, steps: int, settings: dict) -> None:
    # The training's settings travel with the weights: --evaluate rows then say what they score.
    trainer.pipeline.export_ffrm(path, extra={"variant": variant, "steps": steps, "schedule_steps": settings["iterations"],
                                              "seed": trainer.config.machine.seed, "set": settings["set"],
                                              "teacher_space": settings["teacher_space"], "machine": settings["machine"]})


def keep_intermediate(trainer, variant: str, steps: int, settings: dict, args, progress) -> None:
    """After `steps` optimiser steps, every --keep-every: the FFRM as CHECKPOINTS/step_NNNNNN/VARIANT.pt
    (the final one stays CHECKPOINTS/VARIANT.pt), and beside it the training's whole state as VARIANT.ckpt
    for --resume, with `progress()` (loss curve and seconds so far)."""
    if steps % args.keep_every or steps >= args.iterations:
        return
    folder = args.checkpoints / f"step_{steps:06d}"
    export_checkpoint(trainer, variant, folder / f"{variant}.pt", steps, settings)
    save_training_state(trainer, folder / f"{variant}.ckpt", steps, settings, progress())


def save_training_state(trainer, path: Path, steps: int, settings: dict, progress: dict) -> None:
    """The Trainer's checkpoint (nerfstudio's own keys: ``ns-train --load-checkpoint`` reads it too) after
    `steps` steps (with the clip sampler's random state, the datamanager's extra state, so a resumed run
    draws the clips the uninterrupted one would have), plus what nerfstudio does not keep: torch's random
    state; this run's settings, to refuse resuming it with others; and its loss curve and seconds so far,
    so the resumed run's row covers the whole training (a loss-curve window still open when the state is
    kept restarts at the resume: keep at multiples of --iterations / 100 to have none). Written
    atomically: a run killed mid-write keeps the previous state."""
    from reliev3r_ns.model.ffrm import save_atomically

    save_atomically({
        "step": steps - 1,  # nerfstudio's: the last step done (0-based); training resumes at the next
        "pipeline": trainer.pipeline.state_dict(),
        "optimizers": {k: v.state_dict() for k, v in trainer.optimizers.optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in trainer.optimizers.schedulers.items()},
        "scalers": trainer.grad_scaler.state_dict(),
        RESUME_KEY: {"settings": json.dumps(settings), "torch_rng": torch.get_rng_state(), "progress": json.dumps(progress)},
    }, path)


RESUME_KEY = "reliev3r_reproduce"
# Settings a resumed training must share with the one it continues (its data folder may have moved).
RESUME_SETTINGS = ("iterations", "lr", "model_size", "seed", "set", "clips", "views", "datasets", "teacher_space")


def read_training_state(path: Path, settings: dict) -> dict:
    """A state save_training_state wrote, checked against this run's `settings` (training_settings'):
    {"path", "steps" done, "torch_rng", "loss_curve" and "seconds" so far, and, in states kept before the
    datamanager kept its sampler, that sampler's state}. Refuses one from another training or one already done."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises several kinds for a truncated or foreign file)
        raise SystemExit(f"--resume: {path} is not a training state this script saved ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or RESUME_KEY not in state:
        raise SystemExit(f"--resume: {path} has no {RESUME_KEY!r} entry; only states kept with --keep-every resume")
    saved = json.loads(state[RESUME_KEY]["settings"])
    current = json.loads(json.dumps(settings))  # tuples as lists, as the saved ones came back
    differing = [f"{key} {saved.get(key)!r} there, {current.get(key)!r} here" for key in RESUME_SETTINGS if saved.get(key) != current.get(key)]
    if differing:
        raise SystemExit(f"--resume: {path} is another training's state ({'; '.join(differing)}); "
                         "give the command of the run that kept it, plus --resume")
    steps = int(state["step"]) + 1
    if steps >= settings["iterations"]:
        raise SystemExit(f"--resume: {path} is {steps} steps into a {settings['iterations']}-step training: nothing left to train")
    saved_state = dict(state[RESUME_KEY])
    # "progress" is absent from states kept before it was recorded: then neither curve nor seconds
    progress = json.loads(saved_state.pop("progress", '{"loss_curve": [], "seconds": null}'))
    return {"path": str(path), "steps": steps, **saved_state, **progress}


def restore_sampling(trainer, resumed: dict) -> None:
    """torch's random state as the saved run left it. nerfstudio restored the weights, optimiser,
    schedule, step and the clip sampler (the datamanager's extra state) when the Trainer was set up;
    states kept before the datamanager kept its sampler carry it here instead."""
    dm = trainer.pipeline.datamanager
    if "train_rng" in resumed:
        dm.set_extra_state({"train_rng": resumed["train_rng"], "eval_rng": resumed["eval_rng"], "train_count": resumed["train_count"],
                            "eval_count": dm.eval_count, "world_size": 1})
    torch.set_rng_state(resumed["torch_rng"])


def scores(after: tuple, before: tuple, fit: tuple) -> dict:
    """A result row's metrics from evaluate_clips' (means, per trajectory kind) of the trained model on
    held-out clips, of the untrained one (or (None, None)) and on training clips (or (None, None))."""
    return {"metrics": after[0], "initial": before[0], "training_clips": fit[0],
            "by_trajectory": {"metrics": after[1], "initial": before[1], "training_clips": fit[1]}}


MATCH_ERROR_KEY = "reprojection_median_error"
RADIAL_ERROR_KEY = "reprojection_median_radial_error"  # with a radial residual only (present on steps with matches)
CURVE_KEYS = ("loss_", MATCH_ERROR_KEY, RADIAL_ERROR_KEY)  # the model's per-step terms (metrics_dict names)


def record_loss_curve(trainer, iterations: int, points: int = 100) -> List[dict]:
    """Each loss term (and the median match error) averaged over windows of iterations / points steps,
    filled in as the Trainer runs: kept in the run's JSON, so a training that went wrong can be read
    afterwards (its tensorboard folder goes with the run's temporary folder). One step is two clips'
    worth and too noisy to read alone."""
    window = max(1, iterations // points)
    curve: List[dict] = []
    sums: Dict[str, torch.Tensor] = {}  # summed on the device: read back once per window, not every step (a sync on GPU)
    counts: Dict[str, object] = {}  # steps counted per key: an int, or a device tensor for the match error
    inner = trainer.train_iteration

    def train_iteration(step: int):
        loss, loss_dict, metrics_dict = inner(step)
        for key, value in metrics_dict.items():
            if key.startswith(CURVE_KEYS) and torch.is_tensor(value) and value.numel() == 1:
                value, counted = value.detach().float().reshape(()), 1
                if key == MATCH_ERROR_KEY:
                    # NaN on a step without matches: averaged over the steps that had some. A NaN loss term
                    # is a failure and stays NaN in its window.
                    finite = torch.isfinite(value)
                    value, counted = torch.where(finite, value, torch.zeros_like(value)), finite.float()
                sums[key] = sums.get(key, 0) + value
                counts[key] = counts.get(key, 0) + counted
        # The last window may be shorter (a budget that is not a multiple of the window): kept, not dropped.
        if (step + 1) % window == 0 or step + 1 == iterations:
            curve.append({"step": step + 1, **{key: float(total / counts[key]) for key, total in sums.items()}})
            sums.clear()
            counts.clear()
        return loss, loss_dict, metrics_dict

    trainer.train_iteration = train_iteration  # an instance attribute: Trainer.train calls self.train_iteration
    return curve


def evaluate_checkpoints(variant: str, trainer, args) -> List[dict]:
    """No training: the FFRMs that runs kept with --checkpoints (each --evaluate folder's VARIANT.pt, e.g. a
    run's step_NNNNNN folders), scored on this data's clips, one row per folder, with one Trainer. The
    first variant also scores the untrained network of this config's machine.seed once (the table's
    initialisation row, as in training), in its first folder's row."""
    from reliev3r_ns.model.ffrm import FFRM

    seed = trainer.config.machine.seed
    paths = [folder / f"{variant}.pt" for folder in args.evaluate]  # each read once already by main()
    # the same for every folder's row: read the data folders' identity and the machine once
    data, data_identity = str(args.data) if args.data else None, datasets(trainer.config)
    machine = machine_fingerprint(str(trainer.pipeline.device))
    rows = []
    for i, path in enumerate(paths):
        # Setting the Trainer up printed nerfstudio's "training from scratch" (about its own checkpoints).
        print(f"{variant}: --evaluate trains nothing; scoring {path}")
        checkpoint = FFRM.from_checkpoint(path, map_location=trainer.pipeline.device)
        # the untrained network (still the pipeline's) once, in the first row, for the first variant
        before = evaluate_clips(trainer.pipeline) if i == 0 and variant == args.variants[0] else (None, None)
        extra = checkpoint.checkpoint_extra
        trained_from = extra.get("seed")
        if before[0] is not None and trained_from is not None and trained_from != seed:
            print(f"warning: {path} trained from machine.seed={trained_from}; the initialisation row is seed {seed}'s "
                  f"(pass --set machine.seed={trained_from} for its own)", file=sys.stderr)
        trainer.pipeline.model.ffrm = checkpoint
        after = evaluate_clips(trainer.pipeline)
        fit = evaluate_clips(trainer.pipeline, "train", args.train_clips) if args.train_clips else (None, None)
        # trained_* come from the checkpoint (None for checkpoints written before they recorded them).
        settings = {"checkpoint": str(path), "iterations": extra.get("steps"), "schedule_steps": extra.get("schedule_steps"),
                    "trained_from_seed": trained_from,
                    "trained_set": extra.get("set"), "trained_teacher_space": extra.get("teacher_space"),
                    "trained_on": extra.get("machine"),
                    "initialisation_seed": seed if before[0] is not None else None, "data": data,
                    "datasets": data_identity, "machine": machine}
        if "averaged_steps" in extra:  # docs/tools/average_checkpoints.py's: which kept steps were averaged
            settings.update(averaged_steps=extra["averaged_steps"], averaged_from=extra["averaged_from"])
        rows.append({"variant": variant, "seconds": None, "step_seconds": None, "settings": settings, **scores(after, before, fit)})
    return rows


def data_folders(args, scratch: Path) -> tuple:
    """(train, eval) scene folders: --data's, the bundled dataset, or (--quick) a tiny one generated in
    ``scratch``, the run's temporary folder, so it goes when the run ends."""
    if not args.quick and args.data is None:
        from reliev3r_ns.data.synthetic_dataset import ensure_default_dataset

        splits = ensure_default_dataset()
        return splits["train"], splits["eval"]
    if args.data is not None:
        return args.data / "train", args.data / "eval"
    from reliev3r_ns.data.synthetic import SyntheticSceneConfig
    from reliev3r_ns.data.synthetic_dataset import generate_dataset

    root = scratch / "quick-data"
    config = SyntheticSceneConfig(width=128, height=96, num_views=8, supersample=1, texture_size=256)
    generate_dataset(root / "train", 4, seed=1, config=config, show_progress=False)
    generate_dataset(root / "eval", 2, seed=2, config=config, show_progress=False)
    return root / "train", root / "eval"


def print_table(results: list, args) -> None:
    print()
    trained = (f"checkpoints in {', '.join(map(str, args.evaluate))} ({', '.join(str(r['settings']['iterations']) for r in results)} steps)"
               if args.evaluate is not None else
               f"{args.model_size} FFRM, {args.iterations} steps x {args.clips} clip(s) of {args.min_views}-{args.max_views} views, lr {args.lr}")
    machine = results[0]["settings"]["machine"]  # the worker's: with --jobs it ran with fewer threads than this process
    print(f"held-out synthetic scenes, 8-view clips; {trained}; {machine_label(machine)}, {os.cpu_count()} cores"
          f"{f', {args.jobs} variants at a time' if args.jobs > 1 else ''}")
    header = "| variant | " + " | ".join(name for _, name in COLUMNS) + " | train s |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 2))
    initial = results[0]["initial"]
    if initial:
        print("| (initialisation) | " + " | ".join(f"{initial[k]:.3f}" for k, _ in COLUMNS) + " | |")
    for r in results:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        print(f"| {row_name(r, args)} | " + " | ".join(f"{r['metrics'][k]:.3f}" for k, _ in COLUMNS) + f" | {seconds} |")
    if any(r["training_clips"] for r in results):
        # Fit vs transfer: a model that does much better on its training clips than on held-out ones overfits.
        print(f"\nfit on {args.train_clips} training clips vs held-out clips:")
        print("| variant | clips | " + " | ".join(name for _, name, _ in FIT_COLUMNS) + " |")
        print("|" + "---|" * (len(FIT_COLUMNS) + 2))
        for r in results:
            for split, m in (("training", r["training_clips"]), ("held-out", r["metrics"])):
                if m:
                    print(f"| {row_name(r, args)} | {split} | " + " | ".join(format(m[k], spec) for k, _, spec in FIT_COLUMNS) + " |")
    if any(r["by_trajectory"]["metrics"] for r in results):
        # Whether poses are learnt where they are easy (forward walks turn little) or also where views turn.
        print("\nby trajectory kind (identity's rotation err: every view given one rotation; below it rotations are learnt):")
        print("| variant | clips | trajectory | n | " + " | ".join(name for _, name, _ in TRAJECTORY_COLUMNS) + " |")
        print("|" + "---|" * (len(TRAJECTORY_COLUMNS) + 4))
        rows = [("(initialisation)", "held-out", results[0]["by_trajectory"]["initial"])]
        for r in results:
            rows += [(row_name(r, args), "held-out", r["by_trajectory"]["metrics"]), (row_name(r, args), "training", r["by_trajectory"]["training_clips"])]
        for variant, split, kinds in rows:
            for kind, m in (kinds or {}).items():
                print(f"| {variant} | {split} | {kind} | {m['clips']} | " + " | ".join(format(m[k], spec) for k, _, spec in TRAJECTORY_COLUMNS) + " |")
    # weak / full within one training, or within one --evaluate folder (a checkpoint folder holds both)
    groups: Dict[Optional[str], Dict[str, dict]] = {}
    for r in results:
        folder = str(Path(r["settings"]["checkpoint"]).parent) if r["settings"].get("checkpoint") else None
        groups.setdefault(folder, {})[r["variant"]] = r["metrics"]
    for folder, by_name in groups.items():
        if "weak" in by_name and "full" in by_name:
            weak, full = by_name["weak"], by_name["full"]
            ratio = lambda k: weak[k] / full[k] if full[k] > 0 else float("nan")  # noqa: E731
            where = f" ({folder})" if len(groups) > 1 else ""
            print(f"\nweak / full{where}: AUC@30 {ratio('pose_auc30'):.2f}, depth tau {ratio('depth_tau'):.2f}, point-map tau {ratio('pointmap_tau'):.2f} "
                  f"(target >= 0.9 on AUC@30 and depth tau; the paper reached 0.78 on AUC@30)")


def row_name(row: dict, args) -> str:
    """The variant, and with several --evaluate folders which one (a run's step_NNNNNN, or another run's
    folder: their step counts alone may repeat) and the steps its checkpoint had."""
    if args.evaluate is not None and len(args.evaluate) > 1:
        return f"{row['variant']} ({Path(row['settings']['checkpoint']).parent.name}, {row['settings']['iterations']} steps)"
    return row["variant"]


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data and budget (CI): shows the pipeline works, not the claim")
    parser.add_argument("--data", type=Path, default=None, help="a folder with train/ and eval/ scene folders (default: the bundled synthetic dataset)")
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--clips", type=int, default=None)
    parser.add_argument("--min-views", type=int, default=None)
    parser.add_argument("--max-views", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak learning rate (the method config has 3e-4; at these short budgets 1e-3 learns faster for both)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many variants at once, in separate processes sharing the CPU cores (or the GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per variant (default: the cores divided by --jobs); set it when running several copies of this script side by side")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="keep each variant's trained FFRM here as VARIANT.pt (e.g. for bench_vs_colmap.py --checkpoint)")
    parser.add_argument("--keep-every", type=int, default=None, metavar="STEPS",
                        help="with --checkpoints, also keep the FFRM every STEPS steps as CHECKPOINTS/step_NNNNNN/VARIANT.pt, "
                             "so --evaluate can score where in a run a metric was won or lost")
    parser.add_argument("--resume", type=Path, default=None, metavar="CHECKPOINTS/step_NNNNNN",
                        help="continue a stopped training from the state --keep-every kept there (VARIANT.ckpt: weights, optimiser, "
                             "learning-rate schedule, clip sampler); give the stopped run's command (same --iterations, --lr, --set, data) "
                             "plus this. Later kept steps and the final FFRM go to --checkpoints (default: the folder above this one)")
    parser.add_argument("--evaluate", type=Path, nargs="+", default=None, metavar="CHECKPOINTS",
                        help="train nothing: score the VARIANT.pt files a run kept with --checkpoints on this --data (e.g. more held-out "
                             "scenes); several folders (e.g. CHECKPOINTS/step_*) score a run's history with one Trainer and one "
                             "initialisation row")
    parser.add_argument("--train-clips", type=int, default=12,
                        help="also score this many training scenes' fixed clips (fit vs transfer); 0 for none")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override Trainer config fields for every variant, e.g. pipeline.model.loss.reprojection.robust=l1")
    parser.add_argument("--label-cache", type=Path, default=None,
                        help="weak labels from this cache instead of labelling into each run's temporary folder; fill it beforehand "
                             "with the training labels' teachers, `reliev3r-pseudolabel --data DATA/train --matcher simulated "
                             "--cache-dir DIR --workers N` (content-addressed, so variants and runs share it)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.variants = args.variants or (["weak", "full"] if quick else VARIANTS)
    args.iterations = args.iterations or (30 if quick else 3000)
    args.clips = args.clips or (1 if quick else 2)
    args.min_views = args.min_views or (2 if quick else 4)
    args.max_views = args.max_views or (4 if quick else 8)
    if args.resume is not None:
        if args.evaluate is not None:
            parser.error("--resume continues a training; --evaluate trains nothing")
        missing = [str(args.resume / f"{v}.ckpt") for v in args.variants if not (args.resume / f"{v}.ckpt").is_file()]
        if missing:
            parser.error(f"--resume: no training state {', '.join(missing)}; a run keeps one every --keep-every steps "
                         "(CHECKPOINTS/step_NNNNNN/VARIANT.ckpt)")
        args.checkpoints = args.checkpoints or args.resume.parent
    if args.keep_every is not None:
        if args.checkpoints is None or args.evaluate is not None:
            parser.error("--keep-every keeps a training's intermediate FFRMs: it needs --checkpoints DIR and no --evaluate")
        if not 0 < args.keep_every < args.iterations:
            parser.error(f"--keep-every {args.keep_every}: give a step count between 1 and the {args.iterations} iterations "
                         "(the final FFRM is always kept as CHECKPOINTS/VARIANT.pt)")
    if args.evaluate is not None:
        missing = [str(folder / f"{v}.pt") for folder in args.evaluate for v in args.variants if not (folder / f"{v}.pt").is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)}: no FFRM checkpoint there; keep a run's with --checkpoints DIR, then pass DIR to --evaluate")
        from reliev3r_ns.model.ffrm import FFRM

        for folder in args.evaluate:
            for variant in args.variants:
                # an unreadable one fails now, not after the minutes of scoring the ones before it (any variant's)
                FFRM.from_checkpoint(folder / f"{variant}.pt", map_location="cpu")
    results = []
    with tempfile.TemporaryDirectory(prefix="reliev3r-runs-") as workdir:
        train, evaluation = data_folders(args, Path(workdir))
        if args.resume is not None:
            # Refused here, before any variant trains (a refusal inside a --jobs worker would not come back).
            for variant in args.variants:
                config = make_config(variant, train, evaluation, Path("outputs"), args.label_cache or Path("labels"), args)
                read_training_state(args.resume / f"{variant}.ckpt", training_settings(config, args))
        if args.jobs <= 1:
            for variant in args.variants:
                print(f"== {variant}", file=sys.stderr)
                results += run_variant(variant, train, evaluation, Path(workdir) / variant, args, args.threads or 0)
        else:
            # A fresh spawned process per variant (nerfstudio's writers are module globals), each with an
            # equal share of the cores. Leaving the block on an error, Ctrl-C or a kill (SIGTERM is
            # turned into an exit while the pool runs) terminates the workers instead of orphaning them.
            threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
            try:
                with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
                    per_variant = pool.starmap(run_variant, [(v, train, evaluation, Path(workdir) / v, args, threads) for v in args.variants])
                results = [row for rows in per_variant for row in rows]
            finally:
                signal.signal(signal.SIGTERM, previous)
    print_table(results, args)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
