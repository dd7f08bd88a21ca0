"""Where tile imagery comes from.

- :mod:`minescan.sources.local`: local GeoTIFFs (any CRS, any band order) warped and cut into grid tiles;
- :mod:`minescan.sources.gee`: Sentinel-2 median composites from Google Earth Engine, one grid tile each;
- :mod:`minescan.sources.demo`: the SIMULATED demo scene and its truth; :mod:`minescan.sources.demo_layers`
  its SIMULATED registries and protected areas.

Every source ends in the same product: a uint16 GeoTIFF per tile (core + halo) with band descriptions,
which is all the scan path reads. A new imagery source plugs in here and in ``rules/acquire*.smk``.
"""
