"""Depth teachers: one interface, each teacher declaring the space of its output.

A monocular teacher's map equals the truth only up to an unknown scale and shift *in its space*:
Depth Anything predicts affine-invariant disparity, Depth Pro / ZoeDepth predict depth. The
relative depth loss solves that ambiguity in the declared space, so getting the space right matters.

- :class:`TransformersDepthTeacher`: any ``transformers`` depth-estimation checkpoint, from a folder
  written by ``save_pretrained`` or a hub id, as ``from_pretrained`` takes it: the local Hugging Face
  cache first; a hub id not there is downloaded when the machine is online (not with
  ``HF_HUB_OFFLINE=1`` or ``download=False``, which give an error naming the id and how to get it).
- :class:`SimulatedDepthTeacher`: GT depth made relative (random affine map, noise, blur,
  outliers); for scenes with GT depth, controlled experiments and tests only; named 'simulated'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from reliev3r_ns.teachers.simulated import SimulatedDepthTeacherConfig, simulated_relative_depth

Space = Literal["depth", "disparity"]

# model_type -> what the model predicts, for checkpoints whose config does not say.
KNOWN_SPACES: Dict[str, Space] = {"depth_pro": "depth", "zoedepth": "depth", "dpt": "disparity", "glpn": "depth"}


class TeacherError(RuntimeError):
    """A teacher (depth model or matcher) cannot run: missing or unfit weights, a bad output."""


class DepthTeacherError(TeacherError):
    pass


class DepthTeacher:
    name: str
    space: Space

    def description(self) -> Dict[str, Any]:
        """Everything that changes the output: hashed into the cache key."""
        raise NotImplementedError

    def item_files(self, view_set, index: int) -> List[Path]:
        """Files whose bytes key this view's label."""
        return [view_set.image_paths[index]]

    def predict(self, view_set, indices: Sequence[int], item_keys: Sequence[str]) -> List[np.ndarray]:
        """(H, W) float32 maps at the image size, in ``self.space``, one per index."""
        raise NotImplementedError


class SimulatedDepthTeacher(DepthTeacher):
    name = "simulated"

    def __init__(self, config: SimulatedDepthTeacherConfig = SimulatedDepthTeacherConfig(), seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.space = config.space

    def description(self) -> Dict[str, Any]:
        return {"teacher": self.name, "seed": self.seed, **dataclasses.asdict(self.config)}

    def item_files(self, view_set, index: int) -> List[Path]:
        if view_set.depth_paths is None:
            raise DepthTeacherError(
                f"{view_set.root}: the simulated teacher needs GT depth (depth_file_path in transforms.json) and this "
                "scene has none; use a real teacher (the transformers depth teacher with a local model)"
            )
        return [view_set.image_paths[index], view_set.depth_paths[index]]

    def predict(self, view_set, indices, item_keys) -> List[np.ndarray]:
        out = []
        for index, key in zip(indices, item_keys):
            # Seeded by the content key: the same image always gets the same simulated label.
            rng = np.random.default_rng([self.seed, int(key[:15], 16)])
            out.append(simulated_relative_depth(view_set.load_gt_depth(index)[None], rng, self.config)[0])
        return out


@dataclass
class TransformersDepthTeacherConfig:
    model: str = ""
    """A local folder written by save_pretrained, or a hub id (e.g. depth-anything/Depth-Anything-V2-Small-hf,
    apple/DepthPro-hf): from the local Hugging Face cache, else downloaded once when online."""
    space: Optional[Space] = None
    """What the model predicts; inferred for Depth Anything / Depth Pro / ZoeDepth / DPT when None."""
    device: str = "auto"
    batch_size: int = 4
    download: bool = True
    """Download a hub id that is not in the local cache (also off with HF_HUB_OFFLINE=1)."""


def hub_offline() -> bool:
    """Whether the user has told Hugging Face libraries not to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def hub_file(repo: str, filename: str, how: str, error: type = TeacherError) -> Path:
    """One file of a Hugging Face hub repo as ``hf_hub_download`` gives it: from the local cache, else
    downloaded unless offline (HF_HUB_OFFLINE=1). Failing, ``error`` with ``how`` (what to do instead)
    after the file's URL."""
    from huggingface_hub import hf_hub_download

    advice = f"download https://huggingface.co/{repo}/resolve/main/{filename} where there is network and {how}"
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no such repo in the cache); try the network below
        pass
    if hub_offline():
        raise error(f"{repo}/{filename} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {advice}") from None
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as failure:  # noqa: BLE001 - network, missing repo or file: all need the same advice
        raise error(f"cannot download {filename} of {repo!r} from the Hugging Face hub "
                    f"({str(failure).splitlines()[0] if str(failure) else type(failure).__name__}): {advice}") from None


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a network's weights (the names and a few values of every tensor), for the cache
    key of the labels it makes: a retrained checkpoint at the same path or hub id gets new labels."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_pretrained(loader, model: str, download: bool, what: str = "depth teacher"):
    """``loader.from_pretrained(model)`` the way its users call it, with errors that say what to do: the
    local cache (or folder) first, then, for a hub id, a download unless offline."""
    try:
        return loader.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError) as error:
        local_error = str(error).splitlines()[0]
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise DepthTeacherError(f"{model}: cannot load a {what} from this folder ({local_error}); pass a folder written by "
                                "save_pretrained, or a hub id such as depth-anything/Depth-Anything-V2-Small-hf") from None
    how = (f"download it once where there is network (`huggingface-cli download {model}`, then copy the Hugging Face "
           "cache, ~/.cache/huggingface, here) or pass a folder written by save_pretrained")
    if not download or hub_offline():
        raise DepthTeacherError(f"{what} {model!r} is not in the local Hugging Face cache and downloads are off "
                                f"({'HF_HUB_OFFLINE is set' if hub_offline() else 'download=False'}): {how}") from None
    try:
        return loader.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise DepthTeacherError(f"cannot download {what} {model!r} from the Hugging Face hub ({str(error).splitlines()[0]}); "
                                f"check the id and the network, or {how}") from None


class TransformersDepthTeacher(DepthTeacher):
    def __init__(self, config: TransformersDepthTeacherConfig) -> None:
        if not config.model:
            raise DepthTeacherError("the transformers depth teacher needs a model: --depth-model PATH_OR_HUB_ID")
        try:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError as error:
            raise DepthTeacherError(f"the transformers depth teacher needs `pip install transformers` ({error})") from None
        self.processor = load_pretrained(AutoImageProcessor, config.model, config.download)
        self.model = load_pretrained(AutoModelForDepthEstimation, config.model, config.download)
        self.config = config
        self.name = f"transformers:{config.model}"
        self.space = config.space or self._infer_space()
        from reliev3r_ns.model.ffrm import resolve_device

        self.device = torch.device(resolve_device(config.device))
        self.model.to(self.device).eval()

    def _infer_space(self) -> Space:
        model_config = self.model.config
        kind = model_config.model_type
        if kind == "depth_anything":
            return "depth" if getattr(model_config, "depth_estimation_type", "relative") == "metric" else "disparity"
        if kind in KNOWN_SPACES:
            return KNOWN_SPACES[kind]
        raise DepthTeacherError(
            f"{self.config.model}: cannot tell whether a {kind!r} model predicts depth or disparity; say so with --depth-space"
        )

    def description(self) -> Dict[str, Any]:
        return {
            "teacher": "transformers",
            "model": self.config.model,
            "space": self.space,
            "model_config": json.loads(self.model.config.to_json_string()),
            "processor": json.loads(self.processor.to_json_string()),
            "weights": weights_fingerprint(self.model),
        }

    @torch.inference_mode()
    def predict(self, view_set, indices, item_keys) -> List[np.ndarray]:
        out: List[np.ndarray] = []
        for start in range(0, len(indices), self.config.batch_size):
            chunk = list(indices[start : start + self.config.batch_size])
            images = [view_set.load_image(i) for i in chunk]
            inputs = self.processor(images=images, return_tensors="pt").to(self.device)
            predicted = self.model(**inputs).predicted_depth.float()  # (n, h, w) at the processor's size
            for index, image, raw in zip(chunk, images, predicted):
                full = F.interpolate(raw[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
                full = full.cpu().numpy().astype(np.float32)
                if not np.isfinite(full).all():
                    raise DepthTeacherError(f"{self.name} returned non-finite values for {view_set.image_paths[index]}")
                out.append(full)
        return out
