"""Parameters, forward time, forward+backward time and peak memory of the FFRM presets.

    python scripts/bench_model.py                          # CPU: tiny and small, N = 2..32
    python scripts/bench_model.py --presets base large     # on a GPU: bf16 autocast, flash attention
    python scripts/bench_model.py --quick                  # a few seconds: tiny, N = 2, 4

Each (preset, N) runs in a fresh process so peak memory is its own: the CUDA allocator's peak on
GPU, the growth of the process's maximum resident set on CPU (a coarser figure). Times are medians.
The 'x N=2' columns are time per view relative to the N=2 run of the same preset, measured in the
same run. The memory exponent is the slope of log(peak) against log(N) over N >= 4: 1 means linear
in the number of views (flash / memory-efficient attention), 2 quadratic (materialised attention).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import resource
import statistics
import sys
import time
from typing import Dict, List

import torch

from reliev3r_ns.eval.machine import machine_fingerprint, machine_label

DEFAULT_SIZE = {"tiny": (96, 128), "small": (192, 256), "base": (392, 518), "large": (392, 518)}


def _peak_bytes(device: torch.device, baseline: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - baseline
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, views: int, height: int, width: int, device_name: str, repeats: int, checkpointing: bool) -> Dict:
    """One configuration, in the calling (fresh) process."""
    from reliev3r_ns.model import FFRM, ffrm_config

    torch.manual_seed(0)
    device = torch.device(device_name)
    model = FFRM(ffrm_config(preset, gradient_checkpointing=checkpointing)).to(device)
    images = torch.rand(1, views, 3, height, width, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    autocast = lambda: torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa: E731
    result = {"preset": preset, "views": views, "size": f"{width}x{height}", "params_M": model.num_parameters() / 1e6}

    def forward() -> None:
        with torch.inference_mode(), autocast():
            model.eval()(images)
        _sync(device)

    def forward_backward() -> None:
        with autocast():
            out = model.train()(images)
            loss = out.depth.log().mean() + out.confidence.mean() + out.cam_to_world.sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(device)

    # The resident-set maximum only grows, so on CPU both peaks count from the same baseline (the
    # forward+backward peak is the larger one anyway).
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
        try:
            fn()  # warm-up, and the memory peak
            result[f"{name}_peak_MiB"] = _peak_bytes(device, baseline) / 2**20
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            result[f"{name}_ms"] = 1000 * statistics.median(times)
        except torch.OutOfMemoryError:
            result[f"{name}_ms"] = result[f"{name}_peak_MiB"] = float("nan")
            result["note"] = "out of memory"
    return result


def _measure_star(args) -> Dict:
    return measure(*args)


def exponent(rows: List[Dict], key: str) -> float:
    points = [(math.log(r["views"]), math.log(r[key])) for r in rows if r["views"] >= 4 and r.get(key, 0) > 0 and math.isfinite(r[key])]
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base", "large"] if cuda else ["tiny", "small"])
    parser.add_argument("--views", nargs="+", type=int, default=[2, 4, 8, 16, 32])
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="image size (default per preset)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in forward+backward")
    parser.add_argument("--quick", action="store_true", help="tiny preset, N = 2 and 4, one repeat")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.quick:
        args.presets, args.views, args.repeats = ["tiny"], [2, 4], 1

    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    machine = machine_fingerprint(args.device)
    device_label = machine_label(machine)
    console.print(f"device: {device_label}; {'bf16 autocast' if args.device.startswith('cuda') else 'fp32'}; median of {args.repeats}")
    rows: List[Dict] = []
    context = multiprocessing.get_context("spawn")
    for preset in args.presets:
        height, width = args.size or DEFAULT_SIZE[preset]
        preset_rows = []
        for views in args.views:
            with context.Pool(1, maxtasksperchild=1) as pool:  # a fresh process per measurement
                row = pool.apply(_measure_star, ((preset, views, height, width, args.device, args.repeats, args.checkpointing),))
            preset_rows.append(row)
            console.print(f"  {preset} N={views}: forward {row['forward_ms']:.0f} ms, forward+backward {row['forward_backward_ms']:.0f} ms", highlight=False)
        base = preset_rows[0]
        for row in preset_rows:
            scale = base["views"] / row["views"]
            row["forward_per_view_vs_first"] = row["forward_ms"] * scale / base["forward_ms"]
            row["forward_backward_per_view_vs_first"] = row["forward_backward_ms"] * scale / base["forward_backward_ms"]
        rows += preset_rows

    table = Table(title="FFRM presets")
    for column in ("preset", "size", "params (M)", "N", "fwd ms", "fwd+bwd ms", "fwd/view x N=2", "fwd+bwd/view x N=2", "fwd peak MiB", "fwd+bwd peak MiB"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["preset"], r["size"], f"{r['params_M']:.1f}", str(r["views"]), f"{r['forward_ms']:.0f}", f"{r['forward_backward_ms']:.0f}",
                      f"{r['forward_per_view_vs_first']:.2f}", f"{r['forward_backward_per_view_vs_first']:.2f}",
                      f"{r['forward_peak_MiB']:.0f}", f"{r['forward_backward_peak_MiB']:.0f}")
    console.print(table)
    for preset in args.presets:
        preset_rows = [r for r in rows if r["preset"] == preset]
        console.print(
            f"{preset}: peak memory ~ N^{exponent(preset_rows, 'forward_peak_MiB'):.2f} (forward), "
            f"N^{exponent(preset_rows, 'forward_backward_peak_MiB'):.2f} (forward+backward), N >= 4",
            highlight=False,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_label, "machine": machine, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
