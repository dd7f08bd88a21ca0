"""The ONNX Runtime path (minescan.models.onnx_net, detect.runtime): the saved Keras networks read as data
and run without TensorFlow give the Keras results; what it cannot convert is refused, never misread."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import save_test_model
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

from minescan.models.networks import FcnGeometry, build_discovery_fcn, build_impact_cnn
from minescan.models.onnx_net import Chain, Layer, Unsupported, _check_weights, load_network, read_chain
from minescan.models.store import MODEL_FILE, load_model
from minescan.scan import device
from minescan.scan.device import DeviceError, detect_runtime
from minescan.scan.inference import fcn_flops, predict_cells

pytest.importorskip("onnxruntime")


def _saved(tmp_path, network, name="m"):
    path = tmp_path / f"{name}.keras"
    network.save(path)
    return path


def keras_and_converted(d, runtime: str):
    """The published FCN and impact CNN (seeded random weights), each with its saved copy loaded for
    ``runtime`` (onnxruntime or openvino): ((fcn, fcn'), (impact, impact'))."""
    import keras

    keras.utils.set_random_seed(5)
    fcn, impact = build_discovery_fcn(12, 201), build_impact_cnn(12)
    return ((fcn, load_network(_saved(d, fcn, "fcn"), "fcn", runtime=runtime)),
            (impact, load_network(_saved(d, impact, "imp"), "imp", runtime=runtime)))


def assert_networks_equal_keras(pairs) -> None:
    """Both converted networks give Keras' outputs to 1e-5 (a batch of impact patches, an FCN span)."""
    (fcn, ofcn), (imp, oimp) = pairs
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 21, 21, 12), dtype=np.float32)
    a, b = np.asarray(imp.predict_on_batch(x)), oimp.predict_on_batch(x)
    assert a.shape == b.shape == (7, 3) and np.abs(a - b).max() <= 1e-5
    x = rng.standard_normal((1, 310, 283, 12), dtype=np.float32)
    a, b = np.asarray(fcn.predict_on_batch(x)), ofcn.predict_on_batch(x)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5


@pytest.fixture(scope="module")
def keras_and_ort(tmp_path_factory):
    return keras_and_converted(tmp_path_factory.mktemp("onnx"), "onnxruntime")


def test_whole_networks_equal_keras(keras_and_ort):
    assert_networks_equal_keras(keras_and_ort)
    (fcn, ofcn), _ = keras_and_ort
    assert ofcn.output_shape[-1] == 2 and ofcn.input_shape[-1] == 12
    assert fcn_flops(ofcn, 500, 400) == fcn_flops(fcn, 500, 400) > 0


@pytest.mark.parametrize("kx,ky", RECTS)
@pytest.mark.parametrize("cells", [1, 2, 5, None])
def test_streamed_fcn_equals_the_whole_keras_pass(keras_and_ort, kx, ky, cells):
    (fcn, ofcn), _ = keras_and_ort
    g, img, norm = FcnGeometry(201), _image(), _norm()
    got = predict_cells(ofcn, g, _reader(img), norm, kx, ky, block_cells=cells)
    _same(got, _whole(fcn, g, img, norm, kx, ky))


def test_block_method_on_onnxruntime_and_reduced_precision_refused(keras_and_ort):
    (fcn, ofcn), _ = keras_and_ort
    g, img, norm = FcnGeometry(201), _image(), _norm()
    from minescan.scan.inference import InferenceStats, compute_precision

    kx, ky = RECTS[0]
    stats = InferenceStats()
    got = predict_cells(ofcn, g, _reader(img), norm, kx, ky, method="blocks", block_cells=5, stats=stats)
    assert stats.method == "blocks"
    _same(got, _whole(fcn, g, img, norm, kx, ky))

    with compute_precision("bfloat16"), pytest.raises(ValueError, match="TensorFlow runtime"):
        predict_cells(ofcn, g, _reader(img), norm, range(2, 5), range(1, 4))


def test_what_it_cannot_convert_is_refused(tmp_path):
    import keras

    L = keras.layers
    inp = keras.Input((None, None, 12))
    nets = {
        "leaky": keras.Model(inp, L.Conv2D(4, 3, padding="same", activation="leaky_relu")(inp)),
        "batchnorm": keras.Model(inp, L.BatchNormalization()(L.Conv2D(4, 3)(inp))),
        "strided": keras.Model(inp, L.Conv2D(4, 3, strides=2)(inp)),
        "branch": keras.Model(inp, L.Add()([L.Conv2D(12, 1)(inp), inp])),
        "dense on a map": keras.Model(inp, L.Dense(3)(L.Conv2D(4, 3)(inp))),
    }
    for name, net in nets.items():
        with pytest.raises(Unsupported):
            load_network(_saved(tmp_path, net, name.replace(" ", "_")), name)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(Unsupported, match="not a readable"):
        read_chain(tmp_path / "junk.keras")
    good = _saved(tmp_path, nets["leaky"], "good")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(tmp_path / "bad_h5.keras", "w") as zout:
        for item in zin.namelist():
            zout.writestr(item, b"not hdf5" if item == "model.weights.h5" else zin.read(item))
    with pytest.raises(Unsupported, match="weights not readable"):
        read_chain(tmp_path / "bad_h5.keras")


def test_weights_that_do_not_fit_the_config_are_refused():
    conv = Layer("Conv2D", {"name": "c", "kernel_size": [3, 3], "filters": 4},
                 [np.zeros((3, 3, 12, 4), np.float32), np.zeros(4, np.float32)])
    _check_weights(Chain(12, [conv]), "ok")
    for weights in ([np.zeros((3, 3, 11, 4)), np.zeros(4)], [np.zeros((3, 3, 12, 4))],
                    [np.zeros((3, 3, 12, 4)), np.zeros(5)]):
        with pytest.raises(Unsupported, match="config implies"):
            _check_weights(Chain(12, [Layer("Conv2D", conv.config, weights)]), "bad")


def test_weights_are_matched_to_their_layers_by_keras_naming(tmp_path, keras_and_ort):
    """Renamed layers (the h5 groups follow the class, not the name) still read right; a file whose groups
    are renamed is refused."""
    (fcn, _), _ = keras_and_ort
    chain = read_chain(_saved(tmp_path, fcn))
    convs = [la for la in chain.layers if la.kind == "Conv2D"]
    assert [la.name for la in convs] == ["conv1", "conv2", "conv3", "conv4", "softmax"]
    for la, k in zip(convs, [fcn.get_layer(la.name) for la in convs], strict=True):
        for a, b in zip(la.weights, k.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    src = tmp_path / "m.keras"
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":  # one Conv2D fewer in the config than groups in the weights
                conf = json.loads(data)
                conf["config"]["layers"][1]["class_name"] = "Conv3D"
                data = json.dumps(conf).encode()
            zout.writestr(item, data)
    with pytest.raises(Unsupported):
        load_network(bad, "bad")


def test_runtime_choice():
    cpu = {"PATH": "/usr/bin"}
    assert detect_runtime("tensorflow", env=cpu) == "tensorflow"
    auto = detect_runtime("auto", env=cpu)
    assert auto == ("tensorflow" if device.gpu_present(cpu) else "onnxruntime")
    assert detect_runtime("auto", env={"CUDA_VISIBLE_DEVICES": "0"}) == "tensorflow"
    for kw in ({"precision": "bfloat16"}, {"require_gpu": True}, {"pyramid": True}, {"patch_model": True}):
        # bfloat16 on a CPU: OpenVINO where the CPU computes it (test_openvino_runtime), else TensorFlow
        assert detect_runtime("auto", env=cpu, **kw) in (("tensorflow", "openvino") if kw.get("precision") else ("tensorflow",))
        with pytest.raises(DeviceError, match="onnxruntime cannot run this job"):
            detect_runtime("onnxruntime", env=cpu, **kw)
    assert detect_runtime("onnxruntime", env={"CUDA_VISIBLE_DEVICES": "0"}) == "onnxruntime"
    with pytest.raises(DeviceError, match="must be one of"):
        detect_runtime("torch")


def _detect_cli(t, path, models_, out, runtime):
    code = (
        "import sys\nfrom minescan.cli import run\n"
        "rc = run(sys.argv[1:])\n"
        "print('TF', 'tensorflow' in sys.modules, 'RC', rc)\n"
    )
    fcn, impact = models_
    region = out / "region.geojson"
    out.mkdir(parents=True, exist_ok=True)
    from shapely.geometry import box, mapping

    from minescan.grid import to_crs

    region.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(to_crs(box(*t.core_bounds), t.id.epsg, 4326))}]}))
    args = ["detect", "--tile", t.name, "--quadrant", "NW", "SE", "--tile-path", str(path), "--model", str(fcn.path),
            "--impact-model", str(impact.path), "--region", str(region), "--threshold", "0.5", "--runtime", runtime,
            "--max-block-mb", "16", "--prob-out", str(out / "nw.tif"), str(out / "se.tif"),
            "--candidates-out", str(out / "nw.csv"), str(out / "se.csv"),
            "--tile-px", str(t.grid.tile_px), "--halo-px", str(t.grid.halo_px)]
    env = {k: v for k, v in __import__("os").environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "RC 0" in r.stdout, r.stderr[-3000:]
    return "TF True" in r.stdout, r.stderr


def test_detect_job_on_onnxruntime_equals_tensorflow_and_never_starts_it(tmp_path, scene_tile, models):  # noqa: F811
    t, path = scene_tile
    tf_used, _ = _detect_cli(t, path, models, tmp_path / "tf", "tensorflow")
    assert tf_used
    tf_used, log = _detect_cli(t, path, models, tmp_path / "ort", "onnxruntime")
    assert not tf_used, "the onnxruntime job imported TensorFlow"
    assert "device: CPU" in log and "onnxruntime" in log and "job timing" in log
    assert_same_detect_outputs(tmp_path, ("tf", "tensorflow"), ("ort", "onnxruntime"))


def assert_same_detect_outputs(d, first: tuple[str, str], second: tuple[str, str]) -> None:
    """The two _detect_cli runs in ``d`` (each (directory, runtime)) wrote the same probabilities (1e-5),
    tagged with their runtimes on the CPU, and the same rated candidates (NW has some)."""
    import rasterio

    (da, ra), (db, rb) = first, second
    for q in ("nw", "se"):
        with rasterio.open(d / da / f"{q}.tif") as a, rasterio.open(d / db / f"{q}.tif") as b:
            _same(a.read(1), b.read(1))
            assert a.tags()["DEVICE"] == b.tags()["DEVICE"] == "CPU"
            assert (a.tags()["RUNTIME"], b.tags()["RUNTIME"]) == (ra, rb)
        ca, cb = pd.read_csv(d / da / f"{q}.csv"), pd.read_csv(d / db / f"{q}.csv")
        assert len(ca) > 0 or q == "se"
        pd.testing.assert_frame_equal(ca, cb, atol=2e-6)


def test_impact_model_rated_by_onnxruntime_in_classify(tmp_path, scene_tile, models, caplog, monkeypatch):  # noqa: F811
    """classify re-rating (candidates rated by another model) runs the impact CNN on ONNX Runtime: same
    ratings as Keras."""
    from minescan.scan.detect import lazy_model, run_classify

    t, path = scene_tile
    impact = models[1]
    c0, r0, _, _ = t.core_px()
    cands = pd.DataFrame({"cell_x": [c0 // 27 + 2, c0 // 27 + 9], "cell_y": [r0 // 27 + 3, r0 // 27 + 12]})
    cands.to_csv(tmp_path / "c.csv", index=False)
    run_classify(path, t, impact, 1e-4, tmp_path / "c.csv", tmp_path / "keras.csv")
    monkeypatch.setattr(device, "gpu_present", lambda env=None: False)
    with caplog.at_level("INFO"):
        run_classify(path, t, lazy_model(impact.path, "impact"), 1e-4, tmp_path / "c.csv", tmp_path / "ort.csv")
    assert "device: CPU" in caplog.text and "onnxruntime" in caplog.text
    a, b = pd.read_csv(tmp_path / "keras.csv"), pd.read_csv(tmp_path / "ort.csv")
    pd.testing.assert_frame_equal(a, b, atol=2e-6)
    ort = load_model(impact.path, runtime="onnxruntime")
    assert ort.network.runtime == "onnxruntime" and (impact.path / MODEL_FILE).exists()


def test_a_network_it_cannot_convert_runs_on_tensorflow_under_auto(tmp_path, scene_tile, models, caplog):  # noqa: F811
    """A network that is neither a chain nor an average of distinct chains (here one FCN used twice, its
    layers shared): `auto` logs why and runs it on TensorFlow; `onnxruntime` asked for stops with one line."""
    import keras
    from shapely.geometry import box, mapping

    from minescan.cli import run
    from minescan.grid import to_crs

    t, path = scene_tile
    fcn = models[0].network
    inp = keras.Input((None, None, 12))
    ens = keras.Model(inp, keras.layers.Average()([fcn(inp), fcn(inp)]))
    d = save_test_model(tmp_path / "ens", "discovery", ens)
    region = tmp_path / "region.geojson"
    region.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                      "geometry": mapping(to_crs(box(*t.core_bounds), t.id.epsg, 4326))}]}))
    argv = ["detect", "--tile", t.name, "--quadrant", "NW", "--tile-path", str(path), "--model", str(d),
            "--region", str(region), "--tile-px", str(t.grid.tile_px), "--halo-px", str(t.grid.halo_px),
            "--prob-out", str(tmp_path / "p.tif"), "--candidates-out", str(tmp_path / "c.csv")]
    with caplog.at_level("INFO"):
        assert run([*argv, "--runtime", "auto"]) == 0
    assert "running on TensorFlow" in caplog.text and "single chain" in caplog.text
    assert run([*argv, "--runtime", "onnxruntime"]) == 2


@pytest.mark.parametrize("name", ["amazon-rgb48", "amazon-rgb48-v2"])
def test_shipped_ensembles_run_on_onnxruntime_as_on_keras(name):
    """The shipped real-data models are averages of two FCNs (minescan train-chips): converted as an ONNX Mean
    of the member chains, they score like Keras, on chips and over a scan's cells (block method)."""
    from conftest import ROOT

    path = ROOT / "models" / name
    keras_model, ort_model = load_model(path), load_model(path, runtime="onnxruntime")
    assert len(ort_model.network.chain.members) == 2
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 81, 108, 3), dtype=np.float32)
    a, b = np.asarray(keras_model.network.predict_on_batch(x)), ort_model.network.predict_on_batch(x)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    g, img, norm = FcnGeometry(keras_model.window), _image()[..., :3], _norm(bands=3)
    kx, ky = range(14, 24), range(12, 20)
    k = predict_cells(keras_model.network, g, _reader(img), norm, kx, ky, block_cells=4)
    o = predict_cells(ort_model.network, g, _reader(img), norm, kx, ky, block_cells=4)
    _same(o, k)
