"""Which machine made a recorded figure.

One-thread CPU trainings repeat bit for bit on one machine (also inside a process pool) but not on another:
float rounding that differs from the first forward pass grows over 10000 steps into about 0.1 on a weak /
full ratio (docs/reproduction_log.md, "Seed 42 trained again"). Timings differ across machines by far more. So every script
that records figures stores this fingerprint beside them, and prints the same label above its table.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Optional

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux); `platform` elsewhere, which often names only the architecture."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_fingerprint(device: Optional[str] = None) -> dict:
    """CPU model, torch's CPU kernel level (e.g. AVX512: it picks the kernels, hence the rounding), torch version,
    intra-op threads, and the GPU that `device` names (default: the current CUDA device when there is one)."""
    gpu = None
    if device is None or str(device).startswith("cuda"):
        gpu = torch.cuda.get_device_name(device) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": str(torch.__version__),  # a plain str: checkpoints load with weights_only
            "threads": torch.get_num_threads(), "gpu": gpu}


def machine_label(fingerprint: dict) -> str:
    """One line for a table's heading. The CPU is always named: COLMAP, data loading and CPU runs use it."""
    cpu = f"CPU {fingerprint['cpu']} ({fingerprint['cpu_capability']}), {fingerprint['threads']} thread(s)"
    return f"{'GPU ' + fingerprint['gpu'] + ', ' if fingerprint['gpu'] else ''}{cpu}, torch {fingerprint['torch']}"
