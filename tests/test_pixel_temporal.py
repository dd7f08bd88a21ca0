"""The temporal median layer on hand-made rasters, and sites from it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from minescan.cli import run
from minescan.errors import InputDataError
from minescan.pixel.temporal import pixel_scores, temporal_median, temporal_sites

T = Affine(10, 0, 500000, 0, -10, 9000000)


def raster(path, values, transform=T):
    a = np.asarray(values, dtype=np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        dtype="float32",
        count=1,
        width=a.shape[1],
        height=a.shape[0],
        crs="EPSG:32721",
        transform=transform,
        nodata=float("nan"),
    ) as ds:
        ds.write(a, 1)
    return path


def test_median_of_hand_made_rasters(tmp_path):
    nan = np.nan
    p = [
        raster(tmp_path / f"p{i}.tif", v)
        for i, v in enumerate(
            [
                [[0.9, 0.1, nan], [0.0, 0.2, nan]],  # oldest: left out with last_n = 3
                [[0.1, 0.8, 0.7], [0.9, 0.2, nan]],
                [[0.2, 0.9, nan], [0.9, 0.9, nan]],
                [[0.3, 0.7, 0.1], [0.8, 0.2, nan]],
            ]
        )
    ]
    stats = temporal_median(p, tmp_path / "m.tif", last_n=3, rows=1)
    with rasterio.open(tmp_path / "m.tif") as ds:
        m = ds.read(1)
        assert ds.transform == T and ds.descriptions == ("median_mine_probability",)
    np.testing.assert_allclose(m[:, :2], [[0.2, 0.8], [0.9, 0.2]], rtol=1e-6)
    assert m[0, 2] == pytest.approx(0.4) and np.isnan(m[1, 2])  # NaN periods ignored; no data at all -> NaN
    assert stats == {"periods": 3, "valid_pixels": 5}
    first = (tmp_path / "m.tif").read_bytes()
    temporal_median(p, tmp_path / "m.tif", last_n=3, rows=2)
    assert (tmp_path / "m.tif").read_bytes() == first


def test_sites_and_scores(tmp_path):
    a = np.zeros((6, 8), np.float32)
    a[1:3, 1:3] = 0.9  # a 4 px site
    a[4, 6] = 0.6  # a 1 px site
    a[3, 3] = 0.7  # touches the first diagonally: same site
    raster(tmp_path / "m.tif", a)
    sites = temporal_sites(tmp_path / "m.tif", 0.5, tmp_path / "sites.gpkg")
    assert sorted(sites["pixels"]) == [1, 5] and sites["area_ha"].sum() == pytest.approx(0.06)
    assert (tmp_path / "sites.gpkg").is_file()
    truth = a >= 0.8
    s = pixel_scores(a, truth, 0.5)
    assert s["recall"] == 1.0 and s["precision"] == pytest.approx(4 / 6, abs=1e-4)


def test_grid_mismatch_and_cli(tmp_path, capsys):
    a = raster(tmp_path / "a.tif", [[0.5]])
    b = raster(tmp_path / "b.tif", [[0.5]], Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(InputDataError, match="b.tif: grid differs"):
        temporal_median([a, b], tmp_path / "m.tif")
    assert (
        run(
            [
                "pixel",
                "temporal",
                "--rasters",
                str(a),
                str(a),
                "--out",
                str(tmp_path / "m.tif"),
                "--sites-out",
                str(tmp_path / "s.geojson"),
                "--threshold",
                "0.5",
            ]
        )
        == 0
    )
    assert "1 sites >= 0.5" in capsys.readouterr().out
