"""SIMULATED reference layers for the demo scene: a mining-concession registry, a dam registry, an
indigenous territory, a conservation unit and two municipalities. None of it is real.

The demo scene is simulated, so no real registry or protected-area map matches it; these layers are drawn
from the scene's own ground truth so that the demo shows every outcome the layers stage can give: mines with
a concession (registered) and without (the leads), detected reservoirs explained by the dam registry, sites
inside and outside protected land, and sites in each municipality. Concessions and municipalities are
written in SIRGAS 2000 (EPSG:4674), the CRS of Brazil's official layers, so the demo also exercises the
reprojection of reference data.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
from shapely.geometry import Polygon, box

from minescan.grid import to_crs, utm_epsg, zone_of
from minescan.vector_io import read_region, read_vector, write_vector

SIRGAS2000 = 4674
LABEL = " (SIMULATED)"


def _wavy_west_part(bounds, frac: float, amplitude: float, waves: float) -> Polygon:
    """Everything west of a meandering north-south line at ``frac`` of the width (with a wide margin)."""
    x0, y0, x1, y1 = bounds
    w, h = x1 - x0, y1 - y0
    ys = np.linspace(y0 - 0.3 * h, y1 + 0.3 * h, 60)
    xs = x0 + frac * w + amplitude * w * np.sin(2 * math.pi * waves * (ys - y0) / h)
    edge = list(zip(xs, ys, strict=True))
    return Polygon([(x0 - 0.5 * w, ys[0])] + edge + [(x0 - 0.5 * w, ys[-1])])


def simulate_reference_layers(truth: gpd.GeoDataFrame, region_lonlat, seed: int = 7) -> dict[str, gpd.GeoDataFrame]:
    """Five small layers (name -> GeoDataFrame) drawn deterministically from the demo truth and region."""
    c = region_lonlat.centroid
    epsg = utm_epsg(*zone_of(c.x, c.y))
    region = to_crs(region_lonlat, 4326, epsg)
    x0, y0, x1, y1 = region.bounds
    w, h = x1 - x0, y1 - y0
    truth = truth.to_crs(epsg).sort_values("site").reset_index(drop=True)
    rng = np.random.default_rng(seed)

    mines = truth[truth["class"] == "mine"].reset_index(drop=True)
    rows = []
    for i, m in mines.iterrows():
        if i % 2:  # every other mine has no concession: the unregistered leads of the demo
            continue
        rows.append({"concession": f"DEMO-{800100 + i}", "holder": f"Mineradora Simulada {i // 2 + 1} Ltda{LABEL}",
                     "substance": "gold" if m["impact"] == "high" else "sand and gravel",
                     "geometry": m.geometry.buffer(120).envelope})
    for j in range(3):  # concessions where nothing is mined (yet)
        cx, cy = x0 + rng.uniform(0.15, 0.85) * w, y0 + rng.uniform(0.15, 0.85) * h
        side = rng.uniform(600, 1500)
        rows.append({"concession": f"DEMO-{800900 + j}", "holder": f"Reserva Mineral Simulada {j + 1}{LABEL}",
                     "substance": "gold", "geometry": box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)})
    concessions = gpd.GeoDataFrame(rows, geometry="geometry", crs=epsg).to_crs(SIRGAS2000)

    dams_src = truth[truth["kind"] == "reservoir"].reset_index(drop=True)
    dams = gpd.GeoDataFrame({"dam_id": [f"BARR-{i + 1:03d}" for i in range(len(dams_src))],
                             "name": [f"Barragem Simulada {i + 1}{LABEL}" for i in range(len(dams_src))]},
                            geometry=list(dams_src.geometry.centroid), crs=epsg).to_crs(4326)

    indigenous = gpd.GeoDataFrame({"name": [f"Terra Indígena Simulada{LABEL}"], "country": ["Brazil"]},
                                  geometry=[_wavy_west_part(region.bounds, 0.38, 0.05, 1.5)], crs=epsg).to_crs(4326)
    conservation = gpd.GeoDataFrame(
        {"name": [f"Floresta Nacional Simulada{LABEL}"]},
        geometry=[box(x0 + 0.62 * w, y0 + 0.55 * h, x1 + 0.4 * w, y1 + 0.4 * h)], crs=epsg).to_crs(4326)

    big = box(x0 - 0.5 * w, y0 - 0.5 * h, x1 + 0.5 * w, y1 + 0.5 * h)
    cy = (y0 + y1) / 2
    north = Polygon([(x0 - 0.5 * w, cy + 0.12 * h), (x1 + 0.5 * w, cy - 0.12 * h), (x1 + 0.5 * w, y1 + 0.5 * h),
                     (x0 - 0.5 * w, y1 + 0.5 * h)])
    admin = gpd.GeoDataFrame({"name": [f"Município Norte{LABEL}", f"Município Sul{LABEL}"],
                              "geocode": ["9900001", "9900002"]},
                             geometry=[north, big.difference(north)], crs=epsg).to_crs(SIRGAS2000)
    return {"concessions": concessions, "dams": dams, "indigenous": indigenous, "conservation": conservation,
            "admin": admin}


def write_demo_layers(truth_path, region_path, outputs: dict, region_layer: str | None = None, seed: int = 7) -> None:
    """Write the simulated layers to ``outputs`` (name -> path; names as simulate_reference_layers)."""
    layers = simulate_reference_layers(read_vector(truth_path, what="demo truth"),
                                       read_region(region_path, region_layer), seed)
    for name, path in outputs.items():
        write_vector(layers[name], path)
