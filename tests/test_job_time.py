"""Issue 19: where a detect job's time goes (the ``job timing`` line), and the cheaper quality checks that
take their pixels from the rows the stream reads (the same pixels GDAL's decimated read gives)."""

from __future__ import annotations

import json
import logging
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import grid_tile, mine_squares, write_scene
from shapely.geometry import box

from minescan import SENTINEL2_BANDS
from minescan.cli import run
from minescan.grid import to_crs
from minescan.scan.detect import open_tile
from minescan.scan.inference import InferenceStats
from minescan.scan.quality import NAMES, StreamSample, _sample
from minescan.scan.timing import PHASES, JobClock
from minescan.sources.local import make_tile

TILE = grid_tile(93, 1440)


@pytest.fixture(scope="module")
def tile_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobtime")
    scene = write_scene(d / "scene.tif", [TILE], squares=mine_squares([TILE]), noise_seed=3)
    make_tile(TILE, [scene], list(SENTINEL2_BANDS), d / "tile.tif")
    return d / "tile.tif"


@pytest.mark.parametrize("max_px", [1024, 100, 70, 33])  # decimation 1, 4, 5 (324 -> 64 px: 5.06), 10 (9.72)
@pytest.mark.parametrize("quadrant", ["NW", "SE"])
def test_stream_sample_takes_the_pixels_of_the_decimated_read(tile_file, quadrant, max_px):
    with open_tile(tile_file, TILE) as raster:
        ref = _sample(raster, TILE, quadrant, NAMES, max_px)
        s = StreamSample(TILE, quadrant, list(SENTINEL2_BANDS), raster.nodata, max_px)
        c0, r0, c1, r1 = TILE.quadrant_core_px(quadrant)
        read = s.wrap(lambda a, b, c, d: raster.read_px(a, b, c, d, list(range(12))))
        for y in range(r0 - 37, r1 + 40, 61):  # strips of the input span, wider than the core, as streamed
            read(c0 - 40, y, c1 + 40, min(y + 61, r1 + 40))
        got = s.values()
    assert got is not None and got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_stream_sample_needs_every_sampled_row_at_full_width(tile_file):
    with open_tile(tile_file, TILE) as raster:
        s = StreamSample(TILE, "NW", list(SENTINEL2_BANDS), raster.nodata)
        c0, r0, c1, r1 = TILE.quadrant_core_px("NW")
        read = s.wrap(lambda a, b, c, d: raster.read_px(a, b, c, d, list(range(12))))
        read(c0, r0, c1, r1 - 10)  # the last rows never read
        assert s.values() is None
        read(c0 + 5, r1 - 10, c1, r1)  # read, but not over the core's whole width
        assert s.values() is None
        read(c0, r1 - 10, c1, r1)
        assert s.values() is not None
    # a model without the checks' bands: no sample, the reads pass through untouched
    s = StreamSample(TILE, "NW", ["B4", "B3", "B2"], 0)
    f = s.wrap(lambda *a: np.zeros((1, 1, 3), np.uint16))
    assert f(0, 0, 1, 1).shape == (1, 1, 3) and s.values() is None


def test_first_call_estimate_from_the_strips():
    st = InferenceStats(strip_compute_s=[1.0, 0.2, 0.2, 0.1], strip_rows=[15, 10, 10, 5])
    # later strips: 0.02 s per row; the first strip's 15 rows would take 0.3 s warm
    assert st.first_call_s == pytest.approx(0.7)
    assert InferenceStats(strip_compute_s=[1.0, 0.2], strip_rows=[10, 10]).first_call_s == 0.0
    assert InferenceStats(strip_compute_s=[0.1, 0.2, 0.2], strip_rows=[5, 5, 5]).first_call_s == 0.0


def test_job_clock_adds_up():
    c = JobClock()
    with c.phase("models"):
        time.sleep(0.02)
    with c.phase("network"):
        time.sleep(0.01)
    c.add("network", 0.01)
    s = c.summary()
    assert s["network"] >= 0.02 and s["models"] >= 0.02 and s["startup"] > 0  # pytest's own start-up
    assert s["total"] + 0.02 >= sum(v for k, v in s.items() if k in PHASES) and s["other"] >= 0


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorflow"])
def test_detect_logs_where_the_job_time_goes(tmp_path, caplog, tile_file, bright_model_dir, impact_model_dir, runtime):
    region = tmp_path / "region.geojson"
    gpd.GeoDataFrame(geometry=[to_crs(box(*TILE.core_bounds), TILE.id.epsg, 4326)], crs=4326).to_file(region)
    outs = {q: tmp_path / q for q in ("NW", "SE")}
    argv = ["detect", "--tile", TILE.name, "--quadrant", *outs, "--tile-path", str(tile_file), "--model",
            str(bright_model_dir), "--impact-model", str(impact_model_dir), "--region", str(region),
            "--tile-px", "648", "--halo-px", "160", "--block-cells", "3", "--runtime", runtime,
            "--prob-out", *[str(o / "probability.tif") for o in outs.values()],
            "--candidates-out", *[str(o / "candidates.csv") for o in outs.values()]]
    with caplog.at_level(logging.INFO):
        assert run(argv) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("job timing "))
    t = json.loads(line[len("job timing "):])
    assert t["quadrants"] == 2
    for k in ("models", "network", "write", "checks", "total"):
        assert t[k] >= 0, k
    assert ("tensorflow_import" in t) == (runtime == "tensorflow")
    assert t["network"] > 0 and t["write"] > 0 and t["read_in_thread"] > 0
    assert t["total"] + 1e-2 >= sum(v for k, v in t.items() if k in PHASES)
    assert any(r.getMessage().startswith("job time ") for r in caplog.records)
    for o in outs.values():
        with rasterio.open(o / "probability.tif") as ds:
            assert np.isfinite(ds.read(1)).any()


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorflow"])
def test_detect_as_a_process_exits_with_its_status(tmp_path, tile_file, bright_model_dir, runtime):
    """The CLI leaves without the runtime's teardown (cli.FAST_EXIT): outputs complete, exit status kept."""
    import subprocess
    import sys

    region = tmp_path / "region.geojson"
    gpd.GeoDataFrame(geometry=[to_crs(box(*TILE.core_bounds), TILE.id.epsg, 4326)], crs=4326).to_file(region)

    def detect(tile_path):
        return subprocess.run([sys.executable, "-m", "minescan.cli", "detect", "--tile", TILE.name, "--quadrant", "NW",
                               "--tile-path", str(tile_path), "--model", str(bright_model_dir), "--region",
                               str(region), "--tile-px", "648", "--halo-px", "160", "--runtime", runtime, "--prob-out",
                               str(tmp_path / "p.tif"), "--candidates-out", str(tmp_path / "c.csv")],
                              capture_output=True, text=True)

    r = detect(tile_file)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "job timing" in r.stderr and (tmp_path / "c.csv").exists()
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert np.isfinite(ds.read(1)).any()
    r = detect(tmp_path / "missing.tif")  # fails after the runtime has started and the model is loaded
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("minescan: error:") and "missing.tif" in r.stderr


def test_strip_rows_are_counted_per_call_when_stats_are_shared():
    """A pyramid scan passes one InferenceStats to several predict_cells calls: every strip's input rows
    are counted from its own call (they add up to each call's span height), so the first-call estimate holds."""
    import keras
    from test_inference import _image, _norm, _reader

    from minescan.models.networks import FcnGeometry, build_discovery_fcn
    from minescan.scan.inference import predict_cells

    keras.utils.set_random_seed(3)
    net, g, img, norm = build_discovery_fcn(12, 201), FcnGeometry(201), _image(), _norm()
    st = InferenceStats()
    spans = []
    for kx, ky in ((range(2, 12), range(1, 9)), (range(3, 9), range(10, 21))):
        predict_cells(net, g, _reader(img), norm, kx, ky, block_cells=3, stats=st)
        a, b = g.input_span(ky.start, len(ky))
        spans.append(b - a)
    assert all(r > 0 for r in st.strip_rows) and len(st.strip_rows) == len(st.strip_compute_s) == 3 + 4
    # the first stage consumes the span but for its last, incomplete pooling window (< 1 cell of 27 px)
    for got, span in zip([sum(st.strip_rows[:3]), sum(st.strip_rows[3:])], spans, strict=True):
        assert 0 <= span - got < 27, (got, span)
    assert st.first_call_s >= 0
