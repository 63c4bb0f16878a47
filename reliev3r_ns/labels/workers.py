"""Labelling many scenes in worker processes: used by ``reliev3r-pseudolabel --workers`` and by the
training datamanager (``--pipeline.datamanager.label-workers``)."""

from __future__ import annotations

import warnings
from concurrent.futures import as_completed
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from reliev3r_ns.data.process_pool import scene_process_pool
from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.labels.cache import LabelCache
from reliev3r_ns.labels.pipeline import Labeller, PseudoLabelConfig
from reliev3r_ns.teachers.depth import TeacherError

Result = Tuple[Path, str, str]  # (scene, "ok" | "failed", details)

_WORKER: Optional[Labeller] = None


def _init_worker(config: PseudoLabelConfig, root: Path) -> None:
    global _WORKER
    _WORKER = Labeller(config, LabelCache(root))


def label_scene(scene: Path, labeller: Optional[Labeller] = None, progress: Optional[Callable[[int, int], None]] = None) -> Result:
    """Label one scene; a bad scene is reported (not raised) so the others go on."""
    labeller = labeller or _WORKER
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            labels = labeller.label(labeller.open_view_set(scene), progress)
        notes = "; ".join(str(w.message) for w in caught)
        return scene, "ok", f"{len(labels.teacher)} views, {len(labels.pairs)} pairs, {labels.num_matches} matches" + (f" ({notes})" if notes else "")
    except (SceneFormatError, TeacherError, ValueError) as error:
        return scene, "failed", str(error)


def label_in_processes(config: PseudoLabelConfig, root: Path, scenes: List[Path], workers: int) -> Iterator[Result]:
    """Label ``scenes`` into the cache at ``root`` with ``workers`` processes; results as they finish."""
    config.build_matcher()  # a matcher that cannot be built fails here, with its message, not in every worker
    with scene_process_pool(workers, _init_worker, (config, root)) as pool:
        futures = [pool.submit(label_scene, scene) for scene in scenes]
        for future in as_completed(futures):
            yield future.result()
