"""COLMAP-free processing: images or a video -> FFRM reconstruction -> a nerfstudio dataset.

Submodules are imported where used (``reliev3r_ns.process.dataparser`` is loaded by nerfstudio's
plugin registry while nerfstudio itself is still importing, so this package imports nothing eagerly).
"""
