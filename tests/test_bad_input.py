"""Bad input gives one clear error naming the file, key or band at fault, and writes nothing."""

import subprocess
import sys

import numpy as np
import pytest
import rasterio
from conftest import grid_tile, save_test_model, write_scene
from shapely.geometry import box

from minescan import SENTINEL2_BANDS
from minescan import config as cfgmod
from minescan.errors import BandMismatchError, ConfigError, InputDataError, ModelError, NoDataError
from minescan.grid import to_crs
from minescan.models.networks import build_discovery_fcn
from minescan.models.store import load_model
from minescan.scan.detect import run_detect
from minescan.sources.local import TileRaster, make_tile


@pytest.fixture(scope="module")
def tile_and_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    t = grid_tile()
    scene = write_scene(d / "scene.tif", [t])
    make_tile(t, [scene], list(SENTINEL2_BANDS), d / "tile.tif")
    return t, d / "tile.tif"


def _region(t):
    return to_crs(box(*t.core_bounds), t.id.epsg, 4326)


def test_corrupt_tile_names_the_file(tmp_path, bright_model_dir):
    t = grid_tile()
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x17" * 500)
    with pytest.raises(InputDataError, match="corrupt.tif"):
        run_detect(bad, t, "NW", load_model(bright_model_dir), _region(t), 1e-4, None, 8,
                   tmp_path / "p.tif", tmp_path / "c.csv")
    assert not (tmp_path / "p.tif").exists() and not (tmp_path / "c.csv").exists()


def test_missing_band_in_source_names_band_and_file(tmp_path):
    t = grid_tile()
    scene = write_scene(tmp_path / "eleven.tif", [t], bands=SENTINEL2_BANDS[:-1])
    with pytest.raises(BandMismatchError, match=r"eleven.tif: band\(s\) B12 missing"):
        make_tile(t, [scene], list(SENTINEL2_BANDS), tmp_path / "tile.tif")
    assert not (tmp_path / "tile.tif").exists()


def test_model_tile_band_mismatch_names_the_band(tmp_path, tile_and_path):
    t, path = tile_and_path
    net = build_discovery_fcn(3, 201)
    model = load_model(save_test_model(tmp_path / "m", "discovery", net, bands=["B4", "B3", "B99"]))
    with pytest.raises(BandMismatchError, match="B99"):
        run_detect(path, t, "NW", model, _region(t), 1e-4, None, 8, tmp_path / "p.tif", tmp_path / "c.csv")


def test_tile_without_band_names_says_so(tmp_path, bright_model_dir, tile_and_path):
    """A tile whose bands lost their descriptions (e.g. re-written by another tool): the error says the file
    has no band names, not an empty list."""
    t, path = tile_and_path
    bare = tmp_path / "bare.tif"
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(BandMismatchError, match=r"bare.tif: .* are missing \(the file has no band names\)$"):
        run_detect(bare, t, "NW", load_model(bright_model_dir), _region(t), 1e-4, None, 8,
                   tmp_path / "p.tif", tmp_path / "c.csv")
    assert not (tmp_path / "p.tif").exists()


def test_all_nodata_quadrant_is_an_error_unless_allowed(tmp_path, bright_model_dir, tile_and_path):
    t, good = tile_and_path
    path = tmp_path / "empty.tif"
    path.write_bytes(good.read_bytes())
    with rasterio.open(path, "r+") as ds:
        ds.write(np.zeros((12, ds.height, ds.width), np.uint16))
    model = load_model(bright_model_dir)
    with pytest.raises(NoDataError, match=r"empty.tif: quadrant SE of tile .* no valid pixels"):
        run_detect(path, t, "SE", model, _region(t), 1e-4, None, 8, tmp_path / "p.tif", tmp_path / "c.csv")
    assert not (tmp_path / "c.csv").exists()
    run_detect(path, t, "SE", model, _region(t), 1e-4, None, 8, tmp_path / "p.tif", tmp_path / "c.csv",
               on_empty="warn")
    assert (tmp_path / "c.csv").read_text().count("\n") == 1  # header only


def test_tile_with_wrong_georeferencing_is_refused(tile_and_path):
    t, path = tile_and_path
    other = grid_tile(col=t.id.col + 1)
    with pytest.raises(InputDataError, match="georeferencing does not match tile"):
        TileRaster(path, other)


def test_region_outside_the_imagery_names_the_tile(tmp_path):
    t = grid_tile()
    far = grid_tile(col=t.id.col + 5)
    scene = write_scene(tmp_path / "scene.tif", [t], margin_px=0)
    with pytest.raises(NoDataError, match=f"tile {far.name}: no source covers it"):
        make_tile(far, [scene], list(SENTINEL2_BANDS), tmp_path / "far.tif")
    assert not (tmp_path / "far.tif").exists()


def test_invalid_config_key_is_named():
    base = {"region": {"name": "x", "file": "r.geojson"}, "periods": ["2026Q1"]}
    with pytest.raises(ConfigError, match="unknown key 'detect.treshold'"):
        cfgmod.validate({**base, "detect": {"treshold": 0.5}})
    with pytest.raises(ConfigError, match="'grid.tile_px'"):
        cfgmod.validate({**base, "grid": {"tile_px": "big"}})
    with pytest.raises(ConfigError, match="unknown key 'regoin'"):
        cfgmod.validate({**base, "regoin": {}})


def test_model_directory_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="card.json: model card not found"):
        load_model(tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(tmp_path)


def test_cli_reports_one_line_and_exit_2(tmp_path, bright_model_dir):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"garbage")
    t = grid_tile()
    region = tmp_path / "r.geojson"
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[_region(t)], crs=4326).to_file(region)
    r = subprocess.run([sys.executable, "-m", "minescan.cli", "detect", "--tile", t.name, "--quadrant", "NW",
                        "--tile-path", str(bad), "--model", str(bright_model_dir), "--region", str(region),
                        "--tile-px", str(t.grid.tile_px), "--prob-out", str(tmp_path / "p.tif"),
                        "--candidates-out", str(tmp_path / "c.csv")], capture_output=True, text=True)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("minescan: error:") and "corrupt.tif" in last
    assert "Traceback" not in r.stderr
