"""Time and peak memory of each loss (forward + backward), default: 16 views at 128 px, 10k correspondences.

    python scripts/bench_losses.py [--views 16] [--size 128] [--matches 10000] [--device cpu|cuda]

Prints one line per loss: milliseconds (median of repeats) and peak memory (CUDA allocator on GPU,
process RSS growth on CPU). Figures are for the machine it runs on; nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from reliev3r_ns.geometry import intrinsics_from_fov, look_at
from reliev3r_ns.losses import Matches, ReprojectionLossConfig, relative_depth_loss, reprojection_loss, supervised_losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--matches", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    V, H, W, M = args.views, args.size, args.size, args.matches
    depth = (1 + torch.rand(1, V, H, W, generator=g)).to(device).requires_grad_(True)
    conf = (0.5 + torch.rand(1, V, H, W, generator=g)).to(device).requires_grad_(True)
    teacher = torch.rand(1, V, H, W, generator=g).to(device)
    K = intrinsics_from_fov(torch.full((1, V), 1.0), W, H).to(device)
    angles = torch.linspace(0, 1.5, V)
    centres = torch.stack([3 * torch.cos(angles), 3 * torch.sin(angles), torch.ones(V)], -1)
    c2w = look_at(centres, torch.zeros(V, 3), torch.tensor([0.0, 0.0, 1.0]))[None].to(device).requires_grad_(True)
    vi = torch.randint(0, V, (M,), generator=g)
    vj = (vi + 1 + torch.randint(0, V - 1, (M,), generator=g)) % V
    matches = Matches(torch.zeros(M, dtype=torch.long), vi, vj, torch.rand(M, 2, generator=g) * (W - 1), torch.rand(M, 2, generator=g) * (H - 1), torch.ones(M)).to(device)

    cases = {
        "relative depth (median/MAD)": lambda: relative_depth_loss(depth, conf, teacher, "disparity")[0],
        "reprojection (angle)": lambda: reprojection_loss(depth, K, c2w, matches)[0],
        "reprojection (pixel)": lambda: reprojection_loss(depth, K, c2w, matches, ReprojectionLossConfig(residual="pixel"))[0],
        "supervised (points + camera)": lambda: sum(supervised_losses(depth, conf, K, c2w, depth.detach() * 1.1, K, c2w.detach())[:2]),
    }
    print(f"device {device}, {V} views, {H}x{W} px, {M} correspondences, median of {args.repeats} runs (forward + backward)")
    for name, fn in cases.items():
        fn().backward()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        times.sort()
        if device.type == "cuda":
            memory = f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB"
        else:
            memory = f"max RSS growth {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024:.1f} MiB"
        print(f"  {name:30s} {1000 * times[len(times) // 2]:8.2f} ms   {memory}")


if __name__ == "__main__":
    main()
