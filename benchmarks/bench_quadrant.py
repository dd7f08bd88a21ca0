"""One quadrant job against the bare FCN forward pass and the ways users would otherwise scan it.

    .venv/bin/python benchmarks/bench_quadrant.py [--quick] [--json out.json] [--keep DIR]

Writes a synthetic full-size tile to a temp dir (9216 px core + 160 px halo, 12-band uint16 GeoTIFF in the
tile format of ``minescan make-tile``; smooth fields + noise, so it compresses like imagery), saves a
randomly initialised published discovery FCN and impact CNN as model directories, then measures, each in
its own child process (wall time, and peak RSS from ``wait4``):

1. the real quadrant job: ``minescan detect`` then ``minescan classify`` on quadrant NW (read, normalise,
   FCN, candidates, impact CNN, writes); its probability raster must equal (2) to 1e-5 (else exit 1);
2. the bare FCN forward pass on the same array (the quadrant's input span, normalised, in memory):
   ``network.predict_on_batch``, the second call at this shape (warm; the first, with its one-time set-up,
   is printed apart); ratio job / bare. ``bench_floor.py`` has the full comparison with the warm floor;
3. (a) the published notebook's way: the whole span read as float32, the FCN on all of it, then the
   impact CNN called once per candidate point (``model.predict(patch[None])``);
4. (b) patch classification as done by production patch classifiers: 48 px patches at a 24 px stride over
   the quadrant, each classified independently by an ~830k-parameter CNN (architecture printed);
5. the previous implementation through the same CLI (square blocks of 48 cells, margins recomputed;
   classify rating the candidates in its own process);
6. scaling: 1, 4 and 16 quadrant jobs run one after the other (the 4 quadrants of the tile; 16 = those 4
   run 4 times, as independent processes like Snakemake runs them; the file is in the OS page cache in
   every case), and peak RSS of one job over the whole 9216 px tile versus a quadrant;
7. the machine's dense float32 matmul rate in TensorFlow, as the compute ceiling.

Candidates: the detection threshold is set from the bare pass so that ``--candidate-fraction`` (1 %) of
the quadrant's cells are candidates (a random network has no meaningful 0.6); the impact cost scales with it.
FLOPs are counted analytically from the layer shapes (2 x multiply-adds of convolutions and dense layers).
``--quick`` uses a 2304 px tile (1152 px quadrants) to check the script in ~2 minutes.
Default run: about 5 minutes on 2 cores, ~1.5 GB of temporary disk, ~9 GB of RAM at the peak (the bare pass).
Measure on a quiet machine: the load average at each step is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZONE = "21S"


def tile_id(tile_px: int) -> str:
    """A tile near zone 21S's central meridian, ~6.5 S (inside the zone's strip for any tile size)."""
    m = tile_px * 10
    return f"{ZONE}-E{int(500_000 // m):03d}-N{int(9_280_000 // m):04d}"


HALO = 160
SCALE = 1e-4
# plausible Sentinel-2 L2A reflectance statistics per band (B1..B12), for the model cards
MEAN = [0.06, 0.07, 0.09, 0.10, 0.14, 0.20, 0.22, 0.23, 0.25, 0.25, 0.21, 0.14]
STD = [0.03, 0.03, 0.04, 0.05, 0.05, 0.06, 0.07, 0.07, 0.08, 0.08, 0.07, 0.06]


# ------------------------------------------------------------------------------------------ utilities
LOADS: list[tuple[str, float]] = []  # (step, 1-minute load average when it started)


def say(msg: str) -> None:
    LOADS.append((msg.rstrip(" ."), os.getloadavg()[0]))
    print(f"  [{time.strftime('%H:%M:%S')}] load {LOADS[-1][1]:.2f}  {msg}", file=sys.stderr, flush=True)


def load() -> tuple[float, float, float]:
    return os.getloadavg()


def mb(kb: int) -> float:
    return kb / 1024.0  # ru_maxrss is in KiB on Linux


def run(argv: list[str], what: str) -> dict:
    """Run a child process; wall time, its own peak RSS (MB, from wait4) and output. Fails loudly."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise SystemExit(f"{what} failed ({code}):\n{stderr[-4000:]}")
    return {"wall_s": wall, "rss_mb": mb(usage.ru_maxrss), "cpu_s": usage.ru_utime + usage.ru_stime,
            "stdout": stdout, "stderr": stderr}


def child(task: str, *args: str) -> dict:
    r = run([sys.executable, __file__, "--child", task, *args], task)
    r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    return r


def minescan_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "minescan"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "minescan.cli"]


def grid_args(tile_px: int) -> list[str]:
    return ["--tile-px", str(tile_px), "--halo-px", str(HALO), "--resolution-m", "10"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ------------------------------------------------------------------------------------------ fixtures
def write_tile(path: Path, tile_px: int) -> float:
    import rasterio
    from rasterio.windows import Window

    from minescan import SENTINEL2_BANDS
    from minescan.sources.local import TILE_PROFILE

    tile = _tile(tile_px)
    size = tile.size_px
    rng = np.random.default_rng(0)
    prof = dict(TILE_PROFILE, count=12, width=size, height=size, crs=tile.crs, transform=tile.transform, nodata=0)
    t0 = time.perf_counter()
    xx = np.arange(size)[None, :]
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(path, "w", **prof) as dst:
        dst.descriptions = tuple(SENTINEL2_BANDS)
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            yy = np.arange(r0, r0 + h)[:, None]
            field = 0.5 + 0.25 * np.sin(xx / 97.0 + yy / 311.0) * np.cos(yy / 131.0 - xx / 577.0)
            block = np.empty((12, h, size), np.uint16)
            for b in range(12):
                refl = MEAN[b] + 2 * STD[b] * (field - 0.5)
                block[b] = np.clip(refl / SCALE + rng.normal(0, 60, (h, size)), 1, 65535).astype(np.uint16)
            dst.write(block, window=Window(0, r0, size, h))
    return time.perf_counter() - t0


def patch_cnn():
    """A production-style 48 px patch classifier of ~830k parameters."""
    from minescan.models.networks import _keras

    keras = _keras()
    L = keras.layers
    inp = keras.Input((48, 48, 12), name="bands")
    x = L.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(160, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x), name="patch_cnn48")


PATCH_CNN_TEXT = ("48x48x12 -> Conv32 3x3 same -> MaxPool2 -> Conv64 3x3 same -> MaxPool2 -> Conv128 3x3 same"
                  " -> MaxPool2 -> Flatten (4608) -> Dense160 -> Dropout -> Dense2 softmax")


def save_models(d: Path) -> tuple[Path, Path]:
    from minescan import SENTINEL2_BANDS
    from minescan.models.networks import _keras, build_discovery_fcn, build_impact_cnn
    from minescan.models.store import save_model

    _keras().utils.set_random_seed(5)
    norm = {"clip_max": None, "mean": MEAN, "std": STD}
    common = {"bands": list(SENTINEL2_BANDS), "normalisation": norm, "metrics": {},
              "training_data": {"note": "random weights (benchmark)"}}
    fcn = save_model(d / "fcn", build_discovery_fcn(12, 201), {
        **common, "kind": "discovery", "name": "bench-fcn", "window": 201, "stride": 27, "threshold": 0.6,
        "classes": ["background", "mine"], "positive_class": "mine"})
    imp = save_model(d / "impact", build_impact_cnn(12), {
        **common, "kind": "impact", "name": "bench-impact", "window": 21, "classes": ["high", "low", "no_ore"]})
    return fcn, imp


def write_region(path: Path, tile_px: int) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from minescan.grid import to_crs

    tile = _tile(tile_px)
    geom = to_crs(box(*tile.core_bounds), tile.id.epsg, 4326).buffer(0.01)
    gpd.GeoDataFrame({"name": ["bench"]}, geometry=[geom], crs=4326).to_file(path)


# ------------------------------------------------------------------------------------------ child tasks
def _tile(tile_px):
    from minescan.grid import GridSpec, Tile, TileId

    tile_px = int(tile_px)
    return Tile(TileId.parse(tile_id(tile_px)), GridSpec(tile_px, 10.0, HALO))


def _span(tile, quadrant, core=None):
    from minescan.grid import cells_in_core
    from minescan.models.networks import FcnGeometry

    g = FcnGeometry(201)
    kx, ky = cells_in_core(core or tile.quadrant_core_px(quadrant))
    c0, c1 = g.input_span(kx.start, len(kx))
    r0, r1 = g.input_span(ky.start, len(ky))
    return g, kx, ky, (c0, r0, c1, r1)


def child_startup(fcn: str, impact: str, region: str) -> dict:
    """What ``minescan detect`` does before its first read: imports, TensorFlow, both models, the region."""
    t0 = time.perf_counter()
    from minescan.cli import build_parser

    build_parser()
    import minescan.scan.detect  # noqa: F401
    from minescan.scan.inference import import_keras_lean

    import_keras_lean()
    t1 = time.perf_counter()
    from minescan.models.store import load_model
    from minescan.vector_io import read_region

    load_model(fcn, expect_kind="discovery")
    load_model(impact, expect_kind="impact")
    read_region(region, None)
    return {"import_s": t1 - t0, "load_s": time.perf_counter() - t1}


def child_notebook(tile_path: str, tile_px: str, fcn: str, impact: str, frac: str, grid_out: str) -> dict:
    """(a) whole span as float32, FCN on all of it, impact CNN once per candidate point."""
    from minescan.models.networks import STRIDE
    from minescan.models.store import load_model
    from minescan.scan.detect import open_tile
    from minescan.scan.inference import MIN_VALID_FRACTION, fcn_flops

    tile = _tile(int(tile_px))
    g, kx, ky, (c0, r0, c1, r1) = _span(tile, "NW")
    model, imp = load_model(fcn), load_model(impact)
    res = {}
    t = time.perf_counter()
    with open_tile(tile_path, tile) as raster:
        raw = raster.read_px(c0, r0, c1, r1, list(range(12)))
    res["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    valid = np.all(raw != 0, axis=-1)
    image = model.normalise(raw.astype(np.float32) * np.float32(SCALE), valid)
    res["normalise_s"] = time.perf_counter() - t
    del raw
    for n in (600, 601):  # warm-up with two shapes, so the timed call reuses a shape-free trace
        model.network.predict_on_batch(image[None, :n, : n + 2])
    # the first call at this shape still pays one-time set-up (issue 19): time it apart, then the warm call
    t = time.perf_counter()
    out = np.asarray(model.network.predict_on_batch(image[None]))
    res["fcn_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out = np.asarray(model.network.predict_on_batch(image[None]))
    res["fcn_s"] = time.perf_counter() - t
    res["fcn_flops"] = fcn_flops(model.network, image.shape[0], image.shape[1])
    res["span_px"] = [int(image.shape[1]), int(image.shape[0])]
    prob = out[0, 1 : 1 + len(ky), 1 : 1 + len(kx), 1]
    f0 = STRIDE + g.offset
    frac_valid = valid[f0 : f0 + STRIDE * len(ky), f0 : f0 + STRIDE * len(kx)].reshape(
        len(ky), STRIDE, len(kx), STRIDE).mean(axis=(1, 3))
    prob = np.where(frac_valid >= MIN_VALID_FRACTION, prob, np.nan).astype(np.float32)
    np.save(grid_out, prob)
    thr = float(np.nanquantile(prob, 1 - float(frac)))
    iy, ix = np.nonzero(prob >= thr)
    res["threshold"], res["points"] = thr, int(len(iy))
    # the notebook: one predict call per point, on a patch sliced out of the float image in memory
    # (the impact model's card has the same normalisation here)
    w = imp.window
    imp.network.predict(image[None, :w, :w], verbose=0)
    t = time.perf_counter()
    for y, x in zip(iy, ix, strict=True):
        cy, cx = (f0 + STRIDE * v + STRIDE // 2 - w // 2 for v in (y, x))
        imp.network.predict(image[None, cy : cy + w, cx : cx + w], verbose=0)
    res["impact_s"] = time.perf_counter() - t
    return res


def child_patchcnn(tile_path: str, tile_px: str) -> dict:
    """(b) 48 px patches at a 24 px stride over the quadrant core, each classified independently."""
    import rasterio

    from minescan.scan.detect import open_tile
    from minescan.scan.inference import Normalisation, fcn_flops

    tile = _tile(int(tile_px))
    net = patch_cnn()
    norm = Normalisation(SCALE, tuple(MEAN), tuple(STD))
    c0, r0, c1, r1 = tile.quadrant_core_px("NW")
    size, step = 48, 24
    xs = range(c0, c1 - size + 1, step)
    ys = range(r0, r1 - size + 1, step)
    net.predict_on_batch(np.zeros((len(xs), size, size, 12), np.float32))  # warm-up
    n = 0
    t = time.perf_counter()
    with open_tile(tile_path, tile) as raster, rasterio.Env(GDAL_CACHEMAX=256 * 2**20):
        for y in ys:
            z, _ = norm.apply(raster.read_px(c0, y, c1, y + size, list(range(12))))
            win = np.lib.stride_tricks.sliding_window_view(z, (size, size), axis=(0, 1))[0, ::step]
            batch = np.ascontiguousarray(np.moveaxis(win, 1, -1))  # (n, 48, 48, 12)
            net.predict_on_batch(batch)
            n += len(batch)
    wall = time.perf_counter() - t
    return {"wall_in_s": wall, "patches": n, "params": int(net.count_params()),
            "flops": n * fcn_flops(net, size, size)}


def child_tile(tile_path: str, tile_px: str, fcn: str) -> dict:
    """One job over the whole tile core (all four quadrants' cells at once), streamed like a quadrant."""
    import rasterio

    from minescan.models.store import load_model
    from minescan.scan.detect import gdal_cache_bytes, open_tile, quadrant_probabilities
    from minescan.scan.inference import InferenceStats, import_keras_lean

    import_keras_lean()
    tile = _tile(int(tile_px))
    model = load_model(fcn)
    st = InferenceStats()
    t = time.perf_counter()
    with open_tile(tile_path, tile) as raster, rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(raster, tile.size_px)):
        prob, _, _ = quadrant_probabilities(raster, tile, "NW", model, SCALE, None, tile.core_px(), stats=st)
    return {"wall_in_s": time.perf_counter() - t, "cells": int(prob.size), "flops": st.flops,
            "strip_cells": st.chunk_cells}


def child_matmul() -> dict:
    import tensorflow as tf

    n = 4096
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    f = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    f(a, b).numpy()
    best = 1e9
    for _ in range(4):
        t = time.perf_counter()
        f(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n**3 / best / 1e9}


CHILDREN = {"startup": child_startup, "notebook": child_notebook, "patchcnn": child_patchcnn,
            "tile": child_tile, "matmul": child_matmul}


# ------------------------------------------------------------------------------------------ the jobs
def quadrant_job(d: Path, tile_path: Path, tile_px: int, fcn: Path, impact: Path, quadrant: str, threshold: float,
                 tag: str = "", previous: bool = False) -> dict:
    """``minescan detect`` + ``minescan classify`` as the rules run them (detect rates the candidates; classify
    checks and copies). ``previous``: as before this change (48-cell blocks, classify rating in its own process)."""
    q = d / f"q_{quadrant}{tag}"
    extra = (["--inference", "blocks", "--block-cells", "48"] if previous
             else ["--impact-model", str(impact), "--impact-batch-size", "512"])
    det = run([*minescan_cmd(), "detect", "--tile", tile_id(tile_px), "--quadrant", quadrant, "--tile-path", str(tile_path),
               "--model", str(fcn), "--region", str(d / "region.geojson"), "--scale", str(SCALE),
               "--threshold", repr(threshold), *extra, "--prob-out", str(q / "probability.tif"),
               "--candidates-out", str(q / "candidates.csv"), *grid_args(tile_px)], f"detect {quadrant}")
    cls = run([*minescan_cmd(), "classify", "--tile", tile_id(tile_px), "--tile-path", str(tile_path), "--model", str(impact),
               "--candidates", str(q / "candidates.csv"), "--scale", str(SCALE), "--out", str(q / "classified.csv"),
               *grid_args(tile_px)], f"classify {quadrant}")
    m = re.search(r"FCN \((\w+), (\d+)-cell \w+ x \d+\): .* in ([\d.]+) s \(([\d.]+) GFLOP.*"
                  r"read\+normalise ([\d.]+) s, network ([\d.]+) s\)", det["stderr"])
    n_cand = sum(1 for _ in open(q / "candidates.csv")) - 1
    return {"dir": q, "detect": det, "classify": cls, "wall_s": det["wall_s"] + cls["wall_s"],
            "rss_mb": max(det["rss_mb"], cls["rss_mb"]), "candidates": n_cand,
            "fcn_in_s": float(m.group(3)) if m else float("nan"), "method": m.group(1) if m else "?",
            "strip_cells": int(m.group(2)) if m else 0, "read_s": float(m.group(5)) if m else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2304 px tile (1152 px quadrants): a ~2 min check")
    ap.add_argument("--candidate-fraction", type=float, default=0.01, help="share of cells made candidates")
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temp dir)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](*args.rest)))
        return

    tile_px = 2304 if args.quick else 9216
    q_px = tile_px // 2
    km2_q = (q_px * 10 / 1000) ** 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="minescan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load0 = load()
    t_start = time.perf_counter()
    import keras
    import tensorflow as tf

    from minescan.models.networks import build_impact_cnn
    from minescan.scan.inference import fcn_flops

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB; TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    from minescan.scan.device import setup as device_setup

    print(device_setup().log_line())  # GPU model and memory, or CPU and threads (minescan.scan.device)
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; work dir {work}")
    tile_path = work / f"{tile_id(tile_px)}.tif"
    if not tile_path.exists():
        say(f"writing the synthetic {tile_px + 2 * HALO} px tile ...")
        write_tile(tile_path, tile_px)
    fcn, impact = (work / "models" / "fcn", work / "models" / "impact")
    if not (fcn / "card.json").exists():
        save_models(work / "models")
    write_region(work / "region.geojson", tile_px)
    print(f"tile {tile_path.stat().st_size / 2**30:.2f} GB on disk; quadrant core {q_px} x {q_px} px = "
          f"{km2_q:.0f} km2\n", flush=True)

    res: dict = {"machine": cpu_name(), "cores": os.cpu_count(), "quadrant_px": q_px, "quadrant_km2": km2_q,
                 "load_start": load0, "quick": args.quick}
    if load0[0] >= 1.0:
        print(f"WARNING: 1-minute load average {load0[0]:.2f} >= 1: other processes will slow these figures down")
    say("matmul ceiling ...")
    mm = child("matmul")
    res["matmul_gflops"] = mm["gflops"]
    say("process start-up ...")
    st = child("startup", str(fcn), str(impact), str(work / "region.geojson"))
    res["startup"] = {"wall_s": st["wall_s"], "import_s": st["import_s"], "load_s": st["load_s"]}

    # (2) + (a): bare forward pass and the notebook way, one child
    say("bare forward pass and (a) the notebook way ...")
    nb = child("notebook", str(tile_path), str(tile_px), str(fcn), str(impact), str(args.candidate_fraction),
               str(work / "bare.npy"))
    bare_s, flops = nb["fcn_s"], nb["fcn_flops"]
    threshold = nb["threshold"]
    res["bare"] = {"fcn_s": bare_s, "flops": flops, "span_px": nb["span_px"], "notebook_rss_mb": nb["rss_mb"]}

    # (1) the quadrant job through the CLI
    say("the quadrant job (minescan detect + classify) ...")
    job = quadrant_job(work, tile_path, tile_px, fcn, impact, "NW", threshold)
    import rasterio

    with rasterio.open(job["dir"] / "probability.tif") as ds:
        grid = ds.read(1)
    bare = np.load(work / "bare.npy")
    same_nan = bool(np.array_equal(np.isnan(grid), np.isnan(bare)))
    max_diff = float(np.nanmax(np.abs(grid - bare)))
    imp_flops = job["candidates"] * fcn_flops(build_impact_cnn(12), 21, 21)
    res["job"] = {k: job[k] for k in ("wall_s", "rss_mb", "candidates", "fcn_in_s", "method", "strip_cells", "read_s")}
    res["job"].update(detect_s=job["detect"]["wall_s"], classify_s=job["classify"]["wall_s"],
                      classify_copied="already rated" in job["classify"]["stderr"],
                      detect_rss_mb=job["detect"]["rss_mb"], classify_rss_mb=job["classify"]["rss_mb"],
                      max_abs_diff_vs_bare=max_diff, nan_pattern_equal=same_nan, impact_flops=imp_flops)

    # (5) previous implementation: 48-cell blocks
    say("the previous implementation ...")
    old = quadrant_job(work, tile_path, tile_px, fcn, impact, "NW", threshold, tag="_previous", previous=True)
    res["previous"] = {k: old[k] for k in ("wall_s", "rss_mb", "fcn_in_s")}
    res["previous"].update(detect_s=old["detect"]["wall_s"], classify_s=old["classify"]["wall_s"])

    # (b) patch classifier
    say("(b) the patch CNN ...")
    pc = child("patchcnn", str(tile_path), str(tile_px))
    res["patch_cnn"] = {k: pc[k] for k in ("wall_s", "wall_in_s", "rss_mb", "patches", "params", "flops")}

    # scaling
    say("scaling: 4 and 16 quadrant jobs ...")
    runs = {1: [job]}
    four = [job] + [quadrant_job(work, tile_path, tile_px, fcn, impact, q, threshold) for q in ("NE", "SW", "SE")]
    runs[4] = four
    sixteen = list(four)
    for rep in range(3):
        sixteen += [quadrant_job(work, tile_path, tile_px, fcn, impact, q, threshold, tag=f"_r{rep}")
                    for q in ("NW", "NE", "SW", "SE")]
    runs[16] = sixteen
    res["scaling"] = {n: {"wall_s": sum(j["wall_s"] for j in js), "km2": n * km2_q,
                          "max_rss_mb": max(j["rss_mb"] for j in js)} for n, js in runs.items()}
    say("one job over the whole tile ...")
    tj = child("tile", str(tile_path), str(tile_px), str(fcn))
    res["whole_tile"] = {"wall_s": tj["wall_s"], "wall_in_s": tj["wall_in_s"], "rss_mb": tj["rss_mb"],
                         "strip_cells": tj["strip_cells"]}
    res["load_end"] = load()
    res["loads"] = LOADS
    res["bench_s"] = time.perf_counter() - t_start
    report(res, flops, bare_s, nb)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if not (max_diff <= 1e-5 and same_nan):
        raise SystemExit(f"FAIL: the job's probabilities differ from the bare pass (max {max_diff:.2e})")


def report(res: dict, flops: float, bare_s: float, nb: dict) -> None:
    km2 = res["quadrant_km2"]
    job, st = res["job"], res["startup"]
    gf = lambda f, s: f / s / 1e9  # noqa: E731
    work_s = job["detect_s"] - st["wall_s"]  # detect minus interpreter + TensorFlow start-up + model loads
    job["work_s"] = work_s
    all_flops = flops + job["impact_flops"]
    print(f"compute ceiling: dense float32 matmul (4096^2) in TensorFlow {res['matmul_gflops']:.0f} GFLOP/s")
    print(f"process start-up of a detect job (Python, imports, TensorFlow, 2 models, region): {st['wall_s']:.2f} s")
    print(f"\nquadrant {res['quadrant_px']} px ({km2:.0f} km2); input span {res['bare']['span_px'][0]} x "
          f"{res['bare']['span_px'][1]} px (core + receptive-field halo); FCN {flops / 1e9:.1f} GFLOP")
    print(f"  bare FCN forward pass on that array (in memory), second call at this shape (warm; the first took "
          f"{nb['fcn_first_s']:.2f} s): {bare_s:.2f} s  {gf(flops, bare_s):5.1f} GFLOP/s"
          f"  {km2 / bare_s:5.0f} km2/s   peak RSS {nb['rss_mb']:.0f} MB (with (a) below)")
    print(f"  quadrant job work (read, normalise, FCN, impact, write): {work_s:6.2f} s = {work_s / bare_s:.2f} x bare"
          f"  {gf(all_flops, work_s):5.1f} GFLOP/s  {km2 / work_s:5.0f} km2/s")
    print(f"  quadrant job processes (minescan detect + classify):      {job['wall_s']:6.2f} s = "
          f"{job['wall_s'] / bare_s:.2f} x bare  {gf(all_flops, job['wall_s']):5.1f} GFLOP/s  "
          f"{km2 / job['wall_s']:5.0f} km2/s   peak RSS {job['rss_mb']:.0f} MB")
    print(f"     detect {job['detect_s']:.2f} s (peak RSS {job['detect_rss_mb']:.0f} MB): start-up {st['wall_s']:.2f} s, "
          f"FCN ({job['method']}, {job['strip_cells']}-cell strips) {job['fcn_in_s']:.2f} s = "
          f"{gf(flops, job['fcn_in_s']):.0f} GFLOP/s incl. reading ({job['read_s']:.2f} s in the read-ahead thread) "
          f"and impact rating of {job['candidates']} candidates ({job['impact_flops'] / 1e9:.2f} GFLOP)")
    print(f"     classify {job['classify_s']:.2f} s (peak RSS {job['classify_rss_mb']:.0f} MB; ratings copied "
          f"from detect without TensorFlow: {job['classify_copied']})")
    print(f"     probability raster vs bare pass: max |diff| {job['max_abs_diff_vs_bare']:.2e}, "
          f"NaN pattern equal: {job['nan_pattern_equal']}")
    b = res["previous"]
    print(f"  previous implementation (48-cell blocks, classify rating in its own process): {b['wall_s']:.2f} s "
          f"= {b['wall_s'] / bare_s:.2f} x bare (detect {b['detect_s']:.2f} s, FCN {b['fcn_in_s']:.2f} s; classify "
          f"{b['classify_s']:.2f} s), peak RSS {b['rss_mb']:.0f} MB")
    nbt = nb["read_s"] + nb["normalise_s"] + nb["fcn_s"] + nb["impact_s"]
    print(f"  (a) notebook way: {nb['wall_s']:.2f} s process, {nbt:.2f} s work (read {nb['read_s']:.2f}, normalise "
          f"{nb['normalise_s']:.2f}, FCN {nb['fcn_s']:.2f}, {nb['points']} single-point impact calls "
          f"{nb['impact_s']:.2f}) = {nbt / work_s:.1f} x our job's work; peak RSS {nb['rss_mb']:.0f} MB")
    pc = res["patch_cnn"]
    print(f"  (b) patch CNN, 48 px patches at 24 px stride: {pc['patches']} patches, {pc['params']:,} parameters, "
          f"{pc['flops'] / 1e9:.0f} GFLOP = {pc['flops'] / flops:.1f} x the FCN's")
    print(f"      {pc['wall_s']:.2f} s process, {pc['wall_in_s']:.2f} s work ({gf(pc['flops'], pc['wall_in_s']):.0f} "
          f"GFLOP/s) = {pc['wall_in_s'] / work_s:.1f} x our job's work; peak RSS {pc['rss_mb']:.0f} MB")
    print(f"      architecture: {PATCH_CNN_TEXT}")
    print("\nscaling (whole jobs, one after another, as Snakemake runs them on this machine):")
    for n, sc in res["scaling"].items():
        print(f"  {n:2d} quadrant(s) {sc['km2']:7.0f} km2  {sc['wall_s']:7.1f} s  "
              f"{sc['wall_s'] / sc['km2'] * 1000:5.2f} s per 1000 km2  max RSS {sc['max_rss_mb']:.0f} MB")
    t = res["whole_tile"]
    print(f"  whole {2 * res['quadrant_px']} px tile in one job: peak RSS {t['rss_mb']:.0f} MB (quadrant detect job: "
          f"{job['detect_rss_mb']:.0f} MB); FCN {t['wall_in_s']:.1f} s ({t['strip_cells']}-cell strips)")
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    print(f"\ntargets: job work <= 1.15 x bare: {work_s / bare_s:.2f} x ({ok(work_s <= 1.15 * bare_s)}); "
          f"with process start-ups {job['wall_s'] / bare_s:.2f} x ({ok(job['wall_s'] <= 1.15 * bare_s)}); "
          f"peak RSS <= 2.5 GB: {job['rss_mb'] / 1024:.2f} GB ({ok(job['rss_mb'] <= 2560)})"
          + (" [--quick: small quadrants, where fixed costs dominate; the targets are for full-size ones]"
             if res["quick"] else ""))
    l0, l1 = res["load_start"], res["load_end"]
    print(f"load average (1, 5, 15 min): start {l0[0]:.2f} {l0[1]:.2f} {l0[2]:.2f}, end {l1[0]:.2f} {l1[1]:.2f} "
          f"{l1[2]:.2f}; benchmark took {res['bench_s'] / 60:.1f} min")
    print("1-minute load when each step started: " + "; ".join(f"{k} {v:.2f}" for k, v in res["loads"]))


if __name__ == "__main__":
    main()
