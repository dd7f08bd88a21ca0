"""The device layer of the TensorFlow jobs (minescan.scan.device): what a job says about its device, the
strip budget on a GPU, GPU-sized strips and reduced precision against whole-array float32 inference.

There is no GPU here: the GPU cases go through :func:`describe` with what TensorFlow would report on one
(it is pure), and through the strip sizes a GPU budget gives, which the streaming code runs on the CPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import ROOT, SHARED, grid_tile, write_scene
from shapely.geometry import box
from test_inference import _image, _norm, _reader, _same, _whole

from minescan import SENTINEL2_BANDS
from minescan.grid import to_crs
from minescan.models.networks import FcnGeometry, build_discovery_fcn
from minescan.scan import device
from minescan.scan.device import Device, DeviceError, block_budget_mb, count_jobs, describe
from minescan.scan.inference import (
    DEFAULT_MAX_BLOCK_MB,
    InferenceStats,
    Normalisation,
    compute_precision,
    predict_cells,
)
from minescan.sources.local import make_tile

A100 = {"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)}
REAL_CHIPS = SHARED / "data" / "real-chips" / "dev.npz"


# ------------------------------------------------------------------------------------------ the device
def test_a_gpu_job_names_the_model_and_its_memory():
    d = describe(
        ["GPU:0"],
        A100,
        built_with_cuda=True,
        threads=8,
        env={"CUDA_VISIBLE_DEVICES": "3"},
        memory=(40960, 40321),
    )
    assert (d.kind, d.label, d.free_mb) == ("GPU", "GPU NVIDIA A100-SXM4-40GB", 40321)
    assert d.log_line() == (
        "device: GPU NVIDIA A100-SXM4-40GB (40960 MB, 40321 MB free), memory growth on, "
        "CUDA_VISIBLE_DEVICES=3"
    )
    assert describe(["GPU:0"], A100, built_with_cuda=True, threads=8, env={}, require_gpu=True).kind == "GPU"


def test_a_cpu_job_names_its_threads_and_a_gpu_it_could_not_use():
    plain = describe([], None, built_with_cuda=False, threads=4, env={})
    assert plain.log_line() == "device: CPU, 4 threads" and plain.label == "CPU"
    for env in ({"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "NoDevFiles"}):  # SLURM: none given
        assert describe([], None, built_with_cuda=True, threads=4, env=env).note == ""
    given = describe([], None, built_with_cuda=False, threads=4, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert given.label == "CPU" and given.log_line().startswith(
        "device: CPU, 4 threads; a GPU was assigned (CUDA_VISIBLE_DEVICES=0) but"
    )
    assert "tensorflow-cpu" in given.note and given.note.endswith("running on the CPU")
    driver = describe([], None, built_with_cuda=True, threads=4, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert "no usable GPU" in driver.note


def test_require_gpu_fails_clearly_without_one():
    with pytest.raises(
        DeviceError, match=r"detect.require_gpu .*\(CUDA_VISIBLE_DEVICES=1\) .*tensorflow-cpu"
    ):
        describe(
            [], None, built_with_cuda=False, threads=2, env={"CUDA_VISIBLE_DEVICES": "1"}, require_gpu=True
        )
    with pytest.raises(DeviceError, match="no GPU was assigned"):
        describe([], None, built_with_cuda=True, threads=2, env={}, require_gpu=True)


def test_strip_budget_from_the_free_gpu_memory_capped_by_the_host():
    gpu = Device("GPU", "NVIDIA A100-SXM4-40GB", 8, 40960, 40000)
    assert block_budget_mb(gpu, DEFAULT_MAX_BLOCK_MB) == 20000  # half the free memory
    assert block_budget_mb(gpu, DEFAULT_MAX_BLOCK_MB, host_mb=16000) == 12000  # (16000 - 1000) / 1.25
    assert block_budget_mb(gpu, DEFAULT_MAX_BLOCK_MB, host_mb=1200) == DEFAULT_MAX_BLOCK_MB  # never below
    assert block_budget_mb(Device("GPU", "x", 8), DEFAULT_MAX_BLOCK_MB) == DEFAULT_MAX_BLOCK_MB  # unknown
    assert (
        block_budget_mb(Device("CPU", "CPU", 2), DEFAULT_MAX_BLOCK_MB, host_mb=64000) == DEFAULT_MAX_BLOCK_MB
    )
    assert device.host_limit_mb({"SLURM_MEM_PER_NODE": "16000"}) == 16000
    assert device.host_limit_mb({"SLURM_MEM_PER_CPU": "2000", "SLURM_CPUS_ON_NODE": "4"}) == 8000


# ------------------------------------------------------------------ GPU-sized strips, reduced precision
@pytest.fixture(scope="module")
def fcn():
    import keras

    keras.utils.set_random_seed(7)
    return build_discovery_fcn(12, 201)


def test_gpu_sized_strips_equal_the_whole_array(fcn):
    """The budget a GPU gives streams the rectangle in one strip (or a few): still equal to one pass."""
    g, img, norm = FcnGeometry(201), _image(), _norm()
    kx, ky = range(-3, 30), range(-2, 31)  # the whole 900 x 1000 px image and the nodata beyond it
    ref = _whole(fcn, g, img, norm, kx, ky)
    seen = []
    for free_mb in (40000, 600):  # a 40 GB data-centre GPU; a small one (strips scale with the free memory)
        budget = block_budget_mb(Device("GPU", "test", 2, 2 * free_mb, free_mb), 16)
        st = InferenceStats()
        _same(predict_cells(fcn, g, _reader(img), norm, kx, ky, max_block_mb=budget, stats=st), ref)
        assert st.method == "stream"
        seen.append(st.strips)
    assert seen[0] == 1 and 1 < seen[1] < 5, seen


def _max_diff(network, g, img, norm, kx, ky, precision):
    ref = _whole(network, g, img, norm, kx, ky)
    with compute_precision(precision):
        got = predict_cells(network, g, _reader(img), norm, kx, ky, block_cells=3)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = np.isfinite(ref)
    return float(np.abs(got[ok] - ref[ok]).max())


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_stays_within_its_documented_tolerance(fcn, precision):
    """Published FCN (random weights) on a random 12-band image: the probabilities of the mixed-precision
    stream differ from whole-array float32 by more than round-off (the precision is really used) and by no
    more than PRECISION_TOLERANCE (measured here on 2 x86 cores: 0.0047 bfloat16, 0.0010 float16)."""
    g, img, norm = FcnGeometry(201), _image(), _norm()
    diff = _max_diff(fcn, g, img, norm, range(2, 15), range(1, 12), precision)
    assert 1e-5 < diff <= device.PRECISION_TOLERANCE[precision], diff
    assert (
        _max_diff(fcn, g, img, norm, range(2, 15), range(1, 12), "float32")
        <= device.PRECISION_TOLERANCE["float32"]
    )


def real_chip_mosaic() -> np.ndarray:
    """400 real chips (mines and not) as one 960 x 960 px RGB mosaic in tile values (uint16)."""
    x = np.load(REAL_CHIPS)["x"]
    chips = x[np.random.default_rng(0).choice(len(x), 400, replace=False)]
    mosaic = chips.reshape(20, 20, 48, 48, 3).transpose(0, 2, 1, 3, 4).reshape(960, 960, 3)
    return (mosaic.astype(np.uint16) * 3000 // 255 + 1).astype(np.uint16)  # README: reflectance = v/255 * 0.3


@pytest.mark.skipif(not REAL_CHIPS.exists(), reason=f"real chips not found at {REAL_CHIPS}")
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_on_a_trained_network_and_real_imagery(precision):
    """A trained member of the published RGB model (models/amazon-rgb48) on a mosaic of 400 real Sentinel-2
    chips (mines and not): within the tolerance (measured: 0.0145 bfloat16, 0.00094 float16)."""
    import test_inference

    from minescan.models.store import load_model

    m = load_model(ROOT / "models" / "amazon-rgb48", expect_kind="discovery")
    member = m.network.get_layer("fcn0_32x64x64x64")
    dn = real_chip_mosaic()
    norm = Normalisation.from_card(m.card["normalisation"], 1e-4, 0)
    old = test_inference.H, test_inference.W
    test_inference.H, test_inference.W = dn.shape[:2]
    try:
        diff = _max_diff(member, FcnGeometry(m.window), dn, norm, range(0, 34), range(0, 34), precision)
    finally:
        test_inference.H, test_inference.W = old
    assert 1e-5 < diff <= device.PRECISION_TOLERANCE[precision], diff


# ------------------------------------------------------------- the detect command, as a SLURM job sees it
@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, bright_model_dir):
    import geopandas as gpd

    d = tmp_path_factory.mktemp("device")
    t = grid_tile()
    make_tile(
        t, [write_scene(d / "scene.tif", [t], squares=[(0, 0, 1, 1)])], list(SENTINEL2_BANDS), d / "tile.tif"
    )
    gpd.GeoDataFrame(geometry=[to_crs(box(*t.core_bounds), t.id.epsg, 4326)], crs=4326).to_file(
        d / "r.geojson"
    )

    def run(out: Path, *extra, env=None):
        out.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "minescan.cli",
                "detect",
                "--tile",
                t.name,
                "--quadrant",
                "NW",
                "--tile-path",
                str(d / "tile.tif"),
                "--model",
                str(bright_model_dir),
                "--region",
                str(d / "r.geojson"),
                "--tile-px",
                str(t.grid.tile_px),
                "--halo-px",
                str(t.grid.halo_px),
                "--prob-out",
                str(out / "probability.tif"),
                "--candidates-out",
                str(out / "candidates.csv"),
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
        )

    return run


def test_a_job_given_a_gpu_it_cannot_use_says_so_and_runs_on_the_cpu(tiny_job, tmp_path):
    import os

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0")  # what SLURM sets for --gres=gpu:1
    r = tiny_job(tmp_path / "q", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stderr.splitlines() if "device: " in x)
    assert "device: CPU, " in line and "a GPU was assigned (CUDA_VISIBLE_DEVICES=0) but" in line, line
    with rasterio.open(tmp_path / "q" / "probability.tif") as ds:
        assert ds.tags()["DEVICE"] == "CPU"
    assert count_jobs([tmp_path / "q" / "probability.tif", tmp_path / "missing.tif"]) == {"CPU": 1}

    r = tiny_job(tmp_path / "required", "--require-gpu", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("minescan: error: detect.require_gpu is set but this job has no usable GPU"), last
    assert not (tmp_path / "required" / "probability.tif").exists()


_FAULTS = """
import resource, sys, numpy as np
from minescan.scan.device import keep_freed_memory
print(keep_freed_memory(), file=sys.stderr)
def piece():
    a = np.empty(16 * 2**20 // 2, np.uint16)  # a tile piece of a detect job's read
    a.fill(1)
    return int(a[-1])
piece()
f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    piece()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_not_faulted_in_again(monkeypatch):
    """keep_freed_memory: 20 tile pieces of 16 MB allocated and freed in turn reuse one piece of memory
    (by default each is a new mapping whose every page faults again), unless the user set glibc's own
    variables, which it leaves alone."""
    def faults(env):
        run = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True, env=env)
        return run.stderr.strip().splitlines()[-1] == "True", int(run.stdout)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept, few = faults(env)
    left, many = faults({**env, "MALLOC_TOP_PAD_": "0"})  # glibc's own setting: left alone
    assert kept and not left
    assert few * 10 < many, (few, many)
