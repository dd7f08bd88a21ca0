"""The per-quadrant jobs: discovery (probability raster + candidates) and impact classification."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from shapely import contains_xy

from minescan.errors import NoDataError
from minescan.grid import Tile, cell_centres_utm, cells_in_core, check_halo, region_in_tile_crs
from minescan.io_utils import atomic_output, write_cog
from minescan.models.networks import IMPACT_CLASSES, STRIDE, FcnGeometry
from minescan.models.store import LoadedModel, load_model, read_card_of_kind
from minescan.scan.classify_copy import IMPACT_COLUMNS, RATED_BY, TEXT_COLUMNS
from minescan.scan.inference import (
    DEFAULT_MAX_BLOCK_MB,
    CellRows,
    InferenceStats,
    Normalisation,
    import_keras_lean,
    log_progress,
    predict_cells,
)
from minescan.scan.quality import QualityCheck, StreamSample, check_quadrant
from minescan.scan.table import Table
from minescan.scan.timing import JobClock
from minescan.sources.local import TileRaster

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ["cell_x", "cell_y", "zone", "tile", "quadrant", "easting", "northing", "lon", "lat",
                     "probability"]
DEFAULT_QUALITY = QualityCheck()  # cloud check warns, band-order check on (minescan.scan.quality)


def _raw_reader(raster: TileRaster, model: LoadedModel):
    """read(c0, r0, c1, r1) -> the model's bands of global pixels [c0, c1) x [r0, r1), as stored (uint16)."""
    bands = model.band_indices(raster.band_names, str(raster.path))
    return lambda c0, r0, c1, r1: raster.read_px(c0, r0, c1, r1, bands)


def normalisation(raster: TileRaster, model: LoadedModel, scale: float) -> Normalisation:
    return Normalisation.from_card(model.card["normalisation"], scale, raster.nodata)


def patch_origin(cells: np.ndarray, window: int) -> np.ndarray:
    """Tile pixel of the first row (or column) of the ``window``-px patch centred on each cell's centre pixel."""
    return cells * STRIDE + STRIDE // 2 - window // 2


def candidate_cells(prob: np.ndarray, threshold: float, kx0: int, ky0: int, resolution_m: float,
                    region_tile=None, cell_px: int = STRIDE):
    """The candidates of a probability grid whose cell (0, 0) is cell (``kx0``, ``ky0``): cells at or above
    ``threshold`` (never NaN) whose centre lies in ``region_tile`` (the region in the tile's CRS; None: all);
    cells are ``cell_px`` px wide (27 for the FCN, the stride of a patch model).
    Returns their grid indices (iy, ix) and cell numbers (cx, cy)."""
    iy, ix = np.nonzero(np.nan_to_num(prob, nan=-1.0) >= threshold)
    cx, cy = kx0 + ix, ky0 + iy
    if region_tile is not None and len(cx):
        keep = contains_xy(region_tile, *cell_centres_utm(cx, cy, resolution_m, cell_px))
        iy, ix, cx, cy = iy[keep], ix[keep], cx[keep], cy[keep]
    return iy, ix, cx, cy


def gdal_cache_bytes(raster: TileRaster, width_px: int) -> int:
    """GDAL block cache for reading full-width strips of ``width_px``: a row of the file's (pixel-interleaved)
    blocks and a quarter more, so a block straddling two strips is decoded once. GDAL's default (5 % of RAM)
    would instead keep every block read, i.e. the whole quadrant, in memory."""
    bh, bw = raster.ds.block_shapes[0]
    block = bh * bw * raster.ds.count * np.dtype(raster.ds.dtypes[0]).itemsize
    return int(1.25 * (-(-width_px // bw) + 1) * block) + 8 * 2**20


def decode_threads() -> int:
    """Threads GDAL may use to decode the tile's blocks (those this process may run on)."""
    from minescan.scan.device import cpu_threads

    return cpu_threads()


def open_tile(tile_path, tile: Tile) -> TileRaster:
    """The tile, opened so that its blocks are decoded in parallel: by :mod:`minescan.sources.blocks` where
    it can (straight to the pixel-interleaved layout, without GDAL's per-band block cache), else by GDAL
    (GDAL reads GDAL_NUM_THREADS when a GeoTIFF is opened; one strip read then takes ~1/2 the time on 2
    cores)."""
    with rasterio.Env(GDAL_NUM_THREADS=str(decode_threads())):
        raster = TileRaster(tile_path, tile)
    raster.use_block_decoder(decode_threads())
    return raster


def quadrant_probabilities(raster: TileRaster, tile: Tile, quadrant: str, model: LoadedModel, scale: float,
                           block_cells: int | None = None, core_px=None, *,
                           max_block_mb: float = DEFAULT_MAX_BLOCK_MB, method: str = "auto",
                           stats: InferenceStats | None = None, rater: StreamRater | None = None,
                           sample: StreamSample | None = None):
    """Probability grid for the cells of one quadrant core (or any ``core_px`` rectangle) of a tile.

    Exact whatever the strip/block size (see :mod:`minescan.scan.inference`): ``block_cells`` fixes it in output
    cells, otherwise it is the largest whose working memory fits ``max_block_mb``. ``sample`` collects the
    quality checks' pixels from the rows read."""
    geometry = FcnGeometry(model.window)
    check_halo(tile.grid, geometry.halo_px, f"the {model.window} px discovery model {model.path}")
    kx, ky = cells_in_core(core_px or tile.quadrant_core_px(quadrant))
    read = _raw_reader(raster, model)
    read = sample.wrap(read) if sample is not None else read
    prob = predict_cells(model.network, geometry, read, normalisation(raster, model, scale),
                         kx, ky, max_block_mb=max_block_mb, block_cells=block_cells, method=method,
                         progress=log_progress(f"{tile.name} {quadrant}"), stats=stats,
                         on_rows=rater.start(kx, ky) if rater else None, keep_px=rater.keep_px if rater else 0)
    if rater:
        rater.finish()
    return prob, kx, ky


class StreamRater:
    """Rates candidate cells with the impact CNN while the FCN streams, from the tile rows still in memory
    (no second read of the tile). Cells at or above ``threshold`` are rated in batches of ``batch_size``;
    ``ratings`` maps (cell_x, cell_y) to the 3 class probabilities; only the candidates (the cells
    :func:`candidate_cells` selects, in ``region_tile``) are rated. Needs the impact model's bands to be
    among the discovery model's; ``usable`` says whether they are."""

    def __init__(self, impact: LoadedModel, fcn_bands: list[str], threshold: float, scale: float, nodata: float,
                 batch_size: int = 512, resolution_m: float = 10.0, region_tile=None):
        self.model, self.threshold, self.batch_size = impact, threshold, batch_size
        self.resolution_m, self.region_tile = resolution_m, region_tile
        self.usable = all(b in fcn_bands for b in impact.bands)
        self.pos = [fcn_bands.index(b) for b in impact.bands] if self.usable else []
        self.norm = Normalisation.from_card(impact.card["normalisation"], scale, nodata)
        self.keep_px = impact.window // 2 + 1
        self.ratings: dict[tuple[int, int], np.ndarray] = {}
        self._keys: list[tuple[int, int]] = []
        self._raw: list[np.ndarray] = []
        self.rate_s = 0.0  # time spent rating (inside the FCN stream)

    def start(self, kx: range, ky: range):
        self.kx, self.ky = kx, ky
        return self

    def __call__(self, rows: CellRows) -> None:
        _, _, cx, cy = candidate_cells(rows.prob, self.threshold, self.kx.start, self.ky.start + rows.first,
                                       self.resolution_m, self.region_tile)
        if len(cy) == 0:
            return
        w = self.model.window
        row0 = patch_origin(cy, w)  # global pixel of each patch's top-left corner
        col0 = patch_origin(cx, w) - rows.col0
        for y, x, r, c in zip(cy, cx, row0.tolist(), col0.tolist(), strict=True):
            if c < 0 or c + w > rows.width:
                continue  # beyond the span's columns: rated from patches read again
            try:  # each patch on its own: a view of the rows kept, or a copy of its w x w pixels
                patch = rows.raw(r, r + w, slice(c, c + w))
            except AssertionError:  # rows no longer in memory (a window wider than the margin): read again later
                continue
            self._keys.append((int(x), int(y)))
            self._raw.append(patch[..., self.pos])
        while len(self._keys) >= self.batch_size:
            self._rate(self.batch_size)

    def _rate(self, n: int) -> None:
        t = time.perf_counter()
        self._rate_batch(n)
        self.rate_s += time.perf_counter() - t

    def _rate_batch(self, n: int) -> None:
        keys, patches = self._keys[:n], np.stack(self._raw[:n])
        del self._keys[:n], self._raw[:n]
        probs = np.asarray(self.model.network.predict_on_batch(self.norm.apply(patches)[0]))
        self.ratings.update(zip(keys, probs, strict=True))

    def finish(self) -> None:
        if self._keys:
            self._rate(len(self._keys))


def write_probability_raster(path, prob: np.ndarray, kx: range, ky: range, tile: Tile, meta: dict,
                             cell_px: int = STRIDE) -> None:
    """Cloud-optimised GeoTIFF of mine probability, one pixel per cell (27 x 27 px for the FCN, a patch
    model's stride otherwise), NaN = no data."""
    cell_m = cell_px * tile.grid.resolution_m
    transform = Affine(cell_m, 0, kx.start * cell_m, 0, -cell_m, -ky.start * cell_m)
    write_cog(path, prob.astype(np.float32, copy=False), crs=tile.crs, transform=transform, nodata=float("nan"),
              description="mine_probability", tags=meta, predictor=3)


def candidates_table(prob: np.ndarray, kx: range, ky: range, tile: Tile, quadrant: str, region_lonlat,
                     threshold: float, cell_px: int = STRIDE) -> Table:
    """Cells at or above ``threshold`` whose centre lies in the region (and the tile's zone strip), as a
    :class:`minescan.scan.table.Table` (no pandas in a detect process)."""
    iy, ix, cx, cy = candidate_cells(prob, threshold, kx.start, ky.start, tile.grid.resolution_m,
                                     region_in_tile_crs(region_lonlat, tile), cell_px)
    e, n = cell_centres_utm(cx, cy, tile.grid.resolution_m, cell_px)
    p = prob[iy, ix]
    lon, lat = _to_lonlat(e, n, tile.id.epsg)
    table = Table({
        "cell_x": cx.astype(np.int64), "cell_y": cy.astype(np.int64),
        "zone": f"{tile.id.zone:02d}{tile.id.hemisphere}", "tile": tile.name, "quadrant": quadrant,
        "easting": e.round(2), "northing": n.round(2), "lon": np.round(lon, 7), "lat": np.round(lat, 7),
        "probability": np.round(p.astype(np.float64), 6),
    }, CANDIDATE_COLUMNS)
    return table.sorted_by("cell_y", "cell_x")


def _to_lonlat(e: np.ndarray, n: np.ndarray, epsg: int):
    if len(e) == 0:
        return np.zeros(0), np.zeros(0)
    from minescan.grid import _transformer

    return _transformer(epsg, 4326).transform(e, n)


def run_detect(tile_path, tile: Tile, quadrant: str, model: LoadedModel, region_lonlat, scale: float,
               threshold: float | None, block_cells: int | None, prob_out, candidates_out,
               on_empty: str = "error", *, max_block_mb: float = DEFAULT_MAX_BLOCK_MB, method: str = "auto",
               impact: LoadedModel | None = None, impact_batch_size: int = 512,
               stats: InferenceStats | None = None, quality: QualityCheck | None = DEFAULT_QUALITY,
               tags: dict | None = None, patch_stride: int | None = None, patch_method: str = "auto",
               pyramid=None, clock: JobClock | None = None) -> dict:
    """The discovery job of one quadrant: probability COG + candidates CSV (see quadrant_probabilities).

    With an ``impact`` model the candidates are also rated here, in the same process (TensorFlow is already
    loaded), and the CSV carries the ratings and the model's version; ``run_classify`` then only checks and
    copies them instead of starting TensorFlow a second time for the quadrant. ``quality``: the cloud and
    band-order checks of :mod:`minescan.scan.quality` (None: skipped); a cloudy quadrant is tagged in the
    probability raster, where merge finds it. ``tags`` are added to the probability raster's (e.g. DEVICE,
    see :mod:`minescan.scan.device`).

    An imported patch classifier (card ``patch``) is scanned by :mod:`minescan.scan.patches` every
    ``patch_stride`` px (default: the card's stride) with ``patch_method``; its cells are that stride.
    ``clock``: where the job's time went is added to it (:mod:`minescan.scan.timing`)."""
    from minescan.models.imported import is_patch_model

    clock = clock if clock is not None else JobClock()
    stats = stats if stats is not None else InferenceStats()

    threshold = model.scan_threshold if threshold is None else threshold
    patch = is_patch_model(model.card)
    cell_px = STRIDE
    flags: dict = {}
    sample = None
    with open_tile(tile_path, tile) as raster:
        c0, _, c1, _ = tile.quadrant_core_px(quadrant)
        rater = None
        if impact is not None and not patch:
            rater = StreamRater(impact, model.bands, threshold, scale, raster.nodata, impact_batch_size,
                                tile.grid.resolution_m, region_in_tile_crs(region_lonlat, tile))
            rater = rater if rater.usable else None
        with rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(raster, c1 - c0 + 2 * tile.grid.halo_px)):
            if patch:
                from minescan.scan.patches import quadrant_patch_probabilities

                prob, kx, ky, cell_px = quadrant_patch_probabilities(
                    raster, tile, quadrant, model, scale, stride=patch_stride, method=patch_method,
                    max_block_mb=max_block_mb, block_rows=block_cells, stats=stats)
            elif pyramid is not None:  # coarse screen first, the FCN on the kept blocks (scan/pyramid.py)
                from minescan.scan.pyramid import pyramid_probabilities

                prob, kx, ky = pyramid_probabilities(raster, tile, quadrant, model, scale, pyramid, block_cells,
                                                     max_block_mb=max_block_mb, method=method, stats=stats,
                                                     rater=rater)
            else:
                sample = (StreamSample(tile, quadrant, model.bands, raster.nodata, quality.max_px)
                          if quality is not None else None)
                prob, kx, ky = quadrant_probabilities(raster, tile, quadrant, model, scale, block_cells,
                                                      max_block_mb=max_block_mb, method=method, stats=stats,
                                                      rater=rater, sample=sample)
            clock.add_fcn(stats, rater.rate_s if rater else 0.0)
            n_valid = int(np.isfinite(prob).sum())
            if n_valid == 0 and not (pyramid is not None and pyramid.info.get("cells_skipped")):
                msg = f"{tile_path}: quadrant {quadrant} of tile {tile.name} has no valid pixels (all nodata)"
                if on_empty == "error":
                    raise NoDataError(msg + "; set detect.on_empty_quadrant: warn to accept it")
                log.warning(msg)
            with clock.phase("checks"):
                if quality is not None and n_valid:
                    flags = check_quadrant(raster, tile, quadrant, scale, quality,
                                           sample.values() if sample is not None else None)
            with clock.phase("candidates"):
                cands = candidates_table(prob, kx, ky, tile, quadrant, region_lonlat, threshold, cell_px)
            clock.add("impact", rater.rate_s if rater else 0.0)
            if impact is not None:
                with clock.phase("impact"):
                    cands = with_ratings(cands, _ratings(raster, impact, cands, scale, impact_batch_size, rater))
                cands[RATED_BY] = impact.version
    meta = {"TILE": tile.name, "QUADRANT": quadrant, "MODEL": model.card.get("name", ""),
            "MODEL_VERSION": model.version, "THRESHOLD": threshold, **flags, **(tags or {})}
    if patch:
        meta["CELL_PX"] = cell_px
    if pyramid is not None and not pyramid.keeps_everything:
        meta["PYRAMID_SKIPPED_CELLS"] = pyramid.info.get("cells_skipped", 0)
    with clock.phase("write"):
        write_probability_raster(prob_out, prob, kx, ky, tile, meta, cell_px)
        with atomic_output(candidates_out) as tmp:
            cands.to_csv(tmp, index=False)
    log.info("%s %s: %d cells, %d valid, %d candidates >= %.2f%s", tile.name, quadrant, prob.size, n_valid,
             len(cands), threshold, " (rated)" if impact is not None else "")
    return {"cells": int(prob.size), "valid_cells": n_valid, "candidates": len(cands)}


def _patch_groups(row0: np.ndarray, col0: np.ndarray, w: int, max_n: int, rows_per_read: int):
    """Candidates grouped for reading: row-sorted runs of at most ``max_n`` spanning <= ``rows_per_read``
    rows, each cut where columns are more than a patch apart, so one window read serves a cluster and
    scattered candidates do not read (and decode) the whole width."""
    order = np.argsort(row0, kind="stable")
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and j - i < max_n and row0[order[j]] + w - row0[order[i]] <= rows_per_read:
            j += 1
        run = order[i:j]
        run = run[np.argsort(col0[run], kind="stable")]
        cuts = np.nonzero(np.diff(col0[run]) > 2 * w)[0] + 1
        yield from np.split(run, cuts)
        i = j


def iter_impact_patches(raster: TileRaster, model: LoadedModel, cands: Table | pd.DataFrame, scale: float,
                        batch_size: int = 512, rows_per_read: int = 256):
    """Yield (candidate positions, normalised (n, w, w, B) patches) in batches of <= ``batch_size``.

    Patches are centred on each candidate cell and read in small windows (row-sorted, clustered), so memory
    is one batch whatever the number of candidates, and only the file blocks holding candidates are decoded."""
    w = model.window
    bands = model.band_indices(raster.band_names, str(raster.path))
    norm = normalisation(raster, model, scale)
    if len(cands) == 0:
        return
    # pixel holding the cell centre, then the patch around it; from the centre's coordinates when the table
    # has them, so cells of any size (27 px FCN cells, a patch model's stride) are rated alike
    if "easting" in cands.columns and "northing" in cands.columns:
        res = float(raster.ds.res[0])
        col0 = np.floor(np.asarray(cands["easting"], np.float64) / res + 1e-6).astype(np.int64) - w // 2
        row0 = np.floor(-np.asarray(cands["northing"], np.float64) / res + 1e-6).astype(np.int64) - w // 2
    else:
        col0 = patch_origin(np.asarray(cands["cell_x"]), w)
        row0 = patch_origin(np.asarray(cands["cell_y"]), w)
    pend_idx: list[np.ndarray] = []
    pend_raw: list[np.ndarray] = []

    def take(n: int):
        idx, raw = np.concatenate(pend_idx), np.concatenate(pend_raw)
        pend_idx[:] = [idx[n:]] if len(idx) > n else []
        pend_raw[:] = [raw[n:]] if len(idx) > n else []
        return idx[:n], norm.apply(raw[:n])[0]

    for idx in _patch_groups(row0, col0, w, batch_size, rows_per_read):
        c_lo, c_hi = int(col0[idx].min()), int(col0[idx].max()) + w
        r_lo, r_hi = int(row0[idx].min()), int(row0[idx].max()) + w
        raw = raster.read_px(c_lo, r_lo, c_hi, r_hi, bands)
        pend_raw.append(np.stack([raw[r - r_lo : r - r_lo + w, c - c_lo : c - c_lo + w]
                                  for r, c in zip(row0[idx], col0[idx], strict=True)]))
        pend_idx.append(idx)
        while sum(len(i) for i in pend_idx) >= batch_size:
            yield take(batch_size)
    if pend_idx:
        yield take(batch_size)


def rate_candidates(raster: TileRaster, model: LoadedModel, cands: Table | pd.DataFrame, scale: float,
                    batch_size: int = 512) -> np.ndarray:
    """Impact-CNN probabilities (N, 3) of the candidates, in batches (bounded memory)."""
    probs = np.zeros((len(cands), len(IMPACT_CLASSES)), dtype=np.float32)
    if len(cands) == 0:
        return probs
    network = model.network if model.network is not None else load_network(model).network
    for idx, patches in iter_impact_patches(raster, model, cands, scale, batch_size):
        probs[idx] = np.asarray(network.predict_on_batch(patches))
    return probs


def _ratings(raster: TileRaster, impact: LoadedModel, cands: Table, scale: float, batch_size: int,
             rater: StreamRater | None) -> np.ndarray:
    """Impact probabilities of the candidates: those the stream rated, the rest (e.g. with the block method
    or other bands) from patches read again."""
    probs = np.zeros((len(cands), len(IMPACT_CLASSES)), dtype=np.float32)
    have = rater.ratings if rater else {}
    todo = []
    for i, key in enumerate(zip(np.asarray(cands["cell_x"]).tolist(), np.asarray(cands["cell_y"]).tolist(),
                                strict=True)):
        if key in have:
            probs[i] = have[key]
        else:
            todo.append(i)
    if todo:
        probs[todo] = rate_candidates(raster, impact, cands.take(todo), scale, batch_size)
    log.info("impact CNN: %d candidates rated during the FCN stream, %d from patches read again",
             len(cands) - len(todo), len(todo))
    return probs


def with_ratings(cands: Table | pd.DataFrame, probs: np.ndarray | None) -> Table | pd.DataFrame:
    """The candidates plus p_high, p_low, p_no_ore (6 decimals) and the impact class (None: 'unrated')."""
    out = cands.copy()
    if probs is None:
        probs = np.full((len(cands), 3), np.nan)
        labels = ["unrated"] * len(cands)
    else:
        labels = [IMPACT_CLASSES[i] for i in np.argmax(probs, axis=1)]
    out["p_high"], out["p_low"], out["p_no_ore"] = (np.round(probs[:, i].astype(np.float64), 6) for i in range(3))
    out["impact"] = labels
    return out


def lazy_model(directory, kind: str) -> LoadedModel:
    """A model's path and card, its network left unloaded (so TensorFlow is only started when needed)."""
    return LoadedModel(Path(directory), read_card_of_kind(directory, kind), None)


def load_network(model: LoadedModel) -> LoadedModel:
    """``model`` with its network loaded: by ONNX Runtime on a CPU when it converts (no TensorFlow start,
    :func:`minescan.scan.device.detect_runtime`), else by Keras."""
    from minescan.scan.device import cpu_device, detect_runtime, setup

    if detect_runtime("auto") == "onnxruntime":
        from minescan.models.onnx_net import Unsupported

        try:
            loaded = load_model(model.path, expect_kind=model.card["kind"], runtime="onnxruntime")
            cpu_device("onnxruntime")
            return loaded
        except Unsupported as exc:
            log.info("running on TensorFlow: %s", exc)
    import_keras_lean()
    setup()  # logs the device this job rates on (and enables GPU memory growth) before TensorFlow starts
    return load_model(model.path, expect_kind=model.card["kind"])


def run_classify(tile_path, tile: Tile, model: LoadedModel | None, scale: float, candidates_csv,
                 classified_out, batch_size: int = 512) -> dict:
    """Rate every candidate with the impact CNN; writes candidates + p_high, p_low, p_no_ore, impact.

    Candidates the detect job already rated with this very model (same content hash) are copied; others
    are read, normalised and rated here in batches of ``batch_size``. ``model`` may come from
    :func:`lazy_model`: its network is only loaded if there is something to rate."""
    import pandas as pd

    cands = pd.read_csv(candidates_csv, dtype=dict.fromkeys(TEXT_COLUMNS, str))
    rated = cands[RATED_BY] if RATED_BY in cands.columns else None
    base = cands.drop(columns=[c for c in [*IMPACT_COLUMNS, RATED_BY] if c in cands.columns])
    if model is None:
        out = with_ratings(base, None)
    elif len(base) == 0:
        out = with_ratings(base, np.zeros((0, len(IMPACT_CLASSES)), dtype=np.float32))
    elif rated is not None and (rated == model.version).all():
        out = base.join(cands[IMPACT_COLUMNS])
        log.info("%s: %d candidates already rated by %s in the detect job", tile.name, len(out), model.path)
    else:
        with open_tile(tile_path, tile) as raster, \
                rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(raster, tile.grid.tile_px // 2 + 2 * tile.grid.halo_px)):
            out = with_ratings(base, rate_candidates(raster, model, base, scale, batch_size))
    labels = out["impact"].tolist()
    with atomic_output(classified_out) as tmp:
        out.to_csv(tmp, index=False)
    counts = pd.Series(labels, dtype=object).value_counts().to_dict()
    log.info("%s: classified %d candidates: %s", tile.name, len(out), counts)
    return counts

