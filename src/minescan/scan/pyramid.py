"""Pyramid scan: screen a quadrant at coarse resolution, run the discovery FCN at 10 m only where needed.

The quadrant's output cells are cut into square blocks of ``block_cells`` x ``block_cells`` cells (16 cells
= 432 px = 4.3 km at 10 m). Each level of the pyramid (coarse to fine, e.g. 80 m then 40 m) averages the
10 m tile over ``factor`` x ``factor`` pixels (valid pixels only) and gives every block a screen score;
a block is kept when its score reaches the level's threshold at *every* level (the plan's "successively
eliminate images with no mines"). The score looks at the block and ``margin_px`` around it (by default
about half the FCN's window, so a mine just outside a block, which the FCN sees from inside it, keeps it).

Screens (``screen``):

- ``spectral`` (no model needed): the largest ``(1 - NDVI) / 2`` among the block's coarse pixels, with
  NDVI from ``red_band``/``nir_band``: ~0.1 for forest, ~0.2 for crops, ~0.4 for bare soil, pits and
  tailings, ~0.7 for water (turbid ponds). A crude "anything not vegetated" screen: it keeps every
  bare or wet block (towns, roads, rivers too) and drops closed vegetation.
- ``model``: a discovery model directory (e.g. trained with ``minescan train`` on a down-sampled scene)
  run by the same streamed inference on the down-sampled quadrant; the block score is the largest
  probability among the coarse cells that overlap the block and its margin. Beyond the tile's halo the
  coarse network sees no data (a screen only, its edge cells are less sure).

Only the kept blocks go through the 10 m FCN, joined into as few rectangles as possible
(:func:`kept_rectangles`), by :func:`minescan.scan.inference.predict_cells` with the plain scan's reader and normalisation: it is exact
for any rectangle of cells, so the probabilities of kept blocks equal the plain scan's there. Cells of
dropped blocks are NaN (not computed) in the probability raster; they give no candidates. With every
threshold at 0 nothing is dropped and the plain scan runs unchanged (identical outputs).

The screen reads the tile's pixels once more (two bands for the spectral screen); the saving is the FCN's
compute, which dominates a detect job (docs/pyramid.md has the figures).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from minescan.errors import ConfigError
from minescan.models.networks import STRIDE, FcnGeometry

log = logging.getLogger(__name__)

SCREENS = ("spectral", "model")


@dataclass(frozen=True)
class Level:
    factor: int
    threshold: float


@dataclass
class Pyramid:
    """The screen of a pyramid scan (config ``detect.pyramid``)."""

    levels: tuple[Level, ...]
    block_cells: int = 16
    margin_px: int = 100
    screen: str = "spectral"
    model: object | None = None  # LoadedModel for screen 'model'
    red_band: str = "B4"
    nir_band: str = "B8"
    info: dict = field(default_factory=dict)  # filled by the last run: blocks kept/dropped, cells skipped

    def __post_init__(self):
        if self.screen not in SCREENS:
            raise ConfigError(f"key 'detect.pyramid.screen' = {self.screen!r}: expected one of {', '.join(SCREENS)}")
        if not self.levels:
            raise ConfigError("key 'detect.pyramid.levels' is empty: give at least one {factor, threshold}")
        for lv in self.levels:
            if lv.factor < 1:
                raise ConfigError(f"key 'detect.pyramid.levels': factor {lv.factor} must be >= 1")
        if self.block_cells < 1 or self.margin_px < 0:
            raise ConfigError("keys 'detect.pyramid.block_cells' >= 1 and 'margin_px' >= 0 are required")
        if self.screen == "model" and self.model is None:
            raise ConfigError("key 'detect.pyramid.model' must name a discovery model directory for screen 'model'")

    @classmethod
    def from_dict(cls, d: dict, load_model=None) -> Pyramid:
        """From the config section (or the JSON the detect rule passes); ``load_model(path)`` loads a screen
        model directory."""
        levels = tuple(Level(int(lv["factor"]), float(lv["threshold"])) for lv in d.get("levels", []))
        model = None
        if d.get("screen", "spectral") == "model":
            if not d.get("model"):
                raise ConfigError("key 'detect.pyramid.model' must name a discovery model directory for screen 'model'")
            model = load_model(d["model"]) if load_model else d["model"]
        return cls(levels, int(d.get("block_cells", 16)), int(d.get("margin_px", 100)), d.get("screen", "spectral"),
                   model, d.get("red_band", "B4"), d.get("nir_band", "B8"))

    @property
    def keeps_everything(self) -> bool:
        return all(lv.threshold <= 0 for lv in self.levels)


def blocks_of(kx: range, ky: range, n: int) -> tuple[list[range], list[range]]:
    """The cell ranges of the block columns and rows (the last ones may be smaller)."""
    return ([range(a, min(a + n, kx.stop)) for a in range(kx.start, kx.stop, n)],
            [range(a, min(a + n, ky.stop)) for a in range(ky.start, ky.stop, n)])


def coarse_sums(raw: np.ndarray, factor: int, nodata: float) -> tuple[np.ndarray, np.ndarray]:
    """(sums (H//f, W//f, B) float32 of the valid pixels of each f x f block, their counts int32); a pixel
    is valid when no band equals ``nodata``. H and W must be multiples of f. The float32 sums of uint16
    values are exact up to f = 16 (256 x 65535 < 2^24)."""
    h, w, b = raw.shape
    f = factor
    valid = np.all(raw != nodata, axis=-1)
    x = raw.astype(np.float32)
    x *= valid[..., None]
    s = x.reshape(h, w // f, f, b).sum(axis=2).reshape(h // f, f, w // f, b).sum(axis=1)
    n = valid.reshape(h, w // f, f).sum(axis=2, dtype=np.int32).reshape(h // f, f, w // f).sum(axis=1)
    return s, n


def pool_sums(s: np.ndarray, n: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of k x k groups of coarse pixels (a coarser level from a finer one)."""
    h, w, b = s.shape
    s = s.reshape(h, w // k, k, b).sum(axis=2).reshape(h // k, k, w // k, b).sum(axis=1)
    n = n.reshape(h, w // k, k).sum(axis=2).reshape(h // k, k, w // k).sum(axis=1)
    return s, n


def coarse_mean(raw: np.ndarray, factor: int, nodata: float) -> np.ndarray:
    """(H, W, B) -> (H//f, W//f, B) float32 mean of the valid pixels of each f x f block (NaN if none);
    a pixel is valid when no band equals ``nodata``. H and W must be multiples of f."""
    s, n = coarse_sums(raw, factor, nodata)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / n[..., None].astype(np.float32)


def ndvi_score(coarse: np.ndarray) -> np.ndarray:
    """(1 - NDVI) / 2 of (H, W, 2: red, nir) coarse pixels; NaN where no data."""
    red, nir = coarse[..., 0].astype(np.float64), coarse[..., 1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (1.0 - (nir - red) / (nir + red)) / 2.0


def spectral_score(coarse: np.ndarray) -> float:
    """Largest (1 - NDVI) / 2 of (H, W, 2: red, nir) coarse pixels; -inf if none is valid."""
    score = ndvi_score(coarse)
    score = score[np.isfinite(score)]
    return float(score.max()) if score.size else -np.inf


def _aligned(a: int, b: int, f: int) -> tuple[int, int]:
    """[a, b) widened to multiples of f."""
    return (a // f) * f, -(-b // f) * f


def spectral_scores(raster, bands: list[int], bx: list[range], by: list[range], pyr: Pyramid) -> list[np.ndarray]:
    """Per level, the score of every block: the largest (1 - NDVI) / 2 of the coarse pixels that overlap
    the block and its margin (-inf if none is valid). Each row of blocks is read once (two bands, full
    width, with the margin) and averaged at every level."""
    m = pyr.margin_px
    scores = [np.full((len(by), len(bx)), -np.inf) for _ in pyr.levels]
    fmax = math.lcm(*(lv.factor for lv in pyr.levels))  # every level's coarse grid fits the read
    c0, c1 = _aligned(bx[0].start * STRIDE - m, bx[-1].stop * STRIDE + m, fmax)
    for j, ry in enumerate(by):
        r0, r1 = _aligned(ry.start * STRIDE - m, ry.stop * STRIDE + m, fmax)
        raw = raster.read_px(c0, r0, c1, r1, bands)
        sums: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for f in sorted({lv.factor for lv in pyr.levels}):  # fine to coarse: coarser sums from finer ones
            finer = [g for g in sums if f % g == 0]
            sums[f] = pool_sums(*sums[max(finer)], f // max(finer)) if finer else \
                coarse_sums(raw, f, raster.nodata)
        for k, lv in enumerate(pyr.levels):
            f = lv.factor
            s_, n_ = sums[f]
            with np.errstate(invalid="ignore", divide="ignore"):
                score = ndvi_score(s_ / n_[..., None].astype(np.float32))
            score = np.where(np.isfinite(score), score, -np.inf)
            for i, rx in enumerate(bx):
                a, b = (rx.start * STRIDE - m - c0) // f, -(-(rx.stop * STRIDE + m - c0) // f)
                sub = score[:, max(0, a) : b]
                scores[k][j, i] = sub.max() if sub.size else -np.inf
    return scores


def model_scores(raster, tile, quadrant_core, pyr: Pyramid, scale: float, bx: list[range], by: list[range],
                 max_block_mb: float) -> list[np.ndarray]:
    """Per level, the score of every block from the screen model on the down-sampled quadrant."""
    from minescan.grid import cells_in_core
    from minescan.scan.inference import Normalisation, predict_cells

    model = pyr.model
    geometry = FcnGeometry(model.window)
    bands = model.band_indices(raster.band_names, str(raster.path))
    norm = Normalisation.from_card(model.card["normalisation"], scale, raster.nodata)
    c0, r0, c1, r1 = quadrant_core
    out = []
    for lv in pyr.levels:
        f = lv.factor
        # coarse pixel p covers 10 m pixels [f p, f p + f); coarse cells of 27 coarse px
        core = (c0 // f, r0 // f, -(-c1 // f), -(-r1 // f))
        kx, ky = cells_in_core(core)
        sx0, sx1 = geometry.input_span(kx.start, len(kx))
        sy0, sy1 = geometry.input_span(ky.start, len(ky))
        coarse = np.full((sy1 - sy0, sx1 - sx0, len(bands)), np.nan, dtype=np.float32)
        rows = max(1, int(64 * 2**20 // (f * f * (sx1 - sx0) * len(bands) * 2)))
        for a in range(sy0, sy1, rows):
            b = min(a + rows, sy1)
            raw = raster.read_px(sx0 * f, a * f, sx1 * f, b * f, bands)
            coarse[a - sy0 : b - sy0] = coarse_mean(raw, f, raster.nodata)
        coarse = np.where(np.isnan(coarse), np.float32(raster.nodata), coarse)

        def read(a0, b0, a1, b1, _c=coarse, _x=sx0, _y=sy0):
            return _c[b0 - _y : b1 - _y, a0 - _x : a1 - _x]

        prob = predict_cells(model.network, geometry, read, norm, kx, ky, max_block_mb=max_block_mb)
        prob = np.nan_to_num(prob, nan=-np.inf)
        score = np.full((len(by), len(bx)), -np.inf)
        m = pyr.margin_px
        for j, ry in enumerate(by):
            y0, y1 = (ry.start * STRIDE - m) // f // STRIDE, (ry.stop * STRIDE + m - 1) // f // STRIDE
            for i, rx in enumerate(bx):
                x0, x1 = (rx.start * STRIDE - m) // f // STRIDE, (rx.stop * STRIDE + m - 1) // f // STRIDE
                sub = prob[max(0, y0 - ky.start) : max(0, y1 + 1 - ky.start),
                           max(0, x0 - kx.start) : max(0, x1 + 1 - kx.start)]
                score[j, i] = sub.max() if sub.size else -np.inf
        out.append(score)
    return out


def screen(raster, tile, quadrant_core, kx: range, ky: range, pyr: Pyramid, scale: float,
           max_block_mb: float) -> tuple[list[range], list[range], np.ndarray, list[np.ndarray]]:
    """(block columns, block rows, keep mask, scores per level) of a quadrant."""
    bx, by = blocks_of(kx, ky, pyr.block_cells)
    alive = np.ones((len(by), len(bx)), dtype=bool)
    if pyr.screen == "spectral":
        bands = raster.band_indices([pyr.red_band, pyr.nir_band])
        scores = spectral_scores(raster, bands, bx, by, pyr)
    else:
        scores = model_scores(raster, tile, quadrant_core, pyr, scale, bx, by, max_block_mb)
    for lv, s in zip(pyr.levels, scores, strict=True):
        alive &= s >= lv.threshold
    return bx, by, alive, scores


def kept_rectangles(bx: list[range], by: list[range], keep: np.ndarray) -> list[tuple[range, range]]:
    """The kept blocks as few rectangles of cells: runs of adjacent kept blocks in a row of blocks, and
    consecutive rows with the same runs joined (each rectangle is one FCN pass, with its own margins)."""
    def runs(row):
        out, i = [], 0
        while i < len(row):
            if row[i]:
                i1 = i
                while i1 < len(row) and row[i1]:
                    i1 += 1
                out.append((i, i1))
                i = i1
            else:
                i += 1
        return out

    rects = []
    j = 0
    while j < len(by):
        r = runs(keep[j])
        j1 = j + 1
        while j1 < len(by) and runs(keep[j1]) == r:
            j1 += 1
        rows = range(by[j].start, by[j1 - 1].stop)
        rects += [(range(bx[i].start, bx[i1 - 1].stop), rows) for i, i1 in r]
        j = j1
    return rects


def pyramid_probabilities(raster, tile, quadrant: str, model, scale: float, pyr: Pyramid,
                          block_cells: int | None = None, *, max_block_mb: float, method: str = "auto",
                          stats=None, rater=None):
    """Like :func:`minescan.scan.detect.quadrant_probabilities`, with the pyramid's screen first: the FCN
    runs on the kept blocks only; cells of dropped blocks are NaN. ``pyr.info`` tells what was skipped."""
    from minescan.grid import cells_in_core, check_halo
    from minescan.scan.detect import _raw_reader, normalisation, quadrant_probabilities
    from minescan.scan.inference import log_progress, predict_cells

    core = tile.quadrant_core_px(quadrant)
    kx, ky = cells_in_core(core)
    if pyr.keeps_everything:
        pyr.info = {"blocks": -1, "blocks_kept": -1, "cells_skipped": 0, "skipped_fraction": 0.0}
        return quadrant_probabilities(raster, tile, quadrant, model, scale, block_cells,
                                      max_block_mb=max_block_mb, method=method, stats=stats, rater=rater)
    geometry = FcnGeometry(model.window)
    check_halo(tile.grid, geometry.halo_px, f"the {model.window} px discovery model {model.path}")
    bx, by, keep, _ = screen(raster, tile, core, kx, ky, pyr, scale, max_block_mb)
    prob = np.full((len(ky), len(kx)), np.nan, dtype=np.float32)
    read, norm = _raw_reader(raster, model), normalisation(raster, model, scale)
    progress = log_progress(f"{tile.name} {quadrant} (pyramid)")
    for rx, ry in kept_rectangles(bx, by, keep):
        sub = predict_cells(model.network, geometry, read, norm, rx, ry, max_block_mb=max_block_mb,
                            block_cells=block_cells, method=method, stats=stats, progress=progress,
                            on_rows=rater.start(rx, ry) if rater else None, keep_px=rater.keep_px if rater else 0)
        prob[ry.start - ky.start : ry.stop - ky.start, rx.start - kx.start : rx.stop - kx.start] = sub
    if rater:
        rater.finish()
    kept_cells = sum(len(rx) * len(ry) for j, ry in enumerate(by) for i, rx in enumerate(bx) if keep[j, i])
    total = len(kx) * len(ky)
    pyr.info = {"blocks": int(keep.size), "blocks_kept": int(keep.sum()), "cells_skipped": total - kept_cells,
                "skipped_fraction": round((total - kept_cells) / total, 4) if total else 0.0}
    log.info("%s %s pyramid (%s screen): %d of %d blocks kept, %.1f %% of the cells skipped", tile.name,
             quadrant, pyr.screen, pyr.info["blocks_kept"], pyr.info["blocks"], 100 * pyr.info["skipped_fraction"])
    return prob, kx, ky
