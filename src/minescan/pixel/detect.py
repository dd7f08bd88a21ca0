"""A pixel model as the scan's detector: one quadrant job, chunk by chunk (dask), exact at seams.

The job covers the pixels of the quadrant's 27 px cells (the cells whose centre lies in the quadrant core,
:func:`minescan.grid.cells_in_core`), so neighbouring quadrants cover disjoint pixels and every pixel has
one owner. It reads them plus the feature set's halo (only the water distance needs one: ``water_cap_m``
/ resolution px) from the tile with rioxarray as a dask array, computes features and P(mine) chunk by
chunk, and writes, row strip by row strip:

- ``probability_10m.tif``: a 10 m COG of P(mine) (NaN = no data), beside the cell raster;
- the cell raster (``--prob-out``, the FCN's format): per 27 px cell the card's ``cell_statistic`` of the
  pixel probabilities (``max``, default, or ``mean``), and ``mine_fraction.tif``: the fraction of the
  cell's valid pixels at or above the threshold;
- the candidates CSV of the cells at or above the threshold, exactly as the FCN's detect job writes it,
  so impact rating (classify), merge, sites and layers work unchanged.

Memory: a strip is ``strip_cells`` cell rows (27 px each) by the quadrant width; dask computes it in
chunks of ``strip_cells * 27`` px squared, two at a time, and the features of one chunk are
``F x (chunk + 2 halo)^2 x 4`` bytes (79 features, 513 px chunks, 100 px halo: ~120 MB).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine

from minescan.errors import InputDataError, NoDataError
from minescan.grid import Tile, cells_in_core, check_halo
from minescan.io_utils import atomic_output, copy_to_cog, tmp_path_for
from minescan.models.networks import STRIDE
from minescan.pixel.features import feature_array, open_bands, period_month, rasterise_mask
from minescan.pixel.train import PixelModel

log = logging.getLogger(__name__)

PIXEL_PROB_FILE = "probability_10m.tif"
FRACTION_FILE = "mine_fraction.tif"
DEFAULT_STRIP_CELLS = 19  # 513 px chunks


def _chunks(n: int, size: int, halo: int) -> tuple[int, ...]:
    """Chunk sizes of an axis of ``n`` core px plus ``halo`` on both ends: (halo, size, ..., rest, halo)."""
    core = [size] * (n // size) + ([n % size] if n % size else [])
    if len(core) > 1 and core[-1] < halo:  # overlap needs chunks at least as large as the halo
        core[-2:] = [core[-2] + core[-1]]
    return tuple(([halo] if halo else []) + core + ([halo] if halo else []))


def pixel_probabilities(
    tile_path,
    tile: Tile,
    model: PixelModel,
    scale: float,
    core_px,
    *,
    period: str | None = None,
    water_geoms=None,
    strip_cells: int = DEFAULT_STRIP_CELLS,
):
    """Lazy P(mine) (H, W) over the pixels of the cells of ``core_px``, and the cell ranges (kx, ky).

    Chunks are ``strip_cells * 27`` px squares aligned to the cells, so each chunk row is a strip of whole
    cell rows."""
    import dask.array as da

    fs = model.feature_set
    res = tile.grid.resolution_m
    halo = fs.halo_px(res)
    check_halo(
        tile.grid,
        halo + STRIDE,
        f"the water distance of pixel model {model.path} (cap {fs.water_cap_m:g} m) plus a cell",
    )
    kx, ky = cells_in_core(core_px)
    c0, c1, r0, r1 = kx.start * STRIDE, kx.stop * STRIDE, ky.start * STRIDE, ky.stop * STRIDE
    arr = open_bands(tile_path, fs.bands)
    ox, oy = tile.origin_px
    raw = arr.data[:, r0 - halo - oy : r1 + halo - oy, c0 - halo - ox : c1 + halo - ox]
    size = strip_cells * STRIDE
    chunks = (len(fs.bands), _chunks(r1 - r0, size, halo), _chunks(c1 - c0, size, halo))
    raw = raw.rechunk(chunks)
    water = None
    if water_geoms is not None and fs.needs_water:
        t = Affine(res, 0, (c0 - halo) * res, 0, -res, -(r0 - halo) * res)
        water = rasterise_mask(water_geoms, t, raw.shape[1:], chunks=chunks[1:])
    if fs.needs_month and not period:
        raise InputDataError(
            f"{model.path}: the pixel model's feature set '{fs.name}' has the month feature; "
            "give the tile's period (--period)"
        )
    month = period_month(period) if fs.needs_month else None
    nodata = arr.rio.nodata if arr.rio.nodata is not None else 0
    feats = feature_array(raw, fs, scale, nodata, res, month, water, str(tile_path))

    def predict(block):
        f, h, w = block.shape
        return model.predict_proba(block.reshape(f, -1).T).reshape(h, w)

    prob = da.map_blocks(predict, feats, drop_axis=0, dtype=np.float32)
    h, w = prob.shape
    return prob[halo : h - halo, halo : w - halo], kx, ky


def cell_statistics(
    strip: np.ndarray, threshold: float, statistic: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """Per 27 px cell of a strip (27 n, 27 m): (max or mean probability, fraction of valid pixels
    >= threshold);
    NaN for a cell without a valid pixel."""
    h, w = strip.shape
    cells = (
        strip.reshape(h // STRIDE, STRIDE, w // STRIDE, STRIDE)
        .transpose(0, 2, 1, 3)
        .reshape(h // STRIDE, w // STRIDE, -1)
    )
    valid = np.isfinite(cells)
    n = valid.sum(axis=2)
    with np.errstate(invalid="ignore"):
        filled = np.where(valid, cells, -np.inf if statistic == "max" else 0.0)
        stat = filled.max(axis=2) if statistic == "max" else filled.sum(axis=2) / n
        frac = (np.where(valid, cells, -1.0) >= threshold).sum(axis=2) / n
    stat = np.where(n > 0, stat, np.nan).astype(np.float32)
    return stat, np.where(n > 0, frac, np.nan).astype(np.float32)


def _write_cog(src_path: Path, out_path) -> None:
    with rasterio.open(src_path) as src:
        copy_to_cog(src, out_path, predictor=3)


def run_pixel_detect(
    tile_path,
    tile: Tile,
    quadrant: str,
    model: PixelModel,
    region_lonlat,
    scale: float,
    threshold: float | None,
    prob_out,
    candidates_out,
    on_empty: str = "error",
    *,
    period: str | None = None,
    water_geoms=None,
    strip_cells: int = DEFAULT_STRIP_CELLS,
    core_px=None,
    workers: int = 2,
) -> dict:
    """The detect job of one quadrant with a pixel model (see the module docstring for the outputs)."""
    import dask

    from minescan.scan.detect import CANDIDATE_COLUMNS, candidates_table, open_tile, write_probability_raster

    threshold = model.threshold if threshold is None else threshold
    statistic = model.card.get("cell_statistic", "max")
    with open_tile(tile_path, tile):  # checks the tile's georeferencing against the grid
        pass
    prob, kx, ky = pixel_probabilities(
        tile_path,
        tile,
        model,
        scale,
        core_px or tile.quadrant_core_px(quadrant),
        period=period,
        water_geoms=water_geoms,
        strip_cells=strip_cells,
    )
    res = tile.grid.resolution_m
    cell_prob = np.full((len(ky), len(kx)), np.nan, dtype=np.float32)
    cell_frac = cell_prob.copy()
    prob10 = Path(prob_out).with_name(PIXEL_PROB_FILE)
    tmp10 = tmp_path_for(prob10.with_name("probability_10m_strips.tif"))
    tmp10.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "height": prob.shape[0],
        "width": prob.shape[1],
        "crs": tile.crs,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "transform": Affine(res, 0, kx.start * STRIDE * res, 0, -res, -ky.start * STRIDE * res),
    }
    try:
        with (
            rasterio.open(tmp10, "w", **profile) as dst,
            dask.config.set(scheduler="threads", num_workers=workers),
        ):
            dst.descriptions = ("mine_probability",)
            row = 0
            for n in prob.chunks[0]:
                strip = prob[row : row + n].compute()
                dst.write(strip, 1, window=rasterio.windows.Window(0, row, strip.shape[1], n))
                s, f = cell_statistics(strip, threshold, statistic)
                cell_prob[row // STRIDE : (row + n) // STRIDE] = s
                cell_frac[row // STRIDE : (row + n) // STRIDE] = f
                row += n
            dst.update_tags(
                TILE=tile.name, QUADRANT=quadrant, MODEL=model.card.get("name", ""), THRESHOLD=str(threshold)
            )
        n_valid = int(np.isfinite(cell_prob).sum())
        if n_valid == 0:
            msg = f"{tile_path}: quadrant {quadrant} of tile {tile.name} has no valid pixels (all nodata)"
            if on_empty == "error":
                raise NoDataError(msg + "; set detect.on_empty_quadrant: warn to accept it")
            log.warning(msg)
        _write_cog(tmp10, prob10)
    finally:
        if tmp10.exists():
            tmp10.unlink()
    from minescan.models.store import model_fingerprint

    meta = {
        "TILE": tile.name,
        "QUADRANT": quadrant,
        "MODEL": model.card.get("name", ""),
        "MODEL_VERSION": model_fingerprint(model.path),
        "THRESHOLD": threshold,
        "CELL_STATISTIC": statistic,
    }
    write_probability_raster(prob_out, cell_prob, kx, ky, tile, meta)
    write_probability_raster(
        Path(prob_out).with_name(FRACTION_FILE),
        cell_frac,
        kx,
        ky,
        tile,
        {**meta, "BAND": "fraction of pixels >= threshold"},
    )
    cands = candidates_table(cell_prob, kx, ky, tile, quadrant, region_lonlat, threshold)[CANDIDATE_COLUMNS]
    with atomic_output(candidates_out) as tmp:
        cands.to_csv(tmp, index=False)
    log.info(
        "%s %s (pixel model): %d cells, %d valid, %d candidates >= %.2f",
        tile.name,
        quadrant,
        cell_prob.size,
        n_valid,
        len(cands),
        threshold,
    )
    return {"cells": int(cell_prob.size), "valid_cells": n_valid, "candidates": len(cands)}


def cmd_detect_pixel(args, jobs: list[tuple[str, str, str]]) -> int:
    """``minescan detect`` with a pixel model (the CLI dispatches here on the card's ``kind: pixel``);
    ``jobs``: (tile id, tile path, quadrant) in the order of ``--prob-out``/``--candidates-out``."""
    from minescan.cli.common import tile_from_args
    from minescan.pixel.labels import polygons_in_crs
    from minescan.pixel.train import load_pixel_model
    from minescan.vector_io import read_region

    model = load_pixel_model(args.model)
    if args.impact_model:
        log.info("pixel model: candidates are rated by the classify job, not here")
    region = read_region(args.region, args.region_layer)
    water: dict = {}  # per tile CRS (a batch of tiles shares one)
    for (name, tile_path, quadrant), prob_out, cands_out in zip(jobs, args.prob_out, args.candidates_out, strict=True):
        tile = tile_from_args(args, name)
        if args.water and model.feature_set.needs_water and str(tile.crs) not in water:
            water[str(tile.crs)] = polygons_in_crs(args.water, tile.crs)
        run_pixel_detect(tile_path, tile, quadrant, model, region, args.scale, args.threshold, prob_out,
                         cands_out, args.on_empty, period=args.period, water_geoms=water.get(str(tile.crs)))
    return 0
