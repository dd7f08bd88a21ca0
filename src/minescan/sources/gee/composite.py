"""The Earth Engine expression of one composite: the published recipe (Balaniuk et al. 2020) of a
cloud-masked Sentinel-2 median over a period, with the bands in the order the models expect.

    collection  .filterDate(start, end)                 period window, end exclusive
                .filterBounds(area)                     only scenes touching the tile / chip
                [.filter(CLOUDY_PIXEL_PERCENTAGE <= x)] optional scene-level filter
                .linkCollection(Cloud Score+, [cs_cdf]) + .map(mask cs_cdf >= threshold)   or
                .map(mask QA60 bits 10 and 11 clear)
                .select(bands)  [.map(resample)]
                .map(mask where any band is masked)     every band is a median of the same scenes
                .merge(one fully masked image)          an empty window gives no data, not an image without bands
                .median()
                .round().clamp(1, 65535)                a valid pixel is never 0 ...
                .unmask(0, False).toUint16()            ... 0 = no data (cloudy all period, or no scene)

Nothing here talks to the network: building the expression is client-side (with the real ``ee`` module
after ``ee.Initialize``, or with :mod:`.recorder` offline).
"""

from __future__ import annotations

import logging
from datetime import date

from minescan.periods import period_dates
from minescan.sources.gee.settings import CLOUD_SCORE_PLUS, GeeSettings

log = logging.getLogger(__name__)

QA60_OPAQUE = 1 << 10
QA60_CIRRUS = 1 << 11
# ESA stopped filling QA60 with processing baseline 04.00 and Earth Engine re-populated it from 2024-02-28:
# in between the band is empty, so a QA60 mask would keep every cloud.
QA60_GAP = (date(2022, 1, 25), date(2024, 2, 28))


def qa60_gap_warning(period: str) -> str | None:
    """A warning when a QA60 mask is asked for a window that overlaps the period QA60 is empty."""
    start, end = (date.fromisoformat(d) for d in period_dates(period))
    if start < QA60_GAP[1] and end > QA60_GAP[0]:
        return (f"period {period} ({start} .. {end}) overlaps {QA60_GAP[0]} .. {QA60_GAP[1]}, when Sentinel-2 "
                "QA60 is empty: cloud_mask 'qa60' masks no cloud there; use cloud_mask 'cloud_score_plus'")
    return None


def rectangle(ee, bounds: tuple[float, float, float, float], epsg: int):
    """A planar rectangle (xmin, ymin, xmax, ymax) in a projected CRS."""
    return ee.Geometry.Rectangle(list(bounds), proj=f"EPSG:{epsg}", geodesic=False)


def build_composite(ee, settings: GeeSettings, period: str, area=None, warn: bool = True):
    """The composite image for ``period`` over ``area`` (an ee.Geometry or None), bands named as configured."""
    start, end = period_dates(period)
    col = ee.ImageCollection(settings.collection).filterDate(start, end)
    if area is not None:
        col = col.filterBounds(area)
    if settings.max_cloudy_pixel_percentage is not None:
        col = col.filter(ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", settings.max_cloudy_pixel_percentage))
    if settings.cloud_mask == "cloud_score_plus":
        band, threshold = settings.cs_band, settings.cs_threshold
        col = col.linkCollection(ee.ImageCollection(CLOUD_SCORE_PLUS), [band])
        col = col.map(lambda img: img.updateMask(img.select(band).gte(threshold)))
    elif settings.cloud_mask == "qa60":
        if warn:
            msg = qa60_gap_warning(period)
            if msg:
                log.warning(msg)
        col = col.map(lambda img: img.updateMask(img.select("QA60").bitwiseAnd(QA60_OPAQUE | QA60_CIRRUS).eq(0)))
    col = col.select(list(settings.bands))
    if settings.resampling != "nearest":
        mode = settings.resampling
        col = col.map(lambda img: img.resample(mode))
    # a scene counts at a pixel for every band or for none, so all bands are medians of the same scenes and
    # the composite's no-data pixels are the same in every band
    col = col.map(lambda img: img.updateMask(img.mask().reduce(ee.Reducer.min())))
    # A fully masked image with the right bands: the median of a window without any scene (or a place no
    # orbit covers) is then "no data" rather than an image without bands that every request would fail on.
    empty = ee.Image.constant([0] * len(settings.bands)).rename(list(settings.bands)).toUint16().selfMask()
    col = col.merge(ee.ImageCollection([empty]))
    return col.median().round().clamp(1, 65535).unmask(settings.nodata, False).toUint16()
