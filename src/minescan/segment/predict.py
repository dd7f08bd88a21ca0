"""Windowed prediction of the disturbed-area probability, with overlap and trimmed merging.

A rectangle (a training tile, a quadrant core) is cut into square *cores* of ``step = window - 2 * overlap``
px on a lattice anchored at the rectangle's corner; each core is predicted from a ``window`` px input that
adds ``overlap`` px of context on every side (read from the tile's halo or neighbouring quadrants, nodata
beyond the file), and only the core is kept. The result does not depend on the window size:

- for a network whose receptive field reaches at most ``overlap`` px, it equals one pass over the whole span
  (tested exactly with a convolutional network);
- the SegFormer's efficient self-attention sees its whole input window, so a pixel's value depends a little
  on the window's extent; the difference from one pass over the whole span stays within the tolerance that
  ``tests/test_segment_predict.py`` asserts and ``docs/segmentation.md`` quotes.

``step`` must be a multiple of 32 (the encoder's total stride), so every window has the same phase on the
32 px lattice. Memory is bounded by one batch of windows plus the output array of the rectangle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from minescan.errors import ConfigError
from minescan.segment.network import ALIGN

log = logging.getLogger(__name__)


def check_window(window_px: int, overlap_px: int) -> int:
    """``step`` of a window / overlap pair; ConfigError naming the keys when it is not usable."""
    step = window_px - 2 * overlap_px
    if window_px % ALIGN or overlap_px < 0 or step <= 0 or step % ALIGN:
        raise ConfigError(f"segment.window_px {window_px} / segment.overlap_px {overlap_px}: the window must be a "
                          f"multiple of {ALIGN} px and window - 2 x overlap a positive multiple of {ALIGN}")
    return step


def window_cores(rect: tuple[int, int, int, int], step: int) -> list[tuple[int, int]]:
    """Top-left (col, row) of every core of the lattice over ``rect`` = (c0, r0, c1, r1), row-major."""
    c0, r0, c1, r1 = rect
    return [(c, r) for r in range(r0, r1, step) for c in range(c0, c1, step)]


def cores_near(cores: list[tuple[int, int]], step: int, boxes: np.ndarray, margin_px: int) -> list[tuple[int, int]]:
    """The cores whose square meets one of ``boxes`` ((n, 4) global px c0, r0, c1, r1) grown by ``margin_px``."""
    if len(boxes) == 0:
        return []
    b = np.asarray(boxes, dtype=np.int64)
    keep = []
    for c, r in cores:
        hit = ((b[:, 0] - margin_px < c + step) & (b[:, 2] + margin_px > c)
               & (b[:, 1] - margin_px < r + step) & (b[:, 3] + margin_px > r))
        if hit.any():
            keep.append((c, r))
    return keep


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)


def predict_windows(network, read: Callable[[int, int, int, int], np.ndarray], rect: tuple[int, int, int, int],
                    window_px: int, overlap_px: int, cores: list[tuple[int, int]] | None = None,
                    batch_size: int = 1, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Probability (float32, NaN where no core was predicted) over ``rect`` = (c0, r0, c1, r1).

    ``read(c0, r0, c1, r1)`` returns the normalised network input (h, w, bands) of those pixels (0 = nodata);
    ``cores`` limits the work to some cores of :func:`window_cores` (default: all)."""
    step = check_window(window_px, overlap_px)
    c0, r0, c1, r1 = rect
    out = np.full((r1 - r0, c1 - c0), np.nan, dtype=np.float32)
    todo = window_cores(rect, step) if cores is None else list(cores)
    for i in range(0, len(todo), batch_size):
        group = todo[i:i + batch_size]
        x = np.stack([read(c - overlap_px, r - overlap_px, c - overlap_px + window_px, r - overlap_px + window_px)
                      for c, r in group])
        logits = np.asarray(network.predict_on_batch(x.astype(np.float32)))[..., 0]
        for (c, r), z in zip(group, logits, strict=True):
            h, w = min(step, r1 - r), min(step, c1 - c)
            core = z[overlap_px:overlap_px + h, overlap_px:overlap_px + w]
            out[r - r0:r - r0 + h, c - c0:c - c0 + w] = _sigmoid(core)
        if progress:
            progress(min(i + batch_size, len(todo)), len(todo))
    return out


def array_reader(z: np.ndarray) -> Callable[[int, int, int, int], np.ndarray]:
    """``read`` over an in-memory normalised array (h, w, bands): pixels outside it are 0 (nodata)."""
    h, w, b = z.shape

    def read(c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
        out = np.zeros((r1 - r0, c1 - c0, b), dtype=np.float32)
        rs, re_ = max(r0, 0), min(r1, h)
        cs, ce = max(c0, 0), min(c1, w)
        if rs < re_ and cs < ce:
            out[rs - r0:re_ - r0, cs - c0:ce - c0] = z[rs:re_, cs:ce]
        return out

    return read


def predict_array(network, z: np.ndarray, window_px: int, overlap_px: int, batch_size: int = 1) -> np.ndarray:
    """Probability over a whole normalised array (h, w, bands) by windowed prediction (test-time patch merging)."""
    return predict_windows(network, array_reader(z), (0, 0, z.shape[1], z.shape[0]), window_px, overlap_px,
                           batch_size=batch_size)


def predict_one_pass(network, read, rect: tuple[int, int, int, int], overlap_px: int) -> np.ndarray:
    """Reference: one network pass over the rectangle plus ``overlap_px`` of context, padded on the bottom and
    right to a multiple of 32 px, trimmed to the rectangle."""
    c0, r0, c1, r1 = rect
    w = -(-(c1 - c0 + 2 * overlap_px) // ALIGN) * ALIGN
    h = -(-(r1 - r0 + 2 * overlap_px) // ALIGN) * ALIGN
    x = read(c0 - overlap_px, r0 - overlap_px, c0 - overlap_px + w, r0 - overlap_px + h)
    z = np.asarray(network.predict_on_batch(x[None].astype(np.float32)))[0, ..., 0]
    return _sigmoid(z[overlap_px:overlap_px + r1 - r0, overlap_px:overlap_px + c1 - c0])


# --------------------------------------------------------------------------- the per-quadrant scan job

MASK_NODATA = 255  # mask COG: probability in percent (0-100); 255 = not segmented or no data


def load_segmenter(directory):
    """A segmentation model directory (``kind: segmentation``) as a :class:`LoadedModel`."""
    from pathlib import Path

    from minescan.errors import ModelError
    from minescan.models.store import MODEL_FILE, LoadedModel, read_card_of_kind
    from minescan.segment.network import load_segmenter_network

    directory = Path(directory)
    card = read_card_of_kind(directory, "segmentation")
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise ModelError(f"{weights}: model weights not found")
    try:
        network = load_segmenter_network(weights)
    except Exception as exc:  # keras raises many types for a corrupt file
        raise ModelError(f"{weights}: cannot be loaded as a Keras model ({exc})") from exc
    if network.input_shape[-1] != len(card["bands"]):
        raise ModelError(f"{directory}: card lists {len(card['bands'])} bands but the network takes "
                         f"{network.input_shape[-1]}")
    return LoadedModel(directory, card, network)


def tile_reader(raster, model, scale: float):
    """``read`` for :func:`predict_windows` from a tile: the model's bands as normalised reflectance, 0 at
    nodata (and beyond the file)."""
    from minescan.models.store import normalise

    bands = model.band_indices(raster.band_names, str(raster.path))
    norm = model.card["normalisation"]

    def read(c0: int, r0: int, c1: int, r1: int) -> np.ndarray:
        raw = raster.read_px(c0, r0, c1, r1, bands)
        valid = np.all(raw != raster.nodata, axis=-1)
        return normalise(raw.astype(np.float32) * np.float32(scale), norm, valid)

    return read


def detection_boxes(candidates_csv) -> np.ndarray:
    """Global pixel boxes (c0, r0, c1, r1) of the detected cells in a quadrant's candidates.csv."""
    import pandas as pd

    from minescan.models.networks import STRIDE

    df = pd.read_csv(candidates_csv, usecols=["cell_x", "cell_y"])
    kx, ky = df["cell_x"].to_numpy(np.int64), df["cell_y"].to_numpy(np.int64)
    return np.stack([kx * STRIDE, ky * STRIDE, (kx + 1) * STRIDE, (ky + 1) * STRIDE], axis=1)


def write_mask_cog(path, prob: np.ndarray, rect, tile, meta: dict) -> None:
    """Cloud-optimised GeoTIFF of the disturbed-area probability in percent (uint8), 255 = none."""
    from affine import Affine

    from minescan.io_utils import write_cog

    res = tile.grid.resolution_m
    data = np.where(np.isfinite(prob), np.round(np.nan_to_num(prob) * 100), MASK_NODATA).astype(np.uint8)
    write_cog(path, data, crs=tile.crs, transform=Affine(res, 0, rect[0] * res, 0, -res, -rect[1] * res),
              nodata=MASK_NODATA, description="disturbed_probability_percent", tags=meta)


EXTENT_COLUMNS = ["tile", "quadrant", "zone", "area_ha", "mean_probability", "geometry"]


def extent_polygons(prob: np.ndarray, rect, tile, quadrant: str, threshold: float, min_area_m2: float = 0.0):
    """Polygons (EPSG:4326) of the pixels at or above ``threshold``, with their area in ha (in UTM)."""
    import geopandas as gpd
    from affine import Affine
    from rasterio.features import shapes
    from scipy import ndimage
    from shapely.geometry import shape

    res = tile.grid.resolution_m
    on = np.nan_to_num(prob, nan=0.0) >= threshold
    labels, n = ndimage.label(on)
    transform = Affine(res, 0, rect[0] * res, 0, -res, -rect[1] * res)
    rows = []
    if n:
        means = ndimage.mean(np.nan_to_num(prob), labels, index=np.arange(1, n + 1))
        for geom, value in shapes(labels.astype(np.int32), mask=on, transform=transform, connectivity=4):
            poly = shape(geom)
            if poly.area < min_area_m2:
                continue
            rows.append({"tile": tile.name, "quadrant": quadrant, "zone": f"{tile.id.zone:02d}{tile.id.hemisphere}",
                         "area_ha": round(poly.area / 1e4, 4), "mean_probability": round(float(means[int(value) - 1]), 4),
                         "geometry": poly})
    gdf = gpd.GeoDataFrame(rows or None, columns=EXTENT_COLUMNS, geometry="geometry", crs=tile.crs)
    if len(gdf):
        b = gdf.geometry.bounds
        gdf = gdf.assign(_y=-b["maxy"], _x=b["minx"]).sort_values(["_y", "_x"]).drop(columns=["_y", "_x"])
    return gdf.to_crs(4326).reset_index(drop=True)


def run_segment(tile_path, tile, quadrant: str, model, scale: float, candidates_csv, mask_out, extents_out, *,
                where: str = "detections", margin_px: int = 270, window_px: int | None = None,
                overlap_px: int | None = None, batch_size: int = 1, threshold: float | None = None,
                min_area_m2: float = 0.0) -> dict:
    """The segment job of one quadrant: probability over the core (around the detected cells, or
    everywhere), written as a mask COG, and the extent polygons above the threshold as a GeoPackage."""
    import rasterio

    from minescan.grid import check_halo
    from minescan.scan.detect import gdal_cache_bytes, open_tile
    from minescan.scan.inference import log_progress
    from minescan.vector_io import write_vector

    pred = model.card.get("prediction", {})
    window_px = int(window_px or pred.get("window_px", 256))
    overlap_px = int(overlap_px if overlap_px is not None else pred.get("overlap_px", 64))
    threshold = float(model.card.get("threshold", 0.5) if threshold is None else threshold)
    step = check_window(window_px, overlap_px)
    check_halo(tile.grid, overlap_px, f"segmentation overlap (segment.overlap_px = {overlap_px})")
    rect = tile.quadrant_core_px(quadrant)
    cores = window_cores(rect, step)
    if where == "detections":
        cores = cores_near(cores, step, detection_boxes(candidates_csv), margin_px)
    elif where != "everywhere":
        raise ConfigError(f"segment.where: '{where}' is not 'detections' or 'everywhere'")
    with open_tile(tile_path, tile) as raster, rasterio.Env(
            # a row of the file's blocks across the quadrant, as detect: GDAL's default (5 % of RAM) would keep
            # every block read
            GDAL_CACHEMAX=gdal_cache_bytes(raster, rect[2] - rect[0] + 2 * tile.grid.halo_px)):
        read = tile_reader(raster, model, scale)
        prob = predict_windows(model.network, read, rect, window_px, overlap_px, cores, batch_size,
                               progress=log_progress(f"segment {tile.name} {quadrant}"))
        bands = model.band_indices(raster.band_names, str(raster.path))
        if cores:  # nodata pixels of the core are not segmented
            raw = raster.read_px(*rect, bands[:1])[..., 0]
            prob[raw == raster.nodata] = np.nan
    meta = {"TILE": tile.name, "QUADRANT": quadrant, "MODEL": model.card.get("name", ""),
            "MODEL_VERSION": model.version, "THRESHOLD": threshold, "WHERE": where, "WINDOW_PX": window_px,
            "OVERLAP_PX": overlap_px}
    write_mask_cog(mask_out, prob, rect, tile, meta)
    extents = extent_polygons(prob, rect, tile, quadrant, threshold, min_area_m2)
    write_vector(extents, extents_out, layer="extents")
    log.info("segment %s %s: %d of %d windows, %d extent polygons, %.2f ha", tile.name, quadrant, len(cores),
             len(window_cores(rect, step)), len(extents), float(extents["area_ha"].sum()) if len(extents) else 0.0)
    return {"windows": len(cores), "extents": len(extents)}


def merge_extents(paths, out) -> None:
    """The scan's extents.gpkg: every quadrant's extent polygons, joined across quadrant seams (union per UTM
    zone), one polygon per connected extent with its area in ha (UTM), in EPSG:4326."""
    import geopandas as gpd
    import pandas as pd
    from shapely.ops import unary_union

    from minescan.grid import utm_epsg
    from minescan.vector_io import read_vector, write_vector

    parts = [read_vector(p, what="quadrant extents") for p in paths]
    parts = [p for p in parts if len(p)]
    rows = []
    if parts:
        allx = pd.concat(parts, ignore_index=True)
        for zone, part in allx.groupby("zone", sort=True):
            epsg = utm_epsg(int(zone[:2]), zone[2])
            merged = unary_union(list(part.to_crs(epsg).geometry))
            polys = list(getattr(merged, "geoms", [merged]))
            polys.sort(key=lambda g: (-round(g.bounds[3], 2), round(g.bounds[0], 2)))
            for g in polys:
                rows.append({"zone": zone, "area_ha": round(g.area / 1e4, 4),
                             "geometry": gpd.GeoSeries([g], crs=epsg).to_crs(4326).iloc[0]})
    gdf = gpd.GeoDataFrame(rows or None, columns=["zone", "area_ha", "geometry"], geometry="geometry", crs=4326)
    gdf.insert(0, "extent_id", [f"E{i + 1:05d}" for i in range(len(gdf))])
    write_vector(gdf, out, layer="extents")
