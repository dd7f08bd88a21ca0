"""Streamed and block-wise FCN inference equal one whole-array forward pass, with bounded memory.

The reference is the plain path: the whole input span normalised exactly as the model card says
(:func:`minescan.models.store.normalise`) and pushed through the loaded Keras network in one call.
"""

import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, bright_square_fcn, grid_tile, save_test_model, write_scene
from shapely.geometry import box

from minescan import SENTINEL2_BANDS
from minescan.errors import InputDataError
from minescan.grid import to_crs
from minescan.models.networks import STRIDE, FcnGeometry, build_discovery_fcn, build_impact_cnn
from minescan.models.store import load_model, normalise
from minescan.scan.detect import (
    _patch_groups,
    iter_impact_patches,
    lazy_model,
    quadrant_probabilities,
    run_classify,
    run_detect,
)
from minescan.scan.inference import (
    MIN_VALID_FRACTION,
    InferenceStats,
    Normalisation,
    _valid_counter,
    fcn_flops,
    predict_cells,
    stream_chunk_cells,
    stream_net,
)
from minescan.sources.local import TileRaster, make_tile

H, W = 900, 1000  # the in-memory "tile": global pixels [0, W) x [0, H), nodata beyond


def _image(seed=0, nodata=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(1, 9000, (H, W, 12), dtype=np.uint16)
    img[img == nodata] = 1
    img[40:260, 0:330] = nodata  # a nodata corner, across several cells and strips
    img[500:509, :, 4] = nodata  # one band missing on a few rows: those pixels are nodata too
    img[600:700, 610:640, 7] = nodata
    # edges 14 px into a cell: 13 of its 27 footprint rows/columns are nodata, so it stays (just) valid; a
    # footprint misplaced by one pixel would drop it
    img[27 * 5 + 14 : 27 * 8, 27 * 13 + 14 : 27 * 15] = nodata
    return img


def _reader(img, nodata=0, log=None):
    def read(c0, r0, c1, r1):
        if log is not None:
            log.append((c0, r0, c1, r1))
        out = np.full((r1 - r0, c1 - c0, img.shape[2]), nodata, dtype=img.dtype)
        a0, b0, a1, b1 = max(c0, 0), max(r0, 0), min(c1, img.shape[1]), min(r1, img.shape[0])
        if a1 > a0 and b1 > b0:
            out[b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = img[b0:b1, a0:a1]
        return out

    return read


def _norm(seed=1, clip=None, nodata=0, bands=12):
    rng = np.random.default_rng(seed)
    return Normalisation(1e-4, tuple(rng.uniform(0.02, 0.3, bands)), tuple(rng.uniform(0.03, 0.2, bands)),
                         clip, nodata)


def _whole(network, geometry, img, norm, kx, ky):
    """Reference: one forward pass over the whole span, normalised by model_io.normalise."""
    c0, c1 = geometry.input_span(kx.start, len(kx))
    r0, r1 = geometry.input_span(ky.start, len(ky))
    raw = _reader(img, norm.nodata)(c0, r0, c1, r1)
    valid = np.all(raw != norm.nodata, axis=-1)
    z = normalise(raw.astype(np.float32) * np.float32(norm.scale), norm.card, valid)
    p = np.asarray(network.predict_on_batch(z[None]))[0, 1 : 1 + len(ky), 1 : 1 + len(kx), 1]
    f0 = STRIDE + geometry.offset
    fp = valid[f0 : f0 + STRIDE * len(ky), f0 : f0 + STRIDE * len(kx)]
    frac = fp.reshape(len(ky), STRIDE, len(kx), STRIDE).mean(axis=(1, 3))
    return np.where(frac >= MIN_VALID_FRACTION, p, np.nan)


def _same(a, b, tol=1e-5):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(a)
    assert ok.any()
    assert np.abs(a[ok] - b[ok]).max() <= tol


@pytest.fixture(scope="module")
def fcn():
    import keras

    keras.utils.set_random_seed(7)
    return build_discovery_fcn(12, 201)


# odd sizes, negative and positive cell indices, rectangles touching the image edge (nodata beyond)
RECTS = [(range(2, 15), range(1, 12)), (range(-3, 6), range(20, 31)), (range(0, 1), range(0, 1))]


@pytest.mark.parametrize("kx,ky", RECTS)
def test_stream_equals_whole_array_for_every_strip_height(fcn, kx, ky):
    g = FcnGeometry(201)
    img, norm = _image(), _norm()
    ref = _whole(fcn, g, img, norm, kx, ky)
    for cells in (1, 2, 5, None):
        st = InferenceStats()
        got = predict_cells(fcn, g, _reader(img), norm, kx, ky, block_cells=cells, method="stream", stats=st)
        assert st.method == "stream"
        _same(got, ref)
    if len(kx) > 5:
        assert np.isnan(ref).any() and np.isfinite(ref).any(), "the rectangle should see nodata and data"


@pytest.mark.parametrize("cells", [2, 5, None])
def test_blocks_equal_whole_array(fcn, cells):
    g = FcnGeometry(201)
    img, norm = _image(), _norm()
    kx, ky = RECTS[0]
    got = predict_cells(fcn, g, _reader(img), norm, kx, ky, block_cells=cells, method="blocks")
    _same(got, _whole(fcn, g, img, norm, kx, ky))


def test_stream_without_read_ahead_and_with_a_tiny_budget(fcn):
    g = FcnGeometry(201)
    img, norm = _image(), _norm()
    kx, ky = RECTS[1]
    got = predict_cells(fcn, g, _reader(img), norm, kx, ky, max_block_mb=1, prefetch=False)
    _same(got, _whole(fcn, g, img, norm, kx, ky))


@pytest.mark.parametrize("nodata,clip", [(0, 0.35), (65535, None), (7, None)])
def test_normalisation_variants_stream_exactly(fcn, nodata, clip):
    g = FcnGeometry(201)
    img, norm = _image(3, nodata), _norm(2, clip, nodata)
    kx, ky = range(8, 17), range(5, 13)  # part of it in the nodata corner
    _same(predict_cells(fcn, g, _reader(img, nodata), norm, kx, ky, block_cells=3),
          _whole(fcn, g, img, norm, kx, ky))


def test_small_window_and_other_widths_stream_exactly():
    import keras

    keras.utils.set_random_seed(8)
    net = build_discovery_fcn(12, 48, widths=(8, 16, 16, 24))  # valid kernel 1
    g = FcnGeometry(48)
    img, norm = _image(4), _norm(4)
    kx, ky = range(5, 19), range(2, 15)
    assert stream_net(net, norm.gain) is not None
    _same(predict_cells(net, g, _reader(img), norm, kx, ky, block_cells=2), _whole(net, g, img, norm, kx, ky))


def test_network_that_cannot_be_streamed_falls_back_to_blocks():
    import keras

    keras.utils.set_random_seed(9)
    L = keras.layers
    inp = keras.Input((None, None, 12))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.BatchNormalization()(x)  # between conv and pool: not a [conv -> pool] stage
    x = L.MaxPooling2D(3)(x)
    for _ in range(2):
        x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
        x = L.MaxPooling2D(3)(x)
    x = L.Conv2D(8, 7, activation="relu")(x)
    net = keras.Model(inp, L.Conv2D(2, 1, activation="softmax")(x))
    g, img, norm = FcnGeometry(201), _image(5), _norm(5)
    kx, ky = range(14, 20), range(12, 17)
    assert stream_net(net, norm.gain) is None
    st = InferenceStats()
    _same(predict_cells(net, g, _reader(img), norm, kx, ky, stats=st), _whole(net, g, img, norm, kx, ky))
    assert st.method == "blocks"
    with pytest.raises(ValueError, match="cannot be streamed"):
        predict_cells(net, g, _reader(img), norm, kx, ky, method="stream")


def test_each_input_row_is_read_once_in_bounded_strips(fcn):
    g = FcnGeometry(201)
    img, norm = _image(), _norm()
    kx, ky = range(0, 12), range(0, 30)
    log = []
    predict_cells(fcn, g, _reader(img, log=log), norm, kx, ky, block_cells=2)
    c0, c1 = g.input_span(kx.start, len(kx))
    assert all((a, b) == (c0, c1) for a, _, b, _ in log), "strips are full-width"
    rows = [(r0, r1) for _, r0, _, r1 in log]
    assert all(r1 == n0 for (_, r1), (n0, _) in zip(rows, rows[1:], strict=False)), "contiguous, never re-read"
    assert max(r1 - r0 for r0, r1 in rows) <= STRIDE * 2 + 2  # one strip of 2 cell rows, even the first
    r0, r1 = g.input_span(ky.start, len(ky))
    assert r0 <= rows[0][0] < r0 + STRIDE and r1 - STRIDE < rows[-1][1] <= r1


def test_numpy_working_memory_is_bounded_by_the_strip_not_the_area(fcn):
    """Peak of numpy allocations (TensorFlow's own are not traced) while streaming a tall span in thin strips
    stays a small fraction of what holding the span would take."""
    g = FcnGeometry(201)
    img, norm = _image(), _norm()
    kx, ky = range(0, 6), range(0, 28)
    c0, c1 = g.input_span(kx.start, len(kx))
    r0, r1 = g.input_span(ky.start, len(ky))
    whole_input = (c1 - c0) * (r1 - r0) * 12 * 4
    read = _reader(img)
    predict_cells(fcn, g, read, norm, kx, ky, block_cells=1)  # trace the graphs first
    tracemalloc.start()
    try:
        predict_cells(fcn, g, read, norm, kx, ky, block_cells=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.3 * whole_input, f"peak {peak / 2**20:.1f} MB vs whole span {whole_input / 2**20:.1f} MB"


def test_strip_height_follows_the_memory_budget(fcn):
    net = stream_net(fcn, _norm().gain)
    sizes = [stream_chunk_cells(net, 4833, mb) for mb in (16, 256, 512, 1024)]
    assert sizes[0] == 1 and sizes[3] > sizes[2] > sizes[1] > 1
    # the estimate is what a strip holds: 27 rows per cell row, ~544 B per pixel of input width
    assert net.bytes_per_input_row(4833) * 27 * sizes[2] <= 512 * 2**20 < net.bytes_per_input_row(4833) * 27 * (sizes[2] + 1)


def test_config_keys_and_code_defaults_agree():
    from minescan import config
    from minescan.scan.inference import DEFAULT_MAX_BLOCK_MB

    d = config.schema()["properties"]["detect"]["properties"]
    d = {k: v["default"] for k, v in d.items()}
    # max_block_mb null: DEFAULT_MAX_BLOCK_MB on a CPU (the detect rule reserves memory for 384 MB), from the
    # free GPU memory on a GPU (minescan.scan.device.block_budget_mb)
    assert d["max_block_mb"] is None and d["block_cells"] is None and d["inference"] == "auto"
    assert DEFAULT_MAX_BLOCK_MB == 384 and "or 384)" in (ROOT / "rules" / "detect.smk").read_text()


def test_read_errors_propagate_from_the_read_ahead_thread(fcn):
    g, img, norm = FcnGeometry(201), _image(), _norm()
    calls = []
    inner = _reader(img)

    def failing(c0, r0, c1, r1):
        calls.append(r0)
        if len(calls) == 3:
            raise InputDataError("tile.tif: corrupt or unreadable (block 3)")
        return inner(c0, r0, c1, r1)

    with pytest.raises(InputDataError, match="block 3"):
        predict_cells(fcn, g, failing, norm, range(0, 4), range(0, 12), block_cells=1)


def test_flop_count_of_the_published_fcn():
    net = build_discovery_fcn(12, 201)
    n = 4608
    per_px = 2 * 9 * 12 * 32 + 2 * 9 * 32 * 64 / 9 + 2 * 9 * 64 * 64 / 81
    expected = per_px * n * n + 2 * 49 * 64 * 64 * (n // 27 - 6) ** 2 + 2 * 64 * 2 * (n // 27 - 6) ** 2
    assert fcn_flops(net, n, n) == pytest.approx(expected, rel=1e-9)
    assert 260e9 < fcn_flops(net, n, n) < 270e9


def test_centring_is_the_card_normalisation_scaled():
    img = _image(6)
    for nodata, clip in ((0, None), (0, 0.4), (65535, None), (3, 0.2)):
        norm = _norm(6, clip, nodata)
        raw = _image(6, nodata)[:50]
        z, valid = norm.apply(raw)
        x, v = norm.centre(raw)
        np.testing.assert_array_equal(v, valid)
        np.testing.assert_allclose(x * norm.gain, z, atol=2e-5, rtol=1e-5)
    x, v = _norm().centre(img[300:400])  # no nodata in these rows
    assert v is None


# ---------------------------------------------------------------------------------------- on tile files
@pytest.fixture(scope="module")
def scene_tile(tmp_path_factory):
    d = tmp_path_factory.mktemp("inference")
    t = grid_tile()
    c0, r0, _, _ = t.core_px()
    squares = [(c0 + 40, r0 + 60, c0 + 100, r0 + 110), (c0 + 300, r0 + 290, c0 + 360, r0 + 350),
               (c0 + 500, r0 + 150, c0 + 540, r0 + 200)]
    scene = write_scene(d / "scene.tif", [t], squares=squares, noise_seed=4)
    make_tile(t, [scene], list(SENTINEL2_BANDS), d / "tile.tif")
    import rasterio

    with rasterio.open(d / "tile.tif", "r+") as ds:  # a nodata hole at a quadrant seam
        arr = ds.read()
        arr[:, 430:520, 100:260] = 0
        ds.write(arr)
    return t, d / "tile.tif"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(11)
    impact = load_model(save_test_model(d / "impact", "impact", build_impact_cnn(12)))
    return load_model(save_test_model(d / "bright", "discovery", bright_square_fcn())), impact


def test_memory_bounded_detections_equal_the_plain_path(scene_tile, models, tmp_path):
    """run_detect + run_classify, streamed with a tiny budget and small impact batches, against the plain
    path (the whole quadrant span as one block, one impact batch): same candidates, classes, rasters."""
    import rasterio

    t, path = scene_tile
    fcn_model, impact = models
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    ways = {"plain": (dict(method="blocks"), 10_000, 512), "bounded": (dict(method="stream", max_block_mb=16), None, 3)}
    out = {}
    for name, (kw, cells, batch) in ways.items():
        tables = []
        for q in ("NW", "NE", "SW", "SE"):
            qd = tmp_path / name / q
            run_detect(path, t, q, fcn_model, region, 1e-4, None, cells, qd / "p.tif", qd / "c.csv", **kw)
            run_classify(path, t, impact, 1e-4, qd / "c.csv", qd / "k.csv", batch_size=batch)
            tables.append(pd.read_csv(qd / "k.csv"))
        out[name] = pd.concat(tables).reset_index(drop=True)
    plain, bounded = out["plain"], out["bounded"]
    assert len(plain) >= 3, "the bright squares must be detected"
    assert plain["p_low"].std() > 1e-3, "the random impact CNN should tell patches apart"
    pd.testing.assert_frame_equal(plain[["cell_x", "cell_y", "quadrant", "impact"]],
                                  bounded[["cell_x", "cell_y", "quadrant", "impact"]])
    for col in ("probability", "p_high", "p_low", "p_no_ore"):
        np.testing.assert_allclose(plain[col].to_numpy(), bounded[col].to_numpy(), atol=1e-5)
    for q in ("NW", "NE", "SW", "SE"):
        with rasterio.open(tmp_path / "plain" / q / "p.tif") as a, rasterio.open(tmp_path / "bounded" / q / "p.tif") as b:
            _same(a.read(1), b.read(1))


def test_read_px_is_the_file_window_pixel_interleaved(scene_tile):
    """read_px: a C-contiguous (H, W, B) array equal to rasterio's band-sequential read of the window, for
    a band subset in any order, inside the file and across its edge (nodata beyond), and empty windows."""
    import rasterio

    t, path = scene_tile
    with rasterio.open(path) as ds:
        whole = np.moveaxis(ds.read(), 0, -1)
    ox, oy = t.origin_px
    n = t.size_px
    cases = [((5, 7, 300, 141), list(range(12))), ((100, 0, 101, 50), [7, 0, 3]),
             ((-20, 600, 40, n + 9), [2, 11]), ((n - 3, -4, n + 2, 3), [4]), ((10, 10, 10, 20), [1])]
    with TileRaster(path, t) as raster:
        for (c0, r0, c1, r1), bands in cases:
            got = raster.read_px(ox + c0, oy + r0, ox + c1, oy + r1, bands)
            ref = np.full((r1 - r0, c1 - c0, len(bands)), raster.nodata, dtype=np.uint16)
            a0, b0, a1, b1 = max(c0, 0), max(r0, 0), min(c1, n), min(r1, n)
            ref[b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = whole[b0:b1, a0:a1][..., bands]
            assert got.dtype == np.uint16 and got.flags.c_contiguous, (c0, r0, c1, r1)
            np.testing.assert_array_equal(got, ref)


def test_quadrant_stream_equals_whole_tile_forward_pass(scene_tile, models):
    """The tile-file path (windowed uint16 reads, read-ahead) against the whole span read at once."""
    import keras

    t, path = scene_tile
    keras.utils.set_random_seed(12)
    net = build_discovery_fcn(12, 201)
    fcn_model = type(models[0])(models[0].path, models[0].card, net)
    g = FcnGeometry(201)
    with TileRaster(path, t) as raster:
        got, kx, ky = quadrant_probabilities(raster, t, "NW", fcn_model, 1e-4, None, t.core_px(), max_block_mb=16)
        c0, c1 = g.input_span(kx.start, len(kx))
        r0, r1 = g.input_span(ky.start, len(ky))
        raw = raster.read_px(c0, r0, c1, r1, list(range(12)))
    z, valid = Normalisation.from_card(fcn_model.card["normalisation"], 1e-4, 0).apply(raw)
    ref = np.asarray(net.predict_on_batch(z[None]))[0, 1 : 1 + len(ky), 1 : 1 + len(kx), 1]
    f0 = STRIDE + g.offset
    frac = valid[f0 : f0 + STRIDE * len(ky), f0 : f0 + STRIDE * len(kx)].reshape(
        len(ky), STRIDE, len(kx), STRIDE).mean(axis=(1, 3))
    ref = np.where(frac >= MIN_VALID_FRACTION, ref, np.nan)
    assert np.isnan(ref).any()
    _same(got, ref)


def test_impact_patches_are_the_windows_around_each_candidate(scene_tile, models):
    t, path = scene_tile
    impact = models[1]
    rng = np.random.default_rng(3)
    k0x, k0y = t.core_px()[0] // STRIDE, t.core_px()[1] // STRIDE
    n = 60
    cands = pd.DataFrame({"cell_x": k0x + rng.integers(0, 24, n), "cell_y": k0y + rng.integers(0, 24, n)})
    w = impact.window
    norm = Normalisation.from_card(impact.card["normalisation"], 1e-4, 0)
    with TileRaster(path, t) as raster:
        seen = np.zeros(n, int)
        for idx, z in iter_impact_patches(raster, impact, cands, 1e-4, batch_size=7, rows_per_read=64):
            assert len(idx) <= 7
            seen[idx] += 1
            for k, patch in zip(idx, z, strict=True):
                c = cands.cell_x[k] * STRIDE + STRIDE // 2 - w // 2
                r = cands.cell_y[k] * STRIDE + STRIDE // 2 - w // 2
                np.testing.assert_array_equal(patch, norm.apply(raster.read_px(c, r, c + w, r + w, list(range(12))))[0])
    assert (seen == 1).all()


def test_patch_groups_cover_every_candidate_once_in_compact_windows():
    rng = np.random.default_rng(0)
    row0, col0 = rng.integers(0, 5000, 500), rng.integers(0, 5000, 500)
    groups = list(_patch_groups(row0, col0, 21, 50, 128))
    assert sorted(np.concatenate(groups).tolist()) == list(range(500))
    for gi in groups:
        assert len(gi) <= 50 and np.ptp(row0[gi]) + 21 <= 128
        assert (np.diff(np.sort(col0[gi])) <= 42).all()


def _classify_cli(t, path, model_dir, cands, out):
    """`minescan classify` in a fresh interpreter; returns (process, whether TensorFlow got imported)."""
    code = (
        "import sys\nfrom minescan.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('tensorflow' in sys.modules)\n"
    )
    args = ["classify", "--tile", t.name, "--tile-path", str(path), "--model", str(model_dir),
            "--candidates", str(cands), "--out", str(out), "--tile-px", str(t.grid.tile_px),
            "--halo-px", str(t.grid.halo_px)]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    return r, r.stdout.strip().endswith("True")


def test_classify_without_candidates_does_not_load_tensorflow(tmp_path, scene_tile, models):
    t, path = scene_tile
    (tmp_path / "c.csv").write_text("cell_x,cell_y,zone,tile,quadrant,easting,northing,lon,lat,probability\n")
    r, tf_loaded = _classify_cli(t, path, models[1].path, tmp_path / "c.csv", tmp_path / "k.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not tf_loaded
    assert list(pd.read_csv(tmp_path / "k.csv").columns[-4:]) == ["p_high", "p_low", "p_no_ore", "impact"]
    # a discovery model given as the impact model is still refused without loading it
    r, _ = _classify_cli(t, path, models[0].path, tmp_path / "c.csv", tmp_path / "k.csv")
    assert r.returncode != 0 and "expected 'impact'" in r.stderr


def test_detect_rates_candidates_once_and_classify_copies_them(tmp_path, scene_tile, models, caplog):
    """Impact rating inside the detect job (one TensorFlow start per quadrant, patches taken from the strips
    in memory) gives the same classified.csv as rating in the classify job from patches read from the tile;
    classify re-rates when the impact model is not the one that rated."""
    import logging

    import keras

    t, path = scene_tile
    fcn_model, impact = models
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    with caplog.at_level(logging.INFO, logger="minescan.scan.detect"):
        run_detect(path, t, "NW", fcn_model, region, 1e-4, None, 1, a / "p.tif", a / "c.csv", impact=impact,
                   impact_batch_size=5)
    n = len(pd.read_csv(a / "c.csv"))
    assert n > 5 and f"{n} candidates rated during the FCN stream, 0 from patches read again" in caplog.text
    run_detect(path, t, "NW", fcn_model, region, 1e-4, None, None, b / "p.tif", b / "c.csv")
    with caplog.at_level(logging.INFO, logger="minescan.scan.detect"):  # no stream: all from patches read again
        run_detect(path, t, "NW", fcn_model, region, 1e-4, None, None, c / "p.tif", c / "c.csv", impact=impact,
                   method="blocks")
    assert f"0 candidates rated during the FCN stream, {n} from patches read again" in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(a / "c.csv"), pd.read_csv(c / "c.csv"), atol=2e-6)
    assert "impact_model" in pd.read_csv(a / "c.csv").columns
    r, tf_loaded = _classify_cli(t, path, impact.path, a / "c.csv", a / "k.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not tf_loaded, "ratings from detect must be copied without starting TensorFlow"
    run_classify(path, t, impact, 1e-4, b / "c.csv", b / "k.csv")
    ka, kb = pd.read_csv(a / "k.csv"), pd.read_csv(b / "k.csv")
    assert len(ka) > 0 and list(ka.columns) == list(kb.columns)
    pd.testing.assert_frame_equal(ka, kb, atol=2e-6)
    # another impact model: its ratings are computed, not copied
    keras.utils.set_random_seed(99)
    other = save_test_model(tmp_path / "other", "impact", build_impact_cnn(12))
    run_classify(path, t, lazy_model(other, "impact"), 1e-4, a / "c.csv", a / "k2.csv")
    run_classify(path, t, load_model(other), 1e-4, b / "c.csv", b / "k2.csv")
    k2a, k2b = pd.read_csv(a / "k2.csv"), pd.read_csv(b / "k2.csv")
    pd.testing.assert_frame_equal(k2a, k2b, atol=2e-6)
    assert np.abs(k2a["p_low"] - ka["p_low"]).max() > 1e-3



def test_memory_bounded_detections_equal_the_plain_path_on_the_demo_scene(tmp_path):
    """The demo's simulated scene (its painter, seed 7 as in config/demo.yaml, 6 sites per small tile): every
    quadrant streamed with a 16 MB budget gives the same detections and probabilities as one whole-span pass."""
    import keras

    from minescan.sources.demo import scene_bounds_for_tiles, simulate_scene
    from minescan.sources.demo import write_scene as write_demo_scene

    t = grid_tile()
    bounds, epsg = scene_bounds_for_tiles([t], margin_px=64)
    scene = simulate_scene(bounds, epsg, t.grid.resolution_m, 7, 6 / (t.grid.tile_m / 1000) ** 2)
    assert len(scene.truth) >= 3, "the demo painter should place sites on the tile"
    write_demo_scene(scene, tmp_path / "scene.tif", tmp_path / "truth.gpkg")
    make_tile(t, [tmp_path / "scene.tif"], list(SENTINEL2_BANDS), tmp_path / "tile.tif")
    keras.utils.set_random_seed(21)
    fcn_model = load_model(save_test_model(tmp_path / "fcn", "discovery", build_discovery_fcn(12, 201)))
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    # a threshold that makes ~10 % of the cells candidates under the plain path
    probs = []
    for q in ("NW", "NE", "SW", "SE"):
        run_detect(tmp_path / "tile.tif", t, q, fcn_model, region, 1e-4, 0.0, 10_000, tmp_path / "all" / f"{q}.tif",
                   tmp_path / "all" / f"{q}.csv", method="blocks")
        probs.append(pd.read_csv(tmp_path / "all" / f"{q}.csv")["probability"].to_numpy())
    threshold = float(np.quantile(np.concatenate(probs), 0.9))
    ways = {"plain": (10_000, dict(method="blocks")), "bounded": (None, dict(method="stream", max_block_mb=16))}
    tables = {}
    for name, (cells, kw) in ways.items():
        parts = []
        for q in ("NW", "NE", "SW", "SE"):
            qd = tmp_path / name / q
            run_detect(tmp_path / "tile.tif", t, q, fcn_model, region, 1e-4, threshold, cells, qd / "p.tif",
                       qd / "c.csv", **kw)
            parts.append(pd.read_csv(qd / "c.csv"))
        tables[name] = pd.concat(parts).reset_index(drop=True)
    plain, bounded = tables["plain"], tables["bounded"]
    assert 10 <= len(plain) < sum(len(p) for p in probs)
    pd.testing.assert_frame_equal(plain[["cell_x", "cell_y", "quadrant"]], bounded[["cell_x", "cell_y", "quadrant"]])
    np.testing.assert_allclose(plain["probability"], bounded["probability"], atol=1e-5)
    import rasterio

    for q in ("NW", "NE", "SW", "SE"):
        with rasterio.open(tmp_path / "plain" / q / "p.tif") as a, rasterio.open(tmp_path / "bounded" / q / "p.tif") as b:
            _same(a.read(1), b.read(1))


@pytest.mark.parametrize("clip,nodata", [(None, 0), (0.5, 7)])
def test_centre_on_long_rows_equals_the_plain_per_band_formula(clip, nodata):
    """Normalisation.centre converts and subtracts over whole rows (W x B values) when rows are contiguous:
    the same float32 values, bit for bit, as ``min(DN, clip) - offset`` per band (0 at nodata), whether it
    allocates, writes into rows of a wider buffer (the strips) or meets pixels it cannot view as rows."""
    norm = _norm(clip=clip, nodata=nodata)
    img = _image(seed=2, nodata=nodata)[:300, :250]
    dn = img.astype(np.float32) if clip is None else np.minimum(img, np.float32(clip / norm.scale), dtype=np.float32)
    ref = (dn - norm.offset) * np.all(img != nodata, axis=-1)[..., None]
    got, valid = norm.centre(img)
    assert np.array_equal(got, ref) and np.array_equal(valid, np.all(img != nodata, axis=-1))
    wide = np.full((310, 320, 12), np.nan, np.float32)
    norm.centre(img, out=wide[5:305, :250])
    assert np.array_equal(wide[5:305, :250], ref) and np.isnan(wide[:5]).all() and np.isnan(wide[:, 250:]).all()
    every_other = img[:, ::2]  # pixels not adjacent: the per-band loop
    assert np.array_equal(norm.centre(every_other)[0], ref[:, ::2])


def test_valid_counts_per_cell_from_pieces_of_any_height():
    """The valid-pixel count of each cell's 27 x 27 px footprint, accumulated piece by piece as the tile is
    read (each cell row updated once per piece), equals a direct count for any piece height."""
    g = FcnGeometry(201)
    nx, ny = 9, 7
    h, w = STRIDE * (ny + 1 + g.valid_kernel) + 40, STRIDE * (nx + 1 + g.valid_kernel) + 40
    valid = np.random.default_rng(0).random((h, w)) > 0.3
    f0 = STRIDE + g.offset  # where the first cell's footprint starts
    ref = valid[f0 : f0 + STRIDE * ny, f0 : f0 + STRIDE * nx].reshape(ny, STRIDE, nx, STRIDE).sum(axis=(1, 3))
    for step in (1, 7, 27, 50, 135, h):
        for every in (False, True):
            counts, add = _valid_counter(g, nx, ny)
            for a in range(0, h, step):
                add(a, min(a + step, h), None if every else valid[a : a + step])
            np.testing.assert_array_equal(counts, STRIDE * STRIDE if every else ref, err_msg=f"{step} {every}")
