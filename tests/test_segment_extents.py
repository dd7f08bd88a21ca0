"""Sites' segmented extents and areas on a synthetic scene, and merge writing them."""

import geopandas as gpd
import numpy as np
import pytest
from conftest import grid_tile
from shapely.geometry import box

from minescan.grid import cell_polygon
from minescan.segment.extents import segmented_extents
from minescan.segment.predict import extent_polygons, merge_extents
from minescan.vector_io import write_vector

EPSG = 32721


def site(site_id, cells):
    poly = gpd.GeoSeries([box(0, 0, 0, 0).union(cell_polygon(*cells[0], 10.0))], crs=EPSG)
    for c in cells[1:]:
        poly = gpd.GeoSeries([poly.iloc[0].union(cell_polygon(*c, 10.0))], crs=EPSG)
    return {"site_id": site_id, "area_ha": round(poly.iloc[0].area / 1e4, 4), "zone": "21S",
            "geometry": poly.to_crs(4326).iloc[0]}


def test_site_extent_is_the_segmented_ground_meeting_its_cells():
    # site S1: cell (2000, -30000) = easting [540000, 540270), northing [8099730, 8100000)
    a = site("S1", [(2000, -30000)])
    b = site("S2", [(2100, -30000)])  # 27 km away: nothing segmented there
    x0, y0 = 2000 * 270, 29999 * 270
    inside = box(x0 + 50, y0 + 50, x0 + 150, y0 + 150)  # 1 ha inside the cell
    spill = box(x0 + 200, y0 + 100, x0 + 400, y0 + 200)  # 2 ha, half of it in the cell, all within 270 m
    huge = box(x0 - 2000, y0 + 1000, x0 + 2000, y0 + 3000)  # does not meet the cell: ignored
    ext = gpd.GeoDataFrame({"zone": ["21S"] * 3}, geometry=[inside, spill, huge], crs=EPSG).to_crs(4326)
    sites = gpd.GeoDataFrame([a, b], crs=4326)
    out, extents = segmented_extents(sites, ext)
    assert list(out.columns[:3]) == ["site_id", "area_ha", "area_ha_segmented"]
    assert out["area_ha_segmented"].tolist() == pytest.approx([3.0, 0.0], abs=1e-3)
    assert extents["site_id"].tolist() == ["S1"]
    # a neighbouring extent reaching far beyond the cell is clipped to the cell grown by 270 m
    far = box(x0 + 100, y0 + 100, x0 + 5000, y0 + 200)  # 4.9 km long, 100 m wide
    out, _ = segmented_extents(sites, gpd.GeoDataFrame({"zone": ["21S"]}, geometry=[far], crs=EPSG).to_crs(4326))
    assert out["area_ha_segmented"].iloc[0] == pytest.approx((270 + 270 - 100) * 100 / 1e4, abs=1e-3)


def test_extent_polygons_and_merge_across_quadrants(tmp_path):
    tile = grid_tile()
    prob = np.full((324, 324), np.nan, dtype=np.float32)
    prob[300:324, 10:30] = 0.9  # 20 x 24 px = 4.8 ha at the south edge of NW
    prob[0:5, 0:5] = 0.2
    nw = extent_polygons(prob, tile.quadrant_core_px("NW"), tile, "NW", 0.5)
    south = np.full((324, 324), np.nan, dtype=np.float32)
    south[0:10, 10:30] = 0.8  # continues into SW: 2 ha
    sw = extent_polygons(south, tile.quadrant_core_px("SW"), tile, "SW", 0.5)
    assert len(nw) == 1 and nw["area_ha"].iloc[0] == pytest.approx(4.8)
    assert nw["mean_probability"].iloc[0] == pytest.approx(0.9, abs=1e-4)
    write_vector(nw, tmp_path / "nw.gpkg", layer="extents")
    write_vector(sw, tmp_path / "sw.gpkg", layer="extents")
    merge_extents([tmp_path / "nw.gpkg", tmp_path / "sw.gpkg"], tmp_path / "extents.gpkg")
    merged = gpd.read_file(tmp_path / "extents.gpkg")
    assert merged["extent_id"].tolist() == ["E00001"]  # one extent across the seam
    assert merged["area_ha"].iloc[0] == pytest.approx(6.8, abs=1e-3)
    first = (tmp_path / "extents.gpkg").read_bytes()
    merge_extents([tmp_path / "nw.gpkg", tmp_path / "sw.gpkg"], tmp_path / "extents.gpkg")
    assert (tmp_path / "extents.gpkg").read_bytes() == first


def test_change_reports_expansion_and_contraction_of_segmented_extents(tmp_path):
    import json

    from minescan.layers.change import run_change

    x0, y0 = 2000 * 270, 29999 * 270
    frames = {}
    for period, ext_box in (("2026Q1", box(x0 + 20, y0 + 20, x0 + 120, y0 + 120)),  # 1 ha
                            ("2026Q2", box(x0 + 70, y0 + 20, x0 + 220, y0 + 120))):  # 1.5 ha, 0.5 ha shared
        sites = gpd.GeoDataFrame([site("S1", [(2000, -30000)])], crs=4326)
        ext = gpd.GeoDataFrame({"site_id": ["S1"], "area_ha_segmented": [ext_box.area / 1e4]},
                               geometry=[ext_box], crs=EPSG).to_crs(4326)
        frames[period] = tmp_path / period / "sites.gpkg"
        frames[period].parent.mkdir()
        write_vector(sites, frames[period], layer="sites", more_layers={"site_extents": ext})
    out = run_change(region_name="r", periods=list(frames), history=list(frames.values()), outdir=tmp_path / "ch")
    change = gpd.read_file(tmp_path / "ch" / "change.gpkg")
    assert change["expansion_ha"].tolist() == pytest.approx([1.0], abs=1e-3)
    assert change["contraction_ha"].tolist() == pytest.approx([0.5], abs=1e-3)
    assert out["segmented"] == pytest.approx({"expansion_ha": 1.0, "contraction_ha": 0.5}, abs=1e-3)
    assert json.loads((tmp_path / "ch" / "change.json").read_text())["segmented"]["expansion_ha"] == \
        pytest.approx(1.0, abs=1e-3)


def test_area_errors_against_truth():
    from minescan.segment.extents import area_errors

    x0, y0 = 2000 * 270, 29999 * 270
    s1 = site("S1", [(2000, -30000)])  # 7.29 ha of cells
    s1["area_ha_segmented"] = 4.4
    truth = gpd.GeoDataFrame({"class": ["mine", "confuser"]},
                             geometry=[box(x0 + 10, y0 + 10, x0 + 210, y0 + 210),  # 4 ha
                                       box(x0 + 5000, y0, x0 + 6000, y0 + 1000)], crs=EPSG)
    out = area_errors(gpd.GeoDataFrame([s1], crs=4326), truth)
    assert out["sites_on_true_mines"] == 1
    assert out["median_relative_error_cells"] == pytest.approx((7.29 - 4) / 4, abs=1e-3)
    assert out["median_relative_error_segmented"] == pytest.approx(0.1, abs=1e-3)


def test_map_shows_the_extents_as_a_layer():
    from minescan.layers.webmap import build_map

    x0, y0 = 2000 * 270, 29999 * 270
    s1 = site("S1", [(2000, -30000)])
    s1.update({"impact": "high", "area_ha_segmented": 1.0, "lon": 0.0, "lat": 0.0, "max_probability": 0.9,
               "mean_probability": 0.8, "n_cells": 1, "tiles": "t"})
    ext = gpd.GeoDataFrame({"extent_id": ["E00001"], "area_ha": [1.0]},
                           geometry=[box(x0 + 20, y0 + 20, x0 + 120, y0 + 120)], crs=EPSG)
    sites = gpd.GeoDataFrame([s1], crs=4326)
    html = build_map(sites, title="t", thumbnails=False, extents=ext)
    assert "segmented extents" in html and "E00001" in html and "area_ha_segmented" in html
    assert "segmented extents" not in build_map(sites, title="t", thumbnails=False)
