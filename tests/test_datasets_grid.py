"""minescan datasets grid: cell geometry, overlap fractions, nearest negatives, names, the CLI."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from minescan.cli import run
from minescan.datasets.grid import (
    ZOOM_CELL_M,
    build_grid,
    cell_name,
    coord_code,
    read_grid,
    read_polygons,
    write_grid,
)
from minescan.grid import to_crs

EPSG = 32721  # UTM 21S
SHARED_VECTORS = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "vectors"


def polygons(utm_boxes, **cols) -> gpd.GeoDataFrame:
    """Polygons given as UTM 21S boxes, in EPSG:4326 (as read_polygons returns them)."""
    geoms = [to_crs(box(*b), EPSG, 4326) for b in utm_boxes]
    gdf = gpd.GeoDataFrame({**cols, "polygon_index": range(len(geoms))}, geometry=geoms, crs=4326)
    return gdf


def test_name_format_follows_the_plan_example():
    assert coord_code(-29.5) == "029500"  # the plan's example
    assert coord_code(29.5) == "29500"
    assert coord_code(-0.25) == "0250" and coord_code(0.25) == "250"
    assert coord_code(-3.14159) == "03142"  # -314.159 -> -314.2 -> 03142
    assert cell_name(-29.5, -55.25, 14, 0.3725) == "029500_055250_14_37.25"
    assert cell_name(-29.5, -55.25, 16, None) == "029500_055250_16_neg"


@pytest.mark.parametrize("zoom", [14, 15, 16])
def test_cells_are_aligned_squares_of_the_zoom_size(zoom):
    s = ZOOM_CELL_M[zoom]
    x0, y0 = 70 * 5500.0 + 1234.0, 1300 * 5500.0 + 777.0
    gdf = build_grid(polygons([(x0, y0, x0 + 3000, y0 + 3000)]), zoom)
    assert len(gdf) > 0 and (gdf["cell_m"] == s).all()
    for r in gdf.itertuples():
        assert r.x_max - r.x_min == s and r.y_max - r.y_min == s
        assert r.x_min % s == 0 and r.y_min % s == 0
        assert r.zone == "21S" and r.epsg == EPSG
        # the stored lon/lat square is the UTM cell
        assert to_crs(r.geometry, 4326, EPSG).area == pytest.approx(s * s, rel=1e-6)
    pos = gdf[gdf.label == "positive"]
    # the positives exactly tile the polygon: overlaps add up to its area
    assert (pos.overlap * s * s).sum() == pytest.approx(3000 * 3000, abs=len(pos) * 0.5e-6 * s * s)  # 6 decimals


def test_overlap_fractions_on_known_squares_and_sliver_discarded():
    s = 5500.0
    half = (70 * s, 1300 * s, 71 * s, 1300 * s + s / 2)  # half of cell (70, 1300)
    quarter = (72 * s, 1300 * s, 72 * s + s / 2, 1300 * s + s / 2)  # a quarter of (72, 1300)
    sliver = (74 * s + 100, 1300 * s + 100, 74 * s + 155, 1300 * s + 375)  # 0.0005 of (74, 1300)
    gdf = build_grid(polygons([half, quarter, sliver], commodity=["gold", "sand", "clay"]), 14)
    pos = gdf[gdf.label == "positive"].set_index("cell_id")
    assert set(pos.index) == {"21S_70_1300", "21S_72_1300"}
    assert pos.loc["21S_70_1300", "overlap"] == pytest.approx(0.5, abs=1e-6)
    assert pos.loc["21S_72_1300", "overlap"] == pytest.approx(0.25, abs=1e-6)
    assert pos.loc["21S_70_1300", "commodity"] == "gold" and pos.loc["21S_72_1300", "commodity"] == "sand"
    assert pos.loc["21S_70_1300", "name"].endswith("_14_50.00")
    # the sliver cell is neither positive nor anyone's negative
    assert "21S_74_1300" not in set(gdf.cell_id)
    lower = build_grid(polygons([sliver]), 14, min_overlap=0.0001)
    assert lower[lower.label == "positive"].cell_id.tolist() == ["21S_74_1300"]
    assert lower.overlap.max() == pytest.approx(0.0005, abs=1e-7)


def test_nearest_negatives_are_free_unique_and_closest():
    s = 5500.0
    # a 3 x 3 block of cells fully covered around (80, 1300): the centre's nearest free cells are 2 away
    block = (79 * s, 1299 * s, 82 * s, 1302 * s)
    single = (90 * s + 10, 1300 * s + 10, 91 * s - 10, 1301 * s - 10)
    polys = polygons([block, single], country=["A", "B"])
    gdf = build_grid(polys, 14)
    pos, neg = gdf[gdf.label == "positive"], gdf[gdf.label == "negative"]
    assert len(pos) == 10 and len(neg) == 10
    assert neg.cell_id.is_unique
    utm_polys = [to_crs(g, 4326, EPSG) for g in polys.geometry]
    for r in neg.itertuples():
        cell = box(r.x_min, r.y_min, r.x_max, r.y_max)
        assert not any(cell.intersects(p) for p in utm_polys)
    by_id = pos.set_index("cell_id")
    # the isolated positive gets an adjacent cell; cells touching the block are not free, so the block's
    # centre gets one at least 3 cells away (distances are centre to centre)
    assert by_id.loc["21S_90_1300", "pair_distance_m"] == pytest.approx(s)
    assert 3 * s <= by_id.loc["21S_80_1300", "pair_distance_m"] <= 3 * s * np.sqrt(2) + 1
    for r in neg.itertuples():
        p = by_id.loc[r.pair_id]
        assert p["pair"] == r.name and r.pair == p["name"]
        assert r.pair_distance_m == pytest.approx(np.hypot(r.ix - p["ix"], r.iy - p["iy"]) * s)
        assert r.country == p["country"]  # negatives carry their positive's metadata
        assert r.name.endswith("_14_neg")


def test_grid_files_and_cli(tmp_path):
    s = 5500.0
    polys = polygons([(70 * s, 1300 * s, 71 * s, 1300 * s + s / 2)], country=["X"])
    src = tmp_path / "polys.gpkg"
    polys.drop(columns="polygon_index").to_file(src)
    out = tmp_path / "cells.gpkg"
    assert run(["datasets", "grid", "--polygons", str(src), "--zoom", "15", "--out", str(out)]) == 0
    csv = pd.read_csv(tmp_path / "cells.csv", dtype={"name": str})
    assert {"name", "lon", "lat", "lon_min", "lat_max", "overlap", "country", "pair_distance_m"} <= set(csv.columns)
    assert len(csv) == 2 * len(build_grid(read_polygons(src), 15).query("label == 'positive'"))
    first = out.read_bytes()
    assert run(["datasets", "grid", "--polygons", str(src), "--zoom", "15", "--out", str(out)]) == 0
    assert out.read_bytes() == first  # reruns give the same bytes
    back = read_grid(tmp_path / "cells.csv")
    assert back.name.tolist() == csv.name.tolist()
    assert run(["datasets", "grid", "--polygons", str(tmp_path / "missing.gpkg"), "--zoom", "14",
                "--out", str(out)]) == 2
    assert run(["datasets", "grid", "--polygons", str(src), "--zoom", "14", "--out", str(tmp_path / "x.csv")]) == 2


def test_grid_on_real_polygons(tmp_path):
    path = SHARED_VECTORS / "mining_polygons_sample.gpkg"
    if not path.exists():
        pytest.skip(f"{path} not present")
    polys = read_polygons(path)
    gdf = build_grid(polys, 14)
    pos = gdf[gdf.label == "positive"]
    assert len(pos) >= len(polys) * 0.9 and (pos.overlap >= 0.001).all()
    assert gdf.cell_id.is_unique
    assert {"ISO3_CODE", "COUNTRY_NAME"} <= set(gdf.columns)
    write_grid(gdf, tmp_path / "g.gpkg")
    assert (tmp_path / "g.csv").exists()


def test_region_keeps_cells_whose_centre_is_inside(tmp_path):
    s = 5500.0
    a = (70 * s + 10, 1300 * s + 10, 71 * s - 10, 1301 * s - 10)
    b = (80 * s + 10, 1300 * s + 10, 81 * s - 10, 1301 * s - 10)
    polys = polygons([a, b])
    polys.drop(columns="polygon_index").to_file(tmp_path / "p.gpkg")
    region = to_crs(box(65 * s, 1290 * s, 75 * s, 1310 * s), EPSG, 4326)  # around a, not b
    gpd.GeoDataFrame(geometry=[region], crs=4326).to_file(tmp_path / "region.geojson")
    out = tmp_path / "cells.gpkg"
    assert run(["datasets", "grid", "--polygons", str(tmp_path / "p.gpkg"), "--zoom", "14", "--region",
                str(tmp_path / "region.geojson"), "--out", str(out)]) == 0
    cells = pd.read_csv(tmp_path / "cells.csv")
    assert cells.cell_id.tolist()[0] == "21S_70_1300" and len(cells) == 2
    assert ((cells.ix >= 65) & (cells.ix < 75)).all()
