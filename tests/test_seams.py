"""Nothing is lost or duplicated at quadrant or tile seams, and block-wise inference is exact."""

import numpy as np
import pytest
from conftest import SMALL_GRID, grid_tile, write_scene
from shapely.geometry import box

from minescan.grid import QUADRANTS, cells_in_core, to_crs
from minescan.models.networks import STRIDE, FcnGeometry, build_discovery_fcn
from minescan.models.store import load_model, normalise
from minescan.scan.detect import quadrant_probabilities, run_classify, run_detect
from minescan.scan.inference import MIN_VALID_FRACTION
from minescan.scan.merge import merge_scan
from minescan.sources.local import TileRaster, make_tile


@pytest.fixture(scope="module")
def random_fcn_model(tmp_path_factory):
    import keras
    from conftest import save_test_model

    keras.utils.set_random_seed(3)
    net = build_discovery_fcn(12, 201)
    return load_model(save_test_model(tmp_path_factory.mktemp("m") / "random", "discovery", net))


@pytest.fixture(scope="module")
def noisy_tiles(tmp_path_factory):
    d = tmp_path_factory.mktemp("noisy")
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    scene = write_scene(d / "scene.tif", tiles, noise_seed=11)
    paths = []
    for t in tiles:
        make_tile(t, [scene], list(_bands()), d / f"{t.name}.tif")
        paths.append(d / f"{t.name}.tif")
    # a nodata hole across the NE/SE seam of the first tile
    import rasterio

    with rasterio.open(paths[0], "r+") as ds:
        arr = ds.read()
        arr[:, 420:500, 440:560] = 0
        ds.write(arr)
    return list(zip(tiles, paths, strict=True))


def _bands():
    from minescan import SENTINEL2_BANDS

    return SENTINEL2_BANDS


def _stitch(tile, raster, model, block):
    """Quadrant-by-quadrant probabilities placed into the whole-tile cell grid."""
    kx, ky = cells_in_core(tile.core_px())
    full = np.full((len(ky), len(kx)), -5.0, dtype=np.float32)
    for q in QUADRANTS:
        p, qx, qy = quadrant_probabilities(raster, tile, q, model, 1e-4, block)
        full[qy.start - ky.start : qy.stop - ky.start, qx.start - kx.start : qx.stop - kx.start] = p
    return full


def _whole_tile_plain(tile, raster, model):
    """Reference: ONE plain forward pass of the network over the whole tile core's input span (no strips,
    no blocks, none of the streaming code), normalised as the model card says, as test_inference does."""
    geometry = FcnGeometry(model.window)
    kx, ky = cells_in_core(tile.core_px())
    c0, c1 = geometry.input_span(kx.start, len(kx))
    r0, r1 = geometry.input_span(ky.start, len(ky))
    raw = raster.read_px(c0, r0, c1, r1, model.band_indices(raster.band_names, str(raster.path)))
    valid = np.all(raw != raster.nodata, axis=-1)
    z = normalise(raw.astype(np.float32) * np.float32(1e-4), model.card["normalisation"], valid)
    p = np.asarray(model.network.predict_on_batch(z[None]))[0, 1 : 1 + len(ky), 1 : 1 + len(kx), 1]
    f0 = STRIDE + geometry.offset
    fp = valid[f0 : f0 + STRIDE * len(ky), f0 : f0 + STRIDE * len(kx)]
    frac = fp.reshape(len(ky), STRIDE, len(kx), STRIDE).mean(axis=(1, 3))
    return np.where(frac >= MIN_VALID_FRACTION, p, np.nan)


@pytest.mark.parametrize("block", [1, 3, 5, 64])
def test_quadrant_and_block_inference_equal_whole_tile(noisy_tiles, random_fcn_model, block):
    tile, path = noisy_tiles[0]
    with TileRaster(path, tile) as raster:
        whole = _whole_tile_plain(tile, raster, random_fcn_model)
        stitched = _stitch(tile, raster, random_fcn_model, block)
    assert not (stitched == -5.0).any(), "a cell of the tile belongs to no quadrant"
    assert np.isnan(whole).sum() > 0, "the nodata hole must give no-data cells"
    np.testing.assert_array_equal(np.isnan(whole), np.isnan(stitched))
    ok = np.isfinite(whole)
    assert np.abs(whole[ok] - stitched[ok]).max() <= 1e-5


def test_neighbouring_tiles_agree_with_one_big_core(noisy_tiles, random_fcn_model, tmp_path):
    """Two tiles side by side give the same cells as one inference over their joint core."""
    (a, pa), (b, pb) = noisy_tiles
    scene = tmp_path / "scene.tif"
    write_scene(scene, [a, b], noise_seed=11)
    with TileRaster(pb, b) as rb:
        pb_whole, kxb, kyb = quadrant_probabilities(rb, b, "NW", random_fcn_model, 1e-4, 64, core_px=b.core_px())
    # the same cells computed from the *scene*, which has no tile boundary at all
    with TileRaster(scene) as rs:
        ox, oy = rs.ds.transform.c / 10, -rs.ds.transform.f / 10
        rs.origin = (int(ox), int(oy))
        big = type(b)(b.id, type(b.grid)(b.grid.tile_px, 10.0, 10_000))  # halo check is moot here
        p_scene, _, _ = quadrant_probabilities(rs, big, "NW", random_fcn_model, 1e-4, 64, core_px=b.core_px())
    np.testing.assert_allclose(pb_whole, p_scene, atol=1e-5)


def _seam_squares(tiles):
    """Bright 54 px squares centred on every quadrant seam, quadrant corner and tile seam."""
    g = SMALL_GRID
    half = g.tile_px // 2
    centres = []
    for t in tiles:
        c0, r0, _, _ = t.core_px()
        centres += [(c0 + half, r0 + 80), (c0 + 80, r0 + half), (c0 + half, r0 + half)]
    c0, r0, c1, _ = tiles[0].core_px()
    centres.append((c1, r0 + 560))  # the seam between the two tiles
    return [(x - 27, y - 27, x + 27, y + 27) for x, y in centres]


def test_mine_on_every_seam_is_reported_exactly_once(tmp_path, bright_model_dir):
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    squares = _seam_squares(tiles)
    scene = write_scene(tmp_path / "scene.tif", tiles, squares=squares)
    region = to_crs(box(*tiles[0].core_bounds[:2], *tiles[1].core_bounds[2:]), tiles[0].id.epsg, 4326)
    model = load_model(bright_model_dir)
    classified = []
    for t in tiles:
        tp = tmp_path / f"{t.name}.tif"
        make_tile(t, [scene], list(_bands()), tp)
        for q in QUADRANTS:
            qd = tmp_path / f"{t.name}_{q}"
            run_detect(tp, t, q, model, region, 1e-4, None, 4, qd / "probability.tif", qd / "candidates.csv")
            run_classify(tp, t, None, 1e-4, qd / "candidates.csv", qd / "classified.csv")
            classified.append(qd / "classified.csv")
    summary = merge_scan(classified, tmp_path / "out", region_name="seams", period="2026Q1",
                         region_lonlat=region, tiles=[t.name for t in tiles], quadrants=[], models={},
                         thresholds={}, resolution_m=10.0)
    import geopandas as gpd
    import pandas as pd

    det = pd.read_csv(tmp_path / "out" / "detections.csv")
    assert not det.duplicated(["zone", "cell_x", "cell_y"]).any()
    sites = gpd.read_file(tmp_path / "out" / "sites.gpkg").to_crs(tiles[0].id.epsg)
    assert summary["sites"] == len(squares) == len(sites)
    r = SMALL_GRID.resolution_m
    for c0, r0, c1, r1 in squares:
        square = box(c0 * r, -r1 * r, c1 * r, -r0 * r)
        assert sites.intersects(square).sum() == 1, f"square at px {c0},{r0} not reported exactly once"
    # detections span more than one quadrant for the seam squares: the seams were really crossed
    assert det.groupby("site_id")["quadrant"].nunique().max() >= 2
