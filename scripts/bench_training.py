"""Training throughput of ``ns-train reliev3r``: views per second and peak memory, per preset.

Each configuration runs in a fresh process through nerfstudio's Trainer exactly as ``ns-train``
builds it (the ``reliev3r`` method config: datamanager clips, FFRM, weak losses, AdamW step), on
synthetic scenes rendered once into a temporary folder. After ``--warmup`` iterations, ``--steps``
iterations of ``Trainer.train_iteration`` with the training callbacks around it (as ``Trainer.train``
runs them) are timed, and their mean is reported. Printed per row: seconds per iteration, views
per second (clips x views / time), the peak memory (CUDA allocator peak on GPU; the process's
maximum resident set on CPU, coarser), and the throughput relative to the first row
(measured in the same run). With ``--bf16`` every preset also runs under bf16 autocast and the
bf16 / fp32 speed-up is printed (a GPU question; on CPU bf16 is usually slower).

    python scripts/bench_training.py                       # CPU: tiny and small, 2 clips x 8 views
    python scripts/bench_training.py --presets base large --bf16      # on a GPU
    python scripts/bench_training.py --quick               # tiny only, a few steps (CI)
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from reliev3r_ns.eval.machine import machine_fingerprint, machine_label

DEFAULT_SIZE = {"tiny": (96, 128), "small": (192, 256), "base": (294, 392), "large": (294, 392)}


def measure(preset: str, bf16: bool, size, clips: int, views: int, data: Path, workdir: Path, warmup: int, steps: int) -> Dict:
    """One configuration, in the calling (fresh) process."""
    from reliev3r_ns.method_configs.reliev3r import reliev3r_method

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = copy.deepcopy(reliev3r_method.config)
    config.vis = "tensorboard"
    config.output_dir = workdir / f"{preset}-{'bf16' if bf16 else 'fp32'}"
    config.max_num_iterations = warmup + steps
    config.steps_per_save = config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.machine.device_type = device
    config.pipeline.model.model_size = preset
    config.pipeline.model.bf16 = bf16
    dm = config.pipeline.datamanager
    dm.data, dm.eval_data, dm.label_cache = data / "train", data / "eval", data / "labels"
    dm.image_size = tuple(size)
    dm.clips_per_batch, dm.min_views, dm.max_views = clips, views, views
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.pipeline.train()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    def one_step(step: int) -> None:
        # What Trainer.train does per step, less logging, eval and saving: the callbacks (the model's
        # tells it which steps are logged) around train_iteration.
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)

    for step in range(warmup):
        one_step(step)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        one_step(step)
        sync()
        times.append(time.perf_counter() - start)
    # GPU: everything the allocator held at its peak (weights, optimiser state, activations). CPU: the
    # process's maximum resident set, which also counts Python, nerfstudio and the scenes in memory.
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = statistics.mean(times)  # a mean: the steps nerfstudio logs cost more (GT metrics) and count
    batching = []  # assembling a batch (inside each iteration above), timed on its own
    for step in range(steps):
        start = time.perf_counter()
        trainer.pipeline.datamanager.next_train(step)
        batching.append(time.perf_counter() - start)
    # Tensor ops dispatched per step (on a GPU each is at least a kernel launch, so for a small model
    # their count, not the arithmetic, sets the step time), on a step nerfstudio logs and one it does not.
    from torch.profiler import ProfilerActivity, profile

    def count_ops(step: int) -> int:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_step(step)
        return sum(event.count for event in prof.key_averages() if event.key.startswith("aten::"))

    every = max(1, trainer.config.logging.steps_per_log)
    logged = (warmup + steps + every) // every * every
    ops_logged, ops_unlogged = count_ops(logged), count_ops(logged + 1) if every > 1 else None
    return {
        "preset": preset, "bf16": bf16, "size": f"{size[1]}x{size[0]}", "clips": clips, "views": views,
        "params_M": trainer.pipeline.model.ffrm.num_parameters() / 1e6,
        "s_per_iter": seconds, "views_per_s": clips * views / seconds, "peak_MiB": peak / 2**20,
        "batching_share": statistics.median(batching) / seconds, "ops_logged_step": ops_logged, "ops_unlogged_step": ops_unlogged,
    }


def _measure_star(args) -> Dict:
    return measure(*args)


def main(argv=None) -> List[Dict]:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"] if cuda else ["tiny", "small"])
    parser.add_argument("--bf16", action="store_true", help="also run every preset under bf16 autocast")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="training size (default per preset)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny only, 2 views, few steps (CI)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.views, args.clips, args.warmup, args.steps = ["tiny"], 2, 1, 1, 2

    from rich.console import Console
    from rich.table import Table

    from reliev3r_ns.data.synthetic import SyntheticSceneConfig
    from reliev3r_ns.data.synthetic_dataset import generate_dataset

    console = Console(width=160)
    machine = machine_fingerprint("cuda" if cuda else "cpu")
    device_label = machine_label(machine)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="reliev3r-bench-training-") as tmp:
        data = Path(tmp) / "data"
        scene = SyntheticSceneConfig(width=128, height=96, num_views=max(8, args.views), supersample=1, texture_size=256)
        generate_dataset(data / "train", 4, seed=1, config=scene, show_progress=False)
        generate_dataset(data / "eval", 1, seed=2, config=scene, show_progress=False)
        context = multiprocessing.get_context("spawn")
        for preset in args.presets:
            for bf16 in ([False, True] if args.bf16 else [False]):
                size = args.size or DEFAULT_SIZE[preset]
                job = (preset, bf16, size, args.clips, args.views, data, Path(tmp), args.warmup, args.steps)
                with context.Pool(1, maxtasksperchild=1) as pool:  # a fresh process: its own peak memory
                    try:
                        row = pool.apply(_measure_star, (job,))
                    except torch.OutOfMemoryError:
                        row = {"preset": preset, "bf16": bf16, "size": f"{size[1]}x{size[0]}", "note": "out of memory"}
                rows.append(row)
                if "views_per_s" in row:
                    console.print(f"  {preset} {'bf16' if bf16 else 'fp32'}: {row['views_per_s']:.1f} views/s, peak {row['peak_MiB']:.0f} MiB", highlight=False)

    measured = [r for r in rows if "views_per_s" in r]
    table = Table(title=f"ns-train reliev3r throughput on {device_label}: {args.clips} clip(s) x {args.views} views per step, mean of {args.steps}")
    for column in ("preset", "precision", "size", "params (M)", "s / iter", "views / s", f"x {measured[0]['preset'] if measured else ''}", "peak MiB", "batching",
                   "tensor ops / step"):
        table.add_column(column, justify="right")
    for r in rows:
        if "views_per_s" not in r:
            table.add_row(r["preset"], "bf16" if r["bf16"] else "fp32", r["size"], "", "", r["note"], "", "", "", "")
            continue
        table.add_row(r["preset"], "bf16" if r["bf16"] else "fp32", r["size"], f"{r['params_M']:.1f}", f"{r['s_per_iter']:.3f}",
                      f"{r['views_per_s']:.1f}", f"{r['views_per_s'] / measured[0]['views_per_s']:.2f}", f"{r['peak_MiB']:.0f}",
                      f"{100 * r['batching_share']:.1f} %", f"{r['ops_unlogged_step'] or r['ops_logged_step']} ({r['ops_logged_step']} logged)")
    console.print(table)
    for preset in args.presets:
        pair = {r["bf16"]: r for r in measured if r["preset"] == preset}
        if True in pair and False in pair:
            console.print(f"{preset}: bf16 / fp32 throughput {pair[True]['views_per_s'] / pair[False]['views_per_s']:.2f}, "
                          f"peak memory {pair[True]['peak_MiB'] / pair[False]['peak_MiB']:.2f}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps({"device": device_label, "machine": machine, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
