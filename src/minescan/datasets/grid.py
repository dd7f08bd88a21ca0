"""A regular grid of square cells over mine polygons: positives, paired negatives and their names.

Cells. Each cell is a ``cell_m`` square of the UTM zone (WGS 84, EPSG:326zz/327zz) that holds its centre,
aligned to multiples of ``cell_m`` (cell ``(ix, iy)`` covers easting ``[ix*s, (ix+1)*s)`` and northing
``[iy*s, (iy+1)*s)``), the way :mod:`minescan.grid` cuts its tiles: squares in metres anywhere on Earth (an
equal-area world grid would stretch them away from its standard parallels), each point owned by exactly one
cell. Cells of two neighbouring zones may overlap a little at the seam. The plan's three sizes are
:data:`ZOOM_CELL_M` (5,500, 2,750 and 1,375 m, "zoom 14, 15 and 16").

Positives. The overlap fraction of a cell is the area of (cell ∩ union of all polygons) over the cell area
(overlapping polygons are dissolved first, so nothing is counted twice). Cells with overlap at or above
``min_overlap`` (0.001) are positives; cells that touch a polygon with less are discarded (neither positive
nor negative). Each positive carries the attribute columns of the polygon with the largest share of it
(country, commodity, year: whatever the layer has), so sets can be split by metadata.

Negatives. Positives are taken in order of decreasing overlap (then name); each gets the cell of the same
zone nearest to it (centre to centre) that intersects no polygon and is not yet another positive's negative,
so no negative is used twice. The distance is reported (``pair_distance_m``); a negative carries its
positive's metadata and ``pair_id``, so a split never separates the two.

Names: ``LAT_LON_ZoomLevel_OverlapPct`` (see :func:`coord_code`, :func:`cell_name`).
"""

from __future__ import annotations

import logging
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely import contains_xy
from shapely.geometry import box
from shapely.ops import unary_union

from minescan.errors import ConfigError, InputDataError
from minescan.grid import _transformer, utm_epsg, zone_of, zone_strip
from minescan.io_utils import atomic_output
from minescan.vector_io import write_vector

log = logging.getLogger(__name__)

#: cell size (m) of the plan's zoom levels ("zoom 14, 15 and 16 on the Google Map system")
ZOOM_CELL_M = {14: 5500.0, 15: 2750.0, 16: 1375.0}
MIN_OVERLAP = 0.001
#: polygons up to this many degrees beyond a zone's strip are seen by its cells (seam cells, negatives)
ZONE_MARGIN_DEG = 2.0
MAX_RING = 200  # negatives are searched up to this many cells away from their positive

BASE_COLUMNS = ["name", "cell_id", "label", "zoom", "cell_m", "zone", "epsg", "ix", "iy", "x_min", "y_min",
                "x_max", "y_max", "lon", "lat", "lon_min", "lat_min", "lon_max", "lat_max", "overlap",
                "overlap_pct", "n_polygons", "polygon_index", "pair", "pair_id", "pair_distance_m"]


def coord_code(value: float) -> str:
    """A centroid coordinate as the plan writes it: "multiplied by 100 with one zero pad if negative
    (i.e. -29.5 becomes 029500)".

    Read so that the example holds: the coordinate times 100, written with one decimal (-29.5 -> -2950.0),
    the decimal point dropped (-29500) and the minus sign replaced by a zero (029500). So it is the absolute
    value in thousandths of a degree (~110 m), with a leading 0 for negative values; positive values never
    start with 0 (29.5 -> 29500, 0.25 -> 250, -0.25 -> 0250, 0 -> 00)."""
    digits = f"{abs(value) * 100:.1f}".replace(".", "")
    return ("0" + digits) if value < 0 and digits.strip("0") else digits


def overlap_code(overlap: float | None) -> str:
    """OverlapPct: the overlap in percent with two decimals (0.001 -> '0.10', 1 -> '100.00'); 'neg' for
    negatives."""
    return "neg" if overlap is None else f"{overlap * 100:.2f}"


def cell_name(lat: float, lon: float, zoom: int, overlap: float | None) -> str:
    """``LAT_LON_ZoomLevel_OverlapPct``, e.g. ``029500_0055250_14_37.25`` for a cell centred at 29.5 S,
    55.25 W at zoom 14 overlapping its polygons by 37.25 %."""
    return f"{coord_code(lat)}_{coord_code(lon)}_{zoom}_{overlap_code(overlap)}"


def read_polygons(path, layer: str | None = None):
    """The polygon features of a vector file in EPSG:4326 (with their attribute columns); other geometry
    types and empty geometries are dropped."""
    from minescan.vector_io import read_vector

    gdf = read_vector(path, layer, "polygon file").to_crs(4326)
    geom = gdf.geometry
    keep = geom.notna() & ~geom.is_empty & geom.geom_type.isin(["Polygon", "MultiPolygon"])
    if not keep.any():
        raise InputDataError(f"{path}: holds no polygon")
    if (~keep).any():
        log.warning("%s: %d features without a polygon skipped", path, int((~keep).sum()))
    gdf = gdf[keep].copy()
    gdf["geometry"] = shapely.make_valid(gdf.geometry.values)
    gdf["polygon_index"] = np.flatnonzero(keep.to_numpy())
    return gdf.reset_index(drop=True)


def select_polygons(gdf: gpd.GeoDataFrame, spec: str | None, path) -> gpd.GeoDataFrame:
    """Only the features whose column equals a value: ``spec`` = ``COLUMN=VALUE`` (e.g. ``class=mine``)."""
    if not spec:
        return gdf
    col, sep, value = spec.partition("=")
    if not sep or col not in gdf.columns:
        raise InputDataError(f"{path}: --select {spec!r} needs COLUMN=VALUE with a column of the file "
                             f"({', '.join(c for c in gdf.columns if c not in ('geometry', 'polygon_index'))})")
    keep = gdf[col].astype(str) == value
    if not keep.any():
        raise InputDataError(f"{path}: no feature has {col} = {value!r}")
    return gdf[keep].reset_index(drop=True)


def cell_size(zoom: int, cell_m: float | None) -> float:
    if cell_m is not None:
        if not cell_m > 0:
            raise ConfigError(f"--cell-m must be > 0 (got {cell_m})")
        return float(cell_m)
    if zoom not in ZOOM_CELL_M:
        raise ConfigError(f"--zoom {zoom}: no default cell size (use 14, 15, 16 or give --cell-m)")
    return ZOOM_CELL_M[zoom]


def _zones_of(gdf: gpd.GeoDataFrame) -> list[tuple[int, str]]:
    zones = set()
    for x0, y0, x1, y1 in gdf.geometry.bounds.to_numpy():
        for z in range(zone_of(x0, 0)[0], zone_of(min(x1, 179.999999), 0)[0] + 1):
            for hemi in {"N" if y1 >= 0 else "S", "S" if y0 < 0 else "N"}:
                zones.add((z, hemi))
    return sorted(zones)


class _Zone:
    """The cells of one UTM zone that meet the polygons: overlap fractions and the blocked set."""

    def __init__(self, zone: int, hemi: str, polys: gpd.GeoDataFrame, cell_m: float, region_lonlat):
        self.zone, self.hemi, self.s = zone, hemi, cell_m
        self.epsg = utm_epsg(zone, hemi)
        strip = zone_strip(zone, hemi)
        self.strip_utm = _to(strip, 4326, self.epsg)
        if region_lonlat is not None:
            self.strip_utm = self.strip_utm.intersection(_to(region_lonlat.intersection(strip), 4326, self.epsg))
        near = polys[polys.intersects(strip.buffer(ZONE_MARGIN_DEG))]
        self.polys = near
        self.geoms = _to(near.geometry.values, 4326, self.epsg)
        self.tree = shapely.STRtree(self.geoms)
        parts = shapely.get_parts(unary_union(self.geoms)) if len(near) else np.array([])
        self.parts = np.asarray([p for p in parts if p.area > 0])
        ix, iy = self._touched_cells()
        cells = shapely.box(ix * cell_m, iy * cell_m, (ix + 1) * cell_m, (iy + 1) * cell_m)
        # cells within 1 mm of a polygon count as intersecting it (robust to round-off at shared edges)
        ci, pi = (shapely.STRtree(self.parts).query(cells, predicate="dwithin", distance=1e-3)
                  if len(cells) else ([], []))
        area = shapely.area(shapely.intersection(cells[ci], self.parts[pi])) if len(ci) else np.zeros(0)
        overlap = np.bincount(ci, weights=area, minlength=len(cells)) / cell_m**2
        hit = np.zeros(len(cells), bool)
        hit[ci] = True
        self.blocked = {(int(a), int(b)) for a, b in zip(ix[hit], iy[hit], strict=True)}
        self.ix, self.iy, self.cells, self.overlap = ix[hit], iy[hit], cells[hit], np.minimum(overlap[hit], 1.0)

    def _touched_cells(self):
        s = self.s
        keys = set()
        for x0, y0, x1, y1 in shapely.bounds(self.parts) if len(self.parts) else []:
            # a small tolerance: cells that only touch a polygon are tested too (and count as intersecting)
            for a in range(math.floor((x0 - 1e-3) / s), math.floor((x1 + 1e-3) / s) + 1):
                for b in range(math.floor((y0 - 1e-3) / s), math.floor((y1 + 1e-3) / s) + 1):
                    keys.add((a, b))
        keys = sorted(keys)
        return (np.array([k[0] for k in keys], dtype=np.int64), np.array([k[1] for k in keys], dtype=np.int64))

    def owns(self, ix, iy) -> np.ndarray:
        """Whether cells' centres lie in this zone's strip (and the region)."""
        x = (np.asarray(ix, dtype=np.float64) + 0.5) * self.s
        y = (np.asarray(iy, dtype=np.float64) + 0.5) * self.s
        return contains_xy(self.strip_utm, x, y)

    def best_polygon(self, cell) -> tuple[int, int]:
        """(row in self.polys of the polygon with the largest share of the cell, number of polygons in it)."""
        idx = np.sort(self.tree.query(cell, predicate="intersects"))
        areas = shapely.area(shapely.intersection(self.geoms[idx], cell))
        return int(idx[np.argmax(areas)]), int((areas > 0).sum())


def _to(geom, src: int, dst: int):
    return shapely.transform(geom, _transformer(src, dst).transform, interleaved=False)


def _nearest_negative(z: _Zone, ix: int, iy: int, used: set) -> tuple[int, int] | None:
    """The free cell nearest (centre to centre) to cell (ix, iy): searched ring by ring; once one is found
    at Chebyshev ring r, rings up to r*sqrt(2) may still hold a nearer one. Ties: smaller dy, then dx."""
    found_at = None
    best = None
    r = 1
    while r <= MAX_RING and (found_at is None or r <= math.ceil(found_at * math.sqrt(2))):
        offs = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dx), abs(dy)) == r]
        cand = [(ix + dx, iy + dy) for dx, dy in offs
                if (ix + dx, iy + dy) not in z.blocked and (z.zone, z.hemi, ix + dx, iy + dy) not in used]
        if cand:
            own = z.owns([c[0] for c in cand], [c[1] for c in cand])
            for (a, b), ok in zip(cand, own, strict=True):
                if ok:
                    key = ((a - ix) ** 2 + (b - iy) ** 2, b - iy, a - ix)
                    if best is None or key < best[0]:
                        best = (key, (a, b))
            if best is not None and found_at is None:
                found_at = r
        r += 1
    return None if best is None else best[1]


def _cell_row(z: _Zone, ix: int, iy: int, zoom: int) -> dict:
    s = z.s
    x0, y0, x1, y1 = ix * s, iy * s, (ix + 1) * s, (iy + 1) * s
    lon, lat = _transformer(z.epsg, 4326).transform([(x0 + x1) / 2], [(y0 + y1) / 2])
    geom = _to(box(x0, y0, x1, y1), z.epsg, 4326)
    bx = geom.bounds
    return {"cell_id": f"{z.zone:02d}{z.hemi}_{ix}_{iy}", "zoom": zoom, "cell_m": s,
            "zone": f"{z.zone:02d}{z.hemi}", "epsg": z.epsg, "ix": ix, "iy": iy,
            "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1,
            "lon": round(float(lon[0]), 7), "lat": round(float(lat[0]), 7),
            "lon_min": round(bx[0], 7), "lat_min": round(bx[1], 7), "lon_max": round(bx[2], 7),
            "lat_max": round(bx[3], 7), "geometry": geom}


def build_grid(polys: gpd.GeoDataFrame, zoom: int, cell_m: float | None = None, *,
               min_overlap: float = MIN_OVERLAP, region_lonlat=None) -> gpd.GeoDataFrame:
    """The positive cells of ``polys`` (EPSG:4326, from :func:`read_polygons`) and one negative each, as a
    GeoDataFrame in EPSG:4326 with the columns of :data:`BASE_COLUMNS`, the polygons' attribute columns
    (those clashing with ours get a ``polygon_`` prefix) and the cell square as geometry."""
    s = cell_size(zoom, cell_m)
    if not 0 < min_overlap <= 1:
        raise ConfigError(f"min overlap must be in (0, 1] (got {min_overlap})")
    meta_cols = [c for c in polys.columns if c not in ("geometry", "polygon_index")]
    rename = {c: (f"polygon_{c}" if c in BASE_COLUMNS or c == "geometry" else c) for c in meta_cols}
    positives = []
    zones = {}
    for zone, hemi in _zones_of(polys):
        z = _Zone(zone, hemi, polys, s, region_lonlat)
        zones[(zone, hemi)] = z
        keep = (z.overlap >= min_overlap) & z.owns(z.ix, z.iy)
        for k in np.flatnonzero(keep):
            row = _cell_row(z, int(z.ix[k]), int(z.iy[k]), zoom)
            best, n = z.best_polygon(z.cells[k])
            src = z.polys.iloc[best]
            row.update(label="positive", overlap=round(float(z.overlap[k]), 6), n_polygons=n,
                       polygon_index=int(src["polygon_index"]), **{rename[c]: src[c] for c in meta_cols})
            row["overlap_pct"] = round(100 * row["overlap"], 4)
            row["name"] = cell_name(row["lat"], row["lon"], zoom, float(z.overlap[k]))
            positives.append(row)
    positives.sort(key=lambda r: (-r["overlap"], r["name"], r["cell_id"]))
    used: set = set()
    rows = []
    missing = 0
    for pos in positives:
        z = zones[(int(pos["zone"][:2]), pos["zone"][2])]
        pos["pair_id"] = pos["cell_id"]
        rows.append(pos)
        found = _nearest_negative(z, pos["ix"], pos["iy"], used)
        if found is None:
            missing += 1
            pos.update(pair="", pair_distance_m=np.nan)
            continue
        used.add((z.zone, z.hemi, *found))
        neg = _cell_row(z, found[0], found[1], zoom)
        dist = round(math.hypot(found[0] - pos["ix"], found[1] - pos["iy"]) * s, 3)
        neg.update(label="negative", overlap=0.0, overlap_pct=0.0, n_polygons=0, polygon_index=-1,
                   pair=pos["name"], pair_id=pos["cell_id"], pair_distance_m=dist,
                   name=cell_name(neg["lat"], neg["lon"], zoom, None),
                   **{rename[c]: pos[rename[c]] for c in meta_cols})
        pos.update(pair=neg["name"], pair_distance_m=dist)
        rows.append(neg)
    if missing:
        log.warning("%d positives have no free negative within %d cells", missing, MAX_RING)
    columns = BASE_COLUMNS + [rename[c] for c in meta_cols]
    if not rows:
        return gpd.GeoDataFrame(columns=[*columns, "geometry"], geometry="geometry", crs=4326)
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)[[*columns, "geometry"]]
    dup = gdf["name"].duplicated(keep=False)
    if dup.any():
        log.warning("%d cells share a name with another (the name's centroid has 0.001 degree precision; "
                    "cell_id is unique)", int(dup.sum()))
    return gdf.reset_index(drop=True)


def write_grid(gdf: gpd.GeoDataFrame, out_gpkg) -> tuple:
    """``OUT.gpkg`` (layer ``cells``) and ``OUT.csv`` (same stem, no geometry), both written atomically."""
    from pathlib import Path

    out_gpkg = Path(out_gpkg)
    if out_gpkg.suffix.lower() != ".gpkg":
        raise InputDataError(f"{out_gpkg}: --out must end in .gpkg (the CSV is written beside it)")
    out_csv = out_gpkg.with_suffix(".csv")
    write_vector(gdf, out_gpkg, layer="cells")
    with atomic_output(out_csv) as tmp:
        pd.DataFrame(gdf.drop(columns="geometry")).to_csv(tmp, index=False)
    return out_gpkg, out_csv


def read_grid(path) -> gpd.GeoDataFrame:
    """A grid written by :func:`write_grid` (the .gpkg, or the .csv beside it: geometry rebuilt from the
    UTM bounds)."""
    from pathlib import Path

    from minescan.vector_io import read_vector

    path = Path(path)
    if path.suffix.lower() == ".csv":
        if not path.exists():
            raise InputDataError(f"{path}: grid table not found")
        df = pd.read_csv(path, dtype={"zone": str, "name": str, "pair": str}, keep_default_na=False,
                         na_values={"pair_distance_m": [""]})
        geoms = [_to(box(r.x_min, r.y_min, r.x_max, r.y_max), int(r.epsg), 4326) for r in df.itertuples()]
        gdf = gpd.GeoDataFrame(df, geometry=geoms, crs=4326)
    else:
        gdf = read_vector(path, what="grid file")
    missing = [c for c in ("name", "label", "epsg", "x_min", "y_min", "x_max", "y_max", "pair_id")
               if c not in gdf.columns]
    if missing:
        raise InputDataError(f"{path}: not a minescan grid (column(s) {', '.join(missing)} missing)")
    gdf["pair"] = gdf["pair"].fillna("").astype(str) if "pair" in gdf.columns else ""
    return gdf
