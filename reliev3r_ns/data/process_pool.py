"""Process pools for per-scene work (rendering scenes, labelling them)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Optional, Tuple


def _start_worker(threads: int, initializer: Optional[Callable], initargs: Tuple) -> None:
    import torch

    torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


def scene_process_pool(workers: int, initializer: Optional[Callable] = None, initargs: Tuple = ()) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each with an equal share of the cores for torch's thread pool.

    spawn: the parent may hold torch / OpenMP / CUDA state that fork would copy. The share: otherwise
    every process starts a thread pool as wide as the machine (16 workers on 16 cores: 256 threads).
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(threads, initializer, initargs))
