"""minescan datasets chips: the composite on the cell frame, the _mine band, signed distances, previews."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon, box

from minescan import SENTINEL2_BANDS
from minescan.cli import run
from minescan.datasets.chips import signed_distance, write_chips
from minescan.datasets.grid import build_grid, write_grid
from minescan.grid import to_crs

EPSG = 32721
S = 500.0  # cell size of these tests: 50 x 50 px at 10 m
X0, Y0 = 800 * S, 15000 * S  # a cell corner (UTM 21S)


def scene(path, bounds, value=lambda r, c: 1000 + r):
    """A 12-band GeoTIFF over ``bounds`` (UTM), band i = value(row, col) + i."""
    x0, y0, x1, y1 = bounds
    w, h = int((x1 - x0) / 10), int((y1 - y0) / 10)
    rows, cols = np.mgrid[0:h, 0:w]
    data = np.stack([value(rows, cols) + i for i in range(12)]).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=12, dtype="uint16", crs=f"EPSG:{EPSG}",
                       transform=Affine(10, 0, x0, 0, -10, y1), nodata=0) as dst:
        dst.write(data)
        dst.descriptions = tuple(SENTINEL2_BANDS)
    return path


def polys_utm(geoms):
    return gpd.GeoDataFrame({"polygon_index": range(len(geoms))},
                            geometry=[to_crs(g, EPSG, 4326) for g in geoms], crs=4326)


def test_signed_distance_against_a_hand_made_square():
    sq = box(100, 100, 300, 200)
    t = Affine(10, 0, 0, 0, -10, 400)  # 40 x 40 px over [0, 400] x [0, 400]
    d = signed_distance([sq], t, 40)
    # pixel (row 25, col 15): centre (155, 145) inside; nearest edge y=100 or 200 -> 45 (x edges 55, 145)
    assert d[25, 15] == pytest.approx(-45)
    # pixel (row 5, col 5): centre (55, 345) outside; nearest point (100, 200): hypot(45, 145)
    assert d[5, 5] == pytest.approx(np.hypot(45, 145))
    # pixel (row 20, col 35): centre (355, 195) outside, right of the square: 55
    assert d[20, 35] == pytest.approx(55)
    assert (d < 0).sum() == 20 * 10  # the pixel centres inside


def test_chips_mine_band_table_and_preview(tmp_path):
    # an L-shaped mine crossing the cell's east edge
    mine = Polygon([(X0 + 100, Y0 + 100), (X0 + 700, Y0 + 100), (X0 + 700, Y0 + 200), (X0 + 200, Y0 + 200),
                    (X0 + 200, Y0 + 400), (X0 + 100, Y0 + 400)])
    polys = polys_utm([mine])
    cells = build_grid(polys, 16, S)
    pos = cells[cells.label == "positive"]
    assert "21S_800_15000" in set(pos.cell_id)
    img = scene(tmp_path / "scene.tif", (X0 - 3000, Y0 - 3000, X0 + 3000, Y0 + 3000))
    n = write_chips(cells, polys, [img], tmp_path / "chips", table="parquet", preview="png")
    assert n == len(cells)
    name = pos.set_index("cell_id").loc["21S_800_15000", "name"]
    with rasterio.open(tmp_path / "chips" / "images" / f"{name}.tif") as ds:
        assert ds.descriptions == (*SENTINEL2_BANDS, "_mine")
        assert (ds.width, ds.height) == (50, 50) and ds.crs.to_epsg() == EPSG
        assert ds.transform == Affine(10, 0, X0, 0, -10, Y0 + S)
        data = ds.read()
    # the composite is the scene cut at the cell: band 0 = 1000 + scene row (scene top = Y0 + 3000)
    rows = np.arange(50)[:, None] + (3000 - S) / 10
    assert np.array_equal(data[0], np.broadcast_to(1000 + rows, (50, 50)).astype(np.uint16))
    # _mine: pixel centres inside the L (rows from the top: y = Y0 + 500 - 10 r - 5)
    r, c = np.mgrid[0:50, 0:50]
    x, y = c * 10 + 5, S - r * 10 - 5
    inside = ((x > 100) & (x < 500) & (y > 100) & (y < 200)) | ((x > 100) & (x < 200) & (y > 100) & (y < 400))
    assert np.array_equal(data[12].astype(bool), inside)
    tab = pd.read_parquet(tmp_path / "chips" / "pixels" / f"{name}.parquet")
    assert len(tab) == 2500 and list(tab.columns[:4]) == ["row", "col", "x", "y"]
    assert {*SENTINEL2_BANDS, "_mine", "signed_distance_m"} <= set(tab.columns)
    one = tab[(tab.row == 25) & (tab.col == 15)].iloc[0]  # centre (155, 245): inside the L's upright arm
    assert one["_mine"] == 1 and one["signed_distance_m"] == pytest.approx(-45)
    assert one["x"] == X0 + 155 and one["y"] == Y0 + 245 and one["B1"] == 1000 + 250 + 25  # scene row 250 + 25
    assert ((tab.signed_distance_m < 0) == (tab["_mine"] == 1)).all()
    from PIL import Image

    pv = np.asarray(Image.open(tmp_path / "chips" / "previews" / f"{name}.png"))
    assert pv.shape == (50, 50, 3)
    assert (pv[inside][:, 0] > pv[inside][:, 1]).all()  # red over the mine
    out = pv[~inside].astype(int)
    assert (abs(out[:, 0] - out[:, 1]) <= 1).all()  # grey elsewhere (bands differ by 1 DN)
    index = pd.read_csv(tmp_path / "chips" / "chips.csv")
    assert set(index.name) == set(cells.name)


def test_chips_cli_csv_and_errors(tmp_path):
    polys = polys_utm([box(X0 + 100, Y0 + 100, X0 + 300, Y0 + 300)])
    polys.drop(columns="polygon_index").to_file(tmp_path / "p.gpkg")
    write_grid(build_grid(polys, 16, S), tmp_path / "g.gpkg")
    img = scene(tmp_path / "scene.tif", (X0 - 1000, Y0 - 1000, X0 + 1500, Y0 + 1500))
    def args(images, out, *extra):
        return ["datasets", "chips", "--grid", str(tmp_path / "g.gpkg"), "--polygons", str(tmp_path / "p.gpkg"),
                "--images", str(images), "--out", str(tmp_path / out), "--table", "csv", "--preview", "jpg", *extra]

    assert run(args(img, "c")) == 0
    assert len(list((tmp_path / "c" / "pixels").glob("*.csv"))) == 2
    assert len(list((tmp_path / "c" / "previews").glob("*.jpg"))) == 2
    first = sorted((tmp_path / "c" / "images").glob("*.tif"))[0].read_bytes()
    assert run(args(img, "c")) == 0
    assert sorted((tmp_path / "c" / "images").glob("*.tif"))[0].read_bytes() == first  # same bytes
    assert run(args(img, "d", "--bands", "B4", "B99")) == 2  # a missing band: one line, exit 2
    far = scene(tmp_path / "far.tif", (X0 + 50000, Y0, X0 + 51000, Y0 + 1000))
    assert run(args(far, "e")) == 2  # no cell covered


def test_cells_fetched_from_earth_engine_give_the_composite_on_the_cell_frame(tmp_path):
    """--gee-config path: one computePixels request per cell through the gee chip code (recording fake ee),
    chips on the 10 m grid covering each cell, then the same chips as from local tiles; a rerun fetches none."""
    from test_gee import retrier
    from test_gee_fakes import FakeData, FakeEE, pattern

    from minescan.datasets.gee import cells_as_points, chip_size_px, fetch_cell_chips
    from minescan.sources.gee.settings import GeeSettings

    mine = box(X0 + 100, Y0 + 100, X0 + 300, Y0 + 300)
    polys = polys_utm([mine])
    cells = build_grid(polys, 16, S)
    assert chip_size_px(cells, 10.0) == 54
    pts = cells_as_points(cells)
    assert pts["class"].tolist() == [1 if lab == "positive" else 0 for lab in cells["label"]]
    data = FakeData()
    settings = GeeSettings(cache_dir=str(tmp_path / "cache"))
    paths = fetch_cell_chips(cells, "2024", settings, tmp_path / "gee", ee=FakeEE(data), retrier=retrier())
    assert len(data.requests) == len(cells) and all(p.exists() for p in paths)
    assert all(r["grid"]["dimensions"] == {"width": 54, "height": 54} for r in data.requests)
    assert all("filterDate('2024-01-01', '2025-01-01')" in repr(r["expression"]) for r in data.requests)
    n = write_chips(cells, polys, paths, tmp_path / "out", table="none", preview="none")
    assert n == len(cells)
    for cell in cells.itertuples():
        with rasterio.open(tmp_path / "out" / "images" / f"{cell.name}.tif") as ds:
            arr = ds.read()
            assert ds.descriptions[-1] == "_mine" and (ds.width, ds.height) == (50, 50)
            # the composite's value of every pixel of the cell: global 10 m pixel (p, q) of the UTM grid
            p0, q0 = round(ds.transform.c / 10), round(-ds.transform.f / 10)
            q, p = np.mgrid[q0:q0 + 50, p0:p0 + 50]
            np.testing.assert_array_equal(arr[3], pattern(p, q, 3))
            assert (arr[-1].sum() > 0) == (cell.label == "positive")
    again = FakeData()
    fetch_cell_chips(cells, "2024", settings, tmp_path / "gee", ee=FakeEE(again), retrier=retrier())
    assert again.requests == []
