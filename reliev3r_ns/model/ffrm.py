"""The feed-forward reconstruction model: N images in, per-view camera and dense geometry out.

    images (B, V, 3, H, W) in [0, 1]
      -> AlternatingAttentionBackbone            tokens (B, V, R + h*w, dim), 4 feature layers
      -> CameraHead                              cam_to_world (B, V, 4, 4) OpenCV, fov_x (B, V)
      -> DenseHead                               depth (B, V, H, W) > 0, confidence in (0, 2)
      -> geometry.unproject_depth_to_world       world_points (B, V, H, W, 3)

World points are derived from depth + intrinsics + pose with the geometry core, never regressed, so
there is one source of geometry. Intrinsics given by the caller are used as they are (Reliev3R
assumes them known); otherwise they come from the predicted field of view with a centred principal
point. With ``reference="none"`` the world frame is arbitrary (pi3): losses and metrics must be
invariant to it. With ``reference="first"`` view 0 is the world frame and its pose is the identity.

The checkpoint holds the config and a format version and loads without nerfstudio:
``FFRM.from_checkpoint(path)``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reliev3r_ns.geometry import intrinsics_from_fov, invert_pose, make_pose, scale_intrinsics, unproject_depth_to_world
from reliev3r_ns.model.backbone import AlternatingAttentionBackbone
from reliev3r_ns.model.heads import CameraHead, DenseHead

Tensor = torch.Tensor

CHECKPOINT_FORMAT = "reliev3r-ffrm"
CHECKPOINT_VERSION = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ModelSize = Literal["tiny", "small", "base", "large"]


class StoredConfig:
    """A network config that a checkpoint stores as a plain dict and reads back (tuples as lists)."""

    _target: Type

    def setup(self):
        return self._target(self)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "_target"}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)} - {"_target"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}: the checkpoint was written by a newer reliev3r-ns")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class FFRMConfig(StoredConfig):
    """Everything that defines the network; stored inside every checkpoint."""

    _target: Type = field(default_factory=lambda: FFRM)
    size: str = "tiny"
    """Preset name this config came from (informational)."""
    patch_size: int = 16
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 3
    """Number of (frame attention, global attention) block pairs."""
    mlp_ratio: float = 4.0
    num_registers: int = 4
    qk_norm: bool = True
    layer_scale_init: float = 0.1
    reference: Literal["none", "first"] = "none"
    """'none': permutation-equivariant, arbitrary world frame (pi3). 'first': view 0 is the world frame (VGGT)."""
    position_embedding: Literal["rope", "learned"] = "rope"
    rope_base: float = 100.0
    learned_position_grid: int = 37
    """Grid of the learned position embedding, interpolated to each image's patch grid."""
    dense_features: int = 48
    dense_layer_dims: Tuple[int, int, int, int] = (24, 48, 96, 192)
    camera_hidden: int = 256
    camera_translation_init_std: float = 1e-3
    """Std of the camera head's translation weights at initialisation (how far apart cameras start)."""
    fov_range_degrees: Tuple[float, float] = (15.0, 150.0)
    gradient_checkpointing: bool = False



def ffrm_config(size: ModelSize = "tiny", **overrides: Any) -> FFRMConfig:
    """A preset, optionally with some fields overridden (``ffrm_config("small", reference="first")``).

    tiny  : < 5 M parameters, 64-128 px, trains on a CPU (tests, demos, the bundled default).
    small : ~ 30 M, 224-256 px, a single consumer GPU.
    base  : ~ 0.2 B, 518 px (patch 14), one H100.
    large : ~ 0.6 B, pi3 / VGGT scale, 518 px, H100s with bf16 and gradient checkpointing.
    """
    presets: Dict[str, Dict[str, Any]] = {
        "tiny": dict(patch_size=16, embed_dim=192, num_heads=3, depth=3, dense_features=48,
                     dense_layer_dims=(24, 48, 96, 192), camera_hidden=256),
        "small": dict(patch_size=16, embed_dim=384, num_heads=6, depth=8, dense_features=128,
                      dense_layer_dims=(48, 96, 192, 384), camera_hidden=512),
        "base": dict(patch_size=14, embed_dim=768, num_heads=12, depth=12, dense_features=256,
                     dense_layer_dims=(96, 192, 384, 768), camera_hidden=1024),
        "large": dict(patch_size=14, embed_dim=1024, num_heads=16, depth=24, dense_features=256,
                      dense_layer_dims=(256, 512, 1024, 1024), camera_hidden=1024),
    }
    if size not in presets:
        raise ValueError(f"unknown FFRM size {size!r}; choose one of {sorted(presets)}")
    return FFRMConfig(size=size, **{**presets[size], **overrides})


@dataclass
class Prediction:
    """The FFRM's output, all OpenCV; shapes (B, V, ...) or, from :meth:`FFRM.infer`, (V, ...)."""

    cam_to_world: Any  # (..., 4, 4)
    intrinsics: Any  # (..., 3, 3) pixels, principal point in the pixel-centre-at-integer convention
    depth: Any  # (..., H, W) z-depth, positive, arbitrary global scale
    confidence: Any  # (..., H, W) in (0, 2)
    world_points: Any  # (..., H, W, 3)
    fov_x: Any  # (...,) predicted horizontal field of view, radians (used only without given intrinsics)

    def _map(self, fn) -> "Prediction":
        return Prediction(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def numpy(self) -> "Prediction":
        return self._map(lambda t: t.detach().float().cpu().numpy() if torch.is_tensor(t) else t)

    def to(self, device) -> "Prediction":
        return self._map(lambda t: t.to(device) if torch.is_tensor(t) else t)

    def __getitem__(self, index) -> "Prediction":
        """Index the leading (batch) dimension."""
        return self._map(lambda t: t[index])


class FeedForwardReconstructor(nn.Module):
    """What every network the project accepts as an FFRM provides (ours and pi3's, :mod:`reliev3r_ns.model.pi3`):
    ``forward(images (B, V, 3, H, W), intrinsics) -> Prediction``, a ``config`` with ``patch_size`` and
    ``to_dict``, and from here inference at any image size and the standalone checkpoint."""

    architecture = "reliev3r"
    """Stored in the checkpoint; says which class and config read it back."""
    config: Any

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_inputs(self, images: Tensor, intrinsics: Optional[Tensor] = None) -> Tuple[int, int, int, int, int]:
        """(B, V, 3, H, W) of ``images``, or a clear error for a wrong shape, a size off the patch grid or
        intrinsics that do not fit."""
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, V, 3, H, W), got {tuple(images.shape)}")
        B, V, _, H, W = images.shape
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {W}x{H} is not a multiple of the patch size {p}; resize or use infer")
        if intrinsics is not None and intrinsics.shape != (B, V, 3, 3):
            raise ValueError(f"intrinsics must be (B, V, 3, 3) = {(B, V, 3, 3)}, got {tuple(intrinsics.shape)}")
        return B, V, 3, H, W

    # ----------------------------------------------------------------------------------- inference
    def inference_size(self, height: int, width: int, resolution: Optional[int] = None) -> Tuple[int, int]:
        """The (H, W) the network runs at: the image size (or its longest side scaled to
        ``resolution``) rounded to the nearest patch multiple, aspect ratio kept."""
        p = self.config.patch_size
        scale = 1.0 if resolution is None else resolution / max(height, width)
        return max(p, int(round(height * scale / p)) * p), max(p, int(round(width * scale / p)) * p)

    @torch.inference_mode()
    def infer(
        self,
        images: Union[np.ndarray, Tensor, Sequence[Union[str, Path]]],
        intrinsics: Union[np.ndarray, Tensor, None] = None,
        resolution: Optional[int] = None,
        autocast_dtype: Optional[torch.dtype] = None,
        as_numpy: bool = False,
    ) -> Prediction:
        """Reconstruct one view set.

        images: (V, H, W, 3) uint8 / float array, (V, 3, H, W) tensor in [0, 1], or image paths.
        intrinsics: (V, 3, 3) OpenCV at the given image size, or None to use the predicted fov.
        The network runs at :meth:`inference_size`; depth, confidence, intrinsics and world points
        come back at the input size. Returns a :class:`Prediction` with shapes (V, ...).
        """
        pixels = _images_to_tensor(images)  # (V, 3, H, W) float in [0, 1]
        device = next(self.parameters()).device
        pixels = pixels.to(device)
        V, _, H, W = pixels.shape
        h, w = self.inference_size(H, W, resolution)
        net_images = F.interpolate(pixels, size=(h, w), mode="bilinear", align_corners=False, antialias=True) if (h, w) != (H, W) else pixels
        net_intrinsics = None
        if intrinsics is not None:
            K = torch.as_tensor(np.asarray(intrinsics) if not torch.is_tensor(intrinsics) else intrinsics, dtype=torch.float32, device=device)
            if K.shape != (V, 3, 3):
                raise ValueError(f"intrinsics must be (V, 3, 3) = {(V, 3, 3)} for {V} images, got {tuple(K.shape)}")
            net_intrinsics = scale_intrinsics(K, w / W, h / H)[None]
        was_training = self.training
        self.eval()
        try:
            with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out = self(net_images[None], net_intrinsics)[0]
        finally:
            self.train(was_training)
        if (h, w) != (H, W):
            # Resize log-depth so edges interpolate between depths multiplicatively, not additively.
            depth = torch.exp(F.interpolate(out.depth.log()[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0])
            confidence = F.interpolate(out.confidence[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            K_full = scale_intrinsics(out.intrinsics, W / w, H / h) if intrinsics is None else K
            out = Prediction(out.cam_to_world, K_full, depth, confidence, unproject_depth_to_world(depth, K_full, out.cam_to_world), out.fov_x)
        return out.numpy() if as_numpy else out

    # --------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Union[str, Path], extra: Optional[Dict[str, Any]] = None) -> Path:
        """Write {format, version, architecture, config, state_dict, extra} atomically (temp file + rename).
        Our own network keeps version 1 (readable by every release); other architectures write 2."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": 1 if self.architecture == "reliev3r" else CHECKPOINT_VERSION,
            "architecture": self.architecture,
            "config": self.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": {**getattr(self, "checkpoint_extra", {}), **(extra or {})},
        }
        return save_atomically(payload, path)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> "FeedForwardReconstructor":
        """Read a standalone checkpoint of any architecture (the class comes from the file, not from ``cls``).
        Other weights (pi3's own ``model.safetensors``, a hub id) go through :func:`reliev3r_ns.model.load_ffrm`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no FFRM checkpoint there. Train one with `ns-train reliev3r` and export it with "
                "`reliev3r-export-ffrm --load-config outputs/.../config.yml --output ffrm.pt`."
            )
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means the same thing
            raise ValueError(f"{path}: cannot read as a torch checkpoint ({error})") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a reliev3r FFRM checkpoint (no format={CHECKPOINT_FORMAT!r} inside)")
        if payload.get("version", 0) > CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {payload['version']} is newer than this reliev3r-ns reads ({CHECKPOINT_VERSION}); upgrade")
        network_class, config_class = architecture_classes(payload.get("architecture", "reliev3r"), path)
        model = network_class(config_class.from_dict(payload["config"]))
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not fit the stored config (missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.checkpoint_extra = payload.get("extra", {})
        return model.to(map_location)


def architecture_classes(architecture: str, path: Union[str, Path] = "") -> Tuple[type, type]:
    """(network class, config class) of an architecture name stored in a checkpoint."""
    if architecture == "reliev3r":
        return FFRM, FFRMConfig
    if architecture == "pi3":
        from reliev3r_ns.model.pi3 import Pi3Config, Pi3Network

        return Pi3Network, Pi3Config
    raise ValueError(f"{path}: unknown FFRM architecture {architecture!r}: written by a newer reliev3r-ns; upgrade")


class FFRM(FeedForwardReconstructor):
    def __init__(self, config: FFRMConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = AlternatingAttentionBackbone(config)
        self.camera_head = CameraHead(config.embed_dim, config.camera_hidden, config.num_registers, config.fov_range_degrees,
                                      config.camera_translation_init_std)
        self.dense_head = DenseHead(config.embed_dim, config.dense_layer_dims, config.dense_features)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, intrinsics: Optional[Tensor] = None) -> Prediction:
        """images (B, V, 3, H, W) in [0, 1] with H, W multiples of the patch size;
        intrinsics (B, V, 3, 3) OpenCV at this resolution, or None to use the predicted fov."""
        B, V, _, H, W = self.check_inputs(images, intrinsics)
        p = self.config.patch_size

        layers, tokens = self.backbone((images - self.image_mean) / self.image_std)
        depth, confidence = self.dense_head(layers, (H // p, W // p), (H, W))  # (B*V, H, W)
        depth, confidence = depth.reshape(B, V, H, W), confidence.reshape(B, V, H, W)
        rotation, translation, fov_x = self.camera_head(tokens)

        with torch.autocast(device_type=images.device.type, enabled=False):  # geometry in fp32
            depth, confidence = depth.float(), confidence.float()
            rotation, translation, fov_x = rotation.float(), translation.float(), fov_x.float()
            cam_to_world = make_pose(rotation, translation)  # (B, V, 4, 4)
            if self.config.reference == "first":
                # Express every camera in view 0's frame; view 0 is exactly the identity.
                relative = invert_pose(cam_to_world[:, :1]) @ cam_to_world[:, 1:]
                identity = torch.eye(4, dtype=relative.dtype, device=relative.device).expand(B, 1, 4, 4)
                cam_to_world = torch.cat([identity, relative], dim=1)
            if intrinsics is None:
                intrinsics = intrinsics_from_fov(fov_x, W, H)
            else:
                # Unused with known intrinsics: cut it from the graph, or DDP (find_unused_parameters)
                # waits for gradients of the field-of-view layer that never come.
                fov_x = fov_x.detach()
            intrinsics = intrinsics.float()
            world_points = unproject_depth_to_world(depth, intrinsics, cam_to_world)
        return Prediction(cam_to_world, intrinsics, depth, confidence, world_points, fov_x)

def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is returned as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _images_to_tensor(images: Union[np.ndarray, Tensor, Sequence[Union[str, Path]]]) -> Tensor:
    """Whatever the caller has -> (V, 3, H, W) float32 in [0, 1]; clear errors for the rest."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, Path)):
        from reliev3r_ns.data.scene_io import common_image_size, read_rgb

        common_image_size([Path(p) for p in images], advice="resize them to one size first")
        arrays = [read_rgb(Path(p)) for p in images]
        images = np.stack(arrays)
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"image array must be (V, H, W, 3), got {images.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    elif torch.is_tensor(images):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensor must be (V, 3, H, W), got {tuple(images.shape)}")
        tensor = images
    else:
        raise TypeError(f"images must be an array, a tensor or a list of paths, got {type(images).__name__}")
    if tensor.shape[0] < 1:
        raise ValueError("no images given")
    tensor = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError("images contain NaN or infinite values")
    return tensor


def save_atomically(payload: Any, path: Union[str, Path]) -> Path:
    """torch.save to a temporary file beside ``path``, then rename: a run killed mid-write leaves the
    previous file (or none), never a truncated one that fails to load much later."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
