"""detect.quadrants_per_job: tile runs a tile's four quadrants in one detect job and process, with the same
per-quadrant files, byte for byte, as one job per quadrant; tiles on the region's edge keep one job per
quadrant."""

import os
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
    assert r.stderr.strip().splitlines()[-1].startswith(
        "minescan: error: detect: 1 tile(s) x 2 quadrant(s) but 1 --prob-out and 2 --candidates-out"
    )


def test_detect_needs_one_tile_path_per_tile(tmp_path, bright_model_dir):
    r = subprocess.run(
        [sys.executable, "-m", "minescan.cli", "detect", "--tile", "21S-E092-N1440", "21S-E093-N1440",
         "--quadrant", "NW", "--tile-path", str(tmp_path / "t.tif"), "--model", str(bright_model_dir),
         "--region", str(tmp_path / "r.geojson"), "--prob-out", "p1.tif", "p2.tif",
         "--candidates-out", "c1.csv", "c2.csv"],
        capture_output=True, text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "minescan: error: detect: 2 --tile but 1 --tile-path (one each per tile)"


def test_classify_needs_as_many_quadrants_for_each_tile(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "minescan.cli", "classify", "--tile", "21S-E092-N1440", "21S-E093-N1440",
         "--tile-path", "a.tif", "b.tif", "--model", "none", "--candidates", "c1.csv", "c2.csv", "c3.csv",
         "--out", "o1.csv", "o2.csv", "o3.csv"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "minescan: error: classify: 3 --candidates for 2 tiles (as many quadrants for each tile, tile by tile)")
    assert not list(tmp_path.iterdir())


def test_tile_batches_are_fixed_by_grid_position():
    from minescan.scan.plan import tile_batches

    tiles = ["21S-E093-N1440", "21S-E092-N1440", "21S-E094-N1440", "21S-E093-N1441", "22S-E093-N1440",
             "21N-E093-N1440"]
    assert tile_batches(tiles, 2) == [
        ["21N-E093-N1440"],
        ["21S-E092-N1440", "21S-E093-N1440"],  # columns 92-93 of row 1440
        ["21S-E094-N1440"],  # 94-95: 95 is not in the region
        ["21S-E093-N1441"],  # another row
        ["22S-E093-N1440"],  # another zone
    ]
    # a tile added to the region joins its own batch and leaves the others as they were
    grown = tile_batches([*tiles, "21S-E095-N1440"], 2)
    assert ["21S-E094-N1440", "21S-E095-N1440"] in grown and ["21S-E092-N1440", "21S-E093-N1440"] in grown
    assert sorted(tuple(b) for b in tile_batches(tiles, 1)) == sorted((t,) for t in tiles)
    assert [len(b) for b in tile_batches([f"21S-E{c:03d}-N1440" for c in range(90, 99)], 4)] == [2, 4, 3]
    with pytest.raises(ValueError, match="tiles per batch must be >= 1"):
        tile_batches(tiles, 0)


def test_two_tiles_per_job_give_the_same_files(tmp_path):
    """detect.tiles_per_job: 2 runs two neighbouring tiles in one detect job and one classify job (a rule per
    batch) with the same per-quadrant files, byte for byte, as jobs per tile; new imagery of one tile
    re-runs its batch."""
    snakefile = snapshot_workflow(tmp_path / "workflow")
    models = tmp_path / "models"
    save_test_model(models / "discovery", "discovery", bright_square_fcn())
    save_test_model(models / "impact", "impact", constant_impact_cnn())
    tiles = [grid_tile(92, 1440), grid_tile(93, 1440)]
    runs = {}
    for kind, detect in (("tile", {}), ("batch", {"tiles_per_job": 2})):
        d = tmp_path / kind
        d.mkdir()
        write_tiny_scene(d, tiles, mine_squares(tiles))
        write_tiny_config(d, models / "discovery", models / "impact",
                          detect={"block_cells": 7, "quadrants_per_job": "tile", **detect})
        runs[kind] = job_counts((lambda r: r.stdout + r.stderr)(run_snakemake(d, TARGET, snakefile=snakefile)))
    batch_rule, classify_rule = "detect_tiles_21S_E092_N1440", "classify_tiles_21S_E092_N1440"
    assert runs["tile"] == {"tile": 2, "detect_tile": 2, "classify_tile": 2, "merge": 1}
    assert runs["batch"] == {"tile": 2, batch_rule: 1, classify_rule: 1, "merge": 1}
    a, b = (tmp_path / k / "results" / "tiny" / "2026Q1" for k in ("tile", "batch"))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".kml"))
    assert len([f for f in files if f.parts[0] == "quadrants"]) == 16
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs"
    probs = sorted(a.glob("quadrants/*/probability.tif"))
    assert len(probs) == 8 and all((b / p.relative_to(a)).read_bytes() == p.read_bytes() for p in probs)
    logs = tmp_path / "batch" / "results" / "logs" / "tiny" / "2026Q1"
    assert [p.name for p in (logs / "detect").iterdir()] == ["batch_21S-E092-N1440.log"]
    assert [p.name for p in (logs / "classify").iterdir()] == ["batch_21S-E092-N1440.log"]
    # a replaced impact model re-runs the batch's classify job only, as for a tile job
    save_test_model(models / "impact", "impact", constant_impact_cnn(label=1))
    r = run_snakemake(tmp_path / "batch", "-n", TARGET, snakefile=snakefile)
    assert job_counts(r.stdout + r.stderr) == {classify_rule: 1, "merge": 1}
    # new imagery of one tile (other bytes, newer): its batch runs again, both tiles, as documented
    tile_tif = b / "tiles" / f"{tiles[1].name}.tif"
    data = bytearray(tile_tif.read_bytes())
    data[-1] ^= 1
    tile_tif.write_bytes(bytes(data))
    os.utime(tile_tif, (tile_tif.stat().st_atime, tile_tif.stat().st_mtime + 60))
    r = run_snakemake(tmp_path / "batch", "-n", TARGET, snakefile=snakefile)
    assert job_counts(r.stdout + r.stderr) == {batch_rule: 1, classify_rule: 1, "merge": 1}
