"""pi3's released weights -> our :class:`~reliev3r_ns.model.pi3.network.Pi3Network`.

The released checkpoint (``model.safetensors`` of ``yyfz233/Pi3`` on the Hugging Face hub, or a
``.pt`` / ``.pth`` state dict) names its tensors after the reference code's modules. ``REFERENCE_TO_OURS``
renames them onto ours; every released tensor must be used and every one of ours filled, with the
shapes the config implies, or loading stops and says which. The network's shape is read off the
tensors themselves (widths, depths, registers, grid), so reduced models in the released layout load too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch

from reliev3r_ns.model.ffrm import IMAGENET_MEAN, IMAGENET_STD
from reliev3r_ns.model.pi3.network import Pi3Config, Pi3Network

Tensor = torch.Tensor

HUB_FILE = "model.safetensors"
RELEASED_HUB_IDS = ("yyfz233/Pi3",)
LICENCE_NOTE = ("pi3's code is BSD-2-Clause (github.com/yyfz/Pi3); check the model card of the weights you download "
                "(huggingface.co/yyfz233/Pi3) for their terms before you ship them")

# (reference-name pattern, our name); applied in order, first match wins.
REFERENCE_TO_OURS: List[Tuple[str, str]] = [
    (r"^encoder\.patch_embed\.proj\.(weight|bias)$", r"encoder.patch_projection.\1"),
    (r"^encoder\.cls_token$", "encoder.class_token"),
    (r"^encoder\.register_tokens$", "encoder.registers"),
    (r"^encoder\.pos_embed$", "encoder.position_embedding"),
    (r"^encoder\.(blocks\.\d+\..+|norm\.(weight|bias))$", r"encoder.\1"),
    (r"^decoder\.(\d+\..+)$", r"trunk.\1"),
    (r"^register_token$", "trunk_registers"),
    (r"^(point|conf|camera)_decoder\.projects\.(weight|bias)$", r"\1_decoder.input.\2"),
    (r"^(point|conf|camera)_decoder\.linear_out\.(weight|bias)$", r"\1_decoder.output.\2"),
    (r"^(point|conf|camera)_decoder\.(blocks\.\d+\..+)$", r"\1_decoder.\2"),
    (r"^(point|conf)_head\.proj\.(weight|bias)$", r"\1_head.proj.\2"),
    (r"^camera_head\.res_conv\.(\d)\.res_conv([123])\.(weight|bias)$", None),  # index shift, below
    (r"^camera_head\.more_mlps\.([02])\.(weight|bias)$", r"camera_head.mlp.\1.\2"),
    (r"^camera_head\.fc_t\.(weight|bias)$", r"camera_head.translation.\1"),
    (r"^camera_head\.fc_rot\.(weight|bias)$", r"camera_head.rotation.\1"),
]
# Released tensors we do not keep: DINOv2's masking token (unused by pi3) and the normalisation
# constants (fixed buffers on our side, checked to be ImageNet's).
DROPPED = ("encoder.mask_token", "image_mean", "image_std")


class Pi3WeightsError(ValueError):
    pass


def our_name(reference_name: str) -> str:
    """The name of our tensor that a released tensor fills; Pi3WeightsError for an unknown one."""
    for pattern, replacement in REFERENCE_TO_OURS:
        match = re.match(pattern, reference_name)
        if not match:
            continue
        if replacement is None:  # camera_head.res_conv.K.res_convJ -> camera_head.residual.K.layers.(J-1)
            block, layer, kind = match.groups()
            name = f"camera_head.residual.{block}.layers.{int(layer) - 1}.{kind}"
        else:
            name = match.expand(replacement)
        return name.replace("conf_decoder.", "confidence_decoder.").replace("conf_head.", "confidence_head.")
    raise Pi3WeightsError(f"unexpected tensor {reference_name!r}: not pi3's layout (Pi3X or another network?)")


def is_reference_layout(state: Dict[str, Tensor]) -> bool:
    return "encoder.patch_embed.proj.weight" in state and "decoder.0.norm1.weight" in state and "camera_head.fc_rot.weight" in state


def config_from_reference(state: Dict[str, Tensor], **overrides) -> Pi3Config:
    """Read the network's shape off the released tensors."""
    if any(k.startswith(("metric_token", "metric_decoder.", "depth_encoder.", "ray_embed.", "pose_inject_blk.")) for k in state):
        raise Pi3WeightsError("these are Pi3X weights (metric, depth and ray conditioning tensors); only pi3 (yyfz233/Pi3) is supported so far")
    if not is_reference_layout(state):
        raise Pi3WeightsError("not pi3 weights: no encoder.patch_embed / decoder.0 / camera_head.fc_rot tensors")

    def count(prefix: str) -> int:
        return len({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})

    patch = state["encoder.patch_embed.proj.weight"]  # (dim, 3, p, p)
    grid_tokens = state["encoder.pos_embed"].shape[1] - 1
    grid = int(round(grid_tokens ** 0.5))
    if grid * grid != grid_tokens:
        raise Pi3WeightsError(f"encoder.pos_embed holds {grid_tokens} patch positions, not a square grid")
    dim = patch.shape[0]
    values = dict(
        patch_size=int(patch.shape[-1]), dim=int(dim),
        encoder_depth=count("encoder.blocks."),
        encoder_registers=int(state["encoder.register_tokens"].shape[1]) if "encoder.register_tokens" in state else 0,
        position_grid=grid,
        trunk_depth=count("decoder."),
        trunk_registers=int(state["register_token"].shape[-2]),
        head_dim=int(state["point_decoder.projects.weight"].shape[0]),
        head_depth=count("point_decoder.blocks."),
        camera_dim=int(state["camera_head.fc_t.weight"].shape[1]),
        mlp_ratio=float(state["decoder.0.mlp.fc1.weight"].shape[0] / dim),
        size="pi3" if (dim, count("decoder.")) == (1024, 36) else "reduced",
    )
    if values["encoder_registers"] == 0:
        raise Pi3WeightsError("encoder without registers: pi3 uses DINOv2 ViT-L/14 with 4 registers")
    return Pi3Config(**{**values, **overrides})


def convert_reference_state(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Released names -> ours (same tensors). Checks the normalisation constants it drops."""
    ours: Dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name in DROPPED:
            if name in ("image_mean", "image_std"):
                expected = torch.tensor(IMAGENET_MEAN if name == "image_mean" else IMAGENET_STD)
                if not torch.allclose(tensor.float().flatten(), expected, atol=1e-6):
                    raise Pi3WeightsError(f"{name} is {tensor.flatten().tolist()}, not ImageNet's {expected.tolist()}")
            continue
        target = our_name(name)
        if name == "register_token":
            tensor = tensor.reshape(1, *tensor.shape[-2:])  # (1, 1, R, dim) -> (1, R, dim): one set for every view
        ours[target] = tensor
    return ours


def network_from_reference_state(state: Dict[str, Tensor], source: str = "", **overrides) -> Pi3Network:
    """A :class:`Pi3Network` holding the released tensors; every tensor used, every shape checked."""
    config = config_from_reference(state, **overrides)
    converted = convert_reference_state(state)
    model = Pi3Network(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = [f"{k}: {tuple(converted[k].shape)} for {tuple(expected[k].shape)}" for k in expected
             if k in converted and converted[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise Pi3WeightsError(f"{source or 'pi3 weights'}: do not fit the network read off them "
                              f"(missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {wrong[:4]})")
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    model.checkpoint_extra = {"image_size": [518, 518], "converted_from": source or "pi3 weights", "licence": LICENCE_NOTE}
    return model


def read_state_file(path: Path) -> Dict[str, Tensor]:
    """A safetensors file or a torch state dict (``.pt`` / ``.pth`` / ``.bin``), tensors on the CPU."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a training checkpoint {model: ..., optimizer: ...}
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise Pi3WeightsError(f"{path}: not a state dict of tensors")
    return state


def download_hub_weights(hub_id: str) -> Path:
    """The hub id's ``model.safetensors``: from the local Hugging Face cache, else downloaded unless
    offline (HF_HUB_OFFLINE=1); a clear error that says which file to fetch and where to pass it."""
    from reliev3r_ns.teachers.depth import hub_file

    return hub_file(hub_id, HUB_FILE, f"pass its path as --checkpoint (or fetch it with `huggingface-cli download {hub_id} {HUB_FILE}`)", Pi3WeightsError)


def weights_in_folder(folder: Path) -> Path:
    """``model.safetensors`` in a folder (a hub snapshot), else its only .safetensors / .pt / .pth."""
    candidates = [folder / HUB_FILE] + sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth"))
    found = list(dict.fromkeys(c for c in candidates if c.is_file()))
    if not found:
        raise Pi3WeightsError(f"{folder}: no {HUB_FILE} (or .pt / .pth) in this folder")
    if not (folder / HUB_FILE).is_file() and len(found) > 1:
        raise Pi3WeightsError(f"{folder}: several weights files ({', '.join(f.name for f in found[:4])}); pass the one to use")
    return found[0]


def load_pi3(source: Union[str, Path], **overrides) -> Pi3Network:
    """pi3 from a released weights file, a folder holding ``model.safetensors``, or a hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = weights_in_folder(path)
    elif not path.exists():
        path = download_hub_weights(str(source))
    return network_from_reference_state(read_state_file(path), str(source), **overrides)
