"""Training sets from mine polygons (``minescan datasets ...``).

- :mod:`minescan.datasets.grid`: a regular grid of square cells (5,500, 2,750 or 1,375 m, or any size) in the
  UTM zone of each cell; positives = cells overlapping the polygons (with their overlap fraction), one
  nearest non-intersecting negative per positive; names ``LAT_LON_ZoomLevel_OverlapPct``;
- :mod:`minescan.datasets.chips`: per cell, a GeoTIFF of the composite plus a ``_mine`` band, a preview
  with the polygons in semi-transparent red and a per-pixel table (band values, signed edge distance);
- :mod:`minescan.datasets.yolo`: YOLO object-detection export (images, normalised boxes, ``data.yaml``)
  with train/val/test splits grouped by a metadata column or by spatial blocks.

The polygons are the labels; everything here is deterministic (same inputs, same bytes).
"""
