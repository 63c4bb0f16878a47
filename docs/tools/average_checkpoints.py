"""One FFRM whose weights are the mean of several checkpoints of one training (weight averaging, as in SWA).

A training's median-scaled depth tau swings between the checkpoints it keeps (``--keep-every``) while
its shape (scale + shift tau) improves steadily; averaging the last few kept checkpoints asks whether
the network between them does better than any one. The checkpoints must be of one network (same
model config and weights' names and shapes), e.g. one run's ``step_*/weak.pt`` and its final
``weak.pt``; the output is an ordinary FFRM checkpoint (``--evaluate`` scores it) carrying the last
input's extra settings plus ``averaged_from``.

    python docs/tools/average_checkpoints.py CKPT/step_008000/weak.pt CKPT/step_009000/weak.pt CKPT/weak.pt \
        --output AVG/weak.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from reliev3r_ns.model import FFRM


def average(paths: List[Path]) -> FFRM:
    """The last checkpoint's network with each floating-point weight replaced by the mean over `paths`
    (integer buffers kept from the last); refuses checkpoints of different networks."""
    if len(paths) < 2:
        raise SystemExit("give two or more checkpoints to average")
    try:
        models = [FFRM.from_checkpoint(path) for path in paths]
    except (FileNotFoundError, ValueError) as error:  # a missing or unreadable file: its message names it
        raise SystemExit(str(error)) from None
    last = models[-1]
    states = [model.state_dict() for model in models]
    reference = states[-1]
    for path, model, state in zip(paths, models, states):
        if model.config.to_dict() != last.config.to_dict():
            raise SystemExit(f"{path}: another network's config than {paths[-1]}; average checkpoints of one training")
        if state.keys() != reference.keys() or any(state[k].shape != reference[k].shape for k in reference):
            raise SystemExit(f"{path}: weights differ in names or shapes from {paths[-1]}")
    averaged = {}
    for key, value in reference.items():
        if value.is_floating_point():
            # in float64: the mean of a few float32 weights then rounds once
            averaged[key] = (sum(state[key].double() for state in states) / len(states)).to(value.dtype)
        else:
            averaged[key] = value
    last.load_state_dict(averaged)
    last.checkpoint_extra = {**last.checkpoint_extra, "averaged_from": [str(p) for p in paths],
                             "averaged_steps": [m.checkpoint_extra.get("steps") for m in models]}
    return last


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="FFRM checkpoints (.pt) of one training")
    parser.add_argument("--output", type=Path, required=True, help="the averaged FFRM checkpoint (.pt), written atomically")
    args = parser.parse_args(argv)
    model = average(args.checkpoints)
    path = model.save_checkpoint(args.output, model.checkpoint_extra)
    print(f"wrote {path}: the mean of {len(args.checkpoints)} checkpoints (steps {model.checkpoint_extra['averaged_steps']})")
    return path


if __name__ == "__main__":
    main()
