"""nerfstudio method definitions of reliev3r-ns, installed as ``reliev3r_ns.method_configs``."""
