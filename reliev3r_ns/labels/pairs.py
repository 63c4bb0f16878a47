"""Which view pairs of a view set get matched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Tuple


@dataclass
class PairSelectionConfig:
    mode: Literal["auto", "all", "window"] = "auto"
    """'all': every pair; 'window': pairs within ``window`` positions (ordered captures, videos);
    'auto': all pairs up to ``max_all_views`` views, a window beyond."""
    window: int = 8
    max_all_views: int = 32


def select_pairs(num_views: int, config: PairSelectionConfig = PairSelectionConfig()) -> List[Tuple[int, int]]:
    """Pairs (i, j) with i < j, in a fixed order."""
    mode = config.mode
    if mode == "auto":
        mode = "all" if num_views <= config.max_all_views else "window"
    if mode == "all":
        return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]
    if config.window < 1:
        raise ValueError(f"pair window must be >= 1, got {config.window}")
    return [(i, j) for i in range(num_views) for j in range(i + 1, min(num_views, i + config.window + 1))]
