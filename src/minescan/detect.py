"""The per-quadrant jobs: discovery (probability raster + candidates) and impact classification."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.io import MemoryFile
from shapely import contains_xy

from .errors import NoDataError
from .grid import Tile, cell_centres_utm, cells_in_core, check_halo, region_in_tile_crs
from .inference import log_progress, predict_cells
from .io_utils import atomic_output
from .model_io import LoadedModel
from .networks import IMPACT_CLASSES, STRIDE, FcnGeometry
from .tiles import TileRaster

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ["cell_x", "cell_y", "zone", "tile", "quadrant", "easting", "northing", "lon", "lat",
                     "probability"]
IMPACT_COLUMNS = ["p_high", "p_low", "p_no_ore", "impact"]


def _reader(raster: TileRaster, model: LoadedModel, scale: float):
    bands = model.band_indices(raster.band_names, str(raster.path))
    nodata = raster.nodata

    def read(c0, r0, c1, r1):
        raw = raster.read_px(c0, r0, c1, r1, bands)
        valid = np.all(raw != nodata, axis=-1)
        refl = raw.astype(np.float32)
        refl *= np.float32(scale)
        return model.normalise(refl, valid), valid

    return read


def quadrant_probabilities(raster: TileRaster, tile: Tile, quadrant: str, model: LoadedModel,
                           scale: float, block_cells: int, core_px=None):
    """Probability grid for the cells of one quadrant core (or any ``core_px`` rectangle) of a tile."""
    geometry = FcnGeometry(model.window)
    check_halo(tile.grid, geometry.halo_px, f"the {model.window} px discovery model {model.path}")
    kx, ky = cells_in_core(core_px or tile.quadrant_core_px(quadrant))
    prob = predict_cells(model.network, geometry, _reader(raster, model, scale), kx, ky, block_cells,
                         log_progress(f"{tile.name} {quadrant}"))
    return prob, kx, ky


def write_probability_raster(path, prob: np.ndarray, kx: range, ky: range, tile: Tile, meta: dict) -> None:
    """Cloud-optimised GeoTIFF of mine probability, one pixel per 27 x 27 px cell, NaN = no data."""
    cell_m = STRIDE * tile.grid.resolution_m
    transform = Affine(cell_m, 0, kx.start * cell_m, 0, -cell_m, -ky.start * cell_m)
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "height": prob.shape[0],
               "width": prob.shape[1], "crs": tile.crs, "transform": transform, "nodata": float("nan")}
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(prob, 1)
            tmp.descriptions = ("mine_probability",)
            tmp.update_tags(**{k: str(v) for k, v in sorted(meta.items())})
        with mem.open() as src, atomic_output(path) as out:
            rasterio.shutil.copy(src, out, driver="COG", compress="DEFLATE", predictor=3, blocksize=256,
                                 overviews="NONE")


def candidates_table(prob: np.ndarray, kx: range, ky: range, tile: Tile, quadrant: str, region_lonlat,
                     threshold: float) -> pd.DataFrame:
    """Cells at or above ``threshold`` whose centre lies in the region (and the tile's zone strip)."""
    iy, ix = np.nonzero(np.nan_to_num(prob, nan=-1.0) >= threshold)
    cx = np.asarray(kx)[ix]
    cy = np.asarray(ky)[iy]
    e, n = cell_centres_utm(cx, cy, tile.grid.resolution_m)
    inside = contains_xy(region_in_tile_crs(region_lonlat, tile), e, n) if len(e) else np.zeros(0, bool)
    cx, cy, e, n, p = cx[inside], cy[inside], e[inside], n[inside], prob[iy, ix][inside]
    lon, lat = _to_lonlat(e, n, tile.id.epsg)
    df = pd.DataFrame({
        "cell_x": cx.astype(np.int64), "cell_y": cy.astype(np.int64),
        "zone": f"{tile.id.zone:02d}{tile.id.hemisphere}", "tile": tile.name, "quadrant": quadrant,
        "easting": e.round(2), "northing": n.round(2), "lon": np.round(lon, 7), "lat": np.round(lat, 7),
        "probability": np.round(p.astype(np.float64), 6),
    }, columns=CANDIDATE_COLUMNS)
    return df.sort_values(["cell_y", "cell_x"]).reset_index(drop=True)


def _to_lonlat(e: np.ndarray, n: np.ndarray, epsg: int):
    if len(e) == 0:
        return np.zeros(0), np.zeros(0)
    from .grid import _transformer

    return _transformer(epsg, 4326).transform(e, n)


def run_detect(tile_path, tile: Tile, quadrant: str, model: LoadedModel, region_lonlat, scale: float,
               threshold: float | None, block_cells: int, prob_out, candidates_out,
               on_empty: str = "error") -> dict:
    threshold = model.threshold if threshold is None else threshold
    with TileRaster(tile_path, tile) as raster:
        prob, kx, ky = quadrant_probabilities(raster, tile, quadrant, model, scale, block_cells)
    n_valid = int(np.isfinite(prob).sum())
    if n_valid == 0:
        msg = f"{tile_path}: quadrant {quadrant} of tile {tile.name} has no valid pixels (all nodata)"
        if on_empty == "error":
            raise NoDataError(msg + "; set detect.on_empty_quadrant: warn to accept it")
        log.warning(msg)
    cands = candidates_table(prob, kx, ky, tile, quadrant, region_lonlat, threshold)
    meta = {"TILE": tile.name, "QUADRANT": quadrant, "MODEL": model.card.get("name", ""),
            "MODEL_VERSION": model.version, "THRESHOLD": threshold}
    write_probability_raster(prob_out, prob, kx, ky, tile, meta)
    with atomic_output(candidates_out) as tmp:
        cands.to_csv(tmp, index=False)
    log.info("%s %s: %d cells, %d valid, %d candidates >= %.2f", tile.name, quadrant, prob.size, n_valid,
             len(cands), threshold)
    return {"cells": int(prob.size), "valid_cells": n_valid, "candidates": len(cands)}


def impact_patches(raster: TileRaster, model: LoadedModel, cands: pd.DataFrame, scale: float,
                   rows_per_read: int = 1024) -> np.ndarray:
    """Normalised (N, w, w, B) patches centred on each candidate cell, read in bands of rows."""
    w = model.window
    bands = model.band_indices(raster.band_names, str(raster.path))
    out = np.zeros((len(cands), w, w, len(bands)), dtype=np.float32)
    if len(cands) == 0:
        return out
    # pixel holding the cell centre, then the patch around it
    col0 = cands["cell_x"].to_numpy() * STRIDE + STRIDE // 2 - w // 2
    row0 = cands["cell_y"].to_numpy() * STRIDE + STRIDE // 2 - w // 2
    order = np.argsort(row0, kind="stable")
    i = 0
    while i < len(order):
        r_start = row0[order[i]]
        j = i
        while j < len(order) and row0[order[j]] + w - r_start <= rows_per_read:
            j += 1
        idx = order[i:j]
        c_lo, c_hi = col0[idx].min(), col0[idx].max() + w
        r_hi = row0[idx].max() + w
        raw = raster.read_px(int(c_lo), int(r_start), int(c_hi), int(r_hi), bands)
        valid = np.all(raw != raster.nodata, axis=-1)
        z = model.normalise(raw.astype(np.float32) * np.float32(scale), valid)
        for k in idx:
            r, c = row0[k] - r_start, col0[k] - c_lo
            out[k] = z[r : r + w, c : c + w]
        i = j
    return out


def run_classify(tile_path, tile: Tile, model: LoadedModel | None, scale: float, candidates_csv,
                 classified_out, batch_size: int = 512) -> dict:
    """Rate every candidate with the impact CNN; writes candidates + p_high, p_low, p_no_ore, impact."""
    cands = pd.read_csv(candidates_csv, dtype={"zone": str, "tile": str, "quadrant": str})
    if model is None:
        probs = np.full((len(cands), 3), np.nan)
        labels = ["unrated"] * len(cands)
    else:
        with TileRaster(tile_path, tile) as raster:
            patches = impact_patches(raster, model, cands, scale)
        probs = np.zeros((len(cands), len(IMPACT_CLASSES)), dtype=np.float32)
        for start in range(0, len(cands), batch_size):
            probs[start : start + batch_size] = model.network.predict_on_batch(patches[start : start + batch_size])
        labels = [IMPACT_CLASSES[i] for i in np.argmax(probs, axis=1)]
    out = cands.copy()
    out["p_high"], out["p_low"], out["p_no_ore"] = (np.round(probs[:, i].astype(np.float64), 6) for i in range(3))
    out["impact"] = labels
    with atomic_output(classified_out) as tmp:
        out.to_csv(tmp, index=False)
    counts = pd.Series(labels, dtype=object).value_counts().to_dict()
    log.info("%s: classified %d candidates: %s", tile.name, len(out), counts)
    return counts

