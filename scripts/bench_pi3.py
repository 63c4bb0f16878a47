"""Time and peak memory of the 1 B pi3 network against the number of views.

    python scripts/bench_pi3.py                                  # CPU: 8 views at 518 px, fp32
    python scripts/bench_pi3.py --views 2 4 8 16 32 64 --bf16    # a GPU: bf16 autocast, up to the most that fit
    python scripts/bench_pi3.py --checkpoint yyfz233/Pi3         # the released weights instead of random ones

Each view count runs in a fresh process so its peak memory is its own (the CUDA allocator's peak on a
GPU; the process's maximum resident set on the CPU, weights included). Random weights cost the same
time as the released ones; ``--checkpoint`` loads those instead. Images are the shared real frames
(``../shared/data/pi3_examples/valley``) when present, else noise, resized to 518 px on the long side
(294 x 518 for the 16:9 valley frames; ``--square``: 518 x 518 noise, the most tokens). A view count that runs out of memory is reported as such and ends the sweep.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reliev3r_ns.eval.machine import machine_fingerprint, machine_label

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pi3_examples" / "valley" / "images"


def _images(views: int, resolution: int, square: bool = False) -> torch.Tensor:
    from reliev3r_ns.data.scene_io import read_rgb

    if square:  # the most tokens a 518 px long side gives: 37 x 37 patches per view
        return torch.rand(views, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    paths = sorted(SHARED.glob("*.png"), key=lambda p: int(p.stem.split("_")[-1])) if SHARED.is_dir() else []
    if paths:
        frames = [torch.from_numpy(np.array(read_rgb(paths[k % len(paths)]))).permute(2, 0, 1).float() / 255 for k in range(views)]
        return torch.stack(frames)
    return torch.rand(views, 3, 3 * resolution // 4, resolution, generator=torch.Generator().manual_seed(0))


def _run(views: int, args, queue) -> None:
    try:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        device = torch.device(args.device)
        started = time.perf_counter()
        if args.checkpoint:
            from reliev3r_ns.model import load_ffrm

            model = load_ffrm(args.checkpoint, map_location=device).eval()
        else:
            from reliev3r_ns.model.pi3 import Pi3Network, pi3_config

            torch.manual_seed(0)
            model = Pi3Network(pi3_config("pi3")).to(device).eval()
        load_seconds = time.perf_counter() - started
        images = _images(views, args.resolution, args.square)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        dtype = torch.bfloat16 if args.bf16 else None
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            prediction = model.infer(images, resolution=args.resolution, autocast_dtype=dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        h, w = model.inference_size(*images.shape[-2:], args.resolution)
        queue.put({"views": views, "network_size": [h, w], "seconds": min(times), "seconds_per_view": min(times) / views,
                   "peak_memory_gib": peak / 2**30, "load_seconds": load_seconds, "parameters": model.num_parameters(),
                   "finite": bool(torch.isfinite(prediction.depth).all() and torch.isfinite(prediction.cam_to_world).all())})
    except torch.cuda.OutOfMemoryError:
        queue.put({"views": views, "out_of_memory": True})
    except MemoryError:
        queue.put({"views": views, "out_of_memory": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[8])
    parser.add_argument("--resolution", type=int, default=518, help="long side in pixels, rounded to multiples of 14")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs from Ampere on); outputs stay fp32")
    parser.add_argument("--checkpoint", default=None, help="pi3 weights, a hub id or a reliev3r checkpoint (default: random 1 B pi3)")
    parser.add_argument("--square", action="store_true", help="square noise images (518 x 518) instead of the shared frames")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    print(f"pi3 on {machine_label(machine_fingerprint())}, {'bf16' if args.bf16 else 'fp32'}, long side {args.resolution} px")
    for views in args.views:
        queue = context.Queue()
        process = context.Process(target=_run, args=(views, args, queue))
        process.start()
        process.join()
        row = queue.get() if not queue.empty() else {"views": views, "out_of_memory": True, "exit_code": process.exitcode}
        rows.append(row)
        if row.get("out_of_memory"):
            print(f"{views:>4} views: out of memory")
            break
        print(f"{views:>4} views at {row['network_size'][1]}x{row['network_size'][0]}: {row['seconds']:.1f} s "
              f"({row['seconds_per_view']:.2f} s/view), peak memory {row['peak_memory_gib']:.2f} GiB, outputs finite: {row['finite']}")
    result = {"command": " ".join(["python", "scripts/bench_pi3.py", *sys.argv[1:]]), "machine": machine_fingerprint(),
              "dtype": "bf16" if args.bf16 else "fp32", "device": args.device, "rows": rows}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
