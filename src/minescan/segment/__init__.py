"""Segmentation of the disturbed area of mining sites, pixel by pixel (after MineSegSAT, 2023).

A site's area from the detector is the union of the 270 m cells that fired; this stage refines it with a
per-pixel probability of disturbed ground from a SegFormer-style network.

- :mod:`minescan.segment.losses`: Tversky, Dice, Lovasz-hinge and cross-entropy losses (Keras ops);
- :mod:`minescan.segment.network`: the mix-transformer encoder + MLP decoder (SegFormer), our own Keras code
  (keras-hub's SegFormer needs tensorflow-text, which pulls the full ``tensorflow`` wheel: see
  ``docs/segmentation.md``);
- :mod:`minescan.segment.masks`: masks rasterised from polygons onto an image's grid, tiles, grouped split;
- :mod:`minescan.segment.train`: ``minescan segment train`` (model directory with a card);
- :mod:`minescan.segment.predict`: windowed prediction with overlap and trimmed merging, the per-quadrant
  ``minescan segment predict`` job (mask COG + extent polygons) and the scan's extents.
"""
