"""Frames from a video, sampled evenly like ``ns-process-data video`` (``--num-frames-target``).

Decoding goes through OpenCV's bundled FFmpeg, so no ``ffmpeg`` binary is needed (nerfstudio's own
helper shells out to one, and exits the process when it fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from reliev3r_ns.data.scene_io import SceneFormatError


def count_frames(video: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise SceneFormatError(f"{video}: cannot open as a video (missing file, or a codec OpenCV's FFmpeg cannot read)")
    count = 0
    while capture.grab():  # the container's frame count is often wrong; count what decodes
        count += 1
    capture.release()
    return count


def extract_frames(video: Path, folder: Path, num_frames_target: int = 300,
                   progress: Optional[Callable[[int, int], None]] = None) -> List[Path]:
    """Write about ``num_frames_target`` evenly spaced frames as folder/frame_00001.png ...; returns their paths."""
    import cv2

    video = Path(video)
    if not video.is_file():
        raise SceneFormatError(f"{video}: no such video file")
    if num_frames_target < 2:
        raise ValueError(f"num_frames_target must be >= 2, got {num_frames_target}")
    total = count_frames(video)
    if total == 0:
        raise SceneFormatError(f"{video}: the video has no decodable frames")
    wanted = sorted(set(np.linspace(0, total - 1, min(num_frames_target, total)).round().astype(int).tolist()))
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    paths: List[Path] = []
    index, next_wanted = 0, 0
    while next_wanted < len(wanted) and capture.grab():
        if index == wanted[next_wanted]:
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                raise SceneFormatError(f"{video}: frame {index} cannot be decoded")
            path = folder / f"frame_{len(paths) + 1:05d}.png"
            if not cv2.imwrite(str(path), frame):
                raise OSError(f"{path}: cannot write the extracted frame")
            paths.append(path)
            next_wanted += 1
            if progress:
                progress(len(paths), len(wanted))
        index += 1
    capture.release()
    return paths
