"""Report plots and the summary table: written from a merged scan, valid PNGs, same bytes on rerun."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import grid_tile
from PIL import Image
from shapely.geometry import box

from minescan.grid import _transformer, cell_centres_utm, cells_in_core, to_crs
from minescan.layers.plots import PLOTS, TABLE, make_plots, summary_table
from minescan.scan.merge import merge_scan
from minescan.scan.spatial_prior import SpatialPrior


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    tile = grid_tile()
    kx, ky = cells_in_core(tile.quadrant_core_px("NW"))
    x0, y0 = kx.start + 1, ky.start + 1
    cells = [(x0, y0), (x0 + 1, y0), (x0 + 8, y0 + 8), (x0 + 8, y0)]
    e, n = cell_centres_utm(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]), 10.0)
    lon, lat = _transformer(tile.id.epsg, 4326).transform(e, n)
    impacts = ["high", "low", "high", "no_ore"]
    df = pd.DataFrame({"cell_x": [c[0] for c in cells], "cell_y": [c[1] for c in cells], "zone": "21S",
                       "tile": tile.name, "quadrant": "NW", "easting": e, "northing": n, "lon": lon, "lat": lat,
                       "probability": [0.95, 0.7, 0.8, 0.65], "p_high": 0.1, "p_low": 0.1, "p_no_ore": 0.1,
                       "impact": impacts})
    (tmp / "q").mkdir()
    df.to_csv(tmp / "q" / "classified.csv", index=False)
    region = to_crs(box(*tile.core_bounds), tile.id.epsg, 4326)
    merge_scan([tmp / "q" / "classified.csv"], tmp / "scan", region_name="t", period="2026Q1", region_lonlat=region,
               tiles=[tile.name], quadrants=["x"], models={"discovery": {"name": "d", "version": "abc"}},
               thresholds={"discovery": 0.6}, resolution_m=10.0, prior=SpatialPrior(0.9, k=1, km=1.0))
    sites = gpd.read_file(tmp / "scan" / "sites.gpkg")
    sites["registered"] = ["yes"] * (len(sites) - 1) + ["no"]
    sites.to_file(tmp / "scan" / "sites_annotated.gpkg")
    pd.DataFrame([{"kind": "indigenous", "layer": "ti", "name": "Terra A", "sites": 1, "mined_area_ha": 14.58,
                   "unregistered_sites": 1, "unregistered_area_ha": 14.58, "high_impact_sites": 1}]
                 ).to_csv(tmp / "scan" / "areas.csv", index=False)
    (tmp / "scan" / "layers.json").write_text(json.dumps({"registry": {"checked": True, "registered_sites": 0,
                                                                       "unregistered_sites": 1}}))
    card = {"name": "disc", "classes": ["background", "mine"],
            "metrics": {"confusion_matrix_total": [[9, 1], [2, 8]], "mean_accuracy": 0.85, "mean_f1": 0.84,
                        "folds": [{}, {}]}}
    (tmp / "card.json").write_text(json.dumps(card))
    return tmp


def _make(scan, out):
    s = scan / "scan"
    return make_plots(scan / out, summary_path=s / "summary.json", detections_path=s / "detections.csv",
                      rejected_path=s / "rejected.csv", sites_path=s / "sites_annotated.gpkg",
                      layers_path=s / "layers.json", areas_path=s / "areas.csv",
                      cards={"discovery": scan / "card.json"})


def test_plots_are_pngs_and_deterministic(scan):
    a = _make(scan, "a")
    b = _make(scan, "b")
    assert [p.name for p in a] == [*PLOTS, TABLE]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    for p in a[:4]:
        img = Image.open(p)
        assert img.format == "PNG" and img.width >= 400 and "Software" not in img.info


def test_summary_table_reports_the_prior_and_registry(scan):
    _make(scan, "c")
    t = pd.read_csv(scan / "c" / TABLE).set_index("item")["value"]
    # the two far cells are 1.9 km and 2.2 km from any other: isolated (k=1, 1 km) and below 0.9; the
    # no-ore one among them counts as isolated, not as no ore; the two adjacent cells are one site of 2
    # cells of 270 m x 270 m = 14.58 ha: all computed by merge, none written by the fixture
    assert t["candidate cells"] == "4" and t["removed as isolated (spatial prior)"] == "2"
    assert t["detected cells"] == "2" and t["rejected as no ore"] == "0"
    assert t["sites"] == "1" and float(t["site area, detected cells (ha)"]) == pytest.approx(14.58)
    assert t["sites, high impact"] == "1"  # the site's class: its most severe cell (high beats low)
    # the registry rows are those of layers.json, copied through
    assert t["unregistered sites"] == "1" and t["discovery model"] == "d (abc)"


def test_summary_table_without_prior_or_layers():
    t = summary_table({"region": "r", "spatial_prior": {"enabled": False}}, None).set_index("item")["value"]
    assert t["removed as isolated (spatial prior)"] == "off" and "unregistered sites" not in t.index
