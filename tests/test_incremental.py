"""Incremental re-runs, proved on Snakemake's dry-run job list of a finished tiny scan.

Two tiles far enough apart that no imagery reaches both (their halos do not meet), each cut from its own
GeoTIFF. After one full run, each test copies the finished work directory (mtimes and .snakemake state
kept), changes one thing and asks Snakemake (-n) which jobs it would run.
"""

import shutil
from pathlib import Path

import geopandas as gpd
import pytest
import yaml
from conftest import (
    ROOT,
    bright_square_fcn,
    constant_impact_cnn,
    grid_tile,
    run_snakemake,
    save_test_model,
    write_scene,
    write_tiny_config,
)
from shapely.geometry import box
from shapely.ops import unary_union
from test_integration import job_counts

from minescan.grid import to_crs
from minescan.sources.local import sources_for_tile

pytestmark = pytest.mark.slow
A, E = grid_tile(93, 1440), grid_tile(95, 1440)  # tile 94 lies between them: their halos do not meet
TARGET_Q1 = ["results/tiny/2026Q1/summary.json"]


WORKFLOW_FILES = ("Snakefile", "rules", "envs", "profiles", "config", "report")


def snapshot_workflow(dst: Path) -> Path:
    """A copy of the workflow definition (Snakefile, rules, profiles, ...) to run the tests from, so that
    edits made to the working tree while a test runs (rule code, params) cannot change what it plans."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst / "Snakefile"


def square(tile, dx, dy, size=50):
    c0, r0, _, _ = tile.core_px()
    return (c0 + dx, r0 + dy, c0 + dx + size, r0 + dy + size)


def image_for(path, tile, squares=(), margin_px=0):
    """A GeoTIFF covering exactly the tile's core + halo (+ margin) with bright squares (global px)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_scene(path, [tile], squares=squares, margin_px=margin_px)


@pytest.fixture(scope="module")
def snakefile(tmp_path_factory):
    return snapshot_workflow(tmp_path_factory.mktemp("workflow"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, snakefile):
    d = tmp_path_factory.mktemp("incremental")
    save_test_model(d / "models" / "discovery", "discovery", bright_square_fcn())
    save_test_model(d / "models" / "impact", "impact", constant_impact_cnn())
    for period in ("2026Q1", "2026Q2"):
        image_for(d / "imagery" / period / "a.tif", A, [square(A, 150, 150)])
        image_for(d / "imagery" / period / "e.tif", E, [square(E, 400, 400)] + ([square(E, 100, 450)] if
                                                                              period == "2026Q2" else []))
    region = unary_union([to_crs(box(*t.core_bounds), t.id.epsg, 4326).buffer(-0.0005) for t in (A, E)])
    gpd.GeoDataFrame({"name": ["tiny"]}, geometry=[region], crs=4326).to_file(d / "region.geojson")
    write_tiny_config(d, "models/discovery", "models/impact", imagery="imagery/{period}")
    run_snakemake(d, *TARGET_Q1, snakefile=snakefile)
    r = run_snakemake(d, "-n", *TARGET_Q1, snakefile=snakefile)
    assert "Nothing to be done" in r.stdout, r.stdout[-3000:]
    return d


class Work:
    """A copy of the finished scan (copy2 keeps mtimes, so nothing looks newer than it is)."""

    def __init__(self, path: Path, snakefile: Path):
        self.path, self.snakefile = path, snakefile

    def __truediv__(self, other):
        return self.path / other

    def run(self, *args, **kw):
        return run_snakemake(self.path, *args, snakefile=self.snakefile, **kw)

    def planned(self, *targets) -> dict:
        return job_counts(self.run("-n", *(targets or TARGET_Q1)).stdout)


@pytest.fixture
def work(finished, tmp_path, snakefile):
    shutil.copytree(finished, tmp_path / "w", symlinks=True)
    return Work(tmp_path / "w", snakefile)


def test_sources_for_tile_keeps_only_imagery_reaching_the_tile(finished):
    q1 = finished / "imagery" / "2026Q1"
    srcs = [q1 / "a.tif", q1 / "e.tif"]
    assert sources_for_tile(A, srcs) == [str(q1 / "a.tif")]
    assert sources_for_tile(E, srcs) == [str(q1 / "e.tif")]
    # the neighbour of A shares A's halo: A's file reaches it; a tile nothing covers gets everything back
    assert sources_for_tile(grid_tile(94, 1440), srcs) == [str(q1 / "a.tif"), str(q1 / "e.tif")]
    assert sources_for_tile(grid_tile(99, 1440), srcs) == [str(s) for s in srcs]


def test_new_imagery_for_one_tile_reruns_that_tile_only(work):
    # a new acquisition over part of tile E (e.g. filling a cloud gap), in the same period folder
    image_for(work / "imagery" / "2026Q1" / "e-update.tif", E, [square(E, 100, 450)], margin_px=-100)
    r = work.run("-n", *TARGET_Q1)
    assert job_counts(r.stdout) == {"tile": 1, "detect": 4, "classify": 4, "merge": 1}
    assert f"tiles/{E.name}.tif" in r.stdout and f"output: results/tiny/2026Q1/tiles/{A.name}.tif" not in r.stdout
    out = "output: results/tiny/2026Q1/quadrants/{}_{}/probability.tif"
    assert all(out.format(E.name, q) in r.stdout and out.format(A.name, q) not in r.stdout
               for q in ("NW", "NE", "SW", "SE"))


def test_touching_one_tiles_imagery_reruns_that_tile_only(work):
    # real imagery is larger than --max-checksum-file-size (1 MB), so a newer file means new content;
    # with that check off, these small test files behave the same way
    (work / "imagery" / "2026Q1" / "a.tif").touch()
    r = work.run("-n", "--max-checksum-file-size", "0", *TARGET_Q1)
    assert job_counts(r.stdout) == {"tile": 1, "detect": 4, "classify": 4, "merge": 1}
    assert f"output: results/tiny/2026Q1/tiles/{A.name}.tif" in r.stdout


def test_replacing_the_discovery_model_reruns_detection_everywhere(work):
    save_test_model(work / "models" / "discovery", "discovery", bright_square_fcn(), threshold=0.7)
    assert work.planned() == {"detect": 8, "classify": 8, "merge": 1}


def test_replacing_the_impact_model_reruns_classification_everywhere(work):
    save_test_model(work / "models" / "impact", "impact", constant_impact_cnn(label=1))
    assert work.planned() == {"classify": 8, "merge": 1}


def test_unrelated_files_rerun_nothing(work):
    # imagery of a place no tile reaches, a note beside the imagery, other files of the work directory,
    # and the config rewritten with the same content
    image_for(work / "imagery" / "2026Q1" / "elsewhere.tif", grid_tile(120, 1400))
    (work / "imagery" / "2026Q1" / "README.txt").write_text("acquired 2026-04-02\n")
    (work / "notes.md").write_text("x\n")
    (work / "config.yaml").write_text((work / "config.yaml").read_text())
    # and imagery touched without new content: Snakemake compares the checksums of inputs under 1 MB
    (work / "imagery" / "2026Q1" / "e.tif").touch()
    r = work.run("-n", *TARGET_Q1)
    assert "Nothing to be done" in r.stdout + r.stderr, job_counts(r.stdout)


def test_next_quarter_runs_only_the_new_scan_and_its_change_layer(work):
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    del cfg["periods"]
    cfg["schedule"] = {"every": "quarter", "from": "2026Q1", "to": "2026Q2"}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = ["results/tiny/2026Q1/summary.json", "results/tiny/2026Q2/summary.json",
               "results/tiny/2026Q2/change/change.json"]
    assert work.planned(*targets) == {"tile": 2, "detect": 8, "classify": 8, "merge": 1, "change": 1}
    work.run(*targets)
    change = (work / "results" / "tiny" / "2026Q2" / "change" / "change.csv").read_text().splitlines()
    statuses = sorted(line.split(",")[0] for line in change[1:])
    assert statuses == ["new", "unchanged", "unchanged"], change  # tile E gained one mine in 2026Q2
    assert "Nothing to be done" in work.run("-n", *targets).stdout
