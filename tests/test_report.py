"""The real DAG with the layers stage on a tiny config (two tiles, four bright squares): registry cross-check,
overlays, map, plots, and `snakemake --report` giving one shareable HTML file."""

import json
import re
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from conftest import grid_tile, run_snakemake, write_tiny_config, write_tiny_scene
from shapely.geometry import box

from minescan.grid import to_crs

pytestmark = pytest.mark.slow
LAYER_OUTPUTS = ("sites_annotated.gpkg", "sites_annotated.csv", "unregistered.csv", "unregistered.kml",
                 "unregistered.gpkg", "areas.csv", "layers.json", "map.html", "report/detections_by_class.png",
                 "report/area_by_area.png", "report/probability_histogram.png", "report/model_metrics.png",
                 "report/summary_table.csv")


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, bright_model_dir, impact_model_dir):
    d = tmp_path_factory.mktemp("report")
    tile = grid_tile(93, 1440)  # one tile (four quadrant jobs) keeps the DAG quick
    c0, r0, _, _ = tile.core_px()
    squares = [(c0 + 150, r0 + 150, c0 + 200, r0 + 200), (c0 + 450, r0 + 420, c0 + 500, r0 + 470),
               (c0 + 150, r0 + 450, c0 + 200, r0 + 500)]
    write_tiny_scene(d, [tile], squares)
    epsg = tile.id.epsg
    # a concession (UTM) around the first square; a protected area (lon/lat) over the west half of the tile,
    # which holds the first and the third square
    sc0, sr0, sc1, sr1 = squares[0]
    conc = box(sc0 * 10 - 300, -sr1 * 10 - 300, sc1 * 10 + 300, -sr0 * 10 + 300)
    (d / "ref").mkdir()
    gpd.GeoDataFrame({"processo": ["850.123/2024"], "titular": ["Mina Teste"]}, geometry=[conc], crs=epsg
                     ).to_file(d / "ref" / "concessions.gpkg")
    x0, y0, x1, y1 = tile.core_bounds
    west = to_crs(box(x0 - 1000, y0 - 1000, (x0 + x1) / 2, y1 + 1000), epsg, 4326)
    gpd.GeoDataFrame({"name": ["Terra Teste"]}, geometry=[west], crs=4326).to_file(d / "ref" / "protected.geojson")
    write_tiny_config(
        d, bright_model_dir, impact_model_dir,
        merge={"isolated_threshold": 0.999, "isolation_k": 2, "isolation_km": 1.0},
        layers={"registry": [{"file": "ref/concessions.gpkg", "label": "concessions", "id_column": "processo",
                              "name_column": "titular"}],
                "overlays": [{"file": "ref/protected.geojson", "name_column": "name", "kind": "indigenous"}],
                "match_distance_m": 100, "map_max_px": 256},
        detect={"block_cells": 7, "quadrants_per_job": "tile"})  # one detect process for the tile: quicker
    run_snakemake(d)
    return d, squares


def test_dag_makes_the_layers(workflow):
    d, squares = workflow
    out = d / "results" / "tiny" / "2026Q1"
    for name in LAYER_OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spatial_prior"]["enabled"] and summary["sites"] == len(squares)
    layers = json.loads((out / "layers.json").read_text())
    assert layers["registry"]["registered_sites"] == 1 and layers["registry"]["unregistered_sites"] == 2
    assert layers["areas"][0]["name"] == "Terra Teste" and layers["areas"][0]["sites"] == 2
    assert layers["areas"][0]["unregistered_sites"] == 1
    assert len(pd.read_csv(out / "unregistered.csv")) == 2
    html = (out / "map.html").read_text()
    assert len(re.findall(r'"className": "minescan-site ', html)) == len(squares)
    r = run_snakemake(d, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_snakemake_report_is_one_shareable_file(workflow):
    d, _ = workflow
    report = d / "report.html"
    run_snakemake(d, "--report", str(report))
    html = report.read_text()
    assert len(html) > (d / "results" / "tiny" / "2026Q1" / "map.html").stat().st_size  # the map is inside
    for text in ("map.html", "unregistered.csv", "areas.csv", "probability_histogram.png", "model_metrics.png",
                 "summary_table.csv", "Unregistered sites", "minescan: surface mines"):
        assert text in html, text


def test_snakemake_report_zip_holds_every_registered_output(workflow):
    d, _ = workflow
    run_snakemake(d, "--report", str(d / "report.zip"))
    with zipfile.ZipFile(d / "report.zip") as z:
        names = {Path(n).name for n in z.namelist()}
    assert {"report.html", "map.html", "unregistered.csv", "areas.csv", "sites_annotated.csv",
            "detections_by_class.png", "area_by_area.png", "probability_histogram.png", "model_metrics.png",
            "summary_table.csv"} <= names
