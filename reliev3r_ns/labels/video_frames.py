"""Videos as view sets: frames sampled once per video into a content-addressed cache.

A video under ``--data`` (``.mp4``, ``.mov``, ...) is a scene of its own, beside image folders. Its
frames are sampled evenly (as ``ns-process-data video`` does) the first time it is met and written
under ``<label cache>/frames/<video key>-<count>/``; later runs, and other machines sharing the
cache, read them from there. The video key hashes the file's size and its first and last MiB, so a
multi-gigabyte video is not read whole on every run, while a re-encoded or trimmed file gets new
frames. Frames are extracted into a hidden temporary folder and renamed into place, so a killed run
leaves no half-filled frame folder, and two machines extracting the same video at once both end
with the same complete folder (the second rename loses, and its copy is dropped).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import List

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}
DEFAULT_VIDEO_FRAMES = 60
_EDGE_BYTES = 1 << 20


def is_video(path: Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def video_key(video: Path) -> str:
    """Hash of a video's size and its first and last MiB (20 hex digits)."""
    size = os.path.getsize(video)
    digest = hashlib.sha256(str(size).encode())
    with open(video, "rb") as f:
        digest.update(f.read(_EDGE_BYTES))
        f.seek(max(0, size - _EDGE_BYTES))
        digest.update(f.read(_EDGE_BYTES))
    return digest.hexdigest()[:20]


def cached_video_frames(video: Path, frames_cache: Path, count: int = DEFAULT_VIDEO_FRAMES) -> List[Path]:
    """The ~``count`` evenly spaced frames of ``video`` (PNG paths), extracted on first use."""
    from reliev3r_ns.process.video import extract_frames

    video, frames_cache = Path(video), Path(frames_cache)
    folder = frames_cache / f"{video_key(video)}-{count}"
    if not folder.is_dir():
        frames_cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=frames_cache))
        try:
            extract_frames(video, scratch, num_frames_target=count)
            (scratch / "source.txt").write_text(f"{video.resolve()}\n")
            try:
                os.replace(scratch, folder)
            except OSError:  # another process finished the same video first: keep its folder
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return sorted(folder.glob("frame_*.png"))
