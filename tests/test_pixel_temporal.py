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


def test_sites_touching_across_a_quadrant_seam_are_merged(tmp_path, capsys):
    """Two quadrants side by side (west 4 px wide, east from x = 4 px): a site on the seam is one site,
    with summed pixels and area, the largest max and the pixel-weighted mean; a small site is dropped."""
    west = raster(tmp_path / "w.tif", [[0, 0, 0.9, 0.9], [0, 0, 0, 0.7], [0.6, 0, 0, 0]])
    east = raster(
        tmp_path / "e.tif", [[0.8, 0, 0, 0], [0.8, 0, 0, 0.95], [0, 0, 0, 0]], T @ Affine.translation(4, 0)
    )
    sw = temporal_sites(west, 0.5, tmp_path / "sw.gpkg")
    se = temporal_sites(east, 0.5, tmp_path / "se.gpkg")
    assert len(sw) == 2 and len(se) == 2
    # min_area_ha: a 10 m pixel is 0.01 ha
    assert len(temporal_sites(west, 0.5, min_area_ha=0.02)) == 1
    assert (
        run(
            [
                "pixel",
                "temporal-merge",
                "--sites",
                str(tmp_path / "sw.gpkg"),
                str(tmp_path / "se.gpkg"),
                "--out",
                str(tmp_path / "m.gpkg"),
                "--summary-out",
                str(tmp_path / "t.json"),
                "--periods",
                "2026Q1",
                "2026Q2",
            ]
        )
        == 0
    )
    assert "3 temporal sites from 2 quadrants" in capsys.readouterr().out
    from minescan.vector_io import read_vector

    m = read_vector(tmp_path / "m.gpkg")
    assert m.crs.to_epsg() == 4326 and list(m["site"]) == [1, 2, 3]
    seam = m[m["quadrants"] == 2].iloc[0]
    assert seam["pixels"] == 5 and seam["area_ha"] == pytest.approx(0.05)
    assert seam["max_probability"] == pytest.approx(0.9)
    assert seam["mean_probability"] == pytest.approx((0.9 + 0.9 + 0.7 + 0.8 + 0.8) / 5, abs=1e-5)
    assert sorted(m["pixels"]) == [1, 1, 5]
    import json

    assert json.loads((tmp_path / "t.json").read_text())["sites"] == 3


def test_threshold_from_the_card(tmp_path):
    import json

    from minescan.pixel.temporal import card_threshold

    (tmp_path / "pix").mkdir()
    (tmp_path / "pix" / "card.json").write_text(
        json.dumps(
            {
                "kind": "pixel",
                "threshold": 0.31,
                "bands": ["B1"],
                "window": 1,
                "classes": [0, 1],
                "normalisation": {},
            }
        )
    )
    assert card_threshold(tmp_path / "pix") == pytest.approx(0.31)
    a = raster(tmp_path / "a.tif", [[0.3, 0.35]])
    assert (
        run(
            [
                "pixel",
                "temporal",
                "--rasters",
                str(a),
                "--out",
                str(tmp_path / "m.tif"),
                "--model",
                str(tmp_path / "pix"),
                "--sites-out",
                str(tmp_path / "s.gpkg"),
            ]
        )
        == 0
    )
    from minescan.vector_io import read_vector

    assert list(read_vector(tmp_path / "s.gpkg")["pixels"]) == [1]


def test_following_periods():
    from minescan.periods import following_periods

    assert following_periods("2026Q4", 3) == ["2026Q4", "2027Q1", "2027Q2"]
    assert following_periods("2025", 2) == ["2025", "2026"]
