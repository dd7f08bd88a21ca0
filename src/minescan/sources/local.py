"""Tile GeoTIFFs: making them from local imagery (any CRS) and reading windows of them.

A tile file is a tiled, pixel-interleaved uint16 GeoTIFF in the tile's UTM CRS (ZSTD level 1 + horizontal
predictor, or uncompressed: ``source.tile_compression``), covering core + halo on the grid of
:mod:`minescan.grid`, with the band names as band descriptions (the models select bands by name); tiles
written as DEFLATE by earlier versions are read the same. It is written to a temporary name and renamed
when complete, so a crash never leaves a partial tile that a rerun would take as done.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from minescan.errors import BandMismatchError, ConfigError, InputDataError, NoDataError
from minescan.grid import Tile
from minescan.io_utils import atomic_output

log = logging.getLogger(__name__)

# Tile compressions (config key source.tile_compression). ZSTD level 1 + predictor (the default): decodes
# in about half the CPU time of DEFLATE + predictor at the same size; uncompressed: 1.6 x the size, read in
# about a quarter of ZSTD's CPU time (benchmarks/bench_floor.py, docs/performance.md). A detect job reads
# its whole quadrant span once.
TILE_COMPRESSIONS = {"zstd": {"compress": "zstd", "zstd_level": 1, "predictor": 2}, "none": {"compress": "none"}}


def tile_profile(compression: str = "zstd") -> dict:
    """The GeoTIFF creation profile of a tile stored with ``compression`` (:data:`TILE_COMPRESSIONS`)."""
    if compression not in TILE_COMPRESSIONS:
        raise ConfigError(f"key 'source.tile_compression': '{compression}' is not one of "
                          f"{', '.join(TILE_COMPRESSIONS)}")
    return {"driver": "GTiff", "dtype": "uint16", "tiled": True, "blockxsize": 512, "blockysize": 512,
            "interleave": "pixel", "bigtiff": "if_safer", **TILE_COMPRESSIONS[compression]}


TILE_PROFILE = tile_profile()


def recompress_tile(src, dst, compression: str) -> None:
    """Write tile ``src`` to ``dst`` stored with ``compression`` (:func:`tile_profile`): the same pixels, band
    names, tags and georeferencing, in a tile's 512 px pixel-interleaved blocks (a COG's overviews are not
    copied); atomically, flushed to disk. For switching existing tiles to another
    ``source.tile_compression`` without warping or fetching them again."""
    profile = tile_profile(compression)
    with rasterio.open(src) as s:
        if s.dtypes[0] != "uint16":
            raise InputDataError(f"{src}: not a tile ({s.dtypes[0]} pixels, tiles are uint16)")
        out = {**{k: v for k, v in s.profile.items() if k not in ("predictor", "zstd_level", "compress")}, **profile}
        with atomic_output(dst) as tmp:
            with rasterio.open(tmp, "w", **out) as d:
                d.descriptions = s.descriptions
                d.update_tags(**s.tags())
                for _, w in s.block_windows(1):
                    d.write(s.read(window=w), window=w)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def expand_sources(paths: list[str], period: str | None = None) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw.replace("{period}", period or ""))
        if p.is_dir():
            out.extend(sorted(list(p.glob("*.tif")) + list(p.glob("*.tiff"))))
        elif p.exists():
            out.append(p)
        else:
            raise InputDataError(f"{p}: source imagery not found (key 'source.local.paths')")
    if not out:
        raise InputDataError(f"no GeoTIFF found in {', '.join(paths)} (key 'source.local.paths')")
    return out


@lru_cache(maxsize=4096)
def _read_footprint(path: str, mtime_ns: int, size: int):
    """(CRS, bounds) of a GeoTIFF from its header, or the reason it cannot be had (a string).

    Cached by path, mtime and size, so a DAG of many tiles reads each header once.
    """
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                return "has no CRS"
            return ds.crs, tuple(ds.bounds)
    except RasterioError as exc:
        return f"header cannot be read as a GeoTIFF ({str(exc).splitlines()[0] if str(exc) else exc!r})"


def _source_footprint(path: str, mtime_ns: int, size: int):
    """(CRS, bounds) of a GeoTIFF from its header, or None when it cannot be read or has no CRS."""
    fp = _read_footprint(path, mtime_ns, size)
    return None if isinstance(fp, str) else fp


def check_source_headers(sources: list[str | Path]) -> None:
    """Refuse, naming the file, a source GeoTIFF whose header cannot be read or that has no CRS.

    Run once when the plan is made (before any job is scheduled): such a file has no footprint, so
    :func:`sources_for_tile` would have to hand it to every tile, and every tile job would fail on it.
    A file whose header is fine but whose pixels are damaged fails only the tiles its footprint meets.
    """
    for src in sources:
        path = Path(src)
        st = path.stat()
        fp = _read_footprint(str(path), st.st_mtime_ns, st.st_size)
        if isinstance(fp, str):
            raise InputDataError(f"{path}: source imagery: {fp} (key 'source.local.paths'); "
                                 "replace or remove it")


def sources_for_tile(tile: Tile, sources: list[str | Path]) -> list[str]:
    """The sources whose footprint meets the tile's GeoTIFF area (core + halo), in the given order.

    A tile then depends only on the imagery that can reach it: adding, replacing or touching a GeoTIFF
    elsewhere re-runs nothing of this tile. The test is on bounding boxes (the tile's area warped into
    each source's CRS with densified edges, against the source's bounds), so it may keep a source that
    only nearly reaches the tile, never drop one that does: a source whose header cannot be read, that has
    no CRS or into whose CRS the tile cannot be projected is kept (the tile job then names it if it is
    bad). If no source meets the tile, all are returned, so the tile job fails with its "no source covers
    it" message instead of the DAG silently losing the tile.
    """
    from rasterio.warp import transform_bounds

    tx0, ty0, tx1, ty1 = tile.bounds
    keep: list[str] = []
    for src in sources:
        path = Path(src)
        try:
            st = path.stat()
        except OSError:
            keep.append(str(src))
            continue
        fp = _source_footprint(str(path), st.st_mtime_ns, st.st_size)
        if fp is None:
            keep.append(str(src))
            continue
        crs, (sx0, sy0, sx1, sy1) = fp
        try:
            x0, y0, x1, y1 = transform_bounds(tile.crs, crs, tx0, ty0, tx1, ty1, densify_pts=21)
        except Exception:  # noqa: BLE001 - cannot tell: keep it
            keep.append(str(src))
            continue
        if not all(np.isfinite([x0, y0, x1, y1])):
            keep.append(str(src))
            continue
        # a tile across the antimeridian comes back as x0 > x1 in a geographic CRS: two x ranges
        xs = [(x0, x1)] if x0 <= x1 else [(x0, 180.0), (-180.0, x1)]
        if y0 < sy1 and y1 > sy0 and any(a < sx1 and b > sx0 for a, b in xs):
            keep.append(str(src))
    return keep or [str(s) for s in sources]


def band_names_of(ds, path, configured: list[str] | None = None) -> list[str]:
    if configured:
        if len(configured) != ds.count:
            raise BandMismatchError(
                f"{path}: has {ds.count} bands but 'source.local.band_names' lists {len(configured)}")
        return list(configured)
    names = [d or "" for d in ds.descriptions]
    if not all(names):
        raise BandMismatchError(
            f"{path}: band descriptions are missing (bands {', '.join(str(i + 1) for i, n in enumerate(names) if not n)}); "
            "set 'source.local.band_names'")
    return names


def open_raster(path):
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise InputDataError(f"{path}: cannot be opened as a GeoTIFF ({exc})") from exc


def make_tile(tile: Tile, sources: list[Path], bands: list[str], out_path, band_names: list[str] | None = None,
              resampling: str = "nearest", nodata: int = 0, block_rows: int = 1024, compression: str = "zstd") -> dict:
    """Warp ``sources`` (first valid pixel wins) into the tile's grid and write the tile GeoTIFF, stored
    with ``compression`` (:func:`tile_profile`)."""
    size = tile.size_px
    profile = dict(tile_profile(compression), count=len(bands), width=size, height=size, crs=tile.crs,
                   transform=tile.transform, nodata=nodata)
    inputs = []
    for path in sources:
        ds = open_raster(path)
        names = band_names_of(ds, path, band_names)
        missing = [b for b in bands if b not in names]
        if missing:
            ds.close()
            raise BandMismatchError(f"{path}: band(s) {', '.join(missing)} missing (it has {', '.join(names)})")
        if ds.crs is None:
            ds.close()
            raise InputDataError(f"{path}: has no CRS")
        inputs.append((path, ds, [names.index(b) + 1 for b in bands]))
    valid_px = 0
    try:
        with atomic_output(out_path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.descriptions = tuple(bands)
                dst.update_tags(TILE_ID=tile.name, HALO_PX=str(tile.grid.halo_px))
                vrts = [(p, WarpedVRT(ds, crs=tile.crs, transform=tile.transform, width=size, height=size,
                                      resampling=Resampling[resampling], nodata=ds.nodata if ds.nodata is not None else nodata),
                         idx) for p, ds, idx in inputs]
                for row0 in range(0, size, block_rows):
                    win = Window(0, row0, size, min(block_rows, size - row0))
                    block = np.full((len(bands), win.height, win.width), nodata, dtype=np.uint16)
                    filled = np.zeros((win.height, win.width), dtype=bool)
                    for path, vrt, idx in vrts:
                        try:
                            data = vrt.read(idx, window=win)
                        except RasterioError as exc:
                            raise InputDataError(f"{path}: read failed while making tile {tile.name} ({exc})") from exc
                        ok = np.all(data != nodata, axis=0) & ~filled
                        block[:, ok] = np.clip(data[:, ok], 0, 65535).astype(np.uint16)
                        filled |= ok
                    valid_px += int(filled.sum())
                    dst.write(block, window=win)
                for _, vrt, _ in vrts:
                    vrt.close()
            if valid_px == 0:
                raise NoDataError(
                    f"tile {tile.name}: no source covers it ({', '.join(str(p) for p in sources)}); "
                    "the region lies outside the imagery")
    finally:
        for _, ds, _ in inputs:
            ds.close()
    return {"tile": tile.name, "valid_fraction": valid_px / size**2}


class TileRaster:
    """Windowed reads from a tile GeoTIFF in *global* grid pixels, with validation of its georeferencing."""

    def __init__(self, path, tile: Tile | None = None):
        self.path = Path(path)
        self.ds = open_raster(self.path)
        self.band_names = [d or "" for d in self.ds.descriptions]
        self.nodata = self.ds.nodata if self.ds.nodata is not None else 0
        if tile is not None:
            if self.ds.crs is None or self.ds.crs.to_epsg() != tile.id.epsg:
                raise InputDataError(f"{self.path}: CRS {self.ds.crs} is not EPSG:{tile.id.epsg} of tile {tile.name}")
            if not self.ds.transform.almost_equals(tile.transform, precision=1e-6) or \
                    (self.ds.width, self.ds.height) != (tile.size_px, tile.size_px):
                raise InputDataError(
                    f"{self.path}: georeferencing does not match tile {tile.name} of the grid "
                    f"(expected {tile.size_px}x{tile.size_px} px at {tuple(tile.transform)[:6]}, "
                    f"found {self.ds.width}x{self.ds.height} px at {tuple(self.ds.transform)[:6]}); "
                    "was it made with another grid.tile_px/halo_px/resolution_m?")
            self.origin = tile.origin_px
        else:
            self.origin = (0, 0)
        self.blocks = None  # a BlockDecoder, once use_block_decoder() found one usable

    def use_block_decoder(self, threads: int = 1) -> bool:
        """Read windows inside the file by decoding its blocks directly (:mod:`minescan.sources.blocks`,
        where tifffile and imagecodecs are installed and the file is tiled and pixel-interleaved); other
        reads, and those it declines, stay with GDAL. Returns whether it is in use."""
        from minescan.sources.blocks import BlockDecoder, available

        if self.blocks is None and available():
            try:
                self.blocks = BlockDecoder(self.path, threads)
            except Exception as exc:  # noqa: BLE001 - any file it cannot take: GDAL reads it
                log.info("%s: reading with GDAL (%s)", self.path, exc)
        return self.blocks is not None

    def close(self):
        if self.blocks is not None:
            self.blocks.close()
        self.ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def band_indices(self, wanted: list[str]) -> list[int]:
        missing = [b for b in wanted if b not in self.band_names]
        if missing:
            raise BandMismatchError(
                f"{self.path}: band(s) {', '.join(missing)} missing (the file has {', '.join(n or '?' for n in self.band_names)})")
        return [self.band_names.index(b) for b in wanted]

    def read_px(self, col0: int, row0: int, col1: int, row1: int, bands: list[int]) -> np.ndarray:
        """Read global pixels [col0, col1) x [row0, row1) of the given 0-based bands as a C-contiguous
        (H, W, B) uint16 array.

        Pixels beyond the file are returned as nodata (the caller checks its halo requirement first).
        """
        c0, r0 = col0 - self.origin[0], row0 - self.origin[1]
        win = Window(c0, r0, col1 - col0, row1 - row0)
        inside = c0 >= 0 and r0 >= 0 and c0 + win.width <= self.ds.width and r0 + win.height <= self.ds.height
        indexes = [b + 1 for b in bands]
        dtypes = {self.ds.dtypes[b] for b in bands}
        if inside and self.blocks is not None:
            data = self.blocks.read(c0, r0, c0 + win.width, r0 + win.height, bands)
            if data is not None:
                return data
        try:
            if inside and len(dtypes) == 1:
                # GDAL fills the pixel-interleaved array through its (B, H, W) view: the layout the tiles
                # are stored in (INTERLEAVE=PIXEL) and the callers use, so no transposing copy on either side
                data = np.empty((row1 - row0, col1 - col0, len(bands)), dtype=dtypes.pop())
                self.ds.read(indexes, window=win, out=data.transpose(2, 0, 1))
                return data
            if inside:
                data = self.ds.read(indexes, window=win)
            else:
                data = self.ds.read(indexes, window=win, boundless=True, fill_value=self.nodata)
        except RasterioError as exc:
            raise InputDataError(f"{self.path}: corrupt or unreadable ({exc})") from exc
        return np.ascontiguousarray(np.moveaxis(data, 0, -1))
