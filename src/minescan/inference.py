"""Block-wise application of the discovery FCN to a rectangle of output cells.

The probability of every cell is computed from an input span that starts one cell early and ends
``valid_kernel`` cells late (see :class:`minescan.networks.FcnGeometry`), so a rectangle of cells can be
cut into blocks of any size and the result equals whole-image inference (up to float round-off): the
whole quadrant, the whole tile and a 10-cell block all give the same numbers for the same cell.

Memory is bounded by the block size: the first convolution's activations for a block of ``n`` x ``n``
cells hold ``(27 (n + 1 + k))^2 x 32`` float32 values (k = 7 for the published window).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from .networks import STRIDE, FcnGeometry

log = logging.getLogger(__name__)

# reader(col0, row0, col1, row1) -> (normalised float32 (H, W, B), valid bool (H, W)), global pixels
BlockReader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]

MIN_VALID_FRACTION = 0.5  # a cell with less valid (non-nodata) footprint is reported as no data


def _chunks(r: range, size: int):
    for start in range(r.start, r.stop, size):
        yield start, min(size, r.stop - start)


def predict_cells(network, geometry: FcnGeometry, reader: BlockReader, kx: range, ky: range,
                  block_cells: int, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Mine probability for cells ``kx`` x ``ky`` as float32 (len(ky), len(kx)); NaN where no data."""
    out = np.full((len(ky), len(kx)), np.nan, dtype=np.float32)
    blocks = [(y0, ny, x0, nx) for y0, ny in _chunks(ky, block_cells) for x0, nx in _chunks(kx, block_cells)]
    off = geometry.offset
    for i, (y0, ny, x0, nx) in enumerate(blocks):
        c0, c1 = geometry.input_span(x0, nx)
        r0, r1 = geometry.input_span(y0, ny)
        x, valid = reader(c0, r0, c1, r1)
        if valid.any():
            prob = network.predict_on_batch(x[None])[0, 1 : 1 + ny, 1 : 1 + nx, 1]
            # valid fraction of each cell's own 27 x 27 footprint
            f0 = STRIDE + off
            fp = valid[f0 : f0 + STRIDE * ny, f0 : f0 + STRIDE * nx]
            frac = fp.reshape(ny, STRIDE, nx, STRIDE).mean(axis=(1, 3))
            prob = np.where(frac >= MIN_VALID_FRACTION, prob, np.nan)
            out[y0 - ky.start : y0 - ky.start + ny, x0 - kx.start : x0 - kx.start + nx] = prob
        if progress:
            progress(i + 1, len(blocks))
    return out


def log_progress(what: str, every_s: float = 10.0) -> Callable[[int, int], None]:
    """A progress callback that logs 'what: i/n blocks (p %), eta' at most every ``every_s`` seconds."""
    start = time.monotonic()
    last = [start]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            rate = (now - start) / done
            log.info("%s: %d/%d blocks (%.0f %%), %.0f s elapsed, ~%.0f s left", what, done, total,
                     100 * done / total, now - start, rate * (total - done))

    return report
