"""Google Earth Engine as an imagery source: cloud-masked Sentinel-2 median composites for the scan tiles
(``source.kind: gee``) and for training chips around labelled points.

Modules:

- :mod:`.settings`   the validated ``source.gee`` block (composite definition, fetch and auth settings)
- :mod:`.composite`  the Earth Engine expression of one composite (collection, dates, cloud mask, median)
- :mod:`.auth`       credentials (service-account key, application default, ``earthengine authenticate``)
- :mod:`.retry`      retries with exponential backoff on quota / 5xx / network errors
- :mod:`.compute_pixels`  a tile fetched with ``ee.data.computePixels`` in blocks under the request limit
- :mod:`.export`     a tile exported by a batch task to Cloud Storage or Drive, then downloaded
- :mod:`.tiles`      one tile: cache lookup, either route, the final cloud-optimised GeoTIFF
- :mod:`.chips`      training chips around points
- :mod:`.plan`       what would be fetched, without network
- :mod:`.recorder`   an offline stand-in for the ``ee`` module that records the expressions built

The ``ee`` module is looked up once through :func:`get_ee`; every function that talks to Earth Engine
also takes an ``ee`` argument, so tests (and the offline plan) can pass a stand-in.
"""

from __future__ import annotations

_EE = None


def get_ee():
    """The ``earthengine-api`` module (imported on first use; it is slow to import and needs network)."""
    global _EE
    if _EE is None:
        import ee

        _EE = ee
    return _EE


def set_ee(module) -> None:
    """Replace the ``ee`` module used by default (tests; ``None`` restores the real one)."""
    global _EE
    _EE = module
