"""Imagery sanity checks of one quadrant, run by the detect job before its results are trusted.

Two simple spectral tests on the quadrant core's valid pixels, read at most 1024 px a side (nearest
neighbour; reflectance = tile value x ``scale``):

- **Bright cloud.** A pixel is cloud-like when it is bright in all three visible bands, B2, B3 and B4
  (blue, green, red) >= ``min_reflectance`` (default 0.3): thick cloud is white and bright, while bare soil,
  sand, rock and tailings are darker in blue and green than in red. A quadrant whose valid pixels are
  cloud-like for at least ``max_fraction`` (default 0.5) is *cloudy*: the discovery network was not trained
  on cloud and finds many false mines in it. The job log says so (``action: warn``, the default), the
  probability raster carries the tags ``CLOUD_FRACTION`` and ``CLOUDY``, and merge lists the quadrant
  under ``cloudy_quadrants`` in summary.json; ``action: error`` fails the job instead; ``off`` skips it.
- **Band order.** Over land (B11, short-wave infrared, >= 0.05: not water, not deep shadow) and outside
  cloud, the near infrared B8 is brighter than the blue B2 and the red B4 for vegetation, soil, rock and
  built-up land alike. When B8 < B2, or B8 < B4, for more than 75 % of such pixels (at least 1000 of
  them), the band descriptions of the tile are probably swapped: the log warns (never fails: a scene can
  be odd). It catches a swap of B8 with B2 or B4 (or with another band darker than them), not swaps
  among the visible bands. On the demo scene at most 0.5 % of land pixels are inverted; uniform or
  random synthetic scenes (B8 = B2, or B8 < B2 for about half the pixels) do not trigger it.

Either test is skipped, saying so at debug level, when the tile lacks one of its bands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from minescan.errors import InputDataError, NoDataError

log = logging.getLogger(__name__)

CLOUD_BANDS = ("B2", "B3", "B4")
ORDER_BANDS = ("B2", "B4", "B8", "B11")
ORDER_PAIRS = (("B2", "blue"), ("B4", "red"))  # bands the near infrared B8 is brighter than over land
LAND_SWIR = 0.05  # B11 reflectance above which a pixel is taken as land (water and shadow are darker)
ORDER_MAX_FRACTION = 0.75
ORDER_MIN_PIXELS = 1000


@dataclass(frozen=True)
class QualityCheck:
    """Settings (config keys detect.cloud_check.* and detect.band_order_check)."""

    cloud_action: str = "warn"  # warn | error | off
    cloud_min_reflectance: float = 0.3
    cloud_max_fraction: float = 0.5
    band_order: bool = True
    max_px: int = 1024


def _sample(raster, tile, quadrant: str, names: tuple[str, ...], max_px: int) -> np.ndarray | None:
    """(n, len(names)) tile values of the valid pixels of the quadrant core read at most ``max_px`` a side
    (nearest-neighbour decimation: memory stays small whatever the quadrant), or None without the bands."""
    if not all(n in raster.band_names for n in names):
        return None
    c0, r0, c1, r1 = tile.quadrant_core_px(quadrant)
    w, h = c1 - c0, r1 - r0
    f = max(1, -(-max(w, h) // max_px))
    win = Window(c0 - raster.origin[0], r0 - raster.origin[1], w, h)
    try:
        data = raster.ds.read([i + 1 for i in raster.band_indices(list(names))], window=win,
                              out_shape=(len(names), max(1, h // f), max(1, w // f)),
                              resampling=Resampling.nearest)
    except RasterioError as exc:
        raise InputDataError(f"{raster.path}: corrupt or unreadable ({exc})") from exc
    data = np.moveaxis(data, 0, -1).reshape(-1, len(names))
    return data[np.all(data != raster.nodata, axis=1)]


NAMES = tuple(dict.fromkeys(CLOUD_BANDS + ORDER_BANDS))  # the bands both tests read


def _picks(start: int, size: int, f: int) -> np.ndarray:
    """Pixels GDAL's nearest-neighbour decimation of ``size`` px to ``max(1, size // f)`` takes: the one under
    each output pixel's centre."""
    n = max(1, size // f)
    return start + np.floor((np.arange(n) + 0.5) * (size / n)).astype(np.int64)


class StreamSample:
    """The pixels :func:`_sample` would read, collected from the rows the detect job reads anyway (the
    quadrant's input span, strip by strip), so the checks cost no second read and decode of the quadrant.

    ``wrap(read)`` returns a reader that passes every read through and keeps the sampled pixels of reads
    spanning the core's width; ``values()`` returns them as ``_sample`` does, or None if some sampled row
    was never read that way (then the checks read the tile as before)."""

    def __init__(self, tile, quadrant: str, band_names: list[str], nodata: float, max_px: int = 1024):
        self.pos = [band_names.index(n) for n in NAMES] if all(n in band_names for n in NAMES) else None
        c0, r0, c1, r1 = tile.quadrant_core_px(quadrant)
        f = max(1, -(-max(c1 - c0, r1 - r0) // max_px))
        self.rows, self.cols = _picks(r0, r1 - r0, f), _picks(c0, c1 - c0, f)
        self.nodata = nodata
        self._got: dict[int, np.ndarray] = {}  # sampled row -> its sampled pixels (len(cols), len(NAMES))

    def wrap(self, read):
        if self.pos is None:
            return read

        def tapped(c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
            raw = read(c0, r0, c1, r1)
            if c0 <= self.cols[0] and self.cols[-1] < c1:
                lo, hi = np.searchsorted(self.rows, [r0, r1])
                for r in self.rows[lo:hi].tolist():
                    if r not in self._got:
                        self._got[r] = raw[r - r0, self.cols - c0][:, self.pos]
            return raw

        return tapped

    def values(self) -> np.ndarray | None:
        if self.pos is None or len(self._got) != len(self.rows):
            return None
        data = np.concatenate([self._got[r] for r in self.rows.tolist()])
        return data[np.all(data != self.nodata, axis=1)]


def check_quadrant(raster, tile, quadrant: str, scale: float, settings: QualityCheck,
                   sample: np.ndarray | None = None) -> dict:
    """Run both tests on one quadrant; return tags for its probability raster (empty when nothing to say).
    ``sample``: the pixels of ``NAMES`` already read (:class:`StreamSample`), else they are read here."""
    tags: dict = {}
    where = f"{raster.path}: quadrant {quadrant} of tile {tile.name}"
    names = NAMES
    wanted = settings.cloud_action != "off" or settings.band_order
    if sample is None and wanted:
        sample = _sample(raster, tile, quadrant, names, settings.max_px)
    elif not wanted:
        sample = None
    if wanted and sample is None:
        log.debug("%s: no band %s; cloud and band-order checks skipped", where, "/".join(names))
    if sample is None or len(sample) == 0:
        return tags
    refl = sample.astype(np.float32) * np.float32(scale)
    col = {n: refl[:, i] for i, n in enumerate(names)}
    cloudy_px = np.all([col[b] >= settings.cloud_min_reflectance for b in CLOUD_BANDS], axis=0)
    if settings.cloud_action != "off":
        fraction = float(cloudy_px.mean())
        if fraction >= settings.cloud_max_fraction:
            msg = (f"{where}: {100 * fraction:.0f} % of its valid pixels are bright in B2, B3 and B4 "
                   f"(>= {settings.cloud_min_reflectance:g} reflectance), like cloud; its detections are "
                   "suspect (detect.cloud_check)")
            if settings.cloud_action == "error":
                raise NoDataError(msg + "; set detect.cloud_check.action: warn to accept it")
            log.warning(msg)
            tags = {"CLOUD_FRACTION": f"{fraction:.4f}", "CLOUDY": "yes"}
    if settings.band_order:
        land = (col["B11"] >= LAND_SWIR) & ~cloudy_px
        n = int(land.sum())
        if n >= ORDER_MIN_PIXELS:
            for band, colour in ORDER_PAIRS:
                inverted = float((col["B8"][land] < col[band][land]).mean())
                if inverted > ORDER_MAX_FRACTION:
                    log.warning("%s: the near infrared (band B8) is darker than the %s (band %s) on %.0f %% "
                                "of %d land pixels, which land almost never is: are the band descriptions of "
                                "the imagery swapped (source.local.band_names)?", where, colour, band,
                                100 * inverted, n)
    return tags
