"""Pixel classifiers: detectors that label single 10 m pixels instead of image windows.

- :mod:`minescan.pixel.features`: per-pixel features over rasters (bands, normalised differences, named
  indices, distance to water, month), lazily with rioxarray + dask, and the named feature sets;
- :mod:`minescan.pixel.labels`: labels from mine polygons (signed distance to the nearest edge, mine / not);
- :mod:`minescan.pixel.study`: the band and index study, a LASSO / L1-logistic path over a lambda grid;
- :mod:`minescan.pixel.train`: random forest and sparse logistic models, grouped CV, stored with skops;
- :mod:`minescan.pixel.detect`: a pixel model as the scan's detector (10 m COG + 27 px cells);
- :mod:`minescan.pixel.temporal`: the per-pixel median of probabilities over the last N periods.

A pixel model directory is ``model.skops`` + ``card.json`` with ``kind: pixel``; the card names the
feature set, so a model always gets the features it was trained on.
"""
