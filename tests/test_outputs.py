"""The merged layers parse back with the right coordinates, areas and bytes."""

import json
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import grid_tile, write_classified
from shapely.geometry import box

from minescan.grid import _transformer, cell_centres_utm, to_crs
from minescan.scan.merge import merge_scan


@pytest.fixture
def merged(tmp_path):
    tile = grid_tile()
    kx0, ky0 = 2232, -345600 // 27 * 1 + 0  # any cells; use the tile's own
    from minescan.grid import cells_in_core

    kx, ky = cells_in_core(tile.quadrant_core_px("NW"))
    kx0, ky0 = kx.start + 2, ky.start + 2
    square = [(kx0, ky0), (kx0 + 1, ky0), (kx0, ky0 + 1), (kx0 + 1, ky0 + 1)]  # 2 x 2 cells: one site
    lone = [(kx0 + 6, ky0 + 6)]  # a second, separate site
    rejected = [(kx0 + 9, ky0 + 1)]
    cells = square + lone + rejected
    path = write_classified(tmp_path, cells, np.linspace(0.7, 0.95, len(cells)).round(6),
                            ["high", "high", "low", "high", "low", "no_ore"], tile)
    region = to_crs(box(*tile.core_bounds), tile.id.epsg, 4326)
    kw = dict(region_name="t", period="2026Q1", region_lonlat=region, tiles=[tile.name], quadrants=["x"],
              models={}, thresholds={"discovery": 0.6}, resolution_m=10.0)
    summary = merge_scan([path], tmp_path / "out", **kw)
    return tmp_path, tile, square, lone, summary, path, kw


def test_csv_parses_back_with_cell_centre_coordinates(merged):
    tmp_path, tile, square, lone, summary, _, _ = merged
    det = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert len(det) == 5 and summary["detections"] == 5 and summary["rejected_no_ore"] == 1
    e, n = cell_centres_utm(det["cell_x"].to_numpy(), det["cell_y"].to_numpy(), 10.0)
    x, y = _transformer(4326, tile.id.epsg).transform(det["lon"].to_numpy(), det["lat"].to_numpy())
    assert np.abs(x - e).max() < 0.05 and np.abs(y - n).max() < 0.05
    assert det["site_id"].nunique() == 2
    rej = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert list(rej["impact"]) == ["no_ore"] and rej["p_no_ore"].iloc[0] == pytest.approx(0.8)


def test_kml_parses_back_styled_by_impact(merged):
    tmp_path, *_ = merged
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    root = ET.parse(tmp_path / "out" / "detections.kml").getroot()
    marks = root.findall(".//k:Placemark", ns)
    det = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert len(marks) == len(det)
    for mark, row in zip(marks, det.itertuples(), strict=True):
        lon, lat, _ = map(float, mark.find(".//k:coordinates", ns).text.split(","))
        assert (lon, lat) == pytest.approx((row.lon, row.lat), abs=1e-7)
        assert mark.find("k:styleUrl", ns).text == f"#{row.impact}"
        assert "probability" in mark.find("k:description", ns).text
    styles = {s.get("id"): s.find(".//k:color", ns).text for s in root.findall(".//k:Style", ns)}
    assert styles["high"] == "ff0000ff" and styles["low"] == "ff00ffff"  # red, yellow (aabbggrr)


def test_gpkg_site_areas_are_exact_for_known_squares(merged):
    tmp_path, tile, *_ = merged
    sites = gpd.read_file(tmp_path / "out" / "sites.gpkg").sort_values("n_cells")
    assert list(sites["n_cells"]) == [1, 4]
    assert list(sites["area_ha"]) == pytest.approx([7.29, 29.16])  # 270 m cells
    assert sites.to_crs(tile.id.epsg).area.round(0).tolist() == pytest.approx([72900, 291600], rel=1e-6)
    assert sites.iloc[1]["impact"] == "high"  # 3 of its 4 cells


def test_merge_is_byte_identical_on_rerun(merged):
    tmp_path, _, _, _, summary, path, kw = merged
    merge_scan([path], tmp_path / "again", **kw)
    for name in ("detections.csv", "detections.kml", "rejected.csv", "sites.gpkg", "summary.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["sites"] == 2


def test_duplicate_cells_across_quadrants_are_refused(merged, tmp_path):
    _, _, _, _, _, path, kw = merged
    with pytest.raises(ValueError, match="more than one quadrant"):
        merge_scan([path, path], tmp_path / "dup", **kw)
