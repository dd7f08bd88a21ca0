"""detect.quadrants_per_job: tile runs a tile's four quadrants in one detect job and process, with the same
per-quadrant files, byte for byte, as one job per quadrant; tiles on the region's edge keep one job per
quadrant."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    bright_square_fcn,
    constant_impact_cnn,
    grid_tile,
    mine_squares,
    run_snakemake,
    save_test_model,
    write_tiny_config,
    write_tiny_scene,
)
from test_incremental import snapshot_workflow
from test_integration import job_counts

TARGET = "results/tiny/2026Q1/summary.json"


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect_tile")
    snakefile = snapshot_workflow(tmp / "workflow")
    models = tmp / "models"
    save_test_model(models / "discovery", "discovery", bright_square_fcn())
    save_test_model(models / "impact", "impact", constant_impact_cnn())
    tiles = [grid_tile(93, 1440)]
    base = tmp / "quadrant"
    base.mkdir()
    write_tiny_scene(base, tiles, mine_squares(tiles))
    write_tiny_config(base, models / "discovery", models / "impact")
    shutil.copytree(base, tmp / "tile")
    write_tiny_config(
        tmp / "tile",
        models / "discovery",
        models / "impact",
        detect={"block_cells": 7, "quadrants_per_job": "tile"},
    )
    return snakefile, base, tmp / "tile", tiles[0]


def test_one_job_per_tile_gives_the_same_files(scans):
    snakefile, per_quadrant, per_tile, tile = scans
    run_snakemake(per_quadrant, TARGET, snakefile=snakefile)
    r = run_snakemake(per_tile, TARGET, snakefile=snakefile)
    assert job_counts(r.stdout + r.stderr) == {"tile": 1, "detect_tile": 1, "classify_tile": 1, "merge": 1}
    a, b = (d / "results" / "tiny" / "2026Q1" for d in (per_quadrant, per_tile))
    files = sorted(
        p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".kml")
    )
    assert len([f for f in files if f.parts[0] == "quadrants"]) == 8
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs"
    assert (per_tile / "results" / "logs" / "tiny" / "2026Q1" / "detect" / f"{tile.name}.log").exists()
    # a replaced impact model re-runs classify only, a replaced discovery model the tile's detect job (and
    # what follows), as with one job per quadrant (tests/test_incremental.py)
    models = yaml.safe_load((per_tile / "config.yaml").read_text())["models"]
    save_test_model(Path(models["impact"]), "impact", constant_impact_cnn(label=1))
    r = run_snakemake(per_tile, "-n", TARGET, snakefile=snakefile)
    assert job_counts(r.stdout + r.stderr) == {"classify_tile": 1, "merge": 1}
    save_test_model(Path(models["discovery"]), "discovery", bright_square_fcn(), threshold=0.7)
    r = run_snakemake(per_tile, "-n", TARGET, snakefile=snakefile)
    assert job_counts(r.stdout + r.stderr) == {"detect_tile": 1, "classify_tile": 1, "merge": 1}


def test_edge_tiles_keep_one_job_per_quadrant(tmp_path):
    """A region covering only part of a tile: its scanned quadrants run one job each, even in tile mode."""
    import geopandas as gpd
    from shapely.geometry import box

    from minescan.grid import to_crs

    t = grid_tile(93, 1440)
    write_tiny_scene(tmp_path, [t], mine_squares([t]))
    x0, y0, x1, y1 = t.core_bounds
    west = to_crs(box(x0 + 50, y0 + 50, (x0 + x1) / 2 - 50, y1 - 50), t.id.epsg, 4326)  # NW and SW only
    gpd.GeoDataFrame({"name": ["tiny"]}, geometry=[west], crs=4326).to_file(tmp_path / "region.geojson")
    write_tiny_config(tmp_path, tmp_path / "d", tmp_path / "i", detect={"quadrants_per_job": "tile"})
    save_test_model(tmp_path / "d", "discovery", bright_square_fcn())
    save_test_model(tmp_path / "i", "impact", constant_impact_cnn())
    r = run_snakemake(tmp_path, "-n", TARGET)
    assert job_counts(r.stdout + r.stderr) == {"tile": 1, "detect": 2, "classify": 2, "merge": 1}


def test_detect_needs_one_output_pair_per_quadrant(tmp_path, bright_model_dir):
    t = grid_tile()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "minescan.cli",
            "detect",
            "--tile",
            t.name,
            "--quadrant",
            "NW",
            "NE",
            "--tile-path",
            str(tmp_path / "t.tif"),
            "--model",
            str(bright_model_dir),
            "--region",
            str(tmp_path / "r.geojson"),
            "--prob-out",
            str(tmp_path / "p.tif"),
            "--candidates-out",
            str(tmp_path / "c1.csv"),
            str(tmp_path / "c2.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1].startswith("minescan: error: detect: 2 quadrants but 1 --prob-out")
    )
