"""A real capture's images as a user brings them: any size, orientation, mode, with the odd bad file.

:func:`scan_capture` looks at every file of an image folder once and decides what is reconstructed:

- files without an image extension are ignored (a phone's sidecar files, a notes.txt);
- an unreadable or truncated image is **left out and named**, as COLMAP skips an image it cannot
  read: one damaged file in three hundred should not cost the user the other 299. Fewer than two
  usable images is an error;
- an exact duplicate (the same bytes as an earlier file) is left out and named: two views at the
  same pose add nothing and make the pair degenerate;
- grey, 16-bit, float, RGBA / LA (alpha dropped), palette and CMYK images are converted to 8-bit RGB
  with a note;
- sizes and aspect ratios may differ (portrait among landscape photos, EXIF orientation applied):
  each image keeps its own size, intrinsics and pixels (see :mod:`reliev3r_ns.process.reconstruct`
  for how they share one network input size).

:func:`read_rgb_reduced` decodes an image at a bounded size (JPEG's DCT scaling via ``draft``, then
a box reduction), so a folder of 24-50 MP photos never holds a full-size image per view in memory.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from reliev3r_ns.data.scene_io import EXIF_ORIENTATION, SceneFormatError
from reliev3r_ns.labels.view_sets import IMAGE_EXTENSIONS

# Modes that need more than dropping nothing to become 8-bit RGB, and what to tell the user.
_MODE_NOTES = {
    "L": "grey, repeated into RGB", "LA": "grey with alpha: alpha dropped", "1": "black and white, repeated into RGB",
    "I;16": "16-bit grey, scaled to 8 bits by its maximum", "I;16B": "16-bit grey, scaled to 8 bits by its maximum",
    "I;16L": "16-bit grey, scaled to 8 bits by its maximum", "I": "32-bit grey, scaled to 8 bits by its maximum",
    "F": "float grey, scaled to 8 bits by its maximum", "RGBA": "alpha dropped", "P": "palette, expanded to RGB",
    "PA": "palette with alpha: expanded, alpha dropped", "CMYK": "CMYK, converted to RGB", "YCbCr": "YCbCr, converted to RGB",
    "LAB": "Lab, converted to RGB", "HSV": "HSV, converted to RGB",
}


@dataclass
class CaptureImage:
    path: Path
    size: Tuple[int, int]  # (H, W) as shown upright (EXIF orientation applied when asked)
    mode: str


@dataclass
class Capture:
    """What :func:`scan_capture` found: the usable images in file-name order and what was left out."""

    images: List[CaptureImage]
    exif_transpose: bool
    left_out: Dict[str, str] = field(default_factory=dict)  # file name -> why
    notes: Dict[str, str] = field(default_factory=dict)  # file name -> conversion applied
    ignored: List[str] = field(default_factory=list)  # non-image files
    focal_px: Dict[str, float] = field(default_factory=dict)  # file name -> focal length in pixels, from EXIF

    @property
    def paths(self) -> List[Path]:
        return [im.path for im in self.images]

    @property
    def sizes(self) -> List[Tuple[int, int]]:
        return [im.size for im in self.images]


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if values.size and values.max() > 0 else 1.0
        grey = np.clip(np.rint(values / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def read_rgb_reduced(path: Path, max_side: Optional[int] = None, exif_transpose: bool = True) -> np.ndarray:
    """(h, w, 3) uint8 RGB, upright, with its longest side at most ``max_side`` (None: full size).

    The reduction keeps the aspect ratio to within a pixel; callers map pixels back with the ratio of
    the full size (:func:`image_size_upright`) to the returned one."""
    try:
        with Image.open(path) as image:
            full_w, full_h = image.size
            if max_side is not None and max(full_w, full_h) > max_side:
                factor = max(full_w, full_h) / max_side
                # JPEG decodes at 1/2, 1/4 or 1/8 scale for free; ask for no less than the target.
                image.draft("RGB", (math.ceil(full_w / factor), math.ceil(full_h / factor)))
            image.load()
            if exif_transpose:
                image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):
                image = image.convert("I")  # reduce / resize work on 32-bit grey, not on 16-bit
            elif image.mode not in ("RGB", "L", "I", "F"):
                image = image.convert("RGB")
            if max_side is not None and max(image.size) > max_side:
                factor = max(image.size) / max_side
                if factor >= 2:
                    image = image.reduce(int(factor))
                if max(image.size) > max_side:
                    scale = max_side / max(image.size)
                    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX)
            return _to_rgb(image)
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: image file is missing") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise SceneFormatError(f"{path}: cannot read image ({error}); replace or remove the file") from None


def image_size_upright(image: Image.Image, exif_transpose: bool) -> Tuple[int, int]:
    width, height = image.size
    orientation = image.getexif().get(EXIF_ORIENTATION, 1) if exif_transpose else 1
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


EXIF_IFD = 0x8769
FOCAL_LENGTH_35MM = 0xA405  # FocalLengthIn35mmFilm: the focal length a 36 x 24 mm frame would need


def exif_focal_px(image: Image.Image, size_hw: Tuple[int, int]) -> Optional[float]:
    """The focal length in pixels from a photo's 35 mm-equivalent focal length (matched on the
    diagonal, as the equivalence is defined), or None where the photo does not say."""
    try:
        value = image.getexif().get_ifd(EXIF_IFD).get(FOCAL_LENGTH_35MM)
    except Exception:  # noqa: BLE001 - malformed EXIF is simply no EXIF
        return None
    if not value:
        return None
    H, W = size_hw
    return float(value) * math.hypot(W, H) / math.hypot(36.0, 24.0)


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_capture(paths: Sequence[Path], exif_transpose: bool = True, check_decode: bool = True) -> Capture:
    """Sort a folder's files into usable images, left-out images (with why) and ignored files.

    ``check_decode`` decodes each image at 1/8 scale (cheap for JPEG) so a truncated file is found
    here, not halfway through a reconstruction."""
    capture = Capture([], exif_transpose)
    seen: Dict[str, str] = {}
    for path in sorted(Path(p) for p in paths):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            capture.ignored.append(path.name)
            continue
        try:
            with Image.open(path) as image:
                size = image_size_upright(image, exif_transpose)
                mode = image.mode
                focal = exif_focal_px(image, size)
                if check_decode:
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                    image.load()
        except FileNotFoundError:
            capture.left_out[path.name] = "missing"
            continue
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            capture.left_out[path.name] = f"unreadable or truncated ({error})"
            continue
        digest = _digest(path)
        if digest in seen:
            capture.left_out[path.name] = f"exact duplicate of {seen[digest]}"
            continue
        seen[digest] = path.name
        if mode in _MODE_NOTES:
            capture.notes[path.name] = _MODE_NOTES[mode]
        capture.images.append(CaptureImage(path, size, mode))
        if focal:
            capture.focal_px[path.name] = focal
    return capture


def require_two(capture: Capture, where: Path) -> None:
    """At least two usable images, or an error that says what was found."""
    if len(capture.images) >= 2:
        return
    detail = "; ".join(f"{name}: {why}" for name, why in list(capture.left_out.items())[:5])
    if not capture.images and not capture.left_out:
        raise SceneFormatError(f"{where}: no images found (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(capture.images) == 1:
        raise SceneFormatError(f"{where}: only one usable image ({capture.images[0].path.name}); a reconstruction needs at least two "
                               f"overlapping views" + (f" (left out: {detail})" if detail else ""))
    raise SceneFormatError(f"{where}: no usable image (left out: {detail})")
