"""Pixel labels from mine polygons: the signed distance to the nearest polygon edge and mine / not mine.

Polygons (any vector format GeoPandas reads, any CRS) are rasterised to the image grid (a pixel is inside
when its centre is). The signed distance of a pixel is measured from its centre to the nearest edge, in
metres, negative inside: for a pixel outside, the distance to the nearest inside pixel centre less half a
pixel; inside, minus the distance to the nearest outside pixel centre less half a pixel. Along rows and
columns this is exactly the distance to the pixel boundary that the edge follows.

Pixels within ``exclude_m`` of an edge (``|d| < exclude_m``) may be excluded: their label is the least
certain (a polygon drawn a pixel off, a mine growing between the image and the survey).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minescan.errors import InputDataError
from minescan.pixel.features import rasterise_mask


@dataclass
class PixelLabels:
    distance_m: np.ndarray  # (H, W) float32, negative inside a mine polygon
    mine: np.ndarray  # (H, W) int8: 1 mine, 0 not mine, -1 excluded (near an edge)

    @property
    def usable(self) -> np.ndarray:
        return self.mine >= 0


def signed_distance(inside: np.ndarray, resolution_m: float, cap_m: float | None = None) -> np.ndarray:
    """Signed distance (metres, negative inside) of every pixel centre to the edge of the ``inside`` mask."""
    from scipy.ndimage import distance_transform_edt

    inside = np.asarray(inside, dtype=bool)
    big = float(cap_m) if cap_m is not None else float(np.hypot(*inside.shape) * resolution_m)
    d = np.full(inside.shape, big, dtype=np.float64)
    if inside.any() and not inside.all():
        out_d = distance_transform_edt(~inside, sampling=resolution_m) - resolution_m / 2
        in_d = distance_transform_edt(inside, sampling=resolution_m) - resolution_m / 2
        d = np.where(inside, -in_d, out_d)
    elif inside.all():
        d = -d
    if cap_m is not None:
        d = np.clip(d, -cap_m, cap_m)
    return d.astype(np.float32)


def polygons_in_crs(path, crs, layer: str | None = None):
    """The polygons of a vector file, reprojected to ``crs`` (a list of shapely geometries)."""
    from minescan.vector_io import read_vector

    gdf = read_vector(path, layer, "mine polygon file").to_crs(crs)
    geoms = [g for g in gdf.geometry if g is not None and not g.is_empty]
    if any(g.geom_type not in ("Polygon", "MultiPolygon") for g in geoms):
        raise InputDataError(f"{path}: mine polygon file holds non-polygon geometries")
    return geoms


def pixel_labels(
    geoms,
    transform,
    shape: tuple[int, int],
    resolution_m: float,
    exclude_m: float = 0.0,
    cap_m: float | None = None,
) -> PixelLabels:
    """Labels on the grid (``transform``, ``shape``) of mine polygons ``geoms`` (in the grid's CRS)."""
    inside = rasterise_mask(geoms, transform, shape)
    d = signed_distance(inside, resolution_m, cap_m)
    mine = inside.astype(np.int8)
    if exclude_m > 0:
        mine[np.abs(d) < exclude_m] = -1
    return PixelLabels(d, mine)
