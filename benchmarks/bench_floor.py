"""A quadrant job against the real floor: the FCN's warm forward pass, and where the rest of the job's time goes.

    .venv/bin/python benchmarks/bench_floor.py [--quick] [--json out.json] [--keep DIR] [--skip-compression]

Same synthetic tile and randomly initialised published models as ``bench_quadrant.py`` (9216 px core + 160
px halo, 12-band uint16; ``--quick``: 2304 px, a ~3 min check). Each measurement runs in its own child
process (wall time, peak RSS from ``wait4``); the 1-minute load average is printed with every figure:

1. **floor**: the FCN on quadrant NW's whole input span, in memory (normalised), as a ``tf.function`` with a
   shape-free signature: the first call (tracing, graph and oneDNN set-up) printed separately, then the best
   of 3 warm calls; in float32 and, where the CPU has bfloat16 units (``avx512_bf16``/``amx_bf16``),
   mixed bfloat16. The streamed network (``predict_cells``, what the job runs) on the same array in
   memory (pixel-interleaved, as the job reads it), second run (warm), in both precisions, and in float32
   on ONNX Runtime (``detect.runtime: onnxruntime``);
2. **the quadrant job**: ``minescan detect`` (FCN + impact CNN) + ``minescan classify`` as processes, one
   quadrant per process, on ONNX Runtime (the default on a CPU) and on TensorFlow; the breakdown of the detect process from its ``job timing`` log line (start-up,
   imports, TensorFlow import, model load, stream build, first call, network, read + decode in the
   read-ahead thread, impact, checks, write, process exit); ratios job / warm floor for the work (the
   quadrant's own phases) and for the whole processes;
3. **tile per process** (``detect.quadrants_per_job: tile``): the tile's 4 quadrants in one detect process
   against 4 detect processes (ONNX Runtime), and in one TensorFlow process; the probability rasters must be
   byte-identical between tile and quadrant processes (else exit 1);
4. **bfloat16 job** (``--precision bfloat16``, TensorFlow): largest probability difference to the float32 job
   and the candidates compared;
5. **OpenVINO** (``detect.runtime: openvino``; whole strips, in bfloat16 where the CPU has the units, else
   float32): the stream from memory in the floor child, one quadrant per process and a tile per process,
   on the tile as written (ZSTD) and stored uncompressed, each ``--repeat`` times interleaved (median
   reported, every run's wall time printed), the probability difference to the float32 job, the
   candidates compared, and the targets again: against the floor of step 1 and, since the VM's speed
   drifts within minutes, against the warm float32 floor measured again (in a child, whole span only) at
   the start of each round, just before that round's jobs (median ratio of the rounds); and a batch of
   ``--tiles-per-process`` tiles per process (default 4; ``detect.tiles_per_job``: the uncompressed tile
   that many times in one detect and one classify process), whose outputs must equal the tile process's
   byte for byte;
6. **tile compression**: the tile copied as DEFLATE + predictor 2 (GDAL default level), ZSTD + predictor 2
   (level 1), LZW + predictor 2 and uncompressed; size, and the time to read and decode quadrant NW's span
   in full-width strips as the job does, with 1 and 2 GDAL decode threads.

The jobs' probabilities (both runtimes) must equal the float32 floor to 1e-5 with the same NaN cells (else
exit 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_quadrant as bq  # noqa: E402
import numpy as np  # noqa: E402

QUADRANTS = ("NW", "NE", "SW", "SE")
COMPRESSIONS = {  # name -> creation options (GDAL GTiff)
    "DEFLATE+pred2": {"COMPRESS": "DEFLATE", "PREDICTOR": "2"},
    "ZSTD+pred2 level 1": {"COMPRESS": "ZSTD", "PREDICTOR": "2", "ZSTD_LEVEL": "1"},
    "LZW+pred2": {"COMPRESS": "LZW", "PREDICTOR": "2"},
    "none": {"COMPRESS": "NONE"},
}


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def child(task: str, *args: str) -> dict:
    r = bq.run([sys.executable, __file__, "--child", task, *args], task)
    r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    return r


# ------------------------------------------------------------------------------------------ child tasks
def child_floor(tile_path: str, tile_px: str, fcn: str, precision: str, out_npy: str, streams: str = "1") -> dict:
    """Warm whole-span forward pass (first call separately) and the warm streamed network, from memory;
    ``streams`` "0": the whole-span pass only, its probabilities not saved (the floor of each job round)."""
    from minescan.models.networks import STRIDE
    from minescan.models.store import load_model
    from minescan.scan.detect import open_tile
    from minescan.scan.inference import (
        MIN_VALID_FRACTION,
        InferenceStats,
        Normalisation,
        compute_precision,
        fcn_flops,
        import_keras_lean,
        predict_cells,
    )

    import_keras_lean()
    import keras
    import tensorflow as tf

    from minescan.models.networks import build_discovery_fcn

    tile = bq._tile(int(tile_px))
    g, kx, ky, (c0, r0, c1, r1) = bq._span(tile, "NW")
    model = load_model(fcn)
    with open_tile(tile_path, tile) as raster:  # pixel-interleaved in memory, as the job's strips are
        raw = np.ascontiguousarray(raster.read_px(c0, r0, c1, r1, list(range(12))))
    res: dict = {}
    # the streamed network on the in-memory array (no decoding), twice: the second run is warm
    norm = Normalisation(bq.SCALE, tuple(bq.MEAN), tuple(bq.STD))

    held = [raw]

    def read(a0, b0, a1, b1):
        return held[0][b0 - r0 : b1 - r0, a0 - c0 : a1 - c0]

    def twice(network, key: str, prec: str) -> np.ndarray:
        """The stream of ``network`` over the span twice (the second run is warm): {key}{i}_s, _network_s."""
        with compute_precision(prec):
            for i in range(2):
                st = InferenceStats()
                t = time.perf_counter()
                out = predict_cells(network, g, read, norm, kx, ky, stats=st)
                res[f"{key}{i}_s"] = time.perf_counter() - t
                res[f"{key}{i}_network_s"] = st.compute_s
        res[f"{key}_strip_cells"] = st.chunk_cells
        return out

    stream = None
    if streams == "1":
        stream = twice(model.network, "stream", precision)
        res["stream_first_call_s"] = res["stream0_network_s"] - res["stream1_network_s"]
        from minescan.models.onnx_net import load_network

        if precision == "float32":  # the same stream on ONNX Runtime (no TensorFlow in the job)
            ort_stream = twice(load_network(Path(fcn) / "model.keras", "fcn"), "ort_stream", precision)
            res["ort_vs_tf_stream_max_diff"] = float(np.nanmax(np.abs(ort_stream - stream)))
        if importlib.util.find_spec("openvino") is not None:  # whole strips on OpenVINO, in this precision
            ov_stream = twice(load_network(Path(fcn) / "model.keras", "fcn", runtime="openvino"), "ov_stream",
                              precision)
            res["ov_strip_cells"] = res["ov_stream_strip_cells"]
            res["ov_vs_tf_stream_max_diff"] = float(np.nanmax(np.abs(ov_stream - stream)))
    held.clear()
    # the whole span in one forward pass
    valid = np.all(raw != 0, axis=-1)
    image = model.normalise(raw.astype(np.float32) * np.float32(bq.SCALE), valid)
    del raw
    network = model.network
    if precision != "float32":
        keras.mixed_precision.set_dtype_policy(f"mixed_{precision}")
        network = build_discovery_fcn(12, model.window)
        network.set_weights(model.network.get_weights())
    spec = tf.TensorSpec((None, None, None, 12), tf.float32)
    fn = tf.function(lambda x: tf.cast(network(x, training=False), tf.float32), input_signature=[spec])
    x = tf.convert_to_tensor(image[None])
    del image
    t = time.perf_counter()
    out = fn(x).numpy()
    res["first_s"] = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        out = fn(x).numpy()
        warm.append(time.perf_counter() - t)
    res.update(warm_s=min(warm), warm_all=warm, flops=fcn_flops(model.network, x.shape[1], x.shape[2]),
               span_px=[int(x.shape[2]), int(x.shape[1])])
    prob = out[0, 1 : 1 + len(ky), 1 : 1 + len(kx), 1]
    f0 = STRIDE + g.offset
    frac = valid[f0 : f0 + STRIDE * len(ky), f0 : f0 + STRIDE * len(kx)].reshape(
        len(ky), STRIDE, len(kx), STRIDE).mean(axis=(1, 3))
    prob = np.where(frac >= MIN_VALID_FRACTION, prob, np.nan).astype(np.float32)
    if stream is not None:
        np.save(out_npy, prob)
        res["stream_vs_whole_max_diff"] = float(np.nanmax(np.abs(stream - prob)))
    return res


def child_decode(tile_path: str, tile_px: str, threads: str) -> dict:
    """Read + decode quadrant NW's input span in full-width strips, as the detect job does (uint16, 12 bands)."""
    import rasterio

    from minescan.scan.detect import gdal_cache_bytes
    from minescan.sources.local import TileRaster

    tile = bq._tile(int(tile_px))
    _, _, _, (c0, r0, c1, r1) = bq._span(tile, "NW")
    best = 1e9
    for _ in range(2):
        with rasterio.Env(GDAL_NUM_THREADS=threads):
            raster = TileRaster(tile_path, tile)
        with raster, rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(raster, c1 - c0)):
            t = time.perf_counter()
            for a in range(r0, r1, 27 * 8):
                raster.read_px(c0, a, c1, min(a + 27 * 8, r1), list(range(12)))
            best = min(best, time.perf_counter() - t)
    return {"decode_s": best, "mpx": (c1 - c0) * (r1 - r0) / 1e6}


def child_models(d: str) -> dict:
    bq.save_models(Path(d))
    return {}


CHILDREN = {"models": child_models, "floor": child_floor, "decode": child_decode, "matmul": bq.child_matmul}


# ------------------------------------------------------------------------------------------ jobs
def timing_of(stderr: str) -> dict:
    m = re.search(r"job timing (\{.*\})", stderr)
    if not m:
        raise SystemExit(f"no 'job timing' line in the detect log:\n{stderr[-3000:]}")
    return json.loads(m.group(1))


def detect(work: Path, tile_path: Path, tile_px: int, quadrants, tag: str, threshold: float, *extra: str,
           tiles: int = 1) -> dict:
    """One detect process over ``quadrants`` (with the impact CNN), then one classify process for them (as
    rules detect_tile and classify_tile run a tile's four). ``tiles`` > 1: the tile that many times in the
    one detect process and the one classify process (as the rules of a batch of detect.tiles_per_job
    neighbours run it; outputs ``{tag}{k}_{q}`` for the k-th)."""
    names = [tag] if tiles == 1 else [f"{tag}{k}" for k in range(tiles)]
    outs = [work / f"{n}_{q}" for n in names for q in quadrants]
    for o in outs:
        o.mkdir(parents=True, exist_ok=True)
    d = work
    det = bq.run([*bq.minescan_cmd(), "detect", "--tile", *[bq.tile_id(tile_px)] * tiles, "--quadrant", *quadrants,
                  "--tile-path", *[str(tile_path)] * tiles, "--model", str(d / "models" / "fcn"), "--impact-model",
                  str(d / "models" / "impact"), "--region", str(d / "region.geojson"), "--scale", str(bq.SCALE),
                  "--threshold", repr(threshold), *extra, "--prob-out", *[str(o / "probability.tif") for o in outs],
                  "--candidates-out", *[str(o / "candidates.csv") for o in outs], *bq.grid_args(tile_px)],
                 f"detect {tag}")
    cls = [bq.run([*bq.minescan_cmd(), "classify", "--tile", *[bq.tile_id(tile_px)] * tiles, "--tile-path",
                   *[str(tile_path)] * tiles, "--model", str(d / "models" / "impact"),
                   "--candidates", *[str(o / "candidates.csv") for o in outs], "--scale", str(bq.SCALE),
                   "--out", *[str(o / "classified.csv") for o in outs], *bq.grid_args(tile_px)], f"classify {tag}")]
    tm = timing_of(det["stderr"])
    # peak RSS from the job itself (VmHWM): wait4's figure also counts this process's memory at the fork
    return {"outs": outs, "detect_s": det["wall_s"], "detect_rss_mb": tm.get("peak_rss_mb", det["rss_mb"]), "timing": tm,
            "exit_s": det["wall_s"] - tm["total"], "classify_s": sum(c["wall_s"] for c in cls),
            "classify_rss_mb": max(c["rss_mb"] for c in cls), "wall_s": det["wall_s"] + sum(c["wall_s"] for c in cls),
            "load": os.getloadavg()[0]}


def median_run(runs: list[dict]) -> dict:
    """Of several runs of one :func:`detect`, the one with the median wall time (the upper one of an even
    count)."""
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def same_files(work: Path, tag_a: str, tag_b: str, quadrants, names=("probability.tif", "classified.csv")) -> bool:
    """Whether two :func:`detect` runs wrote byte-identical ``names`` for each of ``quadrants``."""
    return all((work / f"{tag_a}_{q}" / n).read_bytes() == (work / f"{tag_b}_{q}" / n).read_bytes()
               for q in quadrants for n in names)


def read_grid(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


def candidates(path: Path) -> set:
    import pandas as pd

    t = pd.read_csv(path)
    return set(zip(t["cell_x"], t["cell_y"], strict=True))


# ------------------------------------------------------------------------------------------ main
def main() -> None:  # noqa: PLR0915 - one script, one flow
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2304 px tile (1152 px quadrants): a ~3 min check")
    ap.add_argument("--candidate-fraction", type=float, default=0.01, help="share of cells made candidates")
    ap.add_argument("--json", default=None, help="also write the figures as JSON here")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temp dir)")
    ap.add_argument("--skip-compression", action="store_true", help="leave out the tile compression comparison")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each OpenVINO job (the median is reported)")
    ap.add_argument("--tiles-per-process", type=int, default=4,
                    help="tiles in the batch-per-process OpenVINO job (detect.tiles_per_job; the tile N times)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](*args.rest)))
        return

    tile_px = 2304 if args.quick else 9216
    q_px = tile_px // 2
    km2_q = (q_px * 10 / 1000) ** 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="minescan-floor-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    bf16 = cpu_has_bf16()
    print(f"machine: {bq.cpu_name()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB; bfloat16 units "
          f"(avx512_bf16/amx_bf16): {'yes' if bf16 else 'no'}; load average at start {load0[0]:.2f} "
          f"{load0[1]:.2f} {load0[2]:.2f}; work dir {work}", flush=True)
    tile_path = work / f"{bq.tile_id(tile_px)}.tif"
    if not tile_path.exists():
        bq.say(f"writing the synthetic {tile_px + 2 * bq.HALO} px tile ...")
        bq.write_tile(tile_path, tile_px)
    if not (work / "models" / "fcn" / "card.json").exists():  # in a child: this process stays small
        child("models", str(work / "models"))
    bq.write_region(work / "region.geojson", tile_px)
    from minescan.sources.local import TILE_PROFILE

    print(f"tile {tile_path.stat().st_size / 2**30:.2f} GB ({TILE_PROFILE['compress']}, as make-tile writes it); "
          f"quadrant {q_px} px = {km2_q:.0f} km2", flush=True)
    res: dict = {"quick": args.quick, "quadrant_px": q_px, "quadrant_km2": km2_q, "load_start": load0,
                 "bf16_cpu": bf16}
    rows: list[tuple[str, str, float]] = []  # (figure, value, load when measured)

    def note(name: str, value: str) -> None:
        rows.append((name, value, os.getloadavg()[0]))
        print(f"  [{time.strftime('%H:%M:%S')}] load {rows[-1][2]:5.2f}  {name}: {value}", flush=True)

    bq.say("matmul ceiling ...")
    res["matmul_gflops"] = child("matmul")["gflops"]
    note("dense float32 matmul ceiling", f"{res['matmul_gflops']:.0f} GFLOP/s")

    floors = {}
    for prec in ("float32", "bfloat16") if bf16 else ("float32",):
        bq.say(f"floor, {prec} ...")
        f = child("floor", str(tile_path), str(tile_px), str(work / "models" / "fcn"), prec,
                  str(work / f"floor_{prec}.npy"))
        floors[prec] = f
        note(f"floor {prec}: whole span, first call", f"{f['first_s']:.2f} s")
        note(f"floor {prec}: whole span, warm (best of 3)",
             f"{f['warm_s']:.2f} s = {f['flops'] / f['warm_s'] / 1e9:.0f} GFLOP/s (all: "
             + ", ".join(f"{v:.2f}" for v in f["warm_all"]) + f"); first-call overhead {f['first_s'] - f['warm_s']:.2f} s"
             f"; peak RSS {f['rss_mb']:.0f} MB")
        note(f"floor {prec}: streamed network from memory, warm",
             f"network {f['stream1_network_s']:.2f} s, wall {f['stream1_s']:.2f} s (first run: network "
             f"{f['stream0_network_s']:.2f} s, wall {f['stream0_s']:.2f} s)")
        if "ort_stream1_s" in f:
            note(f"{prec}: streamed network from memory on ONNX Runtime, warm",
                 f"network {f['ort_stream1_network_s']:.2f} s, wall {f['ort_stream1_s']:.2f} s (first run: network "
                 f"{f['ort_stream0_network_s']:.2f} s); max |diff| to TensorFlow's {f['ort_vs_tf_stream_max_diff']:.1e}")
        if "ov_stream1_s" in f:
            note(f"{prec}: whole strips from memory on OpenVINO ({f['ov_strip_cells']} cells), warm",
                 f"network {f['ov_stream1_network_s']:.2f} s, wall {f['ov_stream1_s']:.2f} s (first run: network "
                 f"{f['ov_stream0_network_s']:.2f} s); max |diff| to TensorFlow's stream {f['ov_vs_tf_stream_max_diff']:.1e}")
    floor = floors["float32"]["warm_s"]
    flops = floors["float32"]["flops"]
    res["floors"] = floors
    grid32 = np.load(work / "floor_float32.npy")
    if "bfloat16" in floors:
        res["bf16_floor_max_diff"] = float(np.nanmax(np.abs(np.load(work / "floor_bfloat16.npy") - grid32)))
    threshold = float(np.nanquantile(grid32, 1 - args.candidate_fraction))

    # the quadrant job, one quadrant per process
    setup_keys = ("startup", "imports", "tensorflow_import", "device", "models")
    diffs = []
    for key, tag, runtime in (("job", "q", "onnxruntime"), ("job_tf", "tfq", "tensorflow")):
        bq.say(f"quadrant job (detect + classify), one quadrant per process, {runtime} ...")
        j = detect(work, tile_path, tile_px, ["NW"], tag, threshold, "--runtime", runtime)
        jt = j["timing"]
        setup = sum(jt.get(k, 0.0) for k in setup_keys)
        note(f"quadrant job ({runtime}): detect process", f"{j['detect_s']:.2f} s (peak RSS "
             f"{j['detect_rss_mb']:.0f} MB), classify process {j['classify_s']:.2f} s (peak RSS "
             f"{j['classify_rss_mb']:.0f} MB)")
        g = read_grid(j["outs"][0] / "probability.tif")
        diffs.append((float(np.nanmax(np.abs(g - grid32))), bool(np.array_equal(np.isnan(g), np.isnan(grid32)))))
        res[key] = {k: v for k, v in j.items() if k != "outs"}
        res[key].update(work_s=jt["total"] - setup, setup_s=setup, max_diff_vs_floor=diffs[-1][0],
                        nan_equal=diffs[-1][1], runtime=runtime)
        if key == "job":
            job, tm, work_s, grid = j, jt, jt["total"] - setup, g
    diff = max(d for d, _ in diffs)
    same_nan = all(n for _, n in diffs)

    # tile per process vs quadrant per process
    bq.say("4 quadrants: one detect process each vs one for the tile ...")
    per_q = [job] + [detect(work, tile_path, tile_px, [q], "q", threshold, "--runtime", "onnxruntime")
                     for q in QUADRANTS[1:]]
    tile_job = detect(work, tile_path, tile_px, list(QUADRANTS), "t", threshold, "--runtime", "onnxruntime")
    tile_tf = detect(work, tile_path, tile_px, list(QUADRANTS), "tft", threshold, "--runtime", "tensorflow")
    four_s = sum(j["wall_s"] for j in per_q)
    identical = same_files(work, "q", "t", QUADRANTS)
    note("4 quadrants as 4 detect (+4 classify) processes", f"{four_s:.2f} s = {four_s / 4:.2f} s per quadrant")
    note("4 quadrants in 1 detect (+1 classify) process",
         f"{tile_job['wall_s']:.2f} s = {tile_job['wall_s'] / 4:.2f} s per quadrant (detect {tile_job['detect_s']:.2f} s,"
         f" peak RSS {tile_job['detect_rss_mb']:.0f} MB); outputs byte-identical: {identical}")
    note("4 quadrants in 1 detect (+1 classify) process, TensorFlow",
         f"{tile_tf['wall_s']:.2f} s = {tile_tf['wall_s'] / 4:.2f} s per quadrant (detect {tile_tf['detect_s']:.2f} s,"
         f" peak RSS {tile_tf['detect_rss_mb']:.0f} MB)")
    res["tile_mode"] = {"four_processes_s": four_s, "one_process_s": tile_job["wall_s"], "identical": identical,
                        "timing": tile_job["timing"], "detect_rss_mb": tile_job["detect_rss_mb"],
                        "exit_s": tile_job["exit_s"]}
    res["tile_mode_tf"] = {"one_process_s": tile_tf["wall_s"], "timing": tile_tf["timing"],
                           "detect_rss_mb": tile_tf["detect_rss_mb"], "exit_s": tile_tf["exit_s"]}

    # bfloat16 job
    if bf16:
        bq.say("quadrant job in bfloat16 ...")
        jb = detect(work, tile_path, tile_px, ["NW"], "bf16", threshold, "--precision", "bfloat16",
                    "--runtime", "tensorflow")
        gb = read_grid(jb["outs"][0] / "probability.tif")
        c32, cb = candidates(job["outs"][0] / "candidates.csv"), candidates(jb["outs"][0] / "candidates.csv")
        res["bf16_job"] = {"detect_s": jb["detect_s"], "timing": jb["timing"],
                           "max_diff": float(np.nanmax(np.abs(gb - grid))), "candidates_f32": len(c32),
                           "candidates_bf16": len(cb), "common": len(c32 & cb)}
        b = res["bf16_job"]
        note("bfloat16 job vs float32 job (TensorFlow)", f"network {jb['timing']['network']:.2f} s vs "
             f"{res['job_tf']['timing']['network']:.2f} s; "
             f"detect process {jb['detect_s']:.2f} s; max |prob diff| {b['max_diff']:.4f}; candidates "
             f"{b['candidates_bf16']} vs {b['candidates_f32']}, {b['common']} in common")

    # OpenVINO: bfloat16 where the CPU has the units (detect.runtime auto takes it for detect.precision
    # bfloat16), else float32; one quadrant per process and a tile per process
    if importlib.util.find_spec("openvino") is not None:
        prec = "bfloat16" if bf16 else "float32"
        bq.say(f"quadrant job and tile per process on OpenVINO, {prec} ...")
        ov_args = ("--runtime", "openvino", "--precision", prec)
        # the same jobs on the tile stored uncompressed (source.tile_compression: none), as make-tile writes it
        raw_path = work / f"{bq.tile_id(tile_px)}-none.tif"
        if not raw_path.exists():
            bq.say("the tile stored uncompressed (source.tile_compression: none) ...")
            from minescan.sources.local import recompress_tile

            recompress_tile(tile_path, raw_path, "none")
        with open(raw_path, "rb") as f:  # into the page cache, as the ZSTD tile is after the jobs above
            while f.read(64 << 20):
                pass
        # each job --repeat times, the four kinds interleaved (this VM's speed drifts by +-30 % within
        # minutes); the run with the median wall time of each kind is reported. Each round starts with the
        # warm float32 floor again, so every job is also compared with a floor of its own minute
        rounds, round_floors = [], []
        for _ in range(args.repeat):
            round_floors.append(child("floor", str(tile_path), str(tile_px), str(work / "models" / "fcn"),
                                      "float32", "-", "0")["warm_s"])
            rounds.append([detect(work, tile_path, tile_px, ["NW"], "ovq", threshold, *ov_args),
                           detect(work, tile_path, tile_px, list(QUADRANTS), "ovt", threshold, *ov_args),
                           detect(work, raw_path, tile_px, ["NW"], "ovnq", threshold, *ov_args),
                           detect(work, raw_path, tile_px, list(QUADRANTS), "ovnt", threshold, *ov_args),
                           detect(work, raw_path, tile_px, list(QUADRANTS), "ovnbt", threshold, *ov_args,
                                  tiles=args.tiles_per_process)])
        jo, to, jn, tn, t2 = (median_run([r[k] for r in rounds]) for k in range(5))
        go = read_grid(jo["outs"][0] / "probability.tif")
        c32, co = candidates(job["outs"][0] / "candidates.csv"), candidates(jo["outs"][0] / "candidates.csv")
        ov_identical = same_files(work, "ovq", "ovt", QUADRANTS[:1], ("probability.tif",))
        res["ov"] = {"precision": prec, "job": {k: v for k, v in jo.items() if k != "outs"},
                     "tile": {k: v for k, v in to.items() if k != "outs"}, "max_diff": float(np.nanmax(np.abs(go - grid))),
                     "nan_equal": bool(np.array_equal(np.isnan(go), np.isnan(grid))), "candidates_f32": len(c32),
                     "candidates": len(co), "common": len(c32 & co), "tile_identical": ov_identical}
        o = res["ov"]
        note(f"quadrant job on OpenVINO, {prec}", f"detect process {jo['detect_s']:.2f} s (network "
             f"{jo['timing']['network']:.2f} s, peak RSS {jo['detect_rss_mb']:.0f} MB) + classify {jo['classify_s']:.2f} s;"
             f" max |prob diff| to the float32 job {o['max_diff']:.4f}; candidates {o['candidates']} vs "
             f"{o['candidates_f32']}, {o['common']} in common")
        note(f"4 quadrants in 1 detect (+1 classify) process, OpenVINO {prec}",
             f"{to['wall_s']:.2f} s = {to['wall_s'] / 4:.2f} s per quadrant (detect {to['detect_s']:.2f} s, peak RSS "
             f"{to['detect_rss_mb']:.0f} MB); NW byte-identical to its own process: {ov_identical}")

        same = same_files(work, "ovnt", "ovt", QUADRANTS)
        o.update(job_none={k: v for k, v in jn.items() if k != "outs"}, tile_none={k: v for k, v in tn.items() if k != "outs"},
                 none_identical=same, none_gb=raw_path.stat().st_size / 2**30, zstd_gb=tile_path.stat().st_size / 2**30)
        nb = args.tiles_per_process
        same2 = all(same_files(work, f"ovnbt{k}" if nb > 1 else "ovnbt", "ovnt", QUADRANTS) for k in range(nb))
        o.update(batch={k: v for k, v in t2.items() if k != "outs"}, batch_identical=same2, batch_tiles=nb)
        o["walls"] = {tag: [r[k]["wall_s"] for r in rounds]
                      for k, tag in enumerate(("ovq", "ovt", "ovnq", "ovnt", "ovnbt"))}
        # per quadrant / the floor measured at the start of the same round
        o["round_floors"] = round_floors
        per_job = {"ovq": 1, "ovt": 4, "ovnq": 1, "ovnt": 4, "ovnbt": 4 * nb}
        o["round_ratios"] = {tag: [w / per_job[tag] / f for w, f in zip(ws, round_floors, strict=True)]
                             for tag, ws in o["walls"].items()}
        note(f"OpenVINO {prec}: wall of each run (s), median reported",
             "; ".join(f"{tag} {', '.join(f'{w:.2f}' for w in ws)}" for tag, ws in o["walls"].items()))
        note("warm float32 floor at the start of each round (s); per quadrant / that floor",
             ", ".join(f"{f:.2f}" for f in round_floors) + "; " + "; ".join(
                 f"{tag} {', '.join(f'{x:.2f}' for x in xs)}" for tag, xs in o["round_ratios"].items()))
        note(f"uncompressed tile ({o['none_gb']:.2f} GB vs {o['zstd_gb']:.2f} GB ZSTD), OpenVINO {prec}",
             f"quadrant job {jn['wall_s']:.2f} s (read-ahead thread {jn['timing']['read_in_thread']:.2f} s vs "
             f"{jo['timing']['read_in_thread']:.2f} s); tile per process {tn['wall_s']:.2f} s = {tn['wall_s'] / 4:.2f} s "
             f"per quadrant; outputs byte-identical to the ZSTD tile's: {same}")
        note(f"{nb} tiles per process (detect.tiles_per_job: {nb}; the uncompressed tile {nb} times), OpenVINO {prec}",
             f"{t2['wall_s']:.2f} s = {t2['wall_s'] / (4 * nb):.2f} s per quadrant (detect {t2['detect_s']:.2f} s, classify "
             f"process {t2['classify_s']:.2f} s, peak RSS {t2['detect_rss_mb']:.0f} MB); outputs byte-identical to "
             f"the tile process's: {same2}")

    # tile compression
    if not args.skip_compression:
        import rasterio
        import rasterio.shutil

        res["compression"] = {}
        for name, opts in COMPRESSIONS.items():
            p = work / f"comp_{re.sub(r'[^A-Za-z0-9]+', '_', name)}.tif"
            if not p.exists():
                with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
                    rasterio.shutil.copy(tile_path, p, driver="GTiff", TILED="YES", BLOCKXSIZE="512",
                                         BLOCKYSIZE="512", INTERLEAVE="PIXEL", BIGTIFF="IF_SAFER",
                                         NUM_THREADS="ALL_CPUS", **opts)
            r = {"size_mb": p.stat().st_size / 2**20}
            for th in ("1", "2"):
                d = child("decode", str(p), str(tile_px), th)
                r[f"decode_{th}t_s"] = d["decode_s"]
                r["mpx"] = d["mpx"]
            res["compression"][name] = r
            note(f"tile {name}", f"{r['size_mb']:.0f} MB; read + decode of quadrant NW's span "
                 f"({r['mpx']:.1f} Mpx x 12 bands): {r['decode_1t_s']:.2f} s with 1 thread, "
                 f"{r['decode_2t_s']:.2f} s with 2")

    res["load_end"] = os.getloadavg()
    res["bench_s"] = time.perf_counter() - t_start
    res["rows"] = rows
    report(res, floor, flops, work_s, tm, job)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    from minescan.scan.device import PRECISION_TOLERANCE

    bf16_diff = max(res.get("bf16_floor_max_diff", 0.0), res.get("bf16_job", {}).get("max_diff", 0.0))
    if "ov" in res:
        o = res["ov"]
        bf16_diff = max(bf16_diff, o["max_diff"]) if o["precision"] == "bfloat16" else bf16_diff
        diff = max(diff, o["max_diff"]) if o["precision"] == "float32" else diff
        same_nan, identical = same_nan and o["nan_equal"], (identical and o["tile_identical"] and o["none_identical"]
                                                        and o.get("batch_identical", True))
    if not (diff <= 1e-5 and same_nan and identical and bf16_diff <= PRECISION_TOLERANCE["bfloat16"]):
        raise SystemExit(f"FAIL: job vs floor max |diff| {diff:.2e}, NaN equal {same_nan}; tile mode identical "
                         f"{identical}; bfloat16 max |diff| {bf16_diff:.4f} (tolerance "
                         f"{PRECISION_TOLERANCE['bfloat16']})")


def report(res: dict, floor: float, flops: float, work_s: float, tm: dict, job: dict) -> None:
    km2 = res["quadrant_km2"]
    f32 = res["floors"]["float32"]
    print(f"\n=== quadrant {res['quadrant_px']} px ({km2:.0f} km2), input span {f32['span_px'][0]} x "
          f"{f32['span_px'][1]} px, FCN {flops / 1e9:.1f} GFLOP; matmul ceiling {res['matmul_gflops']:.0f} GFLOP/s")
    print("| what | seconds | x warm fp32 floor | GFLOP/s |")
    print("| --- | ---: | ---: | ---: |")

    def line(name, s):
        print(f"| {name} | {s:.2f} | {s / floor:.2f} | {flops / s / 1e9:.0f} |")

    line("floor fp32: whole span, warm (best of 3)", floor)
    line("floor fp32: whole span, first call", f32["first_s"])
    line("streamed network fp32 from memory, warm (network time)", f32["stream1_network_s"])
    if "ort_stream1_network_s" in f32:
        line("streamed network fp32 from memory on ONNX Runtime, warm (network time)", f32["ort_stream1_network_s"])
    if "ov_stream1_network_s" in f32:
        line("whole strips fp32 from memory on OpenVINO, warm (network time)", f32["ov_stream1_network_s"])
    if "bfloat16" in res["floors"]:
        b = res["floors"]["bfloat16"]
        line("floor bf16: whole span, warm (best of 3)", b["warm_s"])
        line("floor bf16: whole span, first call", b["first_s"])
        line("streamed network bf16 from memory, warm (network time)", b["stream1_network_s"])
        if "ov_stream1_network_s" in b:
            line("whole strips bf16 from memory on OpenVINO, warm (network time)", b["ov_stream1_network_s"])
    jtf, t, ttf = res["job_tf"], res["tile_mode"], res["tile_mode_tf"]
    line("quadrant job, ONNX Runtime: work (the quadrant's phases of detect)", work_s)
    line("quadrant job, ONNX Runtime: detect process", job["detect_s"])
    line("**quadrant job, ONNX Runtime: detect + classify processes**", job["wall_s"])
    line("quadrant job, TensorFlow: work", jtf["work_s"])
    line("quadrant job, TensorFlow: detect + classify processes", jtf["wall_s"])
    line("**tile per process, ONNX Runtime: per quadrant** (1 detect + 1 classify process, / 4)",
         t["one_process_s"] / 4)
    line("tile per process, TensorFlow: per quadrant", ttf["one_process_s"] / 4)
    line("quadrant per process, ONNX Runtime: per quadrant (4 detect + 4 classify / 4)", t["four_processes_s"] / 4)
    ov = res.get("ov")
    if ov:
        line(f"**quadrant job, OpenVINO {ov['precision']}: detect + classify processes**", ov["job"]["wall_s"])
        line(f"**tile per process, OpenVINO {ov['precision']}: per quadrant**", ov["tile"]["wall_s"] / 4)
        line(f"**quadrant job, OpenVINO {ov['precision']}, uncompressed tile: detect + classify processes**",
             ov["job_none"]["wall_s"])
        line(f"**tile per process, OpenVINO {ov['precision']}, uncompressed tile: per quadrant**",
             ov["tile_none"]["wall_s"] / 4)
        if "batch" in ov:
            line(f"**{ov['batch_tiles']} tiles per process, OpenVINO {ov['precision']}, uncompressed tile: per quadrant**",
                 ov["batch"]["wall_s"] / (4 * ov["batch_tiles"]))
    print("\nbreakdown of the detect process (s): one quadrant / a tile's 4 quadrants in one process, on ONNX "
          "Runtime and on TensorFlow:")
    cols = [(job["timing"], job["exit_s"], job["classify_s"]),
            (t["timing"], t["exit_s"], t["one_process_s"] - t["timing"]["total"] - t["exit_s"]),
            (jtf["timing"], jtf["exit_s"], jtf["classify_s"]),
            (ttf["timing"], ttf["exit_s"], ttf["one_process_s"] - ttf["timing"]["total"] - ttf["exit_s"])]
    heads = ["ORT 1 quadrant", "ORT tile (4)", "TF 1 quadrant", "TF tile (4)"]
    if ov:
        jo, to = ov["job"], ov["tile"]
        jn, tn = ov["job_none"], ov["tile_none"]
        cols += [(x["timing"], x["exit_s"], x["classify_s"]) for x in (jo, to, jn, tn)]
        heads += [f"OV {ov['precision']} 1 quadrant", f"OV {ov['precision']} tile (4)",
                  f"OV {ov['precision']} 1 quadrant, uncompressed", f"OV {ov['precision']} tile (4), uncompressed"]
        if "batch" in ov:
            x = ov["batch"]
            cols.append((x["timing"], x["exit_s"], x["classify_s"]))
            heads.append(f"OV {ov['precision']} {ov['batch_tiles']} tiles ({4 * ov['batch_tiles']}), uncompressed")
    keys = ("startup", "imports", "tensorflow_import", "device", "models", "stream_build", "first_call", "network",
            "fcn_other", "impact", "checks", "candidates", "write", "other")
    names = {"startup": "interpreter + CLI imports", "imports": "scan-module imports", "tensorflow_import":
             "TensorFlow + Keras import", "device": "device set-up", "models": "model load (+ onnx import) + region",
             "stream_build": "stream stage build (+ onnxruntime import)", "first_call": "first call (trace, set-up)",
             "network": "network (warm)", "fcn_other": "waiting for reads, assembling strips", "impact": "impact CNN",
             "checks": "cloud / band checks", "candidates": "candidates table", "write": "write outputs",
             "other": "other"}
    print("| phase | " + " | ".join(heads) + " |")
    print("| --- |" + " ---: |" * len(heads))
    for k in keys:
        print(f"| {names[k]} | " + " | ".join(f"{c[0].get(k, 0.0):.2f}" for c in cols) + " |")
    print("| process exit | " + " | ".join(f"{c[1]:.2f}" for c in cols) + " |")
    print("| (read + decode, in the read-ahead thread, overlapping) | "
          + " | ".join(f"({c[0]['read_in_thread']:.2f})" for c in cols) + " |")
    print("| classify process(es) (ratings copied) | " + " | ".join(f"{c[2]:.2f}" for c in cols) + " |")
    j = res["job"]
    print(f"\njob probabilities vs fp32 floor: max |diff| {j['max_diff_vs_floor']:.2e} (ONNX Runtime), "
          f"{jtf['max_diff_vs_floor']:.2e} (TensorFlow), NaN cells equal {j['nan_equal'] and jtf['nan_equal']}; "
          f"stream vs whole pass in the floor child: {f32['stream_vs_whole_max_diff']:.2e}")
    if "bf16_floor_max_diff" in res:
        b = res["bf16_job"]
        print(f"bfloat16 vs float32: floor max |prob diff| {res['bf16_floor_max_diff']:.4f}; job max |prob diff| "
              f"{b['max_diff']:.4f}, candidates {b['candidates_bf16']} (bf16) vs {b['candidates_f32']} (fp32), "
              f"{b['common']} in common")
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    per_q_tile = t["one_process_s"] / 4
    rss = max(x["detect_rss_mb"] for x in (j, t, jtf, ttf))
    print(f"\ntargets: job process (detect + classify, 1 quadrant) <= 2.5 x floor: {j['wall_s'] / floor:.2f} x "
          f"({ok(j['wall_s'] <= 2.5 * floor)}); tile per process <= 1.3 x per quadrant: {per_q_tile / floor:.2f} x "
          f"({ok(per_q_tile <= 1.3 * floor)}); peak RSS <= 2.5 GB: {rss / 1024:.2f} GB ({ok(rss <= 2560)})"
          + (" [--quick: small quadrants, fixed costs dominate]" if res["quick"] else ""))
    print(f"  on TensorFlow: 1 quadrant {jtf['wall_s'] / floor:.2f} x, tile per process "
          f"{ttf['one_process_s'] / 4 / floor:.2f} x")
    if ov:
        jo_s, to_s = ov["job"]["wall_s"], ov["tile"]["wall_s"] / 4
        orss = max(ov["job"]["detect_rss_mb"], ov["tile"]["detect_rss_mb"])
        print(f"  on OpenVINO, {ov['precision']} (detect.precision: {ov['precision']}): 1 quadrant {jo_s / floor:.2f} x "
              f"({ok(jo_s <= 2.5 * floor)}), tile per process {to_s / floor:.2f} x ({ok(to_s <= 1.3 * floor)}), peak "
              f"RSS {orss / 1024:.2f} GB ({ok(orss <= 2560)}); Brazil {4000 * to_s / 3600:.1f} h tile per process")
        jn_s, tn_s = ov["job_none"]["wall_s"], ov["tile_none"]["wall_s"] / 4
        nrss = max(ov["job_none"]["detect_rss_mb"], ov["tile_none"]["detect_rss_mb"])
        print(f"  on OpenVINO, {ov['precision']}, uncompressed tiles (source.tile_compression: none): 1 quadrant "
              f"{jn_s / floor:.2f} x ({ok(jn_s <= 2.5 * floor)}), tile per process {tn_s / floor:.2f} x "
              f"({ok(tn_s <= 1.3 * floor)}), peak RSS {nrss / 1024:.2f} GB ({ok(nrss <= 2560)}); Brazil "
              f"{4000 * tn_s / 3600:.1f} h tile per process")
        if ov.get("round_ratios"):  # each run against the floor measured in its own round (no drift between)
            rr, fl = ov["round_ratios"], ov["round_floors"]

            def med(tag: str, target: float) -> str:
                xs = sorted(rr[tag])
                m = statistics.median(xs)
                return f"{m:.2f} x ({xs[0]:.2f}-{xs[-1]:.2f}; {ok(m <= target)})"

            print(f"  on OpenVINO, {ov['precision']}, each run / the warm float32 floor measured at the start of its "
                  f"round (floors {min(fl):.2f}-{max(fl):.2f} s; median of {len(fl)} rounds): ZSTD 1 quadrant "
                  f"{med('ovq', 2.5)}, tile per process {med('ovt', 1.3)}; uncompressed 1 quadrant {med('ovnq', 2.5)}, "
                  f"tile per process {med('ovnt', 1.3)}"
                  + (f", {ov['batch_tiles']} tiles per process {med('ovnbt', 1.3)}" if "ovnbt" in rr else ""))
        if "batch" in ov:
            nb = ov["batch_tiles"]
            t2_s = ov["batch"]["wall_s"] / (4 * nb)
            print(f"  on OpenVINO, {ov['precision']}, uncompressed, {nb} tiles per process (detect.tiles_per_job: {nb}): "
                  f"{t2_s / floor:.2f} x ({ok(t2_s <= 1.3 * floor)}), peak RSS "
                  f"{ov['batch']['detect_rss_mb'] / 1024:.2f} GB; Brazil {4000 * t2_s / 3600:.1f} h")
    n_q = 4000
    print(f"Brazil (~{n_q} quadrants of this size) on one such machine: {n_q * per_q_tile / 3600:.1f} h tile per "
          f"process, {n_q * t['four_processes_s'] / 4 / 3600:.1f} h quadrant per process, "
          f"{n_q * floor / 3600:.1f} h at the warm fp32 floor")
    l0, l1 = res["load_start"], res["load_end"]
    print(f"load average (1, 5, 15 min): start {l0[0]:.2f} {l0[1]:.2f} {l0[2]:.2f}, end {l1[0]:.2f} {l1[1]:.2f} "
          f"{l1[2]:.2f}; benchmark took {res['bench_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
