"""Pixel features: hand-computed pixels, the month encoding, the water distance, chunked == whole array."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import LineString

from minescan import SENTINEL2_BANDS
from minescan.errors import BandMismatchError, ModelError
from minescan.pixel.features import (
    FeatureSet,
    compute_features,
    feature_array,
    month_encoding,
    open_bands,
    period_month,
    rasterise_mask,
    water_distance,
)


def test_feature_set_names_and_counts():
    fs = FeatureSet("indices", SENTINEL2_BANDS)
    assert fs.features[:12] == SENTINEL2_BANDS
    assert len(fs.features) == 12 + 66 + 1  # bands, every normalised difference, MSI
    for name in (
        "NDVI",
        "NDRE",
        "NDMI",
        "NDWI",
        "MNDWI",
        "NBR",
        "NBR2",
        "NDVI705",
        "NDTI",
        "AMWI",
        "MSI",
        "nd_B1_B2",
    ):
        assert name in fs.features
    rgb = FeatureSet("indices", ("B4", "B3", "B2"))
    assert rgb.features == ("B4", "B3", "B2", "NDTI", "AMWI", "nd_B3_B2")
    full = FeatureSet("full", SENTINEL2_BANDS)
    assert full.features[-3:] == ("dist_water", "month_cos", "month_sin")
    assert full.halo_px(10.0) == 100 and fs.halo_px(10.0) == 0
    assert FeatureSet.from_card(full.as_card()) == full
    with pytest.raises(ModelError, match="computes"):
        FeatureSet.from_card({**full.as_card(), "features": ["B1"]})


def test_features_of_hand_computed_pixels():
    fs = FeatureSet("indices", SENTINEL2_BANDS)
    dn = np.arange(1, 13, dtype=np.uint16)[:, None, None] * 1000  # B1 = 1000, B2 = 2000, ... B12 = 12000
    raw = np.concatenate([dn, dn], axis=2)
    raw[:, 0, 1] = 0  # second pixel nodata
    f = compute_features(raw, fs, 1e-4, 0)
    got = dict(zip(fs.features, f[:, 0, 0], strict=True))
    b = dict(zip(SENTINEL2_BANDS, range(1, 13), strict=True))  # band value / 1000
    assert got["B4"] == pytest.approx(0.4)
    assert got["NDVI"] == pytest.approx((b["B8"] - b["B4"]) / (b["B8"] + b["B4"]))  # (8-4)/12
    assert got["AMWI"] == pytest.approx((4 - 2) / (4 + 2))
    assert got["MNDWI"] == pytest.approx((3 - 11) / (3 + 11))
    assert got["NDVI705"] == pytest.approx((6 - 5) / (6 + 5))
    assert got["MSI"] == pytest.approx(11 / 8)
    assert got["nd_B1_B2"] == pytest.approx((1 - 2) / 3)
    assert np.isnan(f[:, 0, 1]).all()


def test_month_encoding_is_periodic():
    assert period_month("2026Q1") == 2.0 and period_month("2026Q4") == 11.0 and period_month("2025") == 6.5
    c, s = month_encoding(12.0)
    assert (c, s) == pytest.approx((1.0, 0.0), abs=1e-12)
    # December and January are as close as January and February
    d = np.subtract(month_encoding(12), month_encoding(1))
    e = np.subtract(month_encoding(1), month_encoding(2))
    assert np.hypot(*d) == pytest.approx(np.hypot(*e))
    assert month_encoding(3) == pytest.approx((math.cos(math.pi / 2), 1.0))


def test_distance_to_a_rasterised_line():
    t = Affine(10, 0, 0, 0, -10, 1000)  # 100 x 100 px at 10 m
    line = LineString([(505, 0), (505, 1000)])  # vertical line through column 50
    water = rasterise_mask([line.buffer(1)], t, (100, 100))
    assert water[:, 50].all() and water.sum() == 100
    d = water_distance(water, 10.0, 300.0)
    assert d[7, 50] == 0 and d[7, 53] == pytest.approx(30.0) and d[7, 45] == pytest.approx(50.0)
    assert d[7, 0] == pytest.approx(300.0)  # 500 m, capped
    assert water_distance(np.zeros((3, 3), bool), 10.0, 300.0).max() == 300.0


def test_band_mismatch_names_the_file(tmp_path):
    path = _scene(tmp_path, 1, 64)
    with pytest.raises(BandMismatchError, match="scene.tif.*B99"):
        open_bands(path, ["B3", "B99"])


def _scene(tmp_path, seed, size, bands=SENTINEL2_BANDS):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 4000, (len(bands), size, size)).astype(np.uint16)
    data[2] = data[2] // 4 + 1  # B3 < B11: no water but the river
    data[10] = data[10] // 2 + 2000
    data[:, 5:9, 5:9] = 0
    data[2, 20:40, 30:33] = 9000  # a bright-green river: MNDWI > 0
    data[10, 20:40, 30:33] = 100
    path = tmp_path / "scene.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        dtype="uint16",
        count=len(bands),
        width=size,
        height=size,
        crs="EPSG:32721",
        transform=Affine(10, 0, 0, 0, -10, 0),
        nodata=0,
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(bands)
    return path


@pytest.mark.parametrize("name", ["indices", "full"])
def test_chunked_features_equal_whole_array(tmp_path, name):
    fs = FeatureSet(name, SENTINEL2_BANDS, water_cap_m=120.0)  # 12 px halo, chunks of 16 px
    path = _scene(tmp_path, 3, 80)
    arr = open_bands(path, fs.bands)
    assert arr.data.chunks[1] == (16,) * 5  # the file's internal blocks
    lazy = feature_array(arr.data, fs, 1e-4, 0, 10.0, month=2.0)
    whole = compute_features(arr.values, fs, 1e-4, 0, 10.0, month=2.0)
    np.testing.assert_array_equal(lazy.compute(), whole)
    if name == "full":
        i = fs.features.index("dist_water")
        assert whole[i, 30, 20] == pytest.approx(100.0)  # 10 px left of the river
        water = rasterise_mask([], Affine(10, 0, 0, 0, -10, 0), (80, 80), chunks=arr.data.chunks[1:])
        lazy_w = feature_array(arr.data, fs, 1e-4, 0, 10.0, month=2.0, water=water)
        assert (
            float(np.nanmax(lazy_w[i].compute())) == 120.0
        )  # the (empty) layer, not the MNDWI mask, is used


# ------------------------------------------------------------------------------------------------ labels


def test_signed_distance_on_a_known_square(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from minescan.pixel.labels import pixel_labels, polygons_in_crs

    t = Affine(10, 0, 0, 0, -10, 400)  # 40 x 40 px at 10 m, x 0..400, y 0..400
    square = box(100, 100, 200, 200)  # columns 10..19, rows 20..29
    gpd.GeoDataFrame(geometry=[square], crs=32721).to_crs(4326).to_file(tmp_path / "mines.geojson")
    geoms = polygons_in_crs(tmp_path / "mines.geojson", "EPSG:32721")
    lab = pixel_labels(geoms, t, (40, 40), 10.0)
    d = lab.distance_m
    assert lab.mine.sum() == 100 and lab.mine[25, 15] == 1 and lab.mine[25, 25] == 0
    assert d[25, 25] == pytest.approx(55.0)  # centre x = 255, edge x = 200
    assert d[24, 15] == pytest.approx(-45.0)  # centre (155, 155): 45 m from every edge
    assert d[25, 10] == pytest.approx(-5.0) and d[25, 9] == pytest.approx(5.0)
    assert d[15, 25] == pytest.approx(np.hypot(55.0, 45.0), abs=0.01 + 5.0)  # diagonal: within half a pixel
    ex = pixel_labels(geoms, t, (40, 40), 10.0, exclude_m=20.0)
    assert ex.mine[25, 10] == -1 and ex.mine[25, 8] == -1 and ex.mine[25, 7] == 0 and ex.mine[24, 15] == 1


def test_chunked_rasterisation_equals_whole():
    t = Affine(10, 0, 1000, 0, -10, 5000)
    geoms = [LineString([(1005, 4995), (1600, 4400)]).buffer(12)]
    whole = rasterise_mask(geoms, t, (70, 70))
    lazy = rasterise_mask(geoms, t, (70, 70), chunks=((16, 16, 38), (30, 40)))
    assert whole.sum() > 100
    np.testing.assert_array_equal(lazy.compute(), whole)
