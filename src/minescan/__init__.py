"""minescan: surface mines and tailings dams in Sentinel-2 imagery, at country scale."""

import os

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (oneDNN notices, CUDA probes) says nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# NumPy asks the kernel for transparent huge pages on every array of 4 MB or more (read when numpy is first
# imported, so it is set here, before). Where the kernel then compacts memory on the fault (THP defrag
# "madvise", the common default), a detect job's large strip buffers stalled in the kernel: measured on the
# benchmark quadrant, OpenVINO bfloat16 job 8.2 s with 5.3 s of system time, 3.5 s with 1.1 s without
# (docs/performance.md). Set NUMPY_MADVISE_HUGEPAGE=1 to ask for them anyway.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

SENTINEL2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
