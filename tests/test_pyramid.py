"""Pyramid scan: the 10 m pass over the kept blocks equals the plain scan; threshold 0 is the plain scan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from conftest import bright_square_fcn, grid_tile, save_test_model, write_scene
from shapely.geometry import box

from minescan import SENTINEL2_BANDS
from minescan import config as cfgmod
from minescan.cli import run
from minescan.errors import ConfigError
from minescan.grid import to_crs
from minescan.models.networks import build_discovery_fcn
from minescan.models.store import load_model
from minescan.scan.detect import run_detect
from minescan.scan.pyramid import Level, Pyramid, blocks_of, coarse_mean, kept_rectangles, spectral_score
from minescan.sources.local import make_tile

B4, B8 = SENTINEL2_BANDS.index("B4"), SENTINEL2_BANDS.index("B8")


@pytest.fixture(scope="module")
def forest_tile(tmp_path_factory):
    """A tile of forest (B4 300, B8 3300) with three bare, bright squares (B1 5000, B4 1800, B8 2700) in its
    NW quadrant and one in SE."""
    d = tmp_path_factory.mktemp("pyramid")
    t = grid_tile()
    c0, r0, _, _ = t.core_px()
    squares = [(c0 + 40, r0 + 60, c0 + 100, r0 + 110), (c0 + 200, r0 + 220, c0 + 250, r0 + 270),
               (c0 + 500, r0 + 480, c0 + 560, r0 + 540)]
    scene = write_scene(d / "scene.tif", [t], squares=squares, noise_seed=2)
    with rasterio.open(scene, "r+") as ds:
        data = ds.read()
        bright = data[0] >= 5000
        data[0] = np.where(bright, 5000, 500 + data[0] % 300)  # B1 noise below the bright FCN's 0.25
        data[B4] = np.where(bright, 1800, 300)
        data[B8] = np.where(bright, 2700, 3300)
        ds.write(data)
    make_tile(t, [scene], list(SENTINEL2_BANDS), d / "tile.tif")
    return t, d / "tile.tif"


@pytest.fixture(scope="module")
def random_fcn(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(21)
    d = tmp_path_factory.mktemp("pyr-models")
    return load_model(save_test_model(d / "random", "discovery", build_discovery_fcn(12, 201), threshold=0.5))


def _detect(t, path, model, out, pyramid=None, quadrant="NW"):
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    run_detect(path, t, quadrant, model, region, 1e-4, 0.45, 5, out / "p.tif", out / "c.csv", pyramid=pyramid)
    with rasterio.open(out / "p.tif") as ds:
        return ds.read(1), pd.read_csv(out / "c.csv")


def test_coarse_mean_and_spectral_score():
    raw = np.zeros((4, 4, 2), dtype=np.uint16)
    raw[:2, :2] = (300, 3300)  # forest
    raw[:2, 2:] = (1800, 2700)  # bare soil
    raw[2:, :2] = (400, 100)  # water
    raw[3, 3] = (1000, 1000)  # one valid pixel among no data
    c = coarse_mean(raw, 2, 0)
    assert c[0, 0].tolist() == [300, 3300] and c[1, 1].tolist() == [1000, 1000]
    assert np.isnan(coarse_mean(np.zeros((2, 2, 2), np.uint16), 2, 0)).all()
    assert spectral_score(c[:1, :1]) == pytest.approx((1 - 3000 / 3600) / 2)
    assert spectral_score(c[:1, 1:]) == pytest.approx((1 - 900 / 4500) / 2)
    assert spectral_score(c) == pytest.approx((1 - (100 - 400) / 500) / 2)  # the water, the largest
    assert spectral_score(np.full((1, 1, 2), np.nan)) == -np.inf


def test_kept_rectangles_cover_the_kept_blocks_once():
    bx, by = blocks_of(range(10, 30), range(-5, 12), 4)  # 5 x 5 blocks, the last ones smaller
    rng = np.random.default_rng(0)
    for keep in [np.ones((5, 5), bool), np.zeros((5, 5), bool), rng.random((5, 5)) > 0.5]:
        cover = np.zeros((17, 20), int)
        rects = kept_rectangles(bx, by, keep)
        for rx, ry in rects:
            cover[ry.start + 5 : ry.stop + 5, rx.start - 10 : rx.stop - 10] += 1
        want = np.kron(keep, np.ones((4, 4), int))[:17, :20]
        assert np.array_equal(cover, want)
    assert len(kept_rectangles(bx, by, np.ones((5, 5), bool))) == 1


def test_threshold_zero_is_the_plain_scan(forest_tile, random_fcn, tmp_path):
    t, path = forest_tile
    plain, pc = _detect(t, path, random_fcn, tmp_path / "plain")
    pyr = Pyramid((Level(8, 0.0), Level(4, 0.0)), block_cells=4, margin_px=0)
    prob, cands = _detect(t, path, random_fcn, tmp_path / "pyr", pyr)
    assert np.array_equal(plain, prob) and len(pc) > 0
    pd.testing.assert_frame_equal(pc, cands)


@pytest.mark.parametrize("screen", ["spectral", "model"])
def test_kept_blocks_equal_the_plain_scan(forest_tile, random_fcn, bright_model_dir, tmp_path, screen):
    t, path = forest_tile
    plain, pc = _detect(t, path, random_fcn, tmp_path / "plain")
    if screen == "spectral":
        pyr = Pyramid((Level(4, 0.3), Level(2, 0.3)), block_cells=4, margin_px=0)
    else:  # the bright-square FCN on the quadrant averaged over 2 x 2 px
        pyr = Pyramid((Level(2, 0.5),), block_cells=4, margin_px=0, screen="model",
                      model=load_model(bright_model_dir))
    prob, cands = _detect(t, path, random_fcn, tmp_path / "pyr", pyr)
    kept = np.isfinite(prob)
    assert 0 < pyr.info["blocks_kept"] < pyr.info["blocks"] == 9
    assert pyr.info["cells_skipped"] == (~kept).sum() == 144 - 16 * pyr.info["blocks_kept"]
    # blocks holding a square (cells of px 40..100 x 60..110 and 200..250 x 220..270) are kept
    assert kept[60 // 27, 40 // 27] and kept[220 // 27, 200 // 27]
    assert not kept[11, 0]  # forest
    assert np.array_equal(prob[kept], plain[kept])  # the 10 m pass over the kept blocks is the plain scan's
    merged = pc.merge(cands, on=["cell_x", "cell_y"], suffixes=("", "_pyr"))
    assert len(merged) == len(cands) and (merged.probability == merged.probability_pyr).all()
    with rasterio.open(tmp_path / "pyr" / "p.tif") as ds:
        assert int(ds.tags()["PYRAMID_SKIPPED_CELLS"]) == pyr.info["cells_skipped"]


def test_all_blocks_dropped_is_not_an_empty_quadrant_error(forest_tile, random_fcn, tmp_path):
    t, path = forest_tile
    pyr = Pyramid((Level(4, 0.99),), block_cells=4, margin_px=0)
    prob, cands = _detect(t, path, random_fcn, tmp_path / "none", pyr)
    assert np.isnan(prob).all() and len(cands) == 0 and pyr.info["blocks_kept"] == 0


def test_pyramid_config_and_cli_errors(forest_tile, bright_model_dir, tmp_path):
    cfg = cfgmod.validate({"region": {"name": "x", "file": "r.geojson"}, "periods": ["2026Q1"]}, "test")
    section = cfg["detect"]["pyramid"]
    assert section["enabled"] is False and section["levels"][0] == {"factor": 8, "threshold": 0.3}
    Pyramid.from_dict(section)  # the defaults make a valid pyramid
    with pytest.raises(ConfigError, match="detect.pyramid.model"):
        Pyramid.from_dict({**section, "screen": "model"})
    with pytest.raises(ConfigError, match="levels"):
        Pyramid(())
    t, path = forest_tile
    args = ["detect", "--tile", t.name, "--quadrant", "NW", "--tile-path", str(path), "--model",
            str(bright_model_dir), "--region", str(tmp_path / "r.geojson"), "--tile-px", "648",
            "--prob-out", str(tmp_path / "p.tif"), "--candidates-out", str(tmp_path / "c.csv")]
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[to_crs(box(*t.core_bounds), t.id.epsg, 4326)], crs=4326).to_file(
        tmp_path / "r.geojson")
    assert run([*args, "--pyramid", "{not json"]) == 2
    assert run([*args, "--pyramid", '{"levels": [{"factor": 4, "threshold": 0.3}], "block_cells": 4}']) == 0
    assert not (tmp_path / "c.csv").read_text().count("\n") > 1 + 16 * 9  # ran, wrote its table
    bright_square_fcn  # noqa: B018 - the fixture's network (imported for the reader)


@pytest.mark.slow
def test_detect_rule_passes_the_pyramid_through_the_shell(tmp_path, bright_model_dir, impact_model_dir):
    """detect.pyramid reaches `minescan detect` as JSON through the shell; off, the rule runs the full scan."""
    from conftest import mine_squares, run_snakemake, write_tiny_config, write_tiny_scene

    tiles = [grid_tile(93, 1440)]
    write_tiny_scene(tmp_path, tiles, mine_squares(tiles))
    q = f"results/tiny/2026Q1/quadrants/{tiles[0].name}_NW"
    # the pyramid runs on TensorFlow (detect.runtime auto would take ONNX Runtime for the full scan, equal
    # only to float round-off): the kept cells must be the very same numbers
    write_tiny_config(tmp_path, bright_model_dir, impact_model_dir, detect={"block_cells": 7, "runtime": "tensorflow"})
    run_snakemake(tmp_path, f"{q}/candidates.csv")
    with rasterio.open(tmp_path / q / "probability.tif") as ds:
        full = ds.read(1)
        assert "PYRAMID_SKIPPED_CELLS" not in ds.tags()
    pyramid = {"enabled": True, "block_cells": 4, "margin_px": 0, "levels": [{"factor": 4, "threshold": 0.6}],
               "red_band": "B1", "nir_band": "B2"}  # B1 bright in the squares: (1 - NDVI) / 2 = 0.95
    write_tiny_config(tmp_path, bright_model_dir, impact_model_dir, detect={"block_cells": 7, "pyramid": pyramid})
    run_snakemake(tmp_path, f"{q}/candidates.csv", "--forceall")
    with rasterio.open(tmp_path / q / "probability.tif") as ds:
        prob = ds.read(1)
        assert int(ds.tags()["PYRAMID_SKIPPED_CELLS"]) == np.isnan(prob).sum() > 0
    kept = np.isfinite(prob)
    assert np.array_equal(prob[kept], full[kept]) and (full[~kept] < 0.5).all()
