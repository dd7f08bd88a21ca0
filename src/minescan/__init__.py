"""minescan: surface mines and tailings dams in Sentinel-2 imagery, at country scale."""

import os

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (oneDNN notices, CUDA probes) says nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SENTINEL2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
