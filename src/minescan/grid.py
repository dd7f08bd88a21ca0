"""The fixed tile grid, its quadrants and the global grid of 27 px output cells.

Tiles: in each UTM zone (EPSG:326zz north, 327zz south) the plane is cut into squares of
``tile_px * resolution_m`` metres aligned to multiples of that size, so tile ``col, row`` has its core at
easting ``[col*T, (col+1)*T)`` and northing ``[row*T, (row+1)*T)``. The id ``21S-E0045-N0951`` depends only
on the zone, hemisphere and those indices: it is the same for every scan and period. A zone only covers
its own 6-degree longitude strip (and hemisphere), so every point on Earth belongs to exactly one tile core.

Pixels: inside a zone, global pixel column ``p = easting / res`` and row ``q = -northing / res`` (rows grow
southwards, as in an image). A tile GeoTIFF holds its core plus ``halo_px`` on every side.

Quadrants: each tile core splits into four ``tile_px/2`` squares NW, NE, SW, SE.

Cells: the discovery FCN yields one value per 27 x 27 px cell; cell ``(kx, ky)`` covers global pixels
``[27kx, 27kx+27) x [27ky, 27ky+27)``. A patch model scanned every ``s`` px (:mod:`minescan.scan.patches`)
has cells of ``s`` px instead (the ``stride`` argument below). A cell belongs to the quadrant whose core holds its centre, so every
cell has exactly one owner and nothing is lost or duplicated at quadrant, tile or zone seams.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from shapely.geometry import Polygon, box

from minescan.errors import ConfigError, InputDataError
from minescan.models.networks import STRIDE

QUADRANTS = ("NW", "NE", "SW", "SE")
TILE_ID_RE = re.compile(r"^(\d{2})([NS])-E(\d{3,})-N(\d{4,})$")


@dataclass(frozen=True)
class GridSpec:
    tile_px: int = 9216
    resolution_m: float = 10.0
    halo_px: int = 160

    @classmethod
    def from_config(cls, cfg: dict) -> GridSpec:
        g = cfg["grid"]
        return cls(int(g["tile_px"]), float(g["resolution_m"]), int(g["halo_px"]))

    @property
    def tile_m(self) -> float:
        return self.tile_px * self.resolution_m


_GEOD = Geod(ellps="WGS84")


def utm_epsg(zone: int, hemisphere: str) -> int:
    return (32600 if hemisphere == "N" else 32700) + zone


def geodesic_area_m2(geom_lonlat) -> float:
    """Area of a lon/lat geometry on the WGS84 ellipsoid, in m²."""
    return abs(_GEOD.geometry_area_perimeter(geom_lonlat)[0])


def zone_label_epsg(label) -> int | None:
    """UTM EPSG code of a zone label such as '21S' (zone 21, southern hemisphere); None if not such a label."""
    if isinstance(label, str) and len(label) == 3 and label[:2].isdigit() and label[2] in "NS":
        return utm_epsg(int(label[:2]), label[2])
    return None


def site_epsgs(geoms_lonlat, zones=None) -> list[int]:
    """UTM EPSG code per geometry (lon/lat): from its zone label where it has a valid one, else from its
    representative point."""
    zones = list(zones) if zones is not None else [None] * len(geoms_lonlat)
    out = []
    for g, z in zip(geoms_lonlat, zones, strict=True):
        epsg = zone_label_epsg(z)
        if epsg is None:
            p = g.representative_point()
            epsg = utm_epsg(*zone_of(p.x, p.y))
        out.append(epsg)
    return out


def zone_strip(zone: int, hemisphere: str) -> Polygon:
    """The lon/lat area a UTM zone is responsible for: its 6-degree strip in one hemisphere."""
    west = -180 + 6 * (zone - 1)
    south, north = (0.0, 84.0) if hemisphere == "N" else (-80.0, 0.0)
    return box(west, south, west + 6, north)


def zone_of(lon: float, lat: float) -> tuple[int, str]:
    zone = min(60, max(1, int(math.floor((lon + 180) / 6)) + 1))
    return zone, ("N" if lat >= 0 else "S")


@lru_cache(maxsize=64)
def _transformer(src: int, dst: int) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def to_crs(geom, src_epsg: int, dst_epsg: int):
    return shapely.transform(geom, _transformer(src_epsg, dst_epsg).transform, interleaved=False)


@dataclass(frozen=True)
class TileId:
    zone: int
    hemisphere: str
    col: int
    row: int

    def __str__(self) -> str:
        return f"{self.zone:02d}{self.hemisphere}-E{self.col:03d}-N{self.row:04d}"

    @classmethod
    def parse(cls, text: str) -> TileId:
        m = TILE_ID_RE.match(text)
        if not m:
            raise InputDataError(f"'{text}' is not a tile id (expected e.g. 21S-E045-N0951)")
        return cls(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))

    @property
    def epsg(self) -> int:
        return utm_epsg(self.zone, self.hemisphere)


@dataclass(frozen=True)
class Tile:
    """A grid tile: its id, core in UTM metres and the pixel frame of its GeoTIFF (core + halo)."""

    id: TileId
    grid: GridSpec

    @property
    def name(self) -> str:
        return str(self.id)

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.id.epsg)

    @property
    def core_bounds(self) -> tuple[float, float, float, float]:
        t = self.grid.tile_m
        return (self.id.col * t, self.id.row * t, (self.id.col + 1) * t, (self.id.row + 1) * t)

    @property
    def size_px(self) -> int:
        return self.grid.tile_px + 2 * self.grid.halo_px

    @property
    def origin_px(self) -> tuple[int, int]:
        """Global pixel (column, row) of the GeoTIFF's top-left pixel (halo included)."""
        g = self.grid
        return (self.id.col * g.tile_px - g.halo_px, -(self.id.row + 1) * g.tile_px - g.halo_px)

    @property
    def transform(self) -> Affine:
        p0, q0 = self.origin_px
        r = self.grid.resolution_m
        return Affine(r, 0.0, p0 * r, 0.0, -r, -q0 * r)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the tile's GeoTIFF (core + halo) in its UTM CRS."""
        t, size = self.transform, self.size_px
        return (t.c, t.f + size * t.e, t.c + size * t.a, t.f)

    def quadrant_core_px(self, quadrant: str) -> tuple[int, int, int, int]:
        """Global pixel bounds (col0, row0, col1, row1), end-exclusive, of a quadrant core."""
        if quadrant not in QUADRANTS:
            raise InputDataError(f"unknown quadrant '{quadrant}' (expected one of {', '.join(QUADRANTS)})")
        g = self.grid
        half = g.tile_px // 2
        c0 = self.id.col * g.tile_px
        r0 = -(self.id.row + 1) * g.tile_px
        dc = half if quadrant.endswith("E") else 0
        dr = half if quadrant.startswith("S") else 0
        return (c0 + dc, r0 + dr, c0 + dc + half, r0 + dr + half)

    def core_px(self) -> tuple[int, int, int, int]:
        g = self.grid
        c0 = self.id.col * g.tile_px
        r0 = -(self.id.row + 1) * g.tile_px
        return (c0, r0, c0 + g.tile_px, r0 + g.tile_px)

    def quadrant_polygon(self, quadrant: str) -> Polygon:
        c0, r0, c1, r1 = self.quadrant_core_px(quadrant)
        r = self.grid.resolution_m
        return box(c0 * r, -r1 * r, c1 * r, -r0 * r)

    @cached_property
    def strip_utm(self) -> Polygon:
        return to_crs(zone_strip(self.id.zone, self.id.hemisphere), 4326, self.id.epsg)


def cells_in_core(core_px: tuple[int, int, int, int], stride: int = STRIDE) -> tuple[range, range]:
    """Cell index ranges (kx, ky) whose centre lies in a pixel core [c0, c1) x [r0, r1).

    ``stride``: the cell size in px (27 for the discovery FCN; a patch model's scan stride otherwise)."""
    c0, r0, c1, r1 = core_px
    half = stride // 2  # centre of cell k is at stride * k + stride / 2, in pixel stride * k + half
    kx0 = -((half - c0) // stride)  # ceil((c0 - half) / stride)
    kx1 = -((half - c1) // stride)  # first k with stride * k >= c1 - half
    ky0 = -((half - r0) // stride)
    ky1 = -((half - r1) // stride)
    return range(kx0, kx1), range(ky0, ky1)


def cell_centres_utm(kx: np.ndarray, ky: np.ndarray, resolution_m: float,
                     stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    x = (np.asarray(kx, dtype=np.float64) * stride + stride / 2) * resolution_m
    y = -(np.asarray(ky, dtype=np.float64) * stride + stride / 2) * resolution_m
    return x, y


def cell_polygon(kx: int, ky: int, resolution_m: float, stride: int = STRIDE) -> Polygon:
    s = stride * resolution_m
    return box(kx * s, -(ky + 1) * s, (kx + 1) * s, -ky * s)


def tile_of_point(lon: float, lat: float, grid: GridSpec) -> Tile:
    zone, hemi = zone_of(lon, lat)
    x, y = _transformer(4326, utm_epsg(zone, hemi)).transform(lon, lat)
    return Tile(TileId(zone, hemi, int(x // grid.tile_m), int(y // grid.tile_m)), grid)


def tiles_for_region(region_lonlat, grid: GridSpec, source: str = "region") -> list[Tile]:
    """Every tile whose core meets the region (a shapely geometry in EPSG:4326), sorted by id."""
    if region_lonlat.is_empty:
        raise InputDataError(f"{source}: the region geometry is empty")
    tiles: list[Tile] = []
    minx, miny, maxx, maxy = region_lonlat.bounds
    zones = range(zone_of(minx, 0)[0], zone_of(min(maxx, 179.999999), 0)[0] + 1)
    for hemi in ("N", "S"):
        for zone in zones:
            part = region_lonlat.intersection(zone_strip(zone, hemi))
            if part.is_empty or part.area == 0:
                continue
            utm = to_crs(part, 4326, utm_epsg(zone, hemi))
            t = grid.tile_m
            bx0, by0, bx1, by1 = utm.bounds
            for col in range(int(bx0 // t), int(bx1 // t) + 1):
                for row in range(int(by0 // t), int(by1 // t) + 1):
                    if utm.intersects(box(col * t, row * t, (col + 1) * t, (row + 1) * t)):
                        tiles.append(Tile(TileId(zone, hemi, col, row), grid))
    if not tiles:
        raise InputDataError(f"{source}: the region intersects no grid tile")
    return sorted(tiles, key=lambda tl: tl.name)


def region_in_tile_crs(region_lonlat, tile: Tile):
    """The part of the region this tile's zone is responsible for, in the tile's UTM CRS."""
    part = region_lonlat.intersection(zone_strip(tile.id.zone, tile.id.hemisphere))
    return to_crs(part, 4326, tile.id.epsg)


def quadrants_for_region(region_lonlat, tile: Tile) -> list[str]:
    part = region_in_tile_crs(region_lonlat, tile)
    return [q for q in QUADRANTS if part.intersects(tile.quadrant_polygon(q))]


def check_halo(grid: GridSpec, needed_px: int, what: str) -> None:
    if grid.halo_px < needed_px:
        raise ConfigError(
            f"key 'grid.halo_px' = {grid.halo_px} px is smaller than the {needed_px} px {what} needs "
            "to see past the quadrant edges; raise it"
        )
