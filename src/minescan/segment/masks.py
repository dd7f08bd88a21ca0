"""Training data for the segmenter: images, masks rasterised from polygons, tiles and a grouped split.

A mask is the polygon layer (any CRS, any vector format) rasterised onto the image's own pixel grid: a
pixel is disturbed when its centre lies in a polygon (``rasterio.features.rasterize``). Images are cut into
square tiles (MineSegSAT: 768 px at 10 m); the 70/15/15 train/validation/test split is drawn over tile
*places* (the tile's corner in the image CRS), so the same ground seen in two images is never on two
sides of the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.features import rasterize
from rasterio.transform import xy

from minescan.errors import InputDataError
from minescan.sources.local import band_names_of, open_raster
from minescan.vector_io import read_vector

SPLITS = ("train", "validation", "test")


@dataclass
class Image:
    """One training image: reflectance (H, W, bands), valid-pixel mask, disturbed-area mask, georeference."""

    path: str
    reflectance: np.ndarray
    valid: np.ndarray
    mask: np.ndarray
    transform: object
    crs: object


@dataclass(frozen=True)
class TileRef:
    """A square tile of image ``image`` with top-left pixel (row, col), and its place key for the split."""

    image: int
    row: int
    col: int
    place: str


def read_polygons(path, layer: str | None = None, where: str | None = None):
    """Polygon layer, non-empty polygon geometries only; error naming the file when there are none.

    ``where`` = ``"COLUMN=V1,V2"`` keeps the features whose COLUMN is one of the values (e.g. class=mine)."""
    gdf = read_vector(path, layer, "polygon layer")
    if gdf.crs is None:
        raise InputDataError(f"{path}: polygon layer has no CRS")
    if where:
        column, _, values = where.partition("=")
        if column not in gdf.columns or not values:
            raise InputDataError(f"{path}: --polygons-where '{where}' needs COLUMN=V1,V2 with a column of the "
                                 f"file (it has {', '.join(c for c in gdf.columns if c != 'geometry')})")
        gdf = gdf[gdf[column].astype(str).isin(values.split(","))]
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    if gdf.empty:
        raise InputDataError(f"{path}: no polygon geometry to rasterise")
    return gdf


def rasterise_polygons(polygons, crs, transform, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask (1 = pixel centre inside a polygon) of ``polygons`` (a GeoDataFrame in any CRS) on the grid
    given by ``crs``, ``transform`` and ``shape``."""
    geoms = [g for g in polygons.to_crs(crs).geometry if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform, fill=0, dtype="uint8",
                     all_touched=False)


def read_image(path, bands: list[str], scale: float, polygons) -> Image:
    """The image's bands (by description) as reflectance, its valid pixels (no band at nodata) and the mask."""
    with open_raster(path) as ds:
        names = band_names_of(ds, path)
        missing = [b for b in bands if b not in names]
        if missing:
            raise InputDataError(f"{path}: band(s) {', '.join(missing)} missing (it has {', '.join(names)})")
        if ds.crs is None:
            raise InputDataError(f"{path}: has no CRS")
        data = ds.read([names.index(b) + 1 for b in bands])
        nodata = ds.nodata if ds.nodata is not None else 0
        transform, crs = ds.transform, ds.crs
    valid = np.all(data != nodata, axis=0)
    refl = np.moveaxis(data, 0, -1).astype(np.float32) * np.float32(scale)
    mask = rasterise_polygons(polygons, crs, transform, valid.shape) * valid
    return Image(str(path), refl, valid, mask.astype(np.uint8), transform, crs)


def tile_refs(images: list[Image], tile_px: int) -> list[TileRef]:
    """Every whole ``tile_px`` square of each image (row-major), with the place key of its corner."""
    refs = []
    for i, im in enumerate(images):
        h, w = im.valid.shape
        if h < tile_px or w < tile_px:
            raise InputDataError(f"{im.path}: {w}x{h} px is smaller than one {tile_px} px tile "
                                 "(segment.train.tile_px)")
        for r in range(0, h - tile_px + 1, tile_px):
            for c in range(0, w - tile_px + 1, tile_px):
                x, y = xy(im.transform, r, c, offset="ul")
                refs.append(TileRef(i, r, c, f"{im.crs.to_string()}:{round(x)}:{round(y)}"))
    return refs


def grouped_split(groups: list[str], fractions=(0.7, 0.15, 0.15), seed: int = 42) -> list[str]:
    """'train' / 'validation' / 'test' for each item, drawn over the distinct groups (never a group on two
    sides): groups shuffled with ``seed``, then the first ~70 % train, the next ~15 % validation, the rest
    test. With at least three groups every side gets one."""
    unique = sorted(set(groups))
    n = len(unique)
    if n == 0:
        return []
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    side = {}
    for rank, k in enumerate(order):
        side[unique[k]] = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
    return [side[g] for g in groups]


def tile_arrays(images: list[Image], ref: TileRef, tile_px: int):
    """(reflectance, valid, mask) of one tile."""
    im = images[ref.image]
    sl = np.s_[ref.row:ref.row + tile_px, ref.col:ref.col + tile_px]
    return im.reflectance[sl], im.valid[sl], im.mask[sl]

