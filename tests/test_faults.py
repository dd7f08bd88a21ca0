"""The fault suite: every fault a careful user or a hostile input file can bring, one test each.

Each test asserts the one thing a user sees, a single ``minescan: error:`` line naming the culprit (file,
key, row, band), with no traceback, and that outputs already finished are left as they were. The
Snakemake tests share one tiny scan whose working directory, region file, model directories and
``results_dir`` hold spaces, quotes and a ``$(touch pwned)``: were any value pasted unquoted into a rule's
shell command, a file ``pwned`` would appear. The tests that run Snakemake are marked ``slow``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from conftest import (
    bright_square_fcn,
    constant_impact_cnn,
    grid_tile,
    mine_squares,
    run_snakemake,
    save_test_model,
    write_scene,
    write_tiny_config,
    write_tiny_scene,
)
from shapely.geometry import Polygon, box
from test_incremental import snapshot_workflow

from minescan import SENTINEL2_BANDS
from minescan import config as cfgmod
from minescan.cli import run
from minescan.errors import ConfigError
from minescan.grid import to_crs
from minescan.sources.local import make_tile

TILE = grid_tile(93, 1440)
HOSTILE_RESULTS = "out dir $(touch pwned) 'q"


def one_error_line(argv, capsys, *, caplog=None) -> str:
    """Run the CLI in-process; assert exit status 2, no traceback, one error line; return that line."""
    code = run([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("minescan: error:")]
    assert len(lines) == 1, err
    return lines[0]


def cli(argv) -> int:
    """The CLI in-process on ``argv`` (paths allowed); its exit status."""
    return run([str(a) for a in argv])


def sentinel(path, text="finished earlier\n"):
    """An output as a finished earlier run left it (to check a failing run does not touch it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------- the tiny scan


@pytest.fixture(scope="module")
def hostile_scan(tmp_path_factory):
    """A one-tile scan, every path and the results_dir with a space, a quote and a $(...), run to the end."""
    snakefile = snapshot_workflow(tmp_path_factory.mktemp("workflow") / "work flow")
    d = tmp_path_factory.mktemp("faults") / "tiny scan $(touch pwned)"
    d.mkdir()
    write_tiny_scene(d, [TILE], mine_squares([TILE]))
    (d / "region.geojson").rename(d / "my region.geojson")
    save_test_model(d / "my models" / "discovery", "discovery", bright_square_fcn())
    save_test_model(d / "my models" / "impact", "impact", constant_impact_cnn())
    write_tiny_config(d, "my models/discovery", "my models/impact", results_dir=HOSTILE_RESULTS)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["region"]["file"] = "my region.geojson"
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(d, snakefile=snakefile)
    return d, snakefile


def _pwned(*roots) -> list[str]:
    return [str(p) for root in roots for p in root.parent.rglob("pwned")]


@pytest.mark.slow
def test_shell_injection_through_results_dir_and_paths_runs_nothing(hostile_scan):
    d, snakefile = hostile_scan
    out = d / HOSTILE_RESULTS / "tiny" / "2026Q1"
    assert _pwned(d, snakefile.parent) == []
    for name in ("summary.json", "sites.gpkg", "layers.json", "map.html", "report/summary_table.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sites"] == 2


@pytest.mark.slow
def test_killed_job_reruns_to_identical_bytes_and_leaves_the_rest(hostile_scan):
    """A detect job killed mid-way (its outputs gone, a stray partial file left): the rerun redoes that
    quadrant and what depends on it, to the same bytes; the other quadrants' files are not rewritten."""
    d, snakefile = hostile_scan
    out = d / HOSTILE_RESULTS / "tiny" / "2026Q1"
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    killed = out / "quadrants" / f"{TILE.name}_SE"
    shutil.rmtree(killed)
    killed.mkdir()
    (killed / ".probability.partial-99999.tif").write_bytes(b"II*\x00half a file")
    for name in ("summary.json", "detections.csv", "sites.gpkg"):
        (out / name).unlink()
    run_snakemake(d, snakefile=snakefile)
    assert _pwned(d, snakefile.parent) == []
    for p, (data, mtime) in before.items():
        assert p.read_bytes() == data, f"{p.relative_to(out)} differs after the rerun"
        if "quadrants" in p.parts and killed.name not in p.parts or p.parent.name == "tiles":
            assert p.stat().st_mtime_ns == mtime, f"{p.relative_to(out)} was rewritten"


@pytest.mark.slow
def test_concurrent_run_is_refused_by_the_lock(hostile_scan):
    """A second Snakemake on a working directory another one holds stops at once, saying so."""
    d, snakefile = hostile_scan
    locks = d / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    tile = f"{HOSTILE_RESULTS}/tiny/2026Q1/tiles/{TILE.name}.tif"
    lock = locks / "0.output.lock"
    lock.write_text(f"{tile}\n")  # what a running snakemake holds (paths relative to its directory)
    before = (d / tile).stat().st_mtime_ns
    try:
        r = run_snakemake(d, "--forceall", "--until", "tile", snakefile=snakefile, check=False)
    finally:
        lock.unlink()
    assert r.returncode != 0 and "cannot be locked" in r.stdout + r.stderr
    assert (d / tile).stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------ 1. config injection


def _config(tmp_path, **over) -> dict:
    cfg = {"region": {"name": "x", "file": str(tmp_path / "r.geojson")}, "periods": ["2026Q1"], **over}
    return cfg


@pytest.mark.parametrize("key,value", [
    ("bands", ["B1$(touch pwned)"]),
    ("bands", ["B1 B2"]),
    ("source", {"kind": "local", "local": {"band_names": ["B1;touch pwned"]}}),
    ("results_dir", "res{x}"),
    ("results_dir", "res\nx"),
])
def test_hostile_config_values_are_refused_naming_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"key '{key}"):
        cfgmod.validate(_config(tmp_path, **{key: value}))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_band_injection_stops_snakemake_before_any_job(tmp_path):
    """The probe of the issue: ``snakemake --until tile`` with a band named 'B1$(touch pwned)'."""
    d = tmp_path / "w"
    d.mkdir()
    write_tiny_scene(d, [TILE], [])
    write_tiny_config(d, "m/discovery", "m/impact", bands=["B1$(touch pwned)"])
    r = run_snakemake(d, "--until", "tile", check=False)
    assert r.returncode != 0 and "key 'bands.0'" in r.stdout + r.stderr
    assert not (d / "pwned").exists() and not (d / "results").exists()


# -------------------------------------------------------------------------------- 3. invalid region


def _region_file(path, ring, crs=4326):
    gpd.GeoDataFrame({"name": ["r"]}, geometry=[Polygon(ring)], crs=crs).to_file(path)
    return path


def _tile_ring(symmetric: bool):
    """A bow-tie ring over the tile's core (lon/lat); symmetric: its two lobes cancel to zero signed area."""
    x0, y0, x1, y1 = to_crs(box(*TILE.core_bounds), TILE.id.epsg, 4326).buffer(-0.01).bounds
    if symmetric:
        return [(x0, y0), (x1, y1), (x1, y0), (x0, y1)]
    xm = x0 + 0.7 * (x1 - x0)
    return [(x0, y0), (x1, y1), (x1, y0), (xm, y1), (x0, y1 - 0.01)]


@pytest.mark.parametrize("symmetric", [False, True])
def test_bow_tie_region_is_repaired_and_said(tmp_path, capsys, caplog, symmetric):
    region = _region_file(tmp_path / "bowtie.geojson", _tile_ring(symmetric))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"region": {"name": "b", "file": str(region)}, "periods": ["2026Q1"],
                                   "grid": {"tile_px": 648, "halo_px": 160}}))
    with caplog.at_level(logging.WARNING):
        code = run(["plan", "--config", str(cfg), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    plan = json.loads(captured.out)
    assert plan["tiles"] == [TILE.name] and plan["area_km2"] > 0
    assert "bowtie.geojson: region feature 1 is not a valid polygon (Self-intersection" in caplog.text
    assert "repaired with make_valid" in caplog.text


def test_unrepairable_region_is_refused_naming_file_and_feature(tmp_path, capsys):
    x0, y0, x1, y1 = to_crs(box(*TILE.core_bounds), TILE.id.epsg, 4326).bounds
    gpd.GeoDataFrame({"name": ["ok", "flat"]}, geometry=[
        box(x0, y0, x1, y1), Polygon([(x0, y0), (x1, y1), (x0, y0), (x1, y1)])], crs=4326).to_file(
        tmp_path / "flat.geojson")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"region": {"name": "b", "file": str(tmp_path / "flat.geojson")},
                                   "periods": ["2026Q1"], "grid": {"tile_px": 648, "halo_px": 160}}))
    line = one_error_line(["plan", "--config", cfg], capsys)
    assert "flat.geojson: region feature 2 is not a valid polygon" in line


@pytest.mark.slow
def test_bow_tie_region_in_snakemake_is_repaired_before_any_job(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    write_tiny_scene(d, [TILE], [])
    _region_file(d / "region.geojson", _tile_ring(True))
    write_tiny_config(d, "m/discovery", "m/impact")
    r = run_snakemake(d, "-n", f"results/tiny/2026Q1/tiles/{TILE.name}.tif", check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "TopologyException" not in r.stderr
    assert "region feature 1 is not a valid polygon" in r.stderr and "repaired with make_valid" in r.stderr


# --------------------------------------------------------------------------- 4. bad training points


@pytest.mark.parametrize("text,expected", [
    ("lon,lat,class\n-55.1,-12.0,1\nabc,-12.0,0\n", "line 3, column 'lon': 'abc' is not a longitude"),
    ("lon,lat,class\n-55.1,-96,1\n-55.2,-12,0\n-55.3,-97,1\n",
     "line 2, column 'lat': '-96' is not a latitude in [-90, 90] (2 bad rows)"),
    ("lon,lat,class\n-55.1,,1\n", "line 2, column 'lat': blank is not a latitude"),
    ("lon,lat,class\n-55.1,-12,perhaps\n", "line 2, column 'class': 'perhaps' is not a class"),
    ("", "points file is empty"),
    ("lon,lat,class\n", "points file holds no point"),
])
def test_bad_training_points_are_named_by_row_and_column(tmp_path, capsys, text, expected):
    """Checked before any image is opened: the image given here does not even exist."""
    pts = tmp_path / "points.csv"
    pts.write_text(text)
    model = sentinel(tmp_path / "model" / "card.json")
    line = one_error_line(["train", "discovery", "--points", pts, "--images", tmp_path / "no-such.tif",
                           "--out", tmp_path / "model", "--epochs", "1"], capsys)
    assert "points.csv: " in line and expected in line, line
    assert "no-such.tif" not in line
    assert model.read_text() == "finished earlier\n"


# ------------------------------------------------------------------------- plan-time checks


def _imagery(tmp_path):
    (tmp_path / "imagery").mkdir(exist_ok=True)
    return tmp_path / "imagery"


def _local_config(tmp_path, imagery, **grid):
    region = tmp_path / "region.geojson"
    gpd.GeoDataFrame(geometry=[to_crs(box(*TILE.core_bounds), TILE.id.epsg, 4326).buffer(-0.001)],
                     crs=4326).to_file(region)
    cfg = {"region": {"name": "t", "file": str(region)}, "periods": ["2026Q1"],
           "grid": {"tile_px": 648, "halo_px": 160, **grid},
           "source": {"kind": "local", "local": {"paths": [str(imagery)]}},
           "models": {"discovery": str(tmp_path / "models" / "discovery"), "impact": None}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "config.yaml"


def test_halo_smaller_than_the_receptive_field_is_refused_at_plan_time(tmp_path, capsys):
    scene = write_scene(_imagery(tmp_path) / "a.tif", [TILE])
    save_test_model(tmp_path / "models" / "discovery", "discovery", bright_square_fcn())
    cfg = _local_config(tmp_path, scene.parent, halo_px=50)
    line = one_error_line(["plan", "--config", cfg], capsys)
    assert "'grid.halo_px' = 50 px is smaller than the 1" in line and "201 px discovery model" in line
    cfg = _local_config(tmp_path, scene.parent, halo_px=160)
    assert run(["plan", "--config", str(cfg)]) == 0


def test_unreadable_source_header_stops_the_plan_naming_the_file(tmp_path, capsys):
    scene = write_scene(_imagery(tmp_path) / "a.tif", [TILE])
    (tmp_path / "imagery" / "b.tif").write_bytes(b"not a tiff at all")
    cfg = _local_config(tmp_path, scene.parent)
    line = one_error_line(["plan", "--config", cfg], capsys)
    assert "imagery/b.tif: source imagery: header cannot be read as a GeoTIFF" in line
    assert "source.local.paths" in line


def test_damaged_source_fails_only_the_tiles_it_covers(tmp_path, capsys):
    """A source whose header is fine but whose pixels are cut short: the tile it covers fails naming it,
    the tile it does not cover is made from the other source alone."""
    far = grid_tile(96, 1440)
    good = write_scene(_imagery(tmp_path) / "good.tif", [far], margin_px=0)
    bad = write_scene(tmp_path / "imagery" / "bad.tif", [TILE], margin_px=0)
    data = bytearray(bad.read_bytes())
    with rasterio.open(bad) as ds:  # garble the compressed pixel blocks, keep the header (IFD) intact
        offsets = [int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1)),
                   int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))]
    for off in offsets:
        data[off: off + 200] = b"\xff" * 200
    bad.write_bytes(bytes(data))
    from minescan.sources.local import sources_for_tile

    assert sources_for_tile(far, [good, bad]) == [str(good)]
    assert run(["make-tile", "--tile", far.name, "--sources", *sources_for_tile(far, [good, bad]),
                "--tile-px", "648", "--out", str(tmp_path / "far.tif")]) == 0
    out = sentinel(tmp_path / "near.tif")
    line = one_error_line(["make-tile", "--tile", TILE.name, "--sources",
                           *sources_for_tile(TILE, [good, bad]),
                           "--tile-px", "648", "--out", out], capsys)
    assert "bad.tif" in line
    assert out.read_text() == "finished earlier\n"


# ----------------------------------------------------------------------------- faults that already worked


@pytest.fixture(scope="module")
def tile_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("tile")
    scene = write_scene(d / "scene.tif", [TILE], squares=mine_squares([TILE]))
    make_tile(TILE, [scene], list(SENTINEL2_BANDS), d / "tile.tif")
    return d / "tile.tif"


def _detect(tile_path, model, tmp_path, quadrant="NW", *extra):
    region = tmp_path / "region.geojson"
    if not region.exists():
        core = to_crs(box(*TILE.core_bounds), TILE.id.epsg, 4326)
        gpd.GeoDataFrame(geometry=[core], crs=4326).to_file(region)
    return ["detect", "--tile", TILE.name, "--quadrant", quadrant, "--tile-path", tile_path, "--model", model,
            "--region", region, "--tile-px", "648", "--halo-px", "160", "--block-cells", "7",
            "--prob-out", tmp_path / "out" / "probability.tif", "--candidates-out",
            tmp_path / "out" / "candidates.csv", *extra]


def test_truncated_tile_is_named(tmp_path, capsys, tile_file, bright_model_dir):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(tile_file.read_bytes()[: tile_file.stat().st_size // 2])
    prob = sentinel(tmp_path / "out" / "probability.tif")
    line = one_error_line(_detect(cut, bright_model_dir, tmp_path), capsys)
    assert "cut.tif" in line
    assert prob.read_text() == "finished earlier\n" and not (tmp_path / "out" / "candidates.csv").exists()


def test_missing_band_is_named_with_its_file(tmp_path, capsys):
    scene = write_scene(tmp_path / "eleven.tif", [TILE], bands=SENTINEL2_BANDS[:-1])
    out = sentinel(tmp_path / "tile.tif")
    line = one_error_line(["make-tile", "--tile", TILE.name, "--sources", scene, "--tile-px", "648",
                           "--out", out], capsys)
    assert "eleven.tif: band(s) B12 missing" in line and out.read_text() == "finished earlier\n"


def test_all_nodata_quadrant_is_named(tmp_path, capsys, tile_file, bright_model_dir):
    empty = tmp_path / "empty.tif"
    shutil.copy(tile_file, empty)
    with rasterio.open(empty, "r+") as ds:
        ds.write(np.zeros((ds.count, ds.height, ds.width), np.uint16))
    cands = sentinel(tmp_path / "out" / "candidates.csv")
    line = one_error_line(_detect(empty, bright_model_dir, tmp_path, "SE"), capsys)
    assert f"empty.tif: quadrant SE of tile {TILE.name}" in line and "no valid pixels" in line
    assert cands.read_text() == "finished earlier\n"


def test_corrupt_model_is_named(tmp_path, capsys, tile_file, bright_model_dir):
    model = tmp_path / "model"
    shutil.copytree(bright_model_dir, model)
    (model / "model.keras").write_bytes(b"PK\x03\x04 not a keras archive")
    prob = sentinel(tmp_path / "out" / "probability.tif")
    line = one_error_line(_detect(tile_file, model, tmp_path), capsys)
    assert "model.keras: cannot be loaded as a Keras model" in line
    assert prob.read_text() == "finished earlier\n"


def test_pickled_chip_arrays_are_refused(tmp_path, capsys, bright_model_dir):
    chips = tmp_path / "chips.npz"
    np.savez(chips, x=np.array([{"__reduce__": "os.system"}], dtype=object))
    out = sentinel(tmp_path / "scores.csv")
    line = one_error_line(["evaluate-chips", "--model", bright_model_dir, "--chips", chips, "--out", out],
                          capsys)
    assert "chips.npz: array 'x' cannot be read without pickle" in line
    assert out.read_text() == "finished earlier\n"


# ----------------------------------------------------------------------------------------- Earth Engine


def test_gee_network_error_says_network_and_never_shows_the_key(tmp_path, caplog):
    """A valid key but no network: the message says so (not 'refused the key') and holds no secret."""
    from google.auth.exceptions import TransportError
    from test_gee_auth import PEM, SECRET, sa_key
    from test_gee_fakes import FakeEE

    from minescan.sources.gee.auth import GeeAuthError, initialize, resolve_auth
    from minescan.sources.gee.settings import GeeSettings

    auth = resolve_auth(GeeSettings(service_account_key=sa_key(tmp_path)), {"HOME": str(tmp_path)})
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as dns:
            raise TransportError(f"Failed to resolve 'oauth2.googleapis.com' while sending {PEM!r}") from dns
    except TransportError as exc:
        error = exc
    with caplog.at_level(logging.DEBUG), pytest.raises(GeeAuthError) as err:
        initialize(auth, FakeEE(init_error=error), credentials_factory=lambda a: object())
    msg = str(err.value)
    assert msg.startswith("cannot reach Earth Engine (network error") and "refused" not in msg
    for secret in (SECRET, "BEGIN PRIVATE"):
        assert secret not in msg and secret not in caplog.text
    # a refusal by the server is still reported as one
    with pytest.raises(GeeAuthError, match="Earth Engine refused"):
        initialize(auth, FakeEE(init_error=RuntimeError("invalid_grant: account not found")),
                   credentials_factory=lambda a: object())


def test_points_file_errors_name_no_image_even_with_images_present(tmp_path, tile_file):
    """lat/lon ranges are checked on the whole file before chips are cut from any image."""
    from minescan.errors import InputDataError
    from minescan.models.train_points import train

    pts = tmp_path / "p.csv"
    pd.DataFrame({"lon": [-55.0, 200.0], "lat": [-12.0, -12.0], "class": [1, 0]}).to_csv(pts, index=False)
    with pytest.raises(InputDataError, match=r"line 3, column 'lon': '200.0' is not a longitude"):
        train("discovery", pts, [tile_file], tmp_path / "m", bands=["B1"], scale=1e-4, window=41, folds=0,
              epochs=1)
    assert not (tmp_path / "m").exists()


def test_fault_suite_leaves_no_injected_file_behind():
    assert not os.path.exists("pwned")


# ----------------------------------------------------------------------------- cloud and band-order checks


def _painted_tile(tmp_path, tile_file, name, values: dict, quadrant=None, descriptions=None):
    """A copy of the test tile with bands set to constant reflectance values (in one quadrant core, or
    everywhere), and optionally other band descriptions (data not moved)."""
    path = tmp_path / name
    shutil.copy(tile_file, path)
    with rasterio.open(path, "r+") as ds:
        names = list(ds.descriptions)
        data = ds.read()
        if quadrant:
            c0, r0, c1, r1 = TILE.quadrant_core_px(quadrant)
            (ox, oy) = TILE.origin_px
            sl = (slice(r0 - oy, r1 - oy), slice(c0 - ox, c1 - ox))
        else:
            sl = (slice(None), slice(None))
        for band, refl in values.items():
            data[names.index(band)][sl] = int(refl * 10000)
        ds.write(data)
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return path


def test_cloudy_quadrant_is_flagged_in_log_raster_and_summary(tmp_path, capsys, caplog, tile_file,
                                                             bright_model_dir):
    cloudy = _painted_tile(tmp_path, tile_file, "cloudy.tif", {b: 0.45 for b in SENTINEL2_BANDS}, "NW")
    q = tmp_path / "q" / f"{TILE.name}_NW"
    argv = _detect(cloudy, bright_model_dir, tmp_path)
    argv[argv.index(tmp_path / "out" / "probability.tif")] = q / "probability.tif"
    argv[argv.index(tmp_path / "out" / "candidates.csv")] = q / "candidates.csv"
    with caplog.at_level(logging.WARNING):
        assert cli(argv) == 0
    assert f"cloudy.tif: quadrant NW of tile {TILE.name}: 100 % of its valid pixels are bright" in caplog.text
    with rasterio.open(q / "probability.tif") as src:
        assert src.tags()["CLOUDY"] == "yes" and float(src.tags()["CLOUD_FRACTION"]) == 1.0
    assert cli(["classify", "--tile", TILE.name, "--tile-path", cloudy, "--model", "none", "--candidates",
                str(q / "candidates.csv"), "--tile-px", "648", "--out", str(q / "classified.csv")]) == 0
    assert cli(["merge", "--classified", str(q / "classified.csv"), "--outdir", str(tmp_path / "scan"),
                "--region", str(tmp_path / "region.geojson"), "--region-name", "t", "--period", "2026Q1",
                "--discovery-model", str(bright_model_dir)]) == 0
    summary = json.loads((tmp_path / "scan" / "summary.json").read_text())
    assert summary["cloudy_quadrants"] == [{"quadrant": f"{TILE.name}_NW", "cloud_fraction": 1.0}]
    # action error: the job fails naming tile and quadrant, and writes nothing
    line = one_error_line(_detect(cloudy, bright_model_dir, tmp_path, "NW", "--cloud-check", "error"), capsys)
    assert f"quadrant NW of tile {TILE.name}" in line and "like cloud" in line
    assert not (tmp_path / "out").exists()


def test_clear_quadrants_and_test_scenes_raise_no_flag(tmp_path, caplog, tile_file, bright_model_dir):
    noisy = write_scene(tmp_path / "noisy-scene.tif", [TILE], noise_seed=4)
    make_tile(TILE, [noisy], list(SENTINEL2_BANDS), tmp_path / "noisy.tif")
    for path in (tile_file, tmp_path / "noisy.tif"):
        with caplog.at_level(logging.WARNING):
            assert cli(_detect(path, bright_model_dir, tmp_path, "SE")) == 0
        with rasterio.open(tmp_path / "out" / "probability.tif") as src:
            assert "CLOUDY" not in src.tags()
    assert "like cloud" not in caplog.text and "swapped" not in caplog.text


@pytest.mark.parametrize("other,colour", [("B2", "blue"), ("B4", "red")])
def test_swapped_band_descriptions_are_warned_about(tmp_path, caplog, tile_file, bright_model_dir, other,
                                                    colour):
    vegetation = {"B2": 0.03, "B3": 0.06, "B4": 0.04, "B8": 0.32, "B11": 0.16}
    right = _painted_tile(tmp_path, tile_file, "right.tif", vegetation)
    names = list(SENTINEL2_BANDS)
    i, j = names.index(other), names.index("B8")
    names[i], names[j] = names[j], names[i]
    swapped = _painted_tile(tmp_path, tile_file, "swapped.tif", vegetation, descriptions=names)
    with caplog.at_level(logging.WARNING):
        assert cli(_detect(right, bright_model_dir, tmp_path)) == 0
    assert "swapped" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert cli(_detect(swapped, bright_model_dir, tmp_path)) == 0
    warning = f"swapped.tif: quadrant NW of tile {TILE.name}: the near infrared (band B8) is darker than the "
    assert f"{warning}{colour} (band {other})" in caplog.text


# ----------------------------------------------------------------------------------- atomic outputs


def test_atomic_output_leaves_no_target_and_no_partial_file_on_failure(tmp_path):
    """README: "a crash never leaves a half-written file". A failure inside the block leaves neither the
    target nor the temporary file, and a target finished earlier keeps its bytes."""
    from minescan.io_utils import atomic_output, atomic_write_text

    target = tmp_path / "sub" / "layer.gpkg"
    with pytest.raises(RuntimeError, match="disk full"), atomic_output(target) as tmp:
        tmp.write_bytes(b"half of a file")
        assert tmp.exists() and tmp.parent == target.parent
        raise RuntimeError("disk full")
    assert not target.exists() and list(target.parent.iterdir()) == []
    sentinel(target)
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("new but unfinished")
        raise RuntimeError("killed")
    assert target.read_text() == "finished earlier\n" and sorted(target.parent.iterdir()) == [target]
    atomic_write_text(target, "complete\n")
    assert target.read_text() == "complete\n" and sorted(target.parent.iterdir()) == [target]
