"""detect.runtime openvino: the FCN as whole strips on OpenVINO (float32 and bfloat16), equal to Keras."""

from __future__ import annotations

import numpy as np
import pytest
from test_inference import (  # noqa: F401 - models, scene_tile: fixtures
    RECTS,
    _image,
    _norm,
    _reader,
    _same,
    _whole,
    models,
    scene_tile,
)
from test_onnx_runtime import (
    _detect_cli,
    _saved,
    assert_networks_equal_keras,
    assert_same_detect_outputs,
    keras_and_converted,
)

from minescan.models.networks import STRIDE, FcnGeometry, build_discovery_fcn
from minescan.models.onnx_net import OvNetwork, Unsupported, available, load_network, ov_cpu_bf16
from minescan.models.store import load_model
from minescan.scan.device import PRECISION_TOLERANCE, DeviceError, detect_runtime
from minescan.scan.inference import InferenceStats, WholeNet, compute_precision, predict_cells, stream_net

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def keras_and_ov(tmp_path_factory):
    return keras_and_converted(tmp_path_factory.mktemp("ov"), "openvino")


def test_networks_equal_keras_in_float32(keras_and_ov):
    """float32 is asked for explicitly: on CPUs with AMX OpenVINO computes in bfloat16 unless told, which
    would miss 1e-5 by orders of magnitude."""
    (_, ofcn), _ = keras_and_ov
    assert isinstance(ofcn, OvNetwork) and ofcn.runtime == "openvino"
    assert_networks_equal_keras(keras_and_ov)


@pytest.mark.parametrize("kx,ky", RECTS)
@pytest.mark.parametrize("cells", [1, 3, 4, None])
def test_whole_strips_equal_the_whole_keras_pass(keras_and_ov, kx, ky, cells):
    """Strips of 1-4 cells (overlapping by 8 cells of input: the overlap is copied, never re-read), the
    default (at least 40 cells: one strip here), the last strip padded to the strips' shape, nodata
    corners and a rectangle beyond the image's edge."""
    (fcn, ofcn), _ = keras_and_ov
    g, img, norm = FcnGeometry(201), _image(), _norm()
    log: list = []
    st = InferenceStats()
    got = predict_cells(ofcn, g, _reader(img, log=log), norm, kx, ky, block_cells=cells, stats=st)
    _same(got, _whole(fcn, g, img, norm, kx, ky))
    assert st.method == "whole" and st.strips == -(-len(ky) // (cells or len(ky)))
    rows = sorted((r0, r1) for _, r0, _, r1 in log)  # every span row read once
    assert all(b[0] == a[1] for a, b in zip(rows, rows[1:], strict=False))
    assert rows[-1][1] - rows[0][0] == g.input_span(ky.start, len(ky))[1] - g.input_span(ky.start, len(ky))[0]


@pytest.mark.parametrize("kx,ky", RECTS[:2])
def test_default_strips_pad_rows_and_columns_to_one_shape(keras_and_ov, monkeypatch, kx, ky):
    """Without block_cells the strips are rounded up to 4 cells and the columns padded to 64 px (one shape
    for a tile's quadrants); the padding reaches no cell."""
    (fcn, ofcn), _ = keras_and_ov
    g, img, norm = FcnGeometry(201), _image(), _norm()
    shapes = []
    net = stream_net(ofcn, norm.gain)  # the one predict_cells takes (cached)
    monkeypatch.setattr(net, "min_cells", 3)
    run = net.run
    monkeypatch.setattr(net, "run", lambda x: shapes.append(x.shape) or run(x))
    st = InferenceStats()
    got = predict_cells(ofcn, g, _reader(img), norm, kx, ky, max_block_mb=1, stats=st)
    _same(got, _whole(fcn, g, img, norm, kx, ky))
    assert st.chunk_cells == 4 and st.strips == 3 and len(set(shapes)) == 1
    assert shapes[0][2] % 64 == 0 and shapes[0][2] > g.input_span(kx.start, len(kx))[1] - g.input_span(kx.start, len(kx))[0]


def test_strip_buffers_are_kept_for_the_next_span_and_hold_nothing_of_the_last(keras_and_ov, monkeypatch):
    """A tile's quadrants in one process reuse the two strip buffers (new ones cost page faults): a narrower
    span of the same padded shape, read after a brighter image, still equals the whole pass (its padding
    columns and the last strip's rows are zeroed again, not left from the span before)."""
    (fcn, ofcn), _ = keras_and_ov
    g, norm = FcnGeometry(201), _norm()
    net = stream_net(ofcn, norm.gain)
    monkeypatch.setattr(net, "min_cells", 3)
    bright = np.full_like(_image(), 8999)
    first = predict_cells(ofcn, g, _reader(bright), norm, range(2, 15), range(1, 12), max_block_mb=1)
    assert np.isfinite(first).all()
    kept = [id(b) for b in net._buffers]
    img = _image(seed=5)
    kx, ky = range(3, 15), range(1, 12)
    (a, b), (c, d) = g.input_span(2, 13), g.input_span(3, 12)
    assert b - a != d - c and -(-(b - a) // 64) == -(-(d - c) // 64)  # narrower, same padded width
    _same(predict_cells(ofcn, g, _reader(img), norm, kx, ky, max_block_mb=1), _whole(fcn, g, img, norm, kx, ky))
    assert [id(b) for b in net._buffers] == kept and len(kept) == 2
    assert net.buffers(1, (1, 8, 64, 12))[0].shape == (1, 8, 64, 12) and len(net._buffers) == 1  # other shape


def test_strips_shape_compiles_while_the_first_strip_is_read(keras_and_ov, monkeypatch):
    """OpenVINO compiles for the strips' shape in the read-ahead thread while the first strip is read, once;
    the strips then run on that compiled model."""
    import threading

    from minescan.models import onnx_net

    (fcn, ofcn), _ = keras_and_ov
    g, img, norm = FcnGeometry(201), _image(seed=8), _norm(seed=8)  # a gain of its own: a new WholeNet
    compiles = []
    real = onnx_net.ov_compile
    monkeypatch.setattr(onnx_net, "ov_compile", lambda *a: compiles.append((threading.current_thread().name, a[3]))
                        or real(*a))
    kx, ky = range(2, 15), range(1, 12)
    _same(predict_cells(ofcn, g, _reader(img), norm, kx, ky, block_cells=4), _whole(fcn, g, img, norm, kx, ky))
    assert len(compiles) == 1 and compiles[0][0].startswith("minescan-read"), compiles
    assert list(stream_net(ofcn, norm.gain).run.compiled) == [compiles[0][1]]


def test_clip_and_other_nodata_and_no_prefetch(keras_and_ov):
    (fcn, ofcn), _ = keras_and_ov
    g, img, norm = FcnGeometry(201), _image(seed=3, nodata=7), _norm(clip=0.5, nodata=7)
    kx, ky = range(2, 15), range(1, 12)
    ref = _whole(fcn, g, img, norm, kx, ky)
    for prefetch in (True, False):
        _same(predict_cells(ofcn, g, _reader(img, 7), norm, kx, ky, block_cells=2, prefetch=prefetch), ref)


def test_cell_rows_hand_out_the_tile_values_around_them(keras_and_ov):
    """on_rows (the in-stream impact rating) gets each strip's cells once, in order, with the tile rows
    within keep_px of their centres, exactly as read."""
    (_, ofcn), _ = keras_and_ov
    g, img, norm = FcnGeometry(201), _image(), _norm()
    kx, ky = range(2, 15), range(1, 12)
    c0, c1 = g.input_span(kx.start, len(kx))
    seen = []

    def on_rows(cr):
        first = ky.start + cr.first
        centre0 = STRIDE * first + STRIDE // 2  # tile row of the first cell's centre
        centre1 = STRIDE * (first + len(cr.prob) - 1) + STRIDE // 2
        raw = cr.raw(centre0 - 10, centre1 + 11)
        np.testing.assert_array_equal(raw, _reader(img)(c0, centre0 - 10, c1, centre1 + 11))
        assert cr.width == c1 - c0
        for r in (centre0 - 10, centre1 - 10):  # one patch's pixels, also across two pieces read
            np.testing.assert_array_equal(cr.raw(r, r + 21, slice(7, 28)), _reader(img)(c0 + 7, r, c0 + 28, r + 21))
        seen.append((cr.first, len(cr.prob)))

    predict_cells(ofcn, g, _reader(img), norm, kx, ky, block_cells=3, on_rows=on_rows, keep_px=10)
    assert seen == [(0, 3), (3, 3), (6, 3), (9, 2)]


@pytest.mark.skipif(not available("openvino") or not ov_cpu_bf16(), reason="no bfloat16 units on this CPU")
def test_bfloat16_within_the_tolerance(keras_and_ov):
    (fcn, ofcn), _ = keras_and_ov
    g, img, norm = FcnGeometry(201), _image(), _norm()
    kx, ky = range(2, 15), range(1, 12)
    ref = _whole(fcn, g, img, norm, kx, ky)
    with compute_precision("bfloat16"):
        got = predict_cells(ofcn, g, _reader(img), norm, kx, ky, block_cells=4)
        assert stream_net(ofcn, norm.gain).precision == "bfloat16"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    diff = np.nanmax(np.abs(got - ref))
    assert 0 < diff <= PRECISION_TOLERANCE["bfloat16"]  # > 0: it did compute in bfloat16


def test_float16_refused_and_what_cannot_fold_runs_by_blocks(keras_and_ov, tmp_path, caplog):
    import keras

    caplog.set_level("INFO")
    (_, ofcn), _ = keras_and_ov
    with pytest.raises(Unsupported, match="float16 on OpenVINO"):
        WholeNet.build(ofcn, None, "float16")
    # a dropout before the first convolution: the normalisation has no kernel to fold into
    fcn = build_discovery_fcn(12, 201)
    model = keras.Sequential([keras.Input((None, None, 12)), keras.layers.Dropout(0.1, name="drop_in"),
                              *[la for la in fcn.layers if not isinstance(la, keras.layers.InputLayer)]])
    ov = load_network(_saved(tmp_path, model, "drop"), "drop", runtime="openvino")
    g, img, norm = FcnGeometry(201), _image(), _norm()
    kx, ky = range(14, 18), range(12, 15)
    st = InferenceStats()
    got = predict_cells(ov, g, _reader(img), norm, kx, ky, stats=st)
    assert st.method == "blocks" and "no whole strips on OpenVINO" in caplog.text
    _same(got, _whole(model, g, img, norm, kx, ky))


def test_runtime_choice_for_openvino(monkeypatch):
    from minescan.models import onnx_net

    cpu = {"PATH": "/usr/bin"}
    monkeypatch.setattr("minescan.scan.device.gpu_present", lambda env=None: "CUDA_VISIBLE_DEVICES" in (env or {}))
    monkeypatch.setattr(onnx_net, "ov_cpu_bf16", lambda: True)
    assert detect_runtime("auto", env=cpu) == "onnxruntime"
    assert detect_runtime("auto", env=cpu, precision="bfloat16") == "openvino"
    assert detect_runtime("openvino", env=cpu) == "openvino"
    assert detect_runtime("auto", env={"CUDA_VISIBLE_DEVICES": "0"}, precision="bfloat16") == "tensorflow"
    assert detect_runtime("auto", env=cpu, precision="float16") == "tensorflow"
    for kw in ({"precision": "float16"}, {"require_gpu": True}, {"pyramid": True}, {"patch_model": True}):
        with pytest.raises(DeviceError, match="openvino cannot run this job"):
            detect_runtime("openvino", env=cpu, **kw)
    monkeypatch.setattr(onnx_net, "ov_cpu_bf16", lambda: False)  # a CPU without bfloat16 units
    assert detect_runtime("auto", env=cpu, precision="bfloat16") == "tensorflow"
    with pytest.raises(DeviceError, match="computes no bfloat16"):
        detect_runtime("openvino", env=cpu, precision="bfloat16")
    assert detect_runtime("openvino", env=cpu) == "openvino"  # float32 runs anywhere
    monkeypatch.setattr(onnx_net, "available", lambda runtime="onnxruntime": runtime != "openvino")
    assert detect_runtime("auto", env=cpu, precision="bfloat16") == "tensorflow"
    with pytest.raises(DeviceError, match="openvino or onnx not installed"):
        detect_runtime("openvino", env=cpu)


def test_detect_job_on_openvino_equals_onnxruntime(tmp_path, scene_tile, models):  # noqa: F811
    """A detect process on OpenVINO (float32) writes the probabilities and rated candidates of one on ONNX
    Runtime, and never starts TensorFlow."""
    t, path = scene_tile
    _detect_cli(t, path, models, tmp_path / "ort", "onnxruntime")
    tf_used, log = _detect_cli(t, path, models, tmp_path / "ov", "openvino")
    assert not tf_used, "the openvino job imported TensorFlow"
    assert "device: CPU" in log and "openvino" in log and "FCN (whole" in log
    assert_same_detect_outputs(tmp_path, ("ort", "onnxruntime"), ("ov", "openvino"))


def test_shipped_ensemble_streams_as_whole_strips_on_openvino():
    """The shipped real-data model (an average of two FCNs) runs as whole strips on OpenVINO (ONNX Runtime
    runs it by blocks) and scores a scan's cells like Keras."""
    from conftest import ROOT

    path = ROOT / "models" / "amazon-rgb48-v2"
    keras_model, ov_model = load_model(path), load_model(path, runtime="openvino")
    g, img, norm = FcnGeometry(keras_model.window), _image()[..., :3], _norm(bands=3)
    kx, ky = range(14, 24), range(12, 20)
    st = InferenceStats()
    o = predict_cells(ov_model.network, g, _reader(img), norm, kx, ky, block_cells=3, stats=st)
    assert st.method == "whole"
    _same(o, predict_cells(keras_model.network, g, _reader(img), norm, kx, ky, block_cells=4))


@pytest.mark.skipif(not available("openvino") or not ov_cpu_bf16(), reason="no bfloat16 units on this CPU")
def test_bfloat16_on_a_trained_network_and_real_imagery():
    """The shipped real-data model (trained) on a mosaic of 400 real Sentinel-2 chips (mines and not), as
    whole strips in bfloat16: within the tolerance of float32 (measured 0.0069 over 900 cells)."""
    from conftest import ROOT
    from test_device import REAL_CHIPS, real_chip_mosaic

    from minescan.scan.inference import Normalisation

    if not REAL_CHIPS.exists():
        pytest.skip(f"real chips not found at {REAL_CHIPS}")
    path = ROOT / "models" / "amazon-rgb48-v2"
    m = load_model(path, runtime="openvino")
    dn = real_chip_mosaic()
    norm = Normalisation.from_card(m.card["normalisation"], 1e-4, 0)
    g, kx, ky = FcnGeometry(m.window), range(0, 30), range(0, 30)
    f32 = predict_cells(m.network, g, _reader(dn), norm, kx, ky, block_cells=7)
    with compute_precision("bfloat16"):
        b16 = predict_cells(m.network, g, _reader(dn), norm, kx, ky, block_cells=7)
    np.testing.assert_array_equal(np.isnan(f32), np.isnan(b16))
    diff = float(np.nanmax(np.abs(f32 - b16)))
    assert 1e-5 < diff <= PRECISION_TOLERANCE["bfloat16"], diff


def test_minescan_device_says_what_auto_runs(monkeypatch):
    from minescan.cli.device import runtime_line
    from minescan.models import onnx_net

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("minescan.scan.device.gpu_present", lambda env=None: False)
    monkeypatch.setattr(onnx_net, "ov_cpu_bf16", lambda: True)
    assert runtime_line() == ("detect.runtime auto, by detect.precision: float32 -> onnxruntime, "
                              "bfloat16 -> openvino, float16 -> tensorflow")


def test_openvino_imported_without_its_conversion_tool():
    """A job imports OpenVINO without its model conversion tool (0.07-0.13 s), which stays importable."""
    import subprocess
    import sys

    code = ("import sys; from minescan.models.onnx_net import _openvino; ov = _openvino(); "
            "print('openvino.tools.ovc' in sys.modules, hasattr(ov, 'Core')); import openvino.tools.ovc; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True", "ok"]
