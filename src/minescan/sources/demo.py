"""A deterministic SIMULATED Sentinel-2 scene for the demo and the tests. It is not real imagery.

The generator paints a 12-band uint16 reflectance x 10000 composite (B1-B9, B8A, B11, B12; nodata 0) with
land covers whose spectra follow published Sentinel-2 signatures in shape (vegetation red edge and NIR
plateau, water absorbing in NIR/SWIR, bare soil rising towards SWIR): forest, cropland fields, bare soil,
roads, towns, a meandering river, clouds and a cloud-masked no-data gap. Into it go

- high-impact mines: an open pit of concentric benches, waste dumps and a tailings dam (a turbid pond held
  by a bright straight wall);
- low-impact mines: sand, gravel and clay pits, often with a small pond;
- the confusers the paper names: irrigation reservoirs (clear water behind a dam wall, among fields) and
  river banks (bright sand bars along the river).

Everything is written with its ground truth (site polygons with class, kind and impact) so the demo can
report recall and precision, and so training points can be drawn from a second, independent scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio import features
from scipy import ndimage
from shapely.affinity import rotate
from shapely.geometry import LineString, Point, Polygon, box
from shapely.ops import unary_union

from minescan import SENTINEL2_BANDS
from minescan.grid import Tile, to_crs
from minescan.io_utils import atomic_output
from minescan.periods import PERIOD_RE, quarter_index
from minescan.vector_io import write_vector

# Reflectance spectra (B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12).
SPECTRA = {
    "forest": [0.025, 0.030, 0.055, 0.030, 0.085, 0.250, 0.300, 0.330, 0.350, 0.110, 0.150, 0.070],
    "cropland": [0.045, 0.050, 0.085, 0.070, 0.130, 0.250, 0.280, 0.300, 0.310, 0.100, 0.220, 0.130],
    "soil": [0.075, 0.090, 0.130, 0.180, 0.210, 0.230, 0.250, 0.270, 0.280, 0.100, 0.330, 0.280],
    "water": [0.060, 0.060, 0.060, 0.040, 0.030, 0.020, 0.018, 0.016, 0.014, 0.008, 0.008, 0.005],
    "turbid": [0.080, 0.095, 0.125, 0.130, 0.115, 0.070, 0.060, 0.055, 0.045, 0.020, 0.020, 0.012],
    "town": [0.090, 0.100, 0.120, 0.140, 0.160, 0.180, 0.190, 0.200, 0.210, 0.080, 0.250, 0.220],
    "road": [0.080, 0.095, 0.120, 0.150, 0.170, 0.190, 0.200, 0.210, 0.215, 0.085, 0.270, 0.240],
    "cloud": [0.450, 0.460, 0.470, 0.480, 0.490, 0.500, 0.500, 0.500, 0.500, 0.300, 0.400, 0.300],
    "pit_rock": [0.090, 0.105, 0.140, 0.210, 0.240, 0.250, 0.260, 0.270, 0.275, 0.100, 0.360, 0.320],
    "pit_dark": [0.050, 0.060, 0.075, 0.095, 0.110, 0.120, 0.125, 0.130, 0.135, 0.060, 0.170, 0.160],
    "tailings": [0.140, 0.165, 0.200, 0.225, 0.240, 0.250, 0.260, 0.270, 0.270, 0.105, 0.330, 0.280],
    "sand": [0.120, 0.140, 0.185, 0.230, 0.260, 0.275, 0.285, 0.300, 0.305, 0.110, 0.400, 0.330],
    "clay": [0.085, 0.100, 0.135, 0.200, 0.230, 0.240, 0.250, 0.255, 0.260, 0.095, 0.340, 0.300],
    "gravel": [0.100, 0.115, 0.145, 0.175, 0.195, 0.210, 0.220, 0.230, 0.235, 0.090, 0.290, 0.250],
}

MINE_KINDS = {"open_pit_tailings": "high", "sand_pit": "low", "gravel_pit": "low", "clay_pit": "low"}
CONFUSER_KINDS = ("reservoir", "river_bank")


@dataclass
class Scene:
    data: np.ndarray  # (12, H, W) uint16
    transform: Affine
    epsg: int
    truth: gpd.GeoDataFrame  # in EPSG:4326


class _Painter:
    def __init__(self, shape, transform, rng):
        self.shape = shape
        self.transform = transform
        self.rng = rng
        self.refl = np.empty((len(SENTINEL2_BANDS),) + shape, dtype=np.float32)
        self.refl[:] = np.asarray(SPECTRA["forest"], dtype=np.float32)[:, None, None]

    def _window(self, geom, pad: int):
        """Pixel window (row0, row1, col0, col1) around a geometry, clipped to the scene."""
        inv = ~self.transform
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = inv @ (x0, y1)
        c1, r1 = inv @ (x1, y0)
        h, w = self.shape
        r0, c0 = max(0, int(r0) - pad), max(0, int(c0) - pad)
        r1, c1 = min(h, int(r1) + 2 + pad), min(w, int(c1) + 2 + pad)
        return r0, r1, c0, c1

    def mask(self, geom) -> np.ndarray:
        out = np.zeros(self.shape, dtype=bool)
        if geom.is_empty:
            return out
        r0, r1, c0, c1 = self._window(geom, 0)
        if r1 > r0 and c1 > c0:
            t = self.transform @ Affine.translation(c0, r0)
            out[r0:r1, c0:c1] = features.rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=t,
                                                   dtype="uint8").astype(bool)
        return out

    def paint(self, geom, cover: str, alpha: float = 1.0, soft: float = 0.0):
        if geom.is_empty:
            return
        pad = int(4 * soft) + 1
        r0, r1, c0, c1 = self._window(geom, pad)
        if r1 <= r0 or c1 <= c0:
            return
        t = self.transform @ Affine.translation(c0, r0)
        m = features.rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=t, dtype="uint8")
        m = m.astype(np.float32)
        if soft > 0:
            m = ndimage.gaussian_filter(m, soft)
        m *= alpha
        spec = np.asarray(SPECTRA[cover], dtype=np.float32)[:, None, None]
        sub = self.refl[:, r0:r1, c0:c1]
        sub += (spec - sub) * m[None]


def _blob(rng, cx, cy, radius, n=14, irregular=0.25) -> Polygon:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * (1 + irregular * rng.uniform(-1, 1, n))
    return Polygon(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles), strict=True)).buffer(0)


def _rect(cx, cy, w, h, angle):
    return rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle, origin=(cx, cy))


def _open_pit_tailings(p: _Painter, rng, cx, cy):
    r = rng.uniform(250, 420)
    pit = Point(cx, cy).buffer(r)
    for i, frac in enumerate(np.linspace(1.0, 0.2, 5)):
        p.paint(Point(cx, cy).buffer(r * frac), "pit_rock" if i % 2 == 0 else "pit_dark")
    ang = rng.uniform(0, 2 * np.pi)
    d = r + rng.uniform(250, 400)
    tx, ty = cx + d * math.cos(ang), cy + d * math.sin(ang)
    pond = _blob(rng, tx, ty, rng.uniform(180, 300), irregular=0.2)
    p.paint(pond.buffer(60), "tailings")
    p.paint(pond, "turbid")
    # the dam wall: a straight bright band on the downstream side of the pond
    wall = LineString([(tx - 260, ty - 230), (tx + 260, ty - 230)]).buffer(35)
    wall = rotate(wall, math.degrees(ang), origin=(tx, ty))
    p.paint(wall, "sand")
    dumps = [_blob(rng, cx + rng.uniform(-1, 1) * r * 1.4, cy + rng.uniform(-1, 1) * r * 1.4,
                   rng.uniform(70, 140)) for _ in range(3)]
    for dump in dumps:
        p.paint(dump, "tailings")
    road = LineString([(cx, cy), (tx, ty)]).buffer(12)
    p.paint(road, "road")
    return unary_union([pit, pond.buffer(60), wall, road, *dumps]).convex_hull


def _small_pit(p: _Painter, rng, cx, cy, kind):
    cover = {"sand_pit": "sand", "gravel_pit": "gravel", "clay_pit": "clay"}[kind]
    pit = _blob(rng, cx, cy, rng.uniform(110, 200), irregular=0.35)
    p.paint(pit.buffer(40), "soil", alpha=0.8, soft=1.0)
    p.paint(pit, cover)
    geom = pit.buffer(40)
    if rng.random() < 0.6:
        pond = _blob(rng, cx + rng.uniform(-40, 40), cy + rng.uniform(-40, 40), rng.uniform(35, 70))
        p.paint(pond, "turbid")
    return geom


def _reservoir(p: _Painter, rng, cx, cy):
    fields = _rect(cx, cy, 1400, 1100, rng.uniform(0, 90))
    p.paint(fields, "cropland")
    water = _blob(rng, cx, cy, rng.uniform(160, 260), irregular=0.3)
    p.paint(water, "water")
    wall = LineString([(cx - 220, cy - 200), (cx + 220, cy - 200)]).buffer(20)
    p.paint(wall, "soil")
    return unary_union([water, wall])


def _river(p: _Painter, rng, bounds):
    x0, y0, x1, y1 = bounds
    ys = np.linspace(y0 - 500, y1 + 500, 60)
    phase = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(600, 1200)
    xc = rng.uniform(x0 + 0.3 * (x1 - x0), x0 + 0.7 * (x1 - x0))
    xs = xc + amp * np.sin(ys / rng.uniform(1500, 2500) + phase)
    line = LineString(zip(xs, ys, strict=True))
    p.paint(line.buffer(70), "water")
    return line


def _river_bank(p: _Painter, rng, river: LineString):
    pos = river.interpolate(rng.uniform(0.1, 0.9), normalized=True)
    bar = _blob(rng, pos.x + rng.choice([-1, 1]) * 85, pos.y, rng.uniform(90, 160), irregular=0.4)
    return bar.difference(river.buffer(55))


# ---- periods: the demo world evolves quarter by quarter -------------------------------------------------
DEMO_FIRST_PERIOD = "2026Q1"  # the scene as drawn from the seed; earlier periods look the same
MINE_COVER = {"open_pit_tailings": "pit_rock", "sand_pit": "sand", "gravel_pit": "gravel", "clay_pit": "clay"}


def demo_steps(period: str | None) -> int:
    """Quarters from DEMO_FIRST_PERIOD to the end of ``period`` (a year counts to its 4th quarter); 0 for
    that period, any earlier one, or none."""
    if not period or not PERIOD_RE.match(period):
        return 0
    return max(0, quarter_index(period) - quarter_index(DEMO_FIRST_PERIOD))


def _step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x5EA50, step]))


def _grow_site(p: _Painter, rng, row: dict, others, river: LineString) -> bool:
    """Extend a mine by a new pit beside it (same cover), away from other sites and the river."""
    geom = row["geometry"]
    c = geom.centroid
    r_eq = math.sqrt(geom.area / math.pi)
    for _ in range(8):
        ang = rng.uniform(0, 2 * np.pi)
        ex, ey = c.x + 0.9 * r_eq * math.cos(ang), c.y + 0.9 * r_eq * math.sin(ang)
        ext = _blob(rng, ex, ey, r_eq * rng.uniform(0.55, 0.8), irregular=0.25)
        if ext.distance(river) < 400 or (not others.is_empty and ext.distance(others) < 400):
            continue
        p.paint(ext.buffer(40), "soil", alpha=0.8, soft=1.0)
        p.paint(ext, MINE_COVER[row["kind"]])
        if row["kind"] == "open_pit_tailings":
            p.paint(ext.buffer(-0.35 * r_eq), "pit_dark")
        row["geometry"] = unary_union([geom, ext.buffer(40)])
        return True
    return False


def evolve_sites(p: _Painter, rows: list[dict], placed: list[Point], river: LineString, bounds, seed: int,
                 steps: int) -> list[dict]:
    """Paint ``steps`` quarters of change into the scene and return the sites of the last one.

    Each quarter (its own random stream from seed and quarter number, so quarter k always holds the events
    of quarters 1..k): about 6 % of the mines (at least one) open at free places, 10 % grow by a new pit
    beside the old one, and 5 % are abandoned and grow back to forest. Confusers never change.
    """
    x0, y0, x1, y1 = bounds
    rows = [dict(r) for r in rows]
    for step in range(1, steps + 1):
        rng = _step_rng(seed, step)
        mines = sorted((r for r in rows if r["class"] == "mine"), key=lambda r: r["site"])
        n = len(mines)
        n_remove = max(1, round(0.05 * n)) if n >= 4 else 0
        n_grow = max(1, round(0.10 * n)) if n >= 2 else 0
        n_add = max(1, round(0.06 * n))
        order = rng.permutation(n)
        removed = [mines[i] for i in order[:n_remove]]
        grown = [mines[i] for i in order[n_remove:n_remove + n_grow]]
        for r in removed:
            p.paint(r["geometry"].buffer(60), "forest", soft=1.5)
            rows.remove(r)
        for r in grown:
            others = unary_union([o["geometry"] for o in rows if o is not r])
            _grow_site(p, rng, r, others, river)
        added, attempts = 0, 0
        while added < n_add and attempts < 200:
            attempts += 1
            kind = ("open_pit_tailings", "sand_pit", "gravel_pit", "clay_pit")[rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])]
            cx, cy = rng.uniform(x0 + 1500, x1 - 1500), rng.uniform(y0 + 1500, y1 - 1500)
            centre = Point(cx, cy)
            if any(centre.distance(q) < 2500 for q in placed) or centre.distance(river) < 1200:
                continue
            geom = _open_pit_tailings(p, rng, cx, cy) if kind == "open_pit_tailings" else _small_pit(p, rng, cx, cy, kind)
            placed.append(centre)
            rows.append({"site": f"demo-q{step:02d}-{added}", "class": "mine", "kind": kind,
                         "impact": MINE_KINDS[kind], "geometry": geom})
            added += 1
    return rows


def simulate_scene(bounds: tuple[float, float, float, float], epsg: int, resolution_m: float, seed: int,
                   sites_per_km2: float, period: str = "") -> Scene:
    """Paint a scene over UTM ``bounds`` (multiples of the resolution) as it looks in ``period``.

    The scene of DEMO_FIRST_PERIOD (and of any earlier or empty period) depends on the seed only; each
    later quarter adds its mine openings, extensions and closures (:func:`evolve_sites`), deterministically
    from seed and period. Clouds, noise and the no-data gap are the same in every period.
    """
    x0, y0, x1, y1 = bounds
    width = int(round((x1 - x0) / resolution_m))
    height = int(round((y1 - y0) / resolution_m))
    transform = Affine(resolution_m, 0, x0, 0, -resolution_m, y1)
    rng = np.random.default_rng(seed)
    p = _Painter((height, width), transform, rng)

    # Landscape: smooth variation of the forest, clearings of cropland and soil, a river, towns and roads.
    smooth = ndimage.zoom(rng.normal(0, 1, (max(2, height // 200), max(2, width // 200))),
                          (height / max(2, height // 200), width / max(2, width // 200)), order=1)[:height, :width]
    p.refl *= (1 + 0.06 * smooth.astype(np.float32))[None]
    area_km2 = (x1 - x0) * (y1 - y0) / 1e6
    for _ in range(int(area_km2 / 12)):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        p.paint(_rect(cx, cy, rng.uniform(300, 900), rng.uniform(300, 900), rng.uniform(0, 90)),
                "cropland" if rng.random() < 0.75 else "soil")
    river = _river(p, rng, bounds)
    for _ in range(max(1, int(area_km2 / 150))):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        town = unary_union([_rect(cx + rng.normal(0, 250), cy + rng.normal(0, 250), rng.uniform(40, 120),
                                  rng.uniform(40, 120), 0) for _ in range(40)])
        p.paint(town.buffer(30), "soil", alpha=0.5)
        p.paint(town, "town")
    for _ in range(max(1, int(area_km2 / 60))):
        a = (rng.uniform(x0, x1), rng.uniform(y0, y1))
        b = (rng.uniform(x0, x1), rng.uniform(y0, y1))
        p.paint(LineString([a, b]).buffer(8), "road", alpha=0.8)

    # Sites, kept apart from each other and from the scene edge.
    n_sites = int(round(sites_per_km2 * area_km2))
    kinds = list(MINE_KINDS) + list(CONFUSER_KINDS)
    weights = np.array([0.3, 0.15, 0.1, 0.1, 0.2, 0.15])
    placed: list[Point] = []
    rows = []
    attempts = 0
    while len(rows) < n_sites and attempts < n_sites * 50:
        attempts += 1
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        if kind == "river_bank":
            geom = _river_bank(p, rng, river)
            centre = geom.centroid
            if geom.is_empty or any(centre.distance(q) < 2500 for q in placed):
                continue
            p.paint(geom, "sand")
        else:
            cx, cy = rng.uniform(x0 + 1500, x1 - 1500), rng.uniform(y0 + 1500, y1 - 1500)
            centre = Point(cx, cy)
            if any(centre.distance(q) < 2500 for q in placed) or centre.distance(river) < 1200:
                continue
            if kind == "open_pit_tailings":
                geom = _open_pit_tailings(p, rng, cx, cy)
            elif kind == "reservoir":
                geom = _reservoir(p, rng, cx, cy)
            else:
                geom = _small_pit(p, rng, cx, cy, kind)
        placed.append(centre)
        is_mine = kind in MINE_KINDS
        rows.append({"site": f"demo-{len(rows):03d}", "class": "mine" if is_mine else "confuser", "kind": kind,
                     "impact": MINE_KINDS.get(kind, "no_ore"), "geometry": geom})

    # Later periods: mines opened, grown and abandoned since DEMO_FIRST_PERIOD (own random streams, so the
    # first period's scene is exactly the one drawn above).
    rows = evolve_sites(p, rows, placed, river, bounds, seed, demo_steps(period))

    # Atmosphere: a few soft clouds, sensor noise, and one cloud-masked no-data gap.
    for _ in range(max(1, int(area_km2 / 80))):
        cloud = _blob(rng, rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(300, 700), irregular=0.4)
        p.paint(cloud, "cloud", alpha=rng.uniform(0.3, 0.7), soft=8)
    p.refl *= (1 + rng.normal(0, 0.02, p.refl.shape[1:]).astype(np.float32))[None]
    p.refl += rng.normal(0, 0.003, p.refl.shape).astype(np.float32)
    data = np.clip(np.round(p.refl * 10000), 1, 65535).astype(np.uint16)
    gx, gy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    gap = p.mask(_blob(rng, gx, gy, rng.uniform(200, 400)))
    data[:, gap] = 0

    truth = gpd.GeoDataFrame(rows or None, columns=["site", "class", "kind", "impact", "geometry"],
                             geometry="geometry", crs=f"EPSG:{epsg}")
    truth["period"] = period
    return Scene(data, transform, epsg, truth.to_crs(4326))


def scene_bounds_for_tiles(tiles: list[Tile], margin_px: int) -> tuple[tuple[float, float, float, float], int]:
    """UTM bounds covering every tile's GeoTIFF (core + halo) plus a margin; all tiles must share a zone."""
    epsgs = {t.id.epsg for t in tiles}
    if len(epsgs) != 1:
        raise ValueError(f"the demo scene supports one UTM zone; the region spans EPSG {sorted(epsgs)}")
    res = tiles[0].grid.resolution_m
    pad = (tiles[0].grid.halo_px + margin_px) * res
    xs0, ys0, xs1, ys1 = zip(*(t.core_bounds for t in tiles), strict=True)
    return (min(xs0) - pad, min(ys0) - pad, max(xs1) + pad, max(ys1) + pad), epsgs.pop()


def write_scene(scene: Scene, tif_path, truth_path) -> None:
    """Write the scene as a tiled GeoTIFF with band descriptions, and its truth as GeoPackage."""
    profile = {
        "driver": "GTiff", "dtype": "uint16", "count": scene.data.shape[0], "height": scene.data.shape[1],
        "width": scene.data.shape[2], "crs": f"EPSG:{scene.epsg}", "transform": scene.transform, "nodata": 0,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "predictor": 2,
    }
    with atomic_output(tif_path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(scene.data)
            dst.descriptions = SENTINEL2_BANDS
            dst.update_tags(SIMULATED="yes: minescan demo scene, not real imagery")
    write_vector(scene.truth, truth_path)


def training_points(truth: gpd.GeoDataFrame, bounds_lonlat, n_background: int, seed: int,
                    per_site: int = 4, jitter_m: float = 120.0) -> pd.DataFrame:
    """Labelled points from a scene's truth: several jittered points per site plus random background.

    Columns lon, lat, class (1 mine, 0 background), impact (high/low/no_ore). Confusers and random
    background points are class 0 with impact 'no_ore'.
    """
    rng = np.random.default_rng(seed)
    utm = truth.estimate_utm_crs() if len(truth) else "EPSG:3857"
    t_utm = truth.to_crs(utm)
    rows = []
    for _, site in t_utm.iterrows():
        c = site.geometry.centroid
        for _ in range(per_site if site["class"] == "mine" else max(1, per_site // 2)):
            x, y = c.x + rng.normal(0, jitter_m), c.y + rng.normal(0, jitter_m)
            rows.append((x, y, 1 if site["class"] == "mine" else 0, site["impact"]))
    region = to_crs(bounds_lonlat, 4326, int(t_utm.crs.to_epsg())) if len(truth) else None
    keep_out = unary_union(list(t_utm.geometry.buffer(1500))) if len(truth) else Polygon()
    bx0, by0, bx1, by1 = region.bounds
    tries = 0
    added = 0
    while added < n_background and tries < n_background * 100:
        tries += 1
        x, y = rng.uniform(bx0 + 1200, bx1 - 1200), rng.uniform(by0 + 1200, by1 - 1200)
        if keep_out.contains(Point(x, y)):
            continue
        rows.append((x, y, 0, "no_ore"))
        added += 1
    pts = gpd.GeoDataFrame(rows, columns=["x", "y", "class", "impact"],
                           geometry=gpd.points_from_xy([r[0] for r in rows], [r[1] for r in rows]), crs=utm)
    pts = pts.to_crs(4326)
    return pd.DataFrame({"lon": pts.geometry.x.round(7), "lat": pts.geometry.y.round(7),
                         "class": pts["class"].astype(int), "impact": pts["impact"]})
