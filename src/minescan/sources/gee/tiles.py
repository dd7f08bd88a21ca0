"""One scan tile from Earth Engine: cache lookup, either fetch route, the final cloud-optimised GeoTIFF.

Tiles are kept in a cache keyed by the composite definition (``{cache_dir}/{key}/{period}/{tile}.tif``)
and the Snakemake output is a hard link to the cached file (a copy across file systems). Snakemake deletes
a job's outputs before it reruns it (after a change of the rule's code or parameters, or
``--forcerun``), so without the cache every such rerun would download again; with it a rerun with the same
composite definition takes a few milliseconds. A different definition (another collection, mask,
threshold, band list or grid) has another key and is fetched anew.

The work of an unfinished tile (computePixels blocks, or the export's task name and downloaded files)
lives beside it in ``{tile}.parts/`` and is reused by the next attempt; the final file is written to a
temporary name and renamed, so a half-written tile never looks complete.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

from minescan.errors import InputDataError
from minescan.io_utils import atomic_output
from minescan.sources.gee import compute_pixels as cp
from minescan.sources.gee import export as ex
from minescan.sources.gee.composite import build_composite, rectangle
from minescan.sources.local import TileRaster, tile_profile

log = logging.getLogger(__name__)

# The tile COG: the full-resolution image in 512 px pixel-interleaved blocks (what a detect job's block
# decoder reads, minescan.sources.blocks), overviews for viewing; compressed as source.tile_compression says
# (ZSTD level 1 + predictor, or none: see minescan.sources.local.TILE_COMPRESSIONS).
COG_OPTIONS = {"BLOCKSIZE": "512", "BIGTIFF": "IF_SAFER", "OVERVIEWS": "AUTO", "OVERVIEW_RESAMPLING": "AVERAGE",
               "NUM_THREADS": "ALL_CPUS"}
COG_COMPRESSIONS = {"zstd": {"COMPRESS": "ZSTD", "LEVEL": "1", "PREDICTOR": "2"}, "none": {"COMPRESS": "NONE"}}


def cog_options(compression: str = "zstd") -> dict:
    """GDAL COG creation options of a tile stored with ``compression``."""
    tile_profile(compression)  # the one check of the name (ConfigError)
    return {**COG_COMPRESSIONS[compression], **COG_OPTIONS}


def cache_paths(settings, tile, period: str) -> tuple[str, Path, Path]:
    key = settings.composite_key(period, tile.grid)
    root = Path(settings.cache_dir) / key / period
    return key, root / f"{tile.name}.tif", root / f"{tile.name}.parts"


def tile_tags(settings, tile, period: str, key: str, valid_fraction: float) -> dict:
    d = settings.composite_definition(period)
    return {"TILE_ID": tile.name, "HALO_PX": str(tile.grid.halo_px), "SOURCE": "Google Earth Engine",
            "GEE_COMPOSITE_KEY": key, "GEE_PERIOD": period, "GEE_COLLECTION": settings.collection,
            "GEE_START": d["start"], "GEE_END_EXCLUSIVE": d["end"], "GEE_CLOUD_MASK": settings.cloud_mask,
            "GEE_DEFINITION": json.dumps(d, sort_keys=True), "VALID_FRACTION": f"{valid_fraction:.6f}"}


def is_valid_tile(path: Path, tile, bands: list[str], key: str) -> bool:
    """A complete tile of this composite: georeferencing, band names and composite key all match."""
    if not path.exists():
        return False
    try:
        with TileRaster(path, tile) as raster:
            ds = raster.ds
            if not (raster.band_names == list(bands) and ds.tags().get("GEE_COMPOSITE_KEY") == key
                    and ds.dtypes[0] == "uint16"):
                return False
            # a COG stores the full-resolution pixels last: reading the last block proves the file is whole
            ds.read(window=Window(ds.width - 1, ds.height - 1, 1, 1))
            return True
    except Exception as exc:  # unreadable, wrong grid, ...: fetch again
        log.warning("%s: not a usable cached tile (%s); fetching it again", path, exc)
        return False


def write_tile(tile, bands: list[str], out_path: Path, fill, tags_for, compression: str = "zstd") -> float:
    """Write a tile COG: ``fill(dataset)`` writes the pixels into a tiled staging GeoTIFF and returns the
    number of valid pixels; the staging file is then copied to ``out_path`` as a COG (stored with
    ``compression``, :func:`cog_options`), atomically."""
    from rasterio.shutil import copy as rio_copy

    size = tile.size_px
    staging = out_path.with_name(f".{out_path.stem}.staging-{os.getpid()}.tif")
    profile = dict(tile_profile(compression), count=len(bands), width=size, height=size, crs=tile.crs,
                   transform=tile.transform, nodata=0)
    try:
        with rasterio.open(staging, "w", **profile) as dst:
            dst.descriptions = tuple(bands)
            valid = fill(dst)
            fraction = valid / size**2
            dst.update_tags(**tags_for(fraction))
        with atomic_output(out_path) as tmp:
            rio_copy(staging, tmp, driver="COG", **cog_options(compression))
    finally:
        staging.unlink(missing_ok=True)
    return fraction


def link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` atomically: a hard link when possible (no extra disk), else a copy."""
    dst = Path(dst)
    with atomic_output(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            log.info("%s: cannot hard-link the cached tile (%s); copying it", dst, os.strerror(exc.errno))
            shutil.copyfile(src, tmp)


def acquire_tile(tile, period: str, settings, out_path, *, ee=None, retrier=None, store_factory=None,
                 before_fetch=None, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Make ``out_path`` the tile's composite GeoTIFF, from the cache or from Earth Engine.

    ``before_fetch()`` is called only when the tile has to be fetched (the CLI initialises Earth Engine
    there, so a cached tile needs neither network nor credentials).
    """
    from minescan.sources.gee import get_ee
    from minescan.sources.gee.retry import Retrier

    out_path = Path(out_path)
    key, cached, parts = cache_paths(settings, tile, period)
    bands = list(settings.bands)
    info = {"tile": tile.name, "period": period, "key": key, "cache": str(cached)}
    if is_valid_tile(cached, tile, bands, key):
        log.info("tile %s %s: in the cache (%s), not fetched again", tile.name, period, cached)
        link_or_copy(cached, out_path)
        with rasterio.open(cached) as ds:
            info.update(source="cache", valid_fraction=float(ds.tags().get("VALID_FRACTION", "nan")))
        return info
    cached.unlink(missing_ok=True)
    if before_fetch is not None:
        before_fetch()
    ee = ee or get_ee()
    retrier = retrier or Retrier.from_settings(settings, sleep=sleep)
    image = build_composite(ee, settings, period, rectangle(ee, tile.bounds, tile.id.epsg))
    what = f"tile {tile.name} {period}"
    t0 = time.monotonic()

    def tags_for(fraction):
        return tile_tags(settings, tile, period, key, fraction)

    if settings.route == "compute_pixels":
        blocks = cp.plan_blocks(tile.size_px, tile.size_px, len(bands), settings.request_limit_bytes)
        manifest = {"key": key, "tile": tile.name, "period": period, "bands": bands,
                    "blocks": [[b.col0, b.row0, b.width, b.height] for b in blocks]}
        store = cp.BlockStore(parts / "blocks", manifest)
        log.info("%s: %d x %d px, %d bands in %d computePixels requests (concurrency %d)", what, tile.size_px,
                 tile.size_px, len(bands), len(blocks), settings.concurrency)
        fetched = cp.fetch_blocks(ee, image, tile, bands, blocks, store, retrier, settings.concurrency, what)
        fraction = write_tile(tile, bands, cached, lambda dst: cp.write_blocks(store, blocks, dst), tags_for,
                              settings.tile_compression)
        info.update(source="computePixels", requests=fetched, blocks=len(blocks))
    elif settings.route == "export":
        store = (store_factory or (lambda: ex.make_store(settings, _credentials(), ee)))()
        paths = ex.run_export(ee, image, tile, period, key, settings, parts / "export", store, retrier,
                              sleep=sleep, clock=clock)
        fraction = write_tile(tile, bands, cached, lambda dst: ex.write_shards(paths, tile, len(bands), dst),
                              tags_for, settings.tile_compression)
        info.update(source="export", files=len(paths))
    else:
        raise InputDataError(f"unknown source.gee.route '{settings.route}' (compute_pixels or export)")
    shutil.rmtree(parts, ignore_errors=True)
    link_or_copy(cached, out_path)
    info["valid_fraction"] = fraction
    log.info("%s: written %s (%.1f %% valid, %.0f s)", what, out_path, 100 * fraction, time.monotonic() - t0)
    if fraction == 0:
        log.warning("%s: no valid pixel (no cloud-free observation in the period, or outside Sentinel-2 "
                    "coverage); detection sees an empty tile", what)
    return info


_CREDENTIALS = None


def remember_credentials(creds) -> None:
    """The credentials ee.Initialize was called with (the export route downloads with them)."""
    global _CREDENTIALS
    _CREDENTIALS = creds


def _credentials():
    if _CREDENTIALS is None:
        raise InputDataError("Earth Engine is not initialised (internal error: call auth.initialize first)")
    return _CREDENTIALS
