"""Folders of synthetic scenes, resumable, and the bundled default dataset in the user's cache.

A dataset folder holds ``dataset.json`` (the generator version, base seed and scene config) and one
scene folder per scene (``scene_00000``...; layout in :mod:`reliev3r_ns.data.scene_io`). Scenes are
written atomically, so an interrupted run resumes with the scenes it lacks, and a folder made with a
different config is never silently mixed with a new one.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from reliev3r_ns.data.process_pool import scene_process_pool
from reliev3r_ns.data.scene_io import write_scene
from reliev3r_ns.data.synthetic import SyntheticSceneConfig, generate_scene

# Bump when the renderer's output changes, so caches made by an older version are not reused.
SYNTHETIC_VERSION = 1
DATASET_META_FILE = "dataset.json"

DEFAULT_SPLITS: Dict[str, Dict[str, int]] = {
    "train": {"num_scenes": 32, "seed": 0},
    "eval": {"num_scenes": 8, "seed": 1_000_003},
}


def cache_dir() -> Path:
    """Where generated data is cached: $RELIEV3R_CACHE_DIR, else $XDG_CACHE_HOME/reliev3r_ns, else ~/.cache/reliev3r_ns."""
    if os.environ.get("RELIEV3R_CACHE_DIR"):
        return Path(os.environ["RELIEV3R_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reliev3r_ns"


def default_dataset_dir() -> Path:
    return cache_dir() / f"synthetic-default-v{SYNTHETIC_VERSION}"


def scene_seed(base_seed: int, index: int) -> int:
    """Independent per-scene seeds, so scene k is the same whatever the dataset's size."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def _dataset_meta(config: SyntheticSceneConfig, seed: int) -> Dict:
    return {"generator": "reliev3r-synthetic", "version": SYNTHETIC_VERSION, "seed": seed, "config": json.loads(json.dumps(asdict(config)))}


def dataset_identity(folder: Path) -> Optional[Dict]:
    """What a result row needs to say which data it measured: the folder's dataset.json (generator,
    version, seed, scene config) and its scene count, or None for a folder the generator did not make
    (a path alone does not tell two /tmp datasets apart)."""
    from reliev3r_ns.data.scene_io import list_scenes

    meta_path = Path(folder) / DATASET_META_FILE
    if not meta_path.is_file():
        return None
    return {**_read_meta(meta_path), "num_scenes": len(list_scenes(folder))}


def _read_meta(meta_path: Path) -> Dict:
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_path}: not valid JSON ({error}); delete the folder and generate again") from None


def generate_dataset(
    output_dir: Path,
    num_scenes: int,
    seed: int = 0,
    config: SyntheticSceneConfig = SyntheticSceneConfig(),
    show_progress: bool = True,
    workers: int = 1,
) -> List[Path]:
    """Generate (or finish generating) ``num_scenes`` scenes under ``output_dir``; returns their folders.

    ``workers`` > 1 renders scenes in that many processes; the scenes are the same as with one.

    Raises:
        ValueError: when ``output_dir`` already holds a dataset made with another version, seed or config.
    """
    if num_scenes < 1:
        raise ValueError("num_scenes must be >= 1")
    config.validate()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    meta = _dataset_meta(config, seed)
    meta_path = output_dir / DATASET_META_FILE
    if meta_path.exists():
        existing = _read_meta(meta_path)
        if existing != meta:
            raise ValueError(
                f"{meta_path}: this folder was generated with a different version / seed / config "
                f"({existing}); choose another --output-dir or delete it"
            )
    else:
        tmp = meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_path)

    scene_dirs = [output_dir / f"scene_{index:05d}" for index in range(num_scenes)]
    todo = [i for i, d in enumerate(scene_dirs) if not d.exists()]
    from rich.progress import Progress

    with Progress(disable=not show_progress or not todo, transient=False) as progress:
        task = progress.add_task(f"rendering {len(todo)} scenes into {output_dir}" + (f" ({workers} workers)" if workers > 1 else ""), total=len(todo))
        if workers <= 1 or len(todo) <= 1:
            for index in todo:
                _render_scene(scene_dirs[index], index, seed, config, meta["config"])
                progress.advance(task)
        else:
            # Scene k's seed depends only on (seed, k), so the workers write exactly what one process would.
            with scene_process_pool(workers) as pool:
                futures = [pool.submit(_render_scene, scene_dirs[index], index, seed, config, meta["config"]) for index in todo]
                for future in as_completed(futures):
                    future.result()
                    progress.advance(task)
    return scene_dirs


def _render_scene(scene_dir: Path, index: int, seed: int, config: SyntheticSceneConfig, config_meta: Dict) -> None:
    rendered = generate_scene(scene_seed(seed, index), config)
    write_scene(
        scene_dir,
        rendered.images,
        rendered.cam_to_world,
        rendered.intrinsics,
        depths=rendered.depths,
        metadata={
            "generator": "reliev3r-synthetic",
            "version": SYNTHETIC_VERSION,
            "dataset_seed": seed,
            "index": index,
            **rendered.metadata,
            "config": config_meta,
            "depth_unit": "metres (z-depth)",
        },
    )


def ensure_default_dataset(show_progress: bool = True) -> Dict[str, Path]:
    """The bundled default (train and eval splits), rendered into the cache on first use."""
    root = default_dataset_dir()
    out = {}
    for split, spec in DEFAULT_SPLITS.items():
        generate_dataset(root / split, spec["num_scenes"], seed=spec["seed"], show_progress=show_progress)
        out[split] = root / split
    return out
