"""The on-disk pseudo-label cache: content-addressed, atomic, self-checking.

Layout under the cache root (default ``<cache dir>/labels``, see ``reliev3r_ns.data.synthetic_dataset.cache_dir``)::

    depth/<teacher key>/teacher.json                   what the teacher was (for people)
    depth/<teacher key>/<image key>.npz                depth (H, W) float32, space ('depth'|'disparity'), version
    matches/<matcher key>/matcher.json
    matches/<matcher key>/<image key i>-<image key j>.npz
                                                       uv_i, uv_j (M, 2) float32 pixels (OpenCV), confidence (M,), version

An image key is a hash of the image file's bytes (plus its GT depth file for the simulated teacher);
a teacher / matcher key is a hash of its full configuration. A changed image therefore invalidates
exactly its own depth label and the pairs it is in; a changed teacher setting invalidates that
teacher's labels only; identical images in two scenes share labels. A pair with zero verified
matches is stored as an empty file, so it is not recomputed. Every file is written to a temporary
name and renamed, so a killed run leaves only complete files; a file that fails to load or check is
reported with a warning, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

LABEL_FORMAT_VERSION = 1


def file_key(paths: Sequence[Path]) -> str:
    """Hash of the bytes of one or more files (20 hex digits)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def config_key(description: Dict[str, Any]) -> str:
    """Hash of a JSON-able description of a teacher or matcher (12 hex digits)."""
    text = json.dumps({"label_format": LABEL_FORMAT_VERSION, **description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LabelCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def depth_file(self, teacher_key: str, image_key: str) -> Path:
        return self.root / "depth" / teacher_key / f"{image_key}.npz"

    def matches_file(self, matcher_key: str, key_i: str, key_j: str) -> Path:
        return self.root / "matches" / matcher_key / f"{key_i}-{key_j}.npz"

    def describe(self, kind: str, key: str, description: Dict[str, Any]) -> None:
        """Write ``<kind>/<key>/<kind-name>.json`` once, so people can tell what made the labels."""
        path = self.root / kind / key / ("teacher.json" if kind == "depth" else "matcher.json")
        if not path.exists():
            atomic_write_bytes(path, json.dumps(description, indent=1, sort_keys=True, default=str).encode())

    # ------------------------------------------------------------------------------------ writing
    @staticmethod
    def _save(path: Path, **arrays: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, version=np.int64(LABEL_FORMAT_VERSION), **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    def save_depth(self, path: Path, depth: np.ndarray, space: str) -> None:
        self._save(path, depth=np.asarray(depth, np.float32), space=np.array(space))

    def save_matches(self, path: Path, uv_i: np.ndarray, uv_j: np.ndarray, confidence: np.ndarray) -> None:
        self._save(path, uv_i=np.asarray(uv_i, np.float32).reshape(-1, 2), uv_j=np.asarray(uv_j, np.float32).reshape(-1, 2),
                   confidence=np.asarray(confidence, np.float32).reshape(-1))

    # ------------------------------------------------------------------------------------ reading
    @staticmethod
    def _load(path: Path, keys: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != LABEL_FORMAT_VERSION:
                    raise ValueError(f"label format {int(data['version'])}, expected {LABEL_FORMAT_VERSION}")
                return {k: data[k] for k in keys}
        except Exception as error:  # noqa: BLE001 - any failure to read means: recompute
            warnings.warn(f"{path}: unreadable label file ({type(error).__name__}: {error}); deleting it and recomputing")
            path.unlink(missing_ok=True)
            return None

    def load_depth(self, path: Path, shape: Optional[tuple] = None) -> Optional[np.ndarray]:
        data = self._load(path, ("depth", "space"))
        if data is None:
            return None
        depth = data["depth"]
        if depth.ndim != 2 or (shape is not None and depth.shape != tuple(shape)) or not np.isfinite(depth).all():
            warnings.warn(f"{path}: depth label has shape {depth.shape} or non-finite values; recomputing")
            path.unlink(missing_ok=True)
            return None
        return depth

    def load_matches(self, path: Path) -> Optional[Dict[str, np.ndarray]]:
        data = self._load(path, ("uv_i", "uv_j", "confidence"))
        if data is None:
            return None
        n = len(data["confidence"])
        if data["uv_i"].shape != (n, 2) or data["uv_j"].shape != (n, 2) or not all(np.isfinite(v).all() for v in data.values()):
            warnings.warn(f"{path}: inconsistent match arrays; recomputing")
            path.unlink(missing_ok=True)
            return None
        return data
