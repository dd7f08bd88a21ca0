"""The scan path: region -> tiles -> quadrant jobs -> detections -> sites.

- :mod:`minescan.scan.plan`: the tiles and quadrant jobs of a config;
- :mod:`minescan.scan.inference`: streamed, bounded-memory FCN inference with exact seams;
- :mod:`minescan.scan.patches`: imported patch classifiers, every ``stride`` px, exact per position (fully
  convolutional form where the network allows, batched patches otherwise);
- :mod:`minescan.scan.detect`: one quadrant job: probabilities, candidates, impact ratings (detect, classify);
- :mod:`minescan.scan.merge`: quadrants -> detections, sites, summary; :mod:`minescan.scan.spatial_prior`
  the stricter cut-off for isolated candidates.
"""
