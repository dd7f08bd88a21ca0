"""The real Snakemake DAG on a tiny config in a temp dir: local GeoTIFF -> tiles -> quadrants -> layers."""

import json
import shutil

import pytest
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
    d, tiles, _ = workflow
    out = d / "results" / "tiny" / "2026Q1"
    r = run_snakemake(d, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr
    before = {n: (out / n).read_bytes() for n in OUTPUTS}
    # a crash mid-scan: one quadrant's results and the merged layers are gone
    shutil.rmtree(out / "quadrants" / f"{tiles[1].name}_SE")
    for n in OUTPUTS:
        (out / n).unlink()
    r = run_snakemake(d, "-n")
    counts = job_counts(r.stdout)
    assert {k: counts.get(k) for k in ("tile", "detect", "classify", "merge")} == \
        {"tile": None, "detect": 1, "classify": 1, "merge": 1}, counts
    run_snakemake(d)
    for n in OUTPUTS:
        assert (out / n).read_bytes() == before[n], f"{n} differs after resuming"


def test_keep_going_finishes_the_other_jobs(workflow, tmp_path):
    d, tiles, _ = workflow
    work = tmp_path / "kg"
    shutil.copytree(d, work, ignore=shutil.ignore_patterns("quadrants", ".snakemake"))
    scan = work / "results" / "tiny" / "2026Q1"
    for n in OUTPUTS:
        (scan / n).unlink()
    bad = scan / "tiles" / f"{tiles[0].name}.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    r = run_snakemake(work, "--keep-going", check=False)
    assert r.returncode != 0
    for q in ("NW", "NE", "SW", "SE"):
        assert (scan / "quadrants" / f"{tiles[1].name}_{q}" / "classified.csv").exists()
        assert not (scan / "quadrants" / f"{tiles[0].name}_{q}" / "candidates.csv").exists()
    log = (work / "results" / "logs" / "tiny" / "2026Q1" / "detect" / f"{tiles[0].name}_NW.log").read_text()
    assert f"minescan: error: results/tiny/2026Q1/tiles/{tiles[0].name}.tif" in log
    assert not (scan / "summary.json").exists()
