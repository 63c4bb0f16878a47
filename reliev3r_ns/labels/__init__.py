"""Weak labels: finding view sets, the content-addressed label cache, and the labelling pipeline."""

from reliev3r_ns.labels.cache import LABEL_FORMAT_VERSION, LabelCache, config_key, file_key
from reliev3r_ns.labels.pairs import PairSelectionConfig, select_pairs
from reliev3r_ns.labels.pipeline import Labeller, PseudoLabelConfig, SceneLabels
from reliev3r_ns.labels.view_sets import ViewSet, discover_view_sets, open_view_set

__all__ = [name for name in dir() if not name.startswith("_")]
