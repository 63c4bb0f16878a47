"""One entry point for every FFRM the project accepts: ``load_ffrm(PATH_OR_HUB_ID)``.

- our standalone checkpoint (``reliev3r-export-ffrm``, ``ns-train reliev3r`` exports, converted pi3);
- pi3's released weights: ``model.safetensors`` / ``.pt`` / ``.pth`` of ``yyfz233/Pi3``, a folder
  holding one, or the hub id itself (``yyfz233/Pi3``: from the Hugging Face cache, or downloaded
  when online; offline an error says which file to fetch and where to pass it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from reliev3r_ns.model.ffrm import CHECKPOINT_FORMAT, FeedForwardReconstructor


def checkpoint_file(source: Union[str, Path]) -> Path:
    """The local file that ``source`` names: itself, the weights file in a folder, or a hub id's
    ``model.safetensors`` (from the Hugging Face cache, or downloaded). For caches keyed on its bytes."""
    from reliev3r_ns.model.pi3.weights import download_hub_weights, weights_in_folder

    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return weights_in_folder(path)
    _check_hub_id(source)
    return download_hub_weights(str(source))


def _check_hub_id(source: Union[str, Path]) -> None:
    text, path = str(source), Path(source)
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or path.suffix in (".pt", ".pth", ".safetensors", ".ckpt"):
        raise FileNotFoundError(
            f"{source}: no such FFRM checkpoint or weights file. Pass a checkpoint from `reliev3r-export-ffrm` (train "
            "one with `ns-train reliev3r`), pi3's model.safetensors, or a hub id such as yyfz233/Pi3")


def load_ffrm(source: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> FeedForwardReconstructor:
    """Any FFRM the project accepts (see the module's docstring), on ``map_location``."""
    from reliev3r_ns.model.ffrm import FFRM
    from reliev3r_ns.model.pi3.weights import load_pi3

    path = Path(source).expanduser()
    if path.is_file() and path.suffix != ".safetensors":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means the same thing
            raise ValueError(f"{path}: cannot read as a torch checkpoint or state dict ({error})") from None
        if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
            return FFRM.from_checkpoint(path, map_location=map_location)
        del payload
        return load_pi3(path).to(map_location)
    if path.is_file() or path.is_dir():
        return load_pi3(path).to(map_location)
    _check_hub_id(source)
    return load_pi3(str(source)).to(map_location)
