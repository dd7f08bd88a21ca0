"""Layers an analyst acts on, built from a scan's sites.

- :mod:`minescan.layers.overlays`: registry cross-check and protected-land / admin overlays;
- :mod:`minescan.layers.change`: change against the previous period and the cumulative layer;
- :mod:`minescan.layers.webmap`: the self-contained ``map.html``; :mod:`minescan.layers.plots` the report plots.
"""
