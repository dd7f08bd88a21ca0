"""The DAG with segmentation on the tiny test scan: train_segment, segment per quadrant, extents, merge."""

import json

import geopandas as gpd
import pyogrio
import pytest
from conftest import grid_tile, mine_squares, run_snakemake, write_tiny_config, write_tiny_scene
from shapely.geometry import box
from test_integration import job_counts

from minescan.grid import to_crs

pytestmark = pytest.mark.slow


def test_dag_with_segmentation(tmp_path, bright_model_dir, impact_model_dir):
    d = tmp_path
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    squares = mine_squares(tiles)
    write_tiny_scene(d, tiles, squares)
    res = tiles[0].grid.resolution_m
    polys = [to_crs(box(c0 * res, -r1 * res, c1 * res, -r0 * res), tiles[0].id.epsg, 4326)
             for c0, r0, c1, r1 in squares]
    gpd.GeoDataFrame(geometry=polys, crs=4326).to_file(d / "disturbed.geojson")
    segment = {"enabled": True, "model": "models/segment", "train": {
        "images": ["imagery/composite_2026Q1.tif"], "polygons": "disturbed.geojson", "tile_px": 128,
        "patch_px": 64, "batch_size": 4, "epochs": 6, "steps_per_epoch": 4, "learning_rate": 0.002,
        "window_px": 128, "overlap_px": 32}}
    write_tiny_config(d, bright_model_dir, impact_model_dir, segment=segment,
                      detect={"block_cells": 7, "quadrants_per_job": "tile"})  # a detect process per tile: quicker
    r = run_snakemake(d)
    counts = job_counts(r.stdout + r.stderr)
    assert counts["train_segment"] == 1 and counts["segment"] == 8 and counts["segment_extents"] == 1
    out = d / "results" / "tiny" / "2026Q1"
    card = json.loads((d / "models" / "segment" / "card.json").read_text())
    assert card["kind"] == "segmentation" and set(card["metrics"]) >= {"train", "validation", "test"}
    assert (out / "quadrants" / f"{tiles[0].name}_NW" / "segment.tif").exists()
    extents = gpd.read_file(out / "extents.gpkg")
    sites = gpd.read_file(out / "sites.gpkg", layer="sites")
    assert "area_ha_segmented" in sites.columns
    assert "site_extents" in {name for name, _ in pyogrio.list_layers(out / "sites.gpkg")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["site_area_ha_segmented"] == pytest.approx(sites["area_ha_segmented"].sum(), abs=1e-3)
    # a few training steps on 4 small squares need not find anything: the chain and the columns are checked
    # here, the extents of a trained model in test_segment_train.py
    assert list(extents.columns) == ["extent_id", "zone", "area_ha", "geometry"]
    assert (sites["area_ha_segmented"] >= 0).all() and len(sites) >= 1
    assert "Nothing to be done" in (r2 := run_snakemake(d, "-n")).stdout + r2.stderr
