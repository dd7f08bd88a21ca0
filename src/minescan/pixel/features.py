"""Per-pixel features over rasters, and the named feature sets a pixel model is trained and applied with.

Features, in this order (a feature set is a subset, recorded by name in the model card):

- the bands, as reflectance (tile value x ``reflectance_scale``);
- every normalised difference ``(x_k - x_l) / (x_k + x_l)`` of two bands (66 for 12 bands), ``nd_Bk_Bl``
  for ``k`` before ``l`` in the band order; a difference that is a named index carries the index's name
  (``NDVI`` = (B8-B4)/(B8+B4) instead of ``nd_B4_B8``), so no column is an exact copy of another;
- the named indices that are not a normalised difference of two bands (``MSI`` = B11/B8);
- ``dist_water``: Euclidean distance in metres to the nearest water pixel, capped at ``water_cap_m``
  (water from a vector layer rasterised to the grid, else the MNDWI > 0 mask, else NDWI > 0);
- ``month_cos``, ``month_sin``: cos and sin of 2 pi month / 12 (the composite's mid-month), a periodic
  encoding (December is next to January).

Halo: every feature of a pixel depends on that pixel alone, except ``dist_water``, which depends on the
pixels within ``water_cap_m``. Capping the distance is what makes chunked computation exact: a chunk read
with ``halo_px = ceil(water_cap_m / resolution)`` extra pixels on each side sees every water pixel that can
change its capped distances (:meth:`FeatureSet.halo_px`).

The lazy path (:func:`open_bands`, :func:`feature_array`) opens a GeoTIFF with rioxarray as a dask array
in chunks aligned to the file's internal blocks and computes features chunk by chunk
(``dask.array.map_overlap`` with the feature set's halo), so memory is a few chunks whatever the raster size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from minescan.errors import BandMismatchError, InputDataError, ModelError
from minescan.periods import PERIOD_RE, period_dates

# Named normalised-difference indices for Sentinel-2 band names: name -> (a, b), index = (a - b) / (a + b).
# Three of the usual names are the same band pair as another (a linear model gets each pair once):
# NDSI (snow) = MNDWI, GNDVI = -NDWI, NDBI = -NDMI (INDEX_ALIASES).
ND_INDICES = {
    "NDVI": ("B8", "B4"),
    "NDRE": ("B8", "B5"),
    "NDMI": ("B8", "B11"),
    "NDWI": ("B3", "B8"),
    "MNDWI": ("B3", "B11"),
    "NBR": ("B8", "B12"),
    "NBR2": ("B11", "B12"),
    "NDVI705": ("B6", "B5"),
    "NDTI": ("B4", "B3"),
    "AMWI": ("B4", "B2"),
}
INDEX_ALIASES = {"NDSI": "MNDWI", "GNDVI": "-NDWI", "NDBI": "-NDMI"}
# Named indices that are ratios, not normalised differences: name -> (numerator, denominator).
RATIO_INDICES = {"MSI": ("B11", "B8")}
MONTH_FEATURES = ("month_cos", "month_sin")
WATER_FEATURE = "dist_water"
DEFAULT_WATER_CAP_M = 1000.0

# the named feature sets: which groups of features they hold
SET_GROUPS = {
    "bands": ("bands",),
    "indices": ("bands", "differences", "ratios"),
    "full": ("bands", "differences", "ratios", "water", "month"),
    "bands+water+month": ("bands", "water", "month"),
}


def _pairs(bands: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(feature name, a, b) of every normalised difference (a - b) / (a + b) of two bands."""
    named = {frozenset(p): (name, p) for name, p in ND_INDICES.items()}
    out = []
    for i, k in enumerate(bands):
        for band_l in bands[i + 1 :]:
            hit = named.get(frozenset((k, band_l)))
            out.append((hit[0], *hit[1]) if hit else (f"nd_{k}_{band_l}", k, band_l))
    return out


@dataclass(frozen=True)
class FeatureSet:
    """A named list of per-pixel features over ``bands`` (see the module docstring)."""

    name: str
    bands: tuple[str, ...]
    water_cap_m: float = DEFAULT_WATER_CAP_M
    features: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if self.name not in SET_GROUPS:
            raise ModelError(f"unknown feature set '{self.name}' (known: {', '.join(SET_GROUPS)})")
        if len(set(self.bands)) != len(self.bands) or not self.bands:
            raise ModelError(
                f"feature set '{self.name}': bands must be distinct and non-empty ({self.bands})"
            )
        groups = SET_GROUPS[self.name]
        names = list(self.bands) if "bands" in groups else []
        if "differences" in groups:
            names += [n for n, _, _ in _pairs(self.bands)]
        if "ratios" in groups:
            names += [n for n, (a, b) in RATIO_INDICES.items() if a in self.bands and b in self.bands]
        if "water" in groups:
            names.append(WATER_FEATURE)
        if "month" in groups:
            names += list(MONTH_FEATURES)
        object.__setattr__(self, "features", tuple(names))

    @property
    def needs_water(self) -> bool:
        return WATER_FEATURE in self.features

    @property
    def needs_month(self) -> bool:
        return MONTH_FEATURES[0] in self.features

    def halo_px(self, resolution_m: float) -> int:
        """Pixels a chunk must see beyond its edges for exact features (only the water distance needs any)."""
        return int(math.ceil(self.water_cap_m / resolution_m)) if self.needs_water else 0

    def as_card(self) -> dict:
        return {
            "name": self.name,
            "bands": list(self.bands),
            "water_cap_m": self.water_cap_m,
            "features": list(self.features),
        }

    @classmethod
    def from_card(cls, d: dict, source: str = "model card") -> FeatureSet:
        """The feature set a card records; refuses one whose feature list this version computes otherwise."""
        try:
            fs = cls(d["name"], tuple(d["bands"]), float(d.get("water_cap_m", DEFAULT_WATER_CAP_M)))
        except (KeyError, TypeError) as exc:
            raise ModelError(f"{source}: 'feature_set' is malformed ({exc})") from exc
        if list(fs.features) != list(d.get("features", fs.features)):
            raise ModelError(
                f"{source}: feature set '{fs.name}' lists features {d.get('features')}, but this "
                f"minescan computes {list(fs.features)}"
            )
        return fs


def period_month(period: str) -> float:
    """The composite's mid-month, 1..12: '2026Q1' -> 2.0 (February), '2025' -> 6.5 (mid-year)."""
    if not PERIOD_RE.match(period):
        raise InputDataError(f"period '{period}' is neither a year (2025) nor a quarter (2026Q1)")
    start, end = period_dates(period)
    m0 = int(start[5:7])
    n = (int(end[:4]) - int(start[:4])) * 12 + int(end[5:7]) - m0
    return m0 + (n - 1) / 2


def month_encoding(month: float) -> tuple[float, float]:
    """cos and sin of 2 pi month / 12 (periodic: month 12.5 and 0.5 are neighbours)."""
    a = 2.0 * math.pi * month / 12.0
    return math.cos(a), math.sin(a)


def normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b), 0 where a + b == 0."""
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s != 0, (a - b) / np.where(s != 0, s, 1), 0).astype(np.float32)


def water_mask_from_indices(
    refl: dict[str, np.ndarray], valid: np.ndarray, source: str = "raster"
) -> np.ndarray:
    """Water where MNDWI > 0 (B3, B11), else where NDWI > 0 (B3, B8), on valid pixels."""
    for a, b in (ND_INDICES["MNDWI"], ND_INDICES["NDWI"]):
        if a in refl and b in refl:
            return (normalised_difference(refl[a], refl[b]) > 0) & valid
    raise BandMismatchError(f"{source}: the water distance needs a water layer or bands B3 and B11 (or B8)")


def water_distance(water: np.ndarray, resolution_m: float, cap_m: float) -> np.ndarray:
    """Euclidean distance in metres from each pixel centre to the nearest water pixel centre, capped."""
    from scipy.ndimage import distance_transform_edt

    water = np.asarray(water, dtype=bool)
    if not water.any():
        return np.full(water.shape, cap_m, dtype=np.float32)
    d = distance_transform_edt(~water, sampling=resolution_m)
    return np.minimum(d, cap_m).astype(np.float32)


def compute_features(
    raw: np.ndarray,
    fs: FeatureSet,
    scale: float,
    nodata: float | None,
    resolution_m: float = 10.0,
    month: float | None = None,
    water: np.ndarray | None = None,
    source: str = "raster",
) -> np.ndarray:
    """Features (F, H, W) float32 of raw band values (B, H, W) in ``fs.bands`` order; NaN on nodata pixels.

    ``water`` (H, W bool) is the rasterised water layer, if any; without it the water distance uses the
    MNDWI mask of the pixels themselves. ``month`` (1..12) is needed when the set has the month features."""
    raw = np.asarray(raw)
    if raw.shape[0] != len(fs.bands):
        raise BandMismatchError(
            f"{source}: {raw.shape[0]} bands given, feature set '{fs.name}' needs "
            f"{len(fs.bands)} ({', '.join(fs.bands)})"
        )
    valid = np.ones(raw.shape[1:], dtype=bool) if nodata is None else np.all(raw != nodata, axis=0)
    refl = {b: raw[i].astype(np.float32) * np.float32(scale) for i, b in enumerate(fs.bands)}
    out = np.empty((len(fs.features), *raw.shape[1:]), dtype=np.float32)
    pairs = {n: (a, b) for n, a, b in _pairs(fs.bands)}
    for i, name in enumerate(fs.features):
        if name in refl:
            out[i] = refl[name]
        elif name in pairs:
            a, b = pairs[name]
            out[i] = normalised_difference(refl[a], refl[b])
        elif name in RATIO_INDICES:
            a, b = RATIO_INDICES[name]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[i] = np.where(refl[b] != 0, refl[a] / np.where(refl[b] != 0, refl[b], 1), 0)
        elif name == WATER_FEATURE:
            mask = (
                np.asarray(water, dtype=bool)
                if water is not None
                else water_mask_from_indices(refl, valid, source)
            )
            out[i] = water_distance(mask, resolution_m, fs.water_cap_m)
        elif name in MONTH_FEATURES:
            if month is None:
                raise InputDataError(
                    f"{source}: feature set '{fs.name}' needs the composite's month (its period)"
                )
            out[i] = month_encoding(month)[MONTH_FEATURES.index(name)]
        else:  # pragma: no cover - FeatureSet only lists the names above
            raise ModelError(f"unknown feature '{name}'")
    out[:, ~valid] = np.nan
    return out


# ----------------------------------------------------------------------------------------- lazy (dask)


def open_bands(path, bands: list[str] | tuple[str, ...], chunk_blocks: int = 1, band_names=None):
    """A GeoTIFF's ``bands`` (matched by band description) as a dask-backed xarray DataArray (band, y, x),
    in chunks of ``chunk_blocks`` x the file's internal block size (so each chunk decodes whole blocks)."""
    import rasterio
    import rioxarray

    try:
        with rasterio.open(path) as ds:
            bh, bw = ds.block_shapes[0]
            names = list(band_names) if band_names else [d or "" for d in ds.descriptions]
    except rasterio.errors.RasterioError as exc:
        raise InputDataError(f"{path}: cannot be opened as a GeoTIFF ({exc})") from exc
    missing = [b for b in bands if b not in names]
    if missing:
        raise BandMismatchError(
            f"{path}: band(s) {', '.join(missing)} missing (the file has "
            f"{', '.join(n or '?' for n in names)})"
        )
    da = rioxarray.open_rasterio(
        path,
        chunks={"band": -1, "y": bh * chunk_blocks, "x": bw * chunk_blocks},
        lock=False,
        mask_and_scale=False,
    )
    return da.isel(band=[names.index(b) for b in bands])


def feature_array(
    raw,
    fs: FeatureSet,
    scale: float,
    nodata: float | None,
    resolution_m: float = 10.0,
    month: float | None = None,
    water=None,
    source: str = "raster",
):
    """Lazy features (F, H, W) of a dask array of raw bands (B, H, W), computed chunk by chunk.

    Equal to :func:`compute_features` of the whole array: chunks overlap by the set's halo (water distance)
    and the array's outer edges are treated as the whole-array computation treats them (``boundary='none'``).
    ``water`` is None or a dask bool array (H, W) chunked like ``raw``'s last two axes."""
    import dask.array as da

    raw = raw.rechunk({0: -1})
    halo = fs.halo_px(resolution_m)
    f = len(fs.features)

    def block(r, w=None):
        return compute_features(r, fs, scale, nodata, resolution_m, month, w, source)

    args = [raw] if water is None else [raw, water[None].rechunk({0: 1})]
    if halo == 0:
        return da.map_blocks(
            lambda r, w=None: block(r, None if w is None else w[0]),
            *args,
            chunks=((f,), *raw.chunks[1:]),
            dtype=np.float32,
        )
    small = min(min(c) for c in raw.chunks[1:])
    if small < halo:  # overlap needs chunks at least as large as its depth
        size = max(halo, max(max(c) for c in raw.chunks[1:]))
        raw = raw.rechunk({1: size, 2: size})
        args = [raw] if water is None else [raw, water[None].rechunk({0: 1, 1: size, 2: size})]
    depth = {0: 0, 1: halo, 2: halo}
    over = [da.overlap.overlap(a, depth=depth, boundary="none") for a in args]
    out = da.map_blocks(
        lambda r, w=None: block(r, None if w is None else w[0]),
        *over,
        chunks=((f,), *over[0].chunks[1:]),
        dtype=np.float32,
    )
    return da.overlap.trim_internal(out, depth, boundary="none")


def rasterise_mask(geoms, transform, shape: tuple[int, int], chunks=None):
    """A bool mask (H, W) of ``geoms`` (in the raster's CRS) on the grid ``transform``: a numpy array, or
    with ``chunks`` a dask array rasterised chunk by chunk (each chunk burns only its own window)."""
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    geoms = [g for g in geoms if g is not None and not g.is_empty]

    def burn(shape_, t):
        if not geoms:
            return np.zeros(shape_, dtype=bool)
        return rasterize(geoms, out_shape=shape_, transform=t, fill=0, default_value=1, dtype="uint8").astype(
            bool
        )

    if chunks is None:
        return burn(shape, transform)
    import dask.array as da

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        return burn((r1 - r0, c1 - c0), win_transform(Window(c0, r0, c1 - c0, r1 - r0), transform))

    return da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.zeros((0, 0), dtype=bool))
