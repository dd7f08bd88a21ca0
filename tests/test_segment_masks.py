"""Masks rasterised from polygons onto an image grid; tiles; the grouped 70/15/15 split."""

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from minescan.errors import InputDataError
from minescan.segment.masks import grouped_split, rasterise_polygons, read_image, read_polygons, tile_refs

EPSG = 32721
T = Affine(10, 0, 500_000, 0, -10, 8_000_000)  # 10 m pixels, top-left corner at (500000, 8000000)


def test_known_square_in_utm_gives_its_area():
    square = box(500_200, 7_999_500, 500_300, 7_999_600)  # 100 m x 100 m on pixel edges: 1 ha
    mask = rasterise_polygons(gpd.GeoDataFrame(geometry=[square], crs=EPSG), f"EPSG:{EPSG}", T, (100, 100))
    assert mask.sum() == 100
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (40, 49, 20, 29)
    # the same square handed over in lon/lat: same pixels (centre rule), area within one pixel row
    lonlat = gpd.GeoDataFrame(geometry=[square], crs=EPSG).to_crs(4326)
    again = rasterise_polygons(lonlat, f"EPSG:{EPSG}", T, (100, 100))
    assert abs(int(again.sum()) - 100) <= 2
    # a 250 m x 250 m square on pixel edges: 6.25 ha = 625 px
    big = box(500_000, 7_999_000, 500_250, 7_999_250)
    assert rasterise_polygons(gpd.GeoDataFrame(geometry=[big], crs=EPSG), EPSG, T, (100, 100)).sum() == 625


def test_read_image_masks_nodata_and_names_missing_bands(tmp_path):
    data = np.full((2, 64, 64), 1000, dtype=np.uint16)
    data[:, :, :8] = 0  # nodata strip
    path = tmp_path / "img.tif"
    with rasterio.open(path, "w", driver="GTiff", dtype="uint16", count=2, width=64, height=64,
                       crs=f"EPSG:{EPSG}", transform=T, nodata=0) as dst:
        dst.write(data)
        dst.descriptions = ("B4", "B8")
    polys = tmp_path / "p.geojson"
    gpd.GeoDataFrame(geometry=[box(500_000, 7_999_500, 500_640, 8_000_000)], crs=EPSG).to_crs(4326).to_file(polys)
    im = read_image(path, ["B8"], 1e-4, read_polygons(polys))
    assert im.reflectance.shape == (64, 64, 1)
    assert im.reflectance[0, 20, 0] == pytest.approx(0.1)
    assert im.mask[:, :8].sum() == 0  # no disturbed pixel where there is no data
    assert im.mask[:50, 8:].all() and not im.mask[51:].any()
    with pytest.raises(InputDataError, match=r"img.tif: band\(s\) B2 missing"):
        read_image(path, ["B2"], 1e-4, read_polygons(polys))
    refs = tile_refs([im, im], 32)
    assert len(refs) == 8 and len({r.place for r in refs}) == 4


def test_grouped_split_never_puts_a_group_on_two_sides():
    groups = [f"g{i % 20}" for i in range(200)]  # 20 places, each seen 10 times
    sides = grouped_split(groups, seed=1)
    by_group = {}
    for g, s in zip(groups, sides, strict=True):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    counts = {s: sum(1 for v in by_group.values() if s in v) for s in ("train", "validation", "test")}
    assert counts == {"train": 14, "validation": 3, "test": 3}
    assert grouped_split(groups, seed=1) == sides
    assert grouped_split(groups, seed=2) != sides
    assert sorted(set(grouped_split(["a", "b", "c"]))) == ["test", "train", "validation"]


def test_polygons_where_keeps_the_named_classes(tmp_path):
    path = tmp_path / "truth.gpkg"
    gpd.GeoDataFrame({"class": ["mine", "confuser", "mine"]},
                     geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], crs=EPSG).to_file(path)
    assert len(read_polygons(path, where="class=mine")) == 2
    assert len(read_polygons(path, where="class=mine,confuser")) == 3
    with pytest.raises(InputDataError, match="truth.gpkg: --polygons-where 'kind=mine'"):
        read_polygons(path, where="kind=mine")
