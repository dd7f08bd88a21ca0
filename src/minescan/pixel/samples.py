"""Training pixels: features and labels sampled from images + mine polygons, or from a labelled chip archive.

Every sample carries its group (the image or chip it came from), so splits and cross-validation keep all
pixels of one image on the same side, and its year (from the period), for splits by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minescan.errors import InputDataError
from minescan.pixel.features import FeatureSet, compute_features, feature_array, open_bands, period_month
from minescan.pixel.labels import pixel_labels, polygons_in_crs

# Real chip archives store RGB as uint8 = clip(DN / 3000, 0, 1) * 255 (../shared/data/real-chips/README.md)
CHIP_DN_PER_UNIT = 3000.0 / 255.0
CHIP_BANDS = ("B4", "B3", "B2")


@dataclass
class PixelSamples:
    features: list[str]
    X: np.ndarray  # (n, F) float32
    distance_m: np.ndarray  # (n,) signed distance to the nearest mine edge (NaN when unknown: chips)
    mine: np.ndarray  # (n,) int8
    group: np.ndarray  # (n,) str: the image (or chip) each pixel comes from
    year: np.ndarray  # (n,) int: year of the composite (0 = unknown)

    @staticmethod
    def concat(parts: list[PixelSamples]) -> PixelSamples:
        if not parts:
            raise InputDataError("no training pixels")
        return PixelSamples(
            parts[0].features,
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("X", "distance_m", "mine", "group", "year")
            ),
        )

    def subset(self, idx) -> PixelSamples:
        return PixelSamples(
            self.features, self.X[idx], self.distance_m[idx], self.mine[idx], self.group[idx], self.year[idx]
        )


def image_samples(
    path,
    fs: FeatureSet,
    polygons,
    period: str | None = None,
    *,
    max_pixels: int = 20000,
    seed: int = 0,
    exclude_m: float = 0.0,
    scale: float = 1e-4,
    nodata: float | None = 0,
    water_polygons=None,
    distance_cap_m: float = 2000.0,
    group: str | None = None,
) -> PixelSamples:
    """Up to ``max_pixels`` labelled pixels of one GeoTIFF (at most half of them mine pixels, drawn first).

    ``polygons``/``water_polygons`` are vector files (reprojected to the image's CRS). Features are computed
    lazily (dask) and only the chunks holding a drawn pixel are read."""
    import rasterio

    arr = open_bands(path, fs.bands)
    with rasterio.open(path) as ds:
        transform, crs, shape = ds.transform, ds.crs, (ds.height, ds.width)
        res = abs(ds.transform.a)
    labels = pixel_labels(polygons_in_crs(polygons, crs), transform, shape, res, exclude_m, distance_cap_m)
    water = None
    if water_polygons is not None and fs.needs_water:
        from minescan.pixel.features import rasterise_mask

        water = rasterise_mask(
            polygons_in_crs(water_polygons, crs), transform, shape, chunks=arr.data.chunks[1:]
        )
    month = period_month(period) if period else None
    feats = feature_array(arr.data, fs, scale, nodata, res, month, water, str(path))
    rng = np.random.default_rng(seed)
    mine_idx = np.flatnonzero(labels.mine.ravel() == 1)
    other_idx = np.flatnonzero(labels.mine.ravel() == 0)
    n_mine = min(len(mine_idx), max_pixels // 2)
    pick = np.concatenate(
        [
            rng.choice(mine_idx, n_mine, replace=False),
            rng.choice(other_idx, min(len(other_idx), max_pixels - n_mine), replace=False),
        ]
    )
    pick.sort()
    rows, cols = np.unravel_index(pick, shape)
    X = np.asarray(
        feats.vindex[:, rows, cols].compute() if hasattr(feats, "vindex") else feats[:, rows, cols]
    )
    X = X.T if X.shape[0] == len(fs.features) and X.shape[1] == len(pick) else X
    ok = np.all(np.isfinite(X), axis=1)
    year = int(period[:4]) if period else 0
    name = group or Path(path).name
    return PixelSamples(
        list(fs.features),
        X[ok].astype(np.float32),
        labels.distance_m.ravel()[pick][ok],
        labels.mine.ravel()[pick][ok],
        np.full(ok.sum(), name),
        np.full(ok.sum(), year),
    )


def chip_samples(
    npz_path, fs: FeatureSet, pixels_per_chip: int = 16, seed: int = 0, select: np.ndarray | None = None
) -> tuple[PixelSamples, dict]:
    """Pixels of a labelled RGB chip archive (x uint8 (N, h, w, 3) R,G,B; y 0/1 per chip; period).

    Every pixel of a chip takes the chip's label (mine chips are centred on a mine but hold background too:
    the labels are weak). Each chip is its own group. Returns the samples and the archive's arrays."""
    arch = load_chips(npz_path)
    x, y = arch["x"], arch["y"]
    idx = np.arange(len(y)) if select is None else np.flatnonzero(select)
    rng = np.random.default_rng(seed)
    h, w = x.shape[1:3]
    parts_X, parts_y, parts_g, parts_year = [], [], [], []
    for i in idx:
        feats = chip_features(x[i], fs)  # (F, h, w)
        pick = rng.choice(h * w, min(pixels_per_chip, h * w), replace=False)
        parts_X.append(feats.reshape(len(fs.features), -1)[:, pick].T)
        parts_y.append(np.full(len(pick), y[i], np.int8))
        parts_g.append(np.full(len(pick), f"chip{i}"))
        parts_year.append(np.full(len(pick), arch["year"][i]))
    X = np.concatenate(parts_X).astype(np.float32)
    return PixelSamples(
        list(fs.features),
        X,
        np.full(len(X), np.nan, np.float32),
        np.concatenate(parts_y),
        np.concatenate(parts_g),
        np.concatenate(parts_year),
    ), arch


def chip_features(chip_u8: np.ndarray, fs: FeatureSet) -> np.ndarray:
    """Features (F, h, w) of one RGB chip (h, w, 3) in ``fs.bands`` order taken from R, G, B = B4, B3, B2."""
    dn = chip_u8.astype(np.float32) * np.float32(CHIP_DN_PER_UNIT)
    order = [CHIP_BANDS.index(b) for b in fs.bands]
    return compute_features(np.moveaxis(dn[..., order], -1, 0), fs, 1e-4, None)


def load_chips(npz_path) -> dict:
    """The arrays of a chip archive (no pickle), with ``year`` parsed from ``period`` (0 when unknown)."""
    path = Path(npz_path)
    if not path.is_file():
        raise InputDataError(f"{path}: chip archive not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arch = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise InputDataError(f"{path}: not a readable .npz chip archive ({exc})") from exc
    for key in ("x", "y"):
        if key not in arch:
            raise InputDataError(f"{path}: array '{key}' missing")
    if arch["x"].ndim != 4 or arch["x"].shape[-1] != 3:
        raise InputDataError(f"{path}: 'x' must be (N, h, w, 3) RGB chips, found {arch['x'].shape}")
    periods = arch.get("period", np.full(len(arch["y"]), "unknown"))
    arch["year"] = np.array([int(p[:4]) if p[:4].isdigit() else 0 for p in periods.astype(str)])
    return arch
