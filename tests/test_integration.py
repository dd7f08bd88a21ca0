"""The real Snakemake DAG on a tiny config in a temp dir: local GeoTIFF -> tiles -> quadrants -> layers."""

import json
import shutil

import pytest
import yaml
from conftest import grid_tile, mine_squares, run_snakemake, write_tiny_config, write_tiny_scene

pytestmark = pytest.mark.slow
OUTPUTS = ("detections.csv", "detections.kml", "rejected.csv", "sites.gpkg", "summary.json")


def job_counts(output: str) -> dict:
    """Parse Snakemake's 'Job stats' table into {rule: count}."""
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            inside = True
            continue
        if inside:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, bright_model_dir, impact_model_dir):
    d = tmp_path_factory.mktemp("dag")
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    squares = mine_squares(tiles)
    write_tiny_scene(d, tiles, squares)
    write_tiny_config(d, bright_model_dir, impact_model_dir)
    run_snakemake(d)
    return d, tiles, squares


def test_dag_produces_the_layers(workflow):
    d, tiles, squares = workflow
    out = d / "results" / "tiny" / "2026Q1"
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiles"] == 2 and summary["quadrants"] == 8
    assert summary["sites"] == len(squares) and summary["sites_by_impact"] == {"high": len(squares)}
    assert (d / "results" / "logs" / "tiny" / "2026Q1" / "detect" / f"{tiles[0].name}_NW.log").exists()
    assert (d / "results" / "benchmarks" / "tiny" / "2026Q1" / "detect" / f"{tiles[0].name}_NW.tsv").exists()


def test_rerun_does_nothing_and_resumes_to_identical_bytes(workflow):
    """A crash mid-scan (one tile and its quadrants, and the merged layers, gone): the rerun redoes exactly
    those jobs and every output of the scan (tiles, probability rasters, quadrant CSVs, merged and layer
    files) comes back byte for byte; the other tile's files are not rewritten."""
    d, tiles, _ = workflow
    out = d / "results" / "tiny" / "2026Q1"
    r = run_snakemake(d, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert any(p.suffix == ".tif" and p.parent.name == "tiles" for p in files)
    assert sum(p.name == "probability.tif" for p in files) == 8
    assert sum(p.name == "classified.csv" for p in files) == 8
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    (out / "tiles" / f"{tiles[1].name}.tif").unlink()
    for q in ("NW", "NE", "SW", "SE"):
        shutil.rmtree(out / "quadrants" / f"{tiles[1].name}_{q}")
    for n in OUTPUTS:
        (out / n).unlink()
    r = run_snakemake(d, "-n")
    counts = job_counts(r.stdout)
    assert {k: counts.get(k) for k in ("tile", "detect", "classify", "merge")} == \
        {"tile": 1, "detect": 4, "classify": 4, "merge": 1}, counts
    run_snakemake(d)
    for p, (data, mtime) in before.items():
        assert p.exists() and p.read_bytes() == data, f"{p.relative_to(out)} differs after resuming"
        if tiles[0].name in p.name or tiles[0].name in p.parent.name:
            assert p.stat().st_mtime_ns == mtime, f"{p.relative_to(out)} was rewritten"


def test_keep_going_finishes_the_other_jobs(workflow, tmp_path):
    d, tiles, _ = workflow
    work = tmp_path / "kg"
    shutil.copytree(d, work, ignore=shutil.ignore_patterns("quadrants", ".snakemake"))
    scan = work / "results" / "tiny" / "2026Q1"
    for n in OUTPUTS:
        (scan / n).unlink()
    bad = scan / "tiles" / f"{tiles[0].name}.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    # one detect process per tile (quicker; the per-quadrant jobs are covered above): the broken tile's job
    # fails, the other tile's job and its classify jobs still run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["detect"] = {**cfg.get("detect", {}), "quadrants_per_job": "tile"}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_snakemake(work, "--keep-going", check=False)
    assert r.returncode != 0
    for q in ("NW", "NE", "SW", "SE"):
        assert (scan / "quadrants" / f"{tiles[1].name}_{q}" / "classified.csv").exists()
        assert not (scan / "quadrants" / f"{tiles[0].name}_{q}" / "candidates.csv").exists()
    log = (work / "results" / "logs" / "tiny" / "2026Q1" / "detect" / f"{tiles[0].name}.log").read_text()
    assert f"minescan: error: results/tiny/2026Q1/tiles/{tiles[0].name}.tif" in log
    assert not (scan / "summary.json").exists()
