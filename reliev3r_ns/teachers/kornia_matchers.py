"""Learned matchers through kornia: DISK + LightGlue and LoFTR.

The networks are built empty and filled from a weights file, checked key by key:

- ``disk-lightglue``: ``--kornia.detector-weights`` is a DISK checkpoint (the official ``depth-save.pth``
  holds it under ``extractor``), ``--kornia.weights`` a LightGlue-for-DISK checkpoint
  (``disk_lightglue*.pth``, original or kornia key names).
- ``loftr``: ``--kornia.weights`` is a LoFTR checkpoint (``loftr_outdoor.ckpt``: ``state_dict``).

A file not given is the one kornia's own ``pretrained`` constructors fetch, from kornia's Hugging Face
repos (``kornia/disk``, ``kornia/lightglue``, ``kornia/loftr``): the local hub cache first, else a
download when online; offline (HF_HUB_OFFLINE=1) and not cached, an error naming the URL and the flag.

Images are matched at ``resolution`` (longest side) and the pixels mapped back to the image; the
matches then go through the same MAGSAC fundamental-matrix check as SIFT. Pixels come out in the
project's convention (centre of the top-left pixel at (0, 0)): DISK keypoints already are; LoFTR's
reference frame puts pixel centres at +0.5, which is subtracted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.geometry import scale_pixels
from reliev3r_ns.teachers.depth import TeacherError, hub_file
from reliev3r_ns.teachers.sift import VERIFICATION, verify_matches


class MatcherError(TeacherError):
    pass


@dataclass
class KorniaMatcherConfig:
    method: Literal["disk-lightglue", "loftr"] = "disk-lightglue"
    weights: Optional[Path] = None
    """LightGlue weights (disk-lightglue) or LoFTR weights (loftr): a local file; by default kornia's
    released file from the Hugging Face hub (kornia/lightglue disk_lightglue.pth, kornia/loftr loftr_outdoor.ckpt)."""
    detector_weights: Optional[Path] = None
    """DISK weights (disk-lightglue only): a local file; by default kornia/disk depth-save.pth from the hub."""
    device: str = "auto"
    resolution: int = 640
    """Longest image side the matcher runs at (LoFTR: rounded to a multiple of 8)."""
    max_keypoints: int = 2048
    """DISK keypoints per image."""
    min_confidence: float = 0.2
    """Matches below this matcher confidence are dropped before verification."""
    ransac_threshold_px: float = 1.0
    """MAGSAC inlier threshold for the fundamental matrix, in pixels of the original image."""
    min_matches: int = 16
    max_matches_per_pair: int = 2048


# kornia's released weights (what its pretrained constructors download), as (hub repo, file).
HUB_WEIGHTS = {"DISK detector": ("kornia/disk", "depth-save.pth"), "LightGlue matcher (for DISK)": ("kornia/lightglue", "disk_lightglue.pth"),
               "LoFTR matcher": ("kornia/loftr", "loftr_outdoor.ckpt")}


def _weights_path(path: Optional[Path], what: str, flag: str) -> Path:
    """The file given, or kornia's released one from the hub (cached, downloaded, or a clear error)."""
    if path is not None:
        return Path(path)
    repo, filename = HUB_WEIGHTS[what]
    return hub_file(repo, filename, f"pass it as {flag} PATH", MatcherError)


def _load_file(path: Path, what: str, flag: str) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise MatcherError(f"{path}: no such weights file for the {what} ({flag}); download it once by hand and point here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise MatcherError(f"{path}: not a readable torch checkpoint for the {what} ({error})") from None
    if not isinstance(state, dict):
        raise MatcherError(f"{path}: expected a state dict for the {what}, found {type(state).__name__}")
    return state


def _fill(module: torch.nn.Module, state: Dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``state`` into ``module``; every learned parameter must be present and fit."""
    try:
        incompatible = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise MatcherError(f"{path}: these weights do not fit the {what} ({str(error).splitlines()[0]})") from None
    parameters = {name for name, _ in module.named_parameters()}
    missing = [k for k in incompatible.missing_keys if k in parameters]
    if missing:
        raise MatcherError(f"{path}: these weights do not fit the {what}: {len(missing)} parameters missing (e.g. {missing[0]})")


def resized_size(height: int, width: int, resolution: int, multiple: int = 1) -> Tuple[int, int]:
    """(h, w) with the longest side ``resolution`` (never upsampled), each a multiple of ``multiple``."""
    scale = min(1.0, resolution / max(height, width))
    return max(multiple, int(round(height * scale / multiple)) * multiple), max(multiple, int(round(width * scale / multiple)) * multiple)


@dataclass
class KorniaFeatures:
    """One image as the matcher holds it: the resized image, its size, and DISK features when used."""

    image: torch.Tensor  # (1, C, h, w) on the matcher's device, in [0, 1]
    original_size: Tuple[int, int]  # (H, W)
    keypoints: Optional[torch.Tensor] = None  # (K, 2) in resized pixels (DISK)
    descriptors: Optional[torch.Tensor] = None  # (K, D)


class KorniaMatcher:
    """The matcher interface the label pipeline uses (description, item_files, features, match)."""

    def __init__(self, config: KorniaMatcherConfig = KorniaMatcherConfig()) -> None:
        import kornia.feature as KF

        from reliev3r_ns.model.ffrm import resolve_device

        self.config = config
        self.name = f"kornia-{config.method}"
        self.device = torch.device(resolve_device(config.device))
        if config.method == "disk-lightglue":
            detector = _weights_path(config.detector_weights, "DISK detector", "--kornia.detector-weights")
            matcher = _weights_path(config.weights, "LightGlue matcher (for DISK)", "--kornia.weights")
            self.weight_files = [detector, matcher]
            self.disk = KF.DISK()
            state = _load_file(detector, "DISK detector", "--kornia.detector-weights")
            _fill(self.disk, state.get("extractor", state), detector, "DISK detector")
            glue_conf = {k: v for k, v in KF.LightGlue.features["disk"].items() if k != "weights"}
            self.lightglue = KF.LightGlue(features=None, **glue_conf)
            state = _load_file(matcher, "LightGlue matcher (for DISK)", "--kornia.weights")
            _fill(self.lightglue, _lightglue_keys(state, self.lightglue.conf.n_layers), matcher, "LightGlue matcher (for DISK)")
            self.networks = (self.disk, self.lightglue)
        elif config.method == "loftr":
            matcher = _weights_path(config.weights, "LoFTR matcher", "--kornia.weights")
            self.weight_files = [matcher]
            self.loftr = KF.LoFTR(pretrained=None)
            state = _load_file(matcher, "LoFTR matcher", "--kornia.weights")
            _fill(self.loftr, state.get("state_dict", state), matcher, "LoFTR matcher")
            self.networks = (self.loftr,)
        else:
            raise MatcherError(f"unknown kornia matcher {config.method!r}; choose disk-lightglue or loftr")
        for network in self.networks:
            network.to(self.device).eval()

    def description(self) -> dict:
        import kornia

        from reliev3r_ns.labels.cache import file_key

        weights = self.weight_files  # the files read, wherever they came from: the key follows their bytes
        config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.config).items() if k not in ("device", "weights", "detector_weights")}
        return {"matcher": self.name, "kornia": kornia.__version__, "weights": file_key(weights),
                "verification": VERIFICATION, **config}

    def item_files(self, view_set, index: int):
        return [view_set.image_paths[index]]

    @torch.no_grad()
    def features(self, image_rgb: np.ndarray) -> KorniaFeatures:
        H, W = image_rgb.shape[:2]
        multiple = 8 if self.config.method == "loftr" else 16
        h, w = resized_size(H, W, self.config.resolution, multiple)
        image = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255
        image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=True) if (h, w) != (H, W) else image
        if self.config.method == "loftr":
            grey = (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2])[:, None]
            return KorniaFeatures(grey, (H, W))
        disk = self.disk(image, n=self.config.max_keypoints, pad_if_not_divisible=True)[0]
        return KorniaFeatures(image, (H, W), disk.keypoints.float(), disk.descriptors.float())

    @torch.no_grad()
    def match(self, a: KorniaFeatures, b: KorniaFeatures) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.config.method == "loftr":
            out = self.loftr({"image0": a.image, "image1": b.image})
            # LoFTR's frame puts pixel centres at +0.5; ours at integers.
            uv_a, uv_b, confidence = out["keypoints0"].float() - 0.5, out["keypoints1"].float() - 0.5, out["confidence"].float()
        else:
            if len(a.keypoints) < 2 or len(b.keypoints) < 2:
                uv_a = uv_b = torch.zeros(0, 2)
                confidence = torch.zeros(0)
            else:
                size = lambda f: torch.tensor([[f.image.shape[-1], f.image.shape[-2]]], device=self.device)  # noqa: E731  (W, H)
                out = self.lightglue({
                    "image0": {"keypoints": a.keypoints[None], "descriptors": a.descriptors[None], "image_size": size(a)},
                    "image1": {"keypoints": b.keypoints[None], "descriptors": b.descriptors[None], "image_size": size(b)},
                })
                pairs, confidence = out["matches"][0], out["scores"][0].float()
                uv_a, uv_b = a.keypoints[pairs[:, 0]], b.keypoints[pairs[:, 1]]
        keep = confidence >= self.config.min_confidence
        uv_a = _to_original(uv_a[keep], a)
        uv_b = _to_original(uv_b[keep], b)
        return verify_matches(uv_a, uv_b, confidence[keep].cpu().numpy().astype(np.float32),
                              self.config.ransac_threshold_px, self.config.min_matches, self.config.max_matches_per_pair)


def _to_original(uv: torch.Tensor, features: KorniaFeatures) -> np.ndarray:
    """Pixels in the resized image -> pixels in the original image (pixel centres stay centres)."""
    H, W = features.original_size
    h, w = features.image.shape[-2:]
    return scale_pixels(uv.float().cpu(), W / w, H / h).numpy().astype(np.float32)


def _lightglue_keys(state: Dict[str, torch.Tensor], n_layers: int) -> Dict[str, torch.Tensor]:
    """The original LightGlue release names its layers ``self_attn.i`` / ``cross_attn.i``; kornia
    nests them as ``transformers.i.self_attn``. Accept either."""
    renamed = {}
    for key, value in state.items():
        for i in range(n_layers):
            for kind in ("self_attn", "cross_attn"):
                prefix = f"{kind}.{i}."
                if key.startswith(prefix):
                    key = f"transformers.{i}.{kind}." + key[len(prefix):]
        renamed[key] = value
    return renamed
