"""The datasets rules in the real Snakemake DAG: grid -> chips from the scan's tiles -> YOLO set."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import yaml
from conftest import grid_tile, mine_squares, run_snakemake, write_tiny_config, write_tiny_scene
from shapely.geometry import box

from minescan.datasets.yolo import read_labels
from minescan.grid import to_crs


@pytest.mark.slow
def test_dag_builds_grid_chips_and_yolo_from_polygons(tmp_path, bright_model_dir, impact_model_dir):
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    squares = mine_squares(tiles)
    write_tiny_scene(tmp_path, tiles, squares)
    r = tiles[0].grid.resolution_m
    geoms = [to_crs(box(c0 * r, -r1 * r, c1 * r, -r0 * r), tiles[0].id.epsg, 4326) for c0, r0, c1, r1 in squares]
    gpd.GeoDataFrame({"class": ["mine", "confuser"] * 2, "site": range(4)}, geometry=geoms, crs=4326).to_file(
        tmp_path / "truth.gpkg")
    write_tiny_config(tmp_path, bright_model_dir, impact_model_dir, datasets={
        "polygons": "truth.gpkg", "select": "class=mine", "zoom": 16, "cell_m": 500, "block_m": 2000,
        "table": "none"})
    out = tmp_path / "results" / "tiny" / "2026Q1" / "datasets"
    run_snakemake(tmp_path, str(out.relative_to(tmp_path) / "yolo" / "data.yaml"))
    cells = pd.read_csv(out / "cells.csv")
    assert (cells.label == "positive").sum() >= 2 and set(cells.site) == {0, 2}  # the mines only
    chips = pd.read_csv(out / "chips" / "chips.csv")
    assert (chips.valid_fraction == 1).all() and len(chips) == len(cells)
    data = yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "mine"}
    splits = pd.read_csv(out / "yolo" / "splits.csv")
    n_boxes = sum(len(read_labels(p)) for p in (out / "yolo" / "labels").rglob("*.txt"))
    assert n_boxes == splits.boxes.sum() >= 2
    assert (splits.groupby("pair_id").split.nunique() == 1).all()
    assert r == 10
