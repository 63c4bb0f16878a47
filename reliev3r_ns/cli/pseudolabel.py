"""reliev3r-pseudolabel: compute the weak labels (teacher depth, matches) of every scene under a folder.

    reliev3r-pseudolabel --data DIR                                   # simulated teacher (scenes with GT depth) + SIFT
    reliev3r-pseudolabel --data DIR --depth-teacher transformers --depth-model ./depth-anything-v2-small
    reliev3r-pseudolabel --data DIR --cache-dir SHARED/labels --shard 2/8    # machine 2 of 8, one shared cache

Labels go to the content-addressed cache (``--cache-dir``, default ``<cache>/labels``); a second
run, or ``ns-train reliev3r`` on the same data, finds them there. An interrupted run resumes. A bad
scene is reported and skipped; the others are labelled; the exit code is 1 if any scene failed.

Several machines label one collection by each taking a shard (``--shard K/N``) into one cache on a
shared filesystem: a scene belongs to the shard its path (relative to ``--data``) hashes to, whatever
else the folder holds, so the N shards split it with no scene labelled twice, and a shard run again
anywhere resumes from the labels already in the cache (each is written to a temporary name and renamed).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import tyro

from reliev3r_ns.data.scene_io import SceneFormatError
from reliev3r_ns.data.synthetic_dataset import cache_dir
from reliev3r_ns.labels import LabelCache, Labeller, PairSelectionConfig, PseudoLabelConfig, discover_view_sets
from reliev3r_ns.labels.video_frames import DEFAULT_VIDEO_FRAMES
from reliev3r_ns.labels.pipeline import MatcherName
from reliev3r_ns.labels.workers import label_in_processes, label_scene
from reliev3r_ns.teachers.depth import TeacherError, TransformersDepthTeacherConfig
from reliev3r_ns.teachers.cotracker import CoTrackerMatcherConfig
from reliev3r_ns.teachers.imported import ImportedMatcherConfig
from reliev3r_ns.teachers.kornia_matchers import KorniaMatcherConfig
from reliev3r_ns.teachers.sift import SiftMatcherConfig
from reliev3r_ns.teachers.simulated import SimulatedDepthTeacherConfig, SimulatedMatcherConfig


def default_label_cache() -> Path:
    return cache_dir() / "labels"


@dataclass
class PseudoLabel:
    data: Path
    """A folder of images, a nerfstudio dataset (DL3DV's included), a video, or a folder of these (searched recursively)."""
    cache_dir: Optional[Path] = None
    """Label cache root (default: <cache>/labels, see docs/reference.md, Weak labels)."""
    depth_teacher: Literal["simulated", "transformers"] = "simulated"
    """'simulated' turns GT depth into relative depth (synthetic scenes; experiments and tests only)."""
    depth_model: Optional[str] = None
    """transformers teacher: a save_pretrained folder or a hub id (from the local Hugging Face cache, else
    downloaded when online; offline, HF_HUB_OFFLINE=1, an uncached id is an error saying how to get it)."""
    depth_space: Optional[Literal["depth", "disparity"]] = None
    """What the depth model predicts; inferred for Depth Anything / Depth Pro / ZoeDepth / DPT."""
    device: str = "auto"
    batch_size: int = 4
    matcher: MatcherName = "sift"
    """'kornia': DISK + LightGlue or LoFTR, kornia's hub weights or local files (--kornia.method, --kornia.weights, ...).
    'cotracker': CoTracker through torch.hub (--cotracker.repo: a repo id or a local checkout).
    'imported': tracks.npz / matches.npz beside each scene's images (e.g. CoTracker run elsewhere).
    'simulated': GT correspondences with noise and outliers (synthetic scenes; experiments and tests only)."""
    sift: SiftMatcherConfig = field(default_factory=SiftMatcherConfig)
    kornia: KorniaMatcherConfig = field(default_factory=KorniaMatcherConfig)
    cotracker: CoTrackerMatcherConfig = field(default_factory=CoTrackerMatcherConfig)
    imported: ImportedMatcherConfig = field(default_factory=ImportedMatcherConfig)
    simulated_matches: SimulatedMatcherConfig = field(default_factory=SimulatedMatcherConfig)
    pairs: PairSelectionConfig = field(default_factory=PairSelectionConfig)
    simulated: SimulatedDepthTeacherConfig = field(default_factory=SimulatedDepthTeacherConfig)
    workers: int = 1
    """Scenes labelled in parallel worker processes."""
    shard: Optional[str] = None
    """'K/N': label only the K-th of N disjoint shares of the scenes (K = 1..N), for N machines at once."""
    video_frames: int = DEFAULT_VIDEO_FRAMES
    """Frames sampled evenly from each video (once; cached under the label cache's frames/)."""

    def label_config(self) -> PseudoLabelConfig:
        return PseudoLabelConfig(
            depth_teacher=self.depth_teacher,
            transformers=TransformersDepthTeacherConfig(self.depth_model or "", self.depth_space, self.device, self.batch_size),
            simulated=self.simulated,
            matcher=self.matcher,
            sift=self.sift,
            kornia=self.kornia,
            cotracker=self.cotracker,
            imported=self.imported,
            simulated_matches=self.simulated_matches,
            pairs=self.pairs,
            video_frames=self.video_frames,
        )


def parse_shard(shard: str) -> Tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N."""
    try:
        k, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard {shard!r}: expected K/N, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {shard!r}: K must be 1..N")
    return k, n


def scene_shard(scene: Path, data: Path, count: int) -> int:
    """The shard (1..count) a scene belongs to: from a hash of its path relative to the data folder, so
    it does not move when other scenes are added or removed, and every machine computes the same."""
    relative = scene.resolve().relative_to(Path(data).resolve()).as_posix()
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") % count + 1


def run(command: PseudoLabel) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console(stderr=True)
    root = command.cache_dir or default_label_cache()
    scenes = discover_view_sets(command.data)
    config = command.label_config()
    shard = ""
    if command.shard is not None:
        k, n = parse_shard(command.shard)
        total = len(scenes)
        scenes = [scene for scene in scenes if scene_shard(scene, command.data, n) == k]
        shard = f" (shard {k}/{n}: {len(scenes)} of {total})"
    console.print(f"{len(scenes)} scene(s) under {command.data}{shard}; labels in {root}")
    results: List[Tuple[Path, str, str]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        scenes_task = progress.add_task("scenes", total=len(scenes))
        if command.workers <= 1:
            labeller = Labeller(config, LabelCache(root))
            items = progress.add_task("labels", total=1)
            for scene in scenes:
                progress.update(items, description=f"  {scene.name}", completed=0)
                results.append(label_scene(scene, labeller, lambda done, total: progress.update(items, completed=done, total=total)))
                progress.advance(scenes_task)
        else:
            for result in label_in_processes(config, root, scenes, command.workers):
                results.append(result)
                progress.advance(scenes_task)

    failed = [r for r in results if r[1] != "ok"]
    table = Table(title="pseudo-labels")
    for column in ("scene", "status", "details"):
        table.add_column(column)
    for scene, status, detail in sorted(results):
        table.add_row(str(scene), status, detail)
    console.print(table)
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} scene(s) failed; fix them and run again (finished labels are kept)[/red]")
    return 1 if failed else 0


def entrypoint() -> None:
    command = tyro.cli(PseudoLabel, description=__doc__)
    try:
        sys.exit(run(command))
    except (SceneFormatError, TeacherError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
