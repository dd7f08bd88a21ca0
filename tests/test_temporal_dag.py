"""The temporal rule in the real Snakemake DAG (pixel.temporal), on the FCN's cell rasters and on a pixel
model's 10 m rasters, and the quoting of pixel.water in the detect rule."""

from __future__ import annotations

import json
import shlex

import geopandas as gpd
import pytest
from conftest import grid_tile, run_snakemake, write_scene, write_tiny_config
from shapely.geometry import box
from test_pixel_scan import bright_b1_pixel_model

from minescan.grid import to_crs
from minescan.vector_io import read_vector

pytestmark = pytest.mark.slow

PERIODS = ["2026Q1", "2026Q2", "2026Q3"]
TILE = grid_tile(93, 1440)


def three_period_scan(tmp_path):
    """One tile, a region inside its NW quadrant (one detect job per period), three periods: a mine square
    present in every period and a bright square present only in 2026Q2."""
    c0, r0, _, _ = TILE.core_px()
    persistent = (c0 + 150, r0 + 150, c0 + 200, r0 + 200)
    transient = (c0 + 40, r0 + 240, c0 + 90, r0 + 290)
    (tmp_path / "imagery").mkdir()
    for p in PERIODS:
        squares = [persistent, transient] if p == "2026Q2" else [persistent]
        write_scene(tmp_path / "imagery" / f"composite_{p}.tif", [TILE], squares=squares)
    xmin, _, _, ymax = TILE.core_bounds
    half = TILE.grid.tile_px * TILE.grid.resolution_m / 2
    nw = box(xmin + 200, ymax - half + 200, xmin + half - 200, ymax - 200)
    region = to_crs(nw, TILE.id.epsg, 4326)
    gpd.GeoDataFrame({"name": ["tiny"]}, geometry=[region], crs=4326).to_file(tmp_path / "region.geojson")


def check_temporal(tmp_path, raster: str):
    out = tmp_path / "results" / "tiny" / "2026Q3" / "temporal"
    q = out / "quadrants" / f"{TILE.name}_NW"
    assert (q / "median.tif").is_file()
    summary = json.loads((out / "temporal.json").read_text())
    assert summary["periods"] == PERIODS and summary["raster"] == raster and summary["quadrants"] == 1
    sites = read_vector(out / "sites.gpkg")
    return sites, read_vector(q / "sites.gpkg")


@pytest.mark.parametrize("detector", ["fcn", "pixel"])
def test_temporal_rule_median_of_three_periods(tmp_path, detector, bright_model_dir, impact_model_dir):
    three_period_scan(tmp_path)
    model = bright_model_dir if detector == "fcn" else bright_b1_pixel_model(tmp_path / "pixel-model")
    write_tiny_config(tmp_path, model, impact_model_dir, periods=PERIODS, pixel={"temporal": {"last": 3}})
    target = "results/tiny/2026Q3/temporal/sites.gpkg"
    run_snakemake(tmp_path, target)
    assert not (tmp_path / "results" / "tiny" / "2026Q2" / "temporal").exists()  # 2 periods up to Q2 < 3
    raster = "probability.tif" if detector == "fcn" else "probability_10m.tif"
    sites, quadrant_sites = check_temporal(tmp_path, raster)
    # the transient square is a candidate of 2026Q2 only, so not in the median: one site, the persistent one
    cands = {
        p: (tmp_path / "results" / "tiny" / p / "quadrants" / f"{TILE.name}_NW" / "candidates.csv")
        .read_text()
        .count("\n")
        for p in PERIODS
    }
    assert cands["2026Q2"] > cands["2026Q1"] == cands["2026Q3"] > 1
    assert len(sites) == len(quadrant_sites) == 1
    import rasterio

    q = tmp_path / "results" / "tiny" / "2026Q3" / "temporal" / "quadrants" / f"{TILE.name}_NW"
    with rasterio.open(q / "median.tif") as ds:
        pixel = abs(ds.transform.a)
    assert pixel == (270.0 if detector == "fcn" else 10.0)
    # the site covers the persistent square (50 px = 500 m): 0.25 km2 = 25 ha at least
    assert sites["area_ha"].iloc[0] >= 25.0
    assert (
        sites.to_crs(TILE.id.epsg)
        .geometry.iloc[0]
        .intersects(read_vector(q / "sites.gpkg").to_crs(TILE.id.epsg).geometry.iloc[0])
    )


def test_water_is_passed_quoted_and_only_when_set(tmp_path, impact_model_dir):
    three_period_scan(tmp_path)
    model = bright_b1_pixel_model(tmp_path / "pixel-model")
    water = tmp_path / "hydro $(touch pwned) it's.gpkg"
    water.write_text("")
    target = "results/tiny/2026Q3/temporal/sites.gpkg"
    write_tiny_config(
        tmp_path,
        model,
        impact_model_dir,
        periods=PERIODS,
        pixel={"water": str(water), "temporal": {"last": 2}},
    )
    r = run_snakemake(tmp_path, "-n", "-p", target)
    shell = [ln.removeprefix("Shell command: ") for ln in r.stdout.splitlines()]
    detect = [ln for ln in shell if ln.startswith("minescan detect ")]
    assert len(detect) == 2  # 2026Q2 and 2026Q3 (last 2)
    assert all(f"--water {shlex.quote(str(water))} " in ln for ln in detect)
    temporal = [ln for ln in shell if ln.startswith("minescan pixel temporal ")]
    assert len(temporal) == 1 and temporal[0].count("probability_10m.tif") == 2
    assert "--model " in temporal[0]  # no threshold configured: the card's
    assert not (tmp_path / "pwned").exists()
    write_tiny_config(
        tmp_path,
        model,
        impact_model_dir,
        periods=PERIODS,
        pixel={"temporal": {"last": 2, "threshold": 0.7}},
    )
    r = run_snakemake(tmp_path, "-n", "-p", target)
    assert "--water" not in r.stdout and "--threshold 0.7 " in r.stdout
