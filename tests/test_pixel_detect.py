"""A pixel model as the scan's detector: quadrants equal the whole tile, cells, candidates, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from conftest import grid_tile, write_scene
from shapely.geometry import LineString, box

from minescan import SENTINEL2_BANDS
from minescan.grid import QUADRANTS, cells_in_core, to_crs
from minescan.pixel.detect import FRACTION_FILE, PIXEL_PROB_FILE, cell_statistics, run_pixel_detect
from minescan.pixel.features import FeatureSet
from minescan.pixel.train import load_pixel_model, save_pixel_model


def hand_set_model(path, water_cap_m=200.0):
    """Logistic model on the 'full' set: P(mine) = sigmoid(40 B1 + 0.02 dist_water - 17)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    fs = FeatureSet("full", SENTINEL2_BANDS, water_cap_m)
    rng = np.random.default_rng(0)
    pipe = make_pipeline(LogisticRegression()).fit(rng.normal(size=(20, len(fs.features))), np.arange(20) % 2)
    clf = pipe[-1]
    clf.coef_[:] = 0
    clf.coef_[0, 0] = 40.0
    clf.coef_[0, fs.features.index("dist_water")] = 0.02
    clf.intercept_[:] = -17.0
    card = {
        "kind": "pixel",
        "name": "hand-set",
        "bands": list(fs.bands),
        "feature_set": fs.as_card(),
        "window": 1,
        "classes": ["background", "mine"],
        "normalisation": {},
        "threshold": 0.5,
        "cell_statistic": "max",
    }
    save_pixel_model(path, pipe, card)
    return load_pixel_model(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixel-detect")
    tile = grid_tile()
    c0, r0, _, _ = tile.core_px()
    squares = [
        (c0 + 300, r0 + 300, c0 + 350, r0 + 340),
        (c0 + 40, r0 + 500, c0 + 80, r0 + 540),
    ]  # one on a seam
    path = write_scene(d / "tile.tif", [tile], squares=squares, noise_seed=5, margin_px=0)
    region = to_crs(box(*tile.core_bounds), tile.id.epsg, 4326)
    return tile, path, region, hand_set_model(d / "model")


def test_cell_statistics():
    strip = np.zeros((27, 54), np.float32)
    strip[3, 3], strip[20, 30] = 0.9, 0.4
    strip[:, 27:][:10] = np.nan
    s, f = cell_statistics(strip, 0.5)
    assert s.tolist() == [[pytest.approx(0.9), pytest.approx(0.4)]]
    assert f[0, 0] == pytest.approx(1 / 729) and f[0, 1] == 0
    strip[:, 27:] = np.nan
    assert np.isnan(cell_statistics(strip, 0.5)[0][0, 1])


@pytest.mark.parametrize("water", [False, True])
def test_quadrants_equal_the_whole_tile(scene, tmp_path, water):
    tile, path, region, model = scene
    geoms = None
    if water:  # a river 14 px west of the NW|NE seam: the water layer, not the MNDWI mask, gives the distance
        c0, r0, c1, r1 = tile.core_px()
        geoms = [LineString([(c0 * 10 + 3105, -r0 * 10), (c0 * 10 + 3105, -r1 * 10)]).buffer(15)]
    whole = tmp_path / "whole"
    run_pixel_detect(
        path,
        tile,
        "NW",
        model,
        region,
        1e-4,
        None,
        whole / "probability.tif",
        whole / "candidates.csv",
        core_px=tile.core_px(),
        strip_cells=5,
        water_geoms=geoms,
        period="2026Q1",
    )
    with rasterio.open(whole / PIXEL_PROB_FILE) as ds:
        w10, wt = ds.read(1), ds.transform
    with rasterio.open(whole / "probability.tif") as ds:
        wcell = ds.read(1)
    kx_all, ky_all = cells_in_core(tile.core_px())
    seen = np.zeros(w10.shape, int)
    cands = []
    for q in QUADRANTS:
        out = tmp_path / q
        run_pixel_detect(
            path,
            tile,
            q,
            model,
            region,
            1e-4,
            None,
            out / "probability.tif",
            out / "candidates.csv",
            strip_cells=7,
            water_geoms=geoms,
            period="2026Q1",
        )
        kx, ky = cells_in_core(tile.quadrant_core_px(q))
        with rasterio.open(out / PIXEL_PROB_FILE) as ds:
            p10 = ds.read(1)
            c = int(round((ds.transform.c - wt.c) / 10))
            r = int(round((wt.f - ds.transform.f) / 10))
        np.testing.assert_array_equal(p10, w10[r : r + p10.shape[0], c : c + p10.shape[1]])
        seen[r : r + p10.shape[0], c : c + p10.shape[1]] += 1
        with rasterio.open(out / "probability.tif") as ds:
            np.testing.assert_array_equal(
                ds.read(1),
                wcell[
                    ky.start - ky_all.start : ky.stop - ky_all.start,
                    kx.start - kx_all.start : kx.stop - kx_all.start,
                ],
            )
        assert (out / FRACTION_FILE).is_file()
        cands.append(pd.read_csv(out / "candidates.csv"))
    assert (seen == 1).all()  # the quadrants' pixels tile the whole exactly once
    merged = pd.concat(cands).sort_values(["cell_y", "cell_x"]).reset_index(drop=True)
    full = pd.read_csv(whole / "candidates.csv").sort_values(["cell_y", "cell_x"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(merged.drop(columns="quadrant"), full.drop(columns="quadrant"))
    assert len(full) >= 2 * 3  # both squares found, several cells each
    assert np.nanmax(w10) > 0.5 and np.nanmin(w10) < 0.5


def test_water_distance_changes_probabilities(scene, tmp_path):
    tile, path, region, model = scene
    outs = []
    for geoms in (None, []):  # MNDWI mask of the noisy scene vs an empty water layer (distance = the cap)
        d = tmp_path / str(geoms)
        run_pixel_detect(
            path,
            tile,
            "NE",
            model,
            region,
            1e-4,
            None,
            d / "p.tif",
            d / "c.csv",
            water_geoms=geoms,
            period="2026Q1",
        )
        with rasterio.open(d / PIXEL_PROB_FILE) as ds:
            outs.append(ds.read(1))
    assert (outs[1] >= outs[0]).all() and (outs[1] > outs[0]).any()


def test_detect_cli_dispatches_on_the_card(scene, tmp_path, capsys):
    from minescan.cli import run

    tile, path, region, model = scene
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[region], crs=4326).to_file(tmp_path / "region.geojson")
    args = [
        "detect",
        "--tile",
        tile.name,
        "--quadrant",
        "SE",
        "--tile-path",
        str(path),
        "--model",
        str(model.path),
        "--region",
        str(tmp_path / "region.geojson"),
        "--tile-px",
        "648",
        "--halo-px",
        "160",
        "--prob-out",
        str(tmp_path / "q" / "probability.tif"),
        "--candidates-out",
        str(tmp_path / "q" / "c.csv"),
    ]
    assert run(args) == 2 and "give the tile's period" in capsys.readouterr().err
    args[1:1] = ["--period", "2026Q1"]
    assert run(args) == 0
    assert (tmp_path / "q" / PIXEL_PROB_FILE).is_file()
    assert run([*args[:-4], "--halo-px", "20", *args[-4:]]) == 2  # the water distance's halo is checked
    # a batch of tiles (detect.tiles_per_job; here the tile twice) gives each quadrant the bytes of its own job
    i, j = args.index("--tile"), args.index("--tile-path")
    batch = list(args)
    batch[j + 1 : j + 2] = [str(path), str(path)]
    batch[i + 1 : i + 2] = [tile.name, tile.name]
    k = batch.index("--prob-out")
    batch[k:] = ["--prob-out", *(str(tmp_path / b / "probability.tif") for b in ("b1", "b2")),
                 "--candidates-out", *(str(tmp_path / b / "c.csv") for b in ("b1", "b2"))]
    assert run(batch) == 0
    for b in ("b1", "b2"):
        for name in (PIXEL_PROB_FILE, "probability.tif", "c.csv"):
            assert (tmp_path / b / name).read_bytes() == (tmp_path / "q" / name).read_bytes(), (b, name)
