"""pi3's network in this project's modules, its weights' mapping and loading (see network.py)."""

from reliev3r_ns.model.pi3.network import Pi3Config, Pi3Network, centred_intrinsics, fit_focal, pi3_config

__all__ = ["Pi3Config", "Pi3Network", "centred_intrinsics", "fit_focal", "pi3_config"]
