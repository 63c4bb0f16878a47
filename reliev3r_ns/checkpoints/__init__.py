"""The FFRM checkpoint that ships with the package: the ``tiny`` preset trained from weak labels only.

It was trained by ``scripts/reproduce_weak_vs_full.py`` on 400 synthetic rooms (simulated depth-space
teacher and matcher, 10000 steps, seed 3); ``tiny_weak_synthetic.json`` beside it holds the exact
command, the training's settings and its held-out figures. It has seen no real photo: on real images
the cameras and depth come mostly from the refinement on the images' own SIFT matches that
``reliev3r-process-data`` runs after it, and a network trained on real images (or fine-tuned on
yours) does better.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "tiny_weak_synthetic.pt"
BUNDLED_RECORD = BUNDLED_CHECKPOINT.with_suffix(".json")


def bundled_checkpoint() -> Path:
    """The shipped checkpoint's path; a clear error where an install left it out."""
    if not BUNDLED_CHECKPOINT.is_file():
        raise FileNotFoundError(
            f"{BUNDLED_CHECKPOINT}: the bundled FFRM checkpoint is missing from this install (a clone without its "
            "files, or a wheel built without package data). Reinstall with `pip install -e .` from a full clone, "
            "or pass --checkpoint ffrm.pt")
    return BUNDLED_CHECKPOINT


def bundled_record() -> Dict:
    """How the shipped checkpoint was made and what it scores (the JSON beside it)."""
    return json.loads(BUNDLED_RECORD.read_text())


def describe_bundled() -> str:
    """One line for users: what the bundled network is and what it is not."""
    record = bundled_record()
    held_out = record["held_out"]
    return (f"the bundled tiny FFRM ({BUNDLED_CHECKPOINT.name}: weak labels on synthetic rooms only, held-out "
            f"AUC@30 {held_out['pose_auc30']:.2f}, depth tau {held_out['depth_tau']:.2f}); it has seen no real photo")


def checkpoint_or_bundled(checkpoint: Optional[Path], say: Callable[[str], None]) -> Path:
    """``checkpoint``, or where none is given the bundled one, with a line to ``say`` so the user knows."""
    if checkpoint is not None:
        return Path(checkpoint)
    path = bundled_checkpoint()
    say(f"no --checkpoint: using {describe_bundled()}; pass --checkpoint for a network trained on real images")
    return path
