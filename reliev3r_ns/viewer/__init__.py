"""What the viser viewer shows while the FFRM trains: the predicted cloud and cameras of one clip.

:mod:`cloud` turns one prediction into a displayable cloud (no nerfstudio), :mod:`live` publishes it
to nerfstudio's viewer, :mod:`client` is a headless viser client (tests, snapshots) and
:mod:`snapshot` draws what a client received into a PNG.
"""
