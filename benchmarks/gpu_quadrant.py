"""One quadrant's detect job on this machine's device (GPU or CPU): km2/s, GFLOP/s against the device's
peak, and whether the network waits for the reader. Run by scripts/gpu-bench.sh on a GPU machine.

    .venv-gpu/bin/python benchmarks/gpu_quadrant.py [--quick] [--precision bfloat16] [--max-block-mb MB]

Writes the synthetic full-size tile and random published models of benchmarks/bench_quadrant.py (9216 px
core, 12 bands; ``--quick``: 2304 px), then runs ``minescan detect`` on quadrant NW as the rule does (impact
model given, so candidates are rated in the same process), twice: the first run warms the file cache and
CUDA's kernel caches; the figures are those of the second. From the job's own log lines it reports:

* the device line of the job (GPU model and memory, or CPU and threads) and its strip size;
* km2/s of the quadrant for the whole job (start-up included) and for the streamed FCN alone;
* GFLOP/s achieved by the FCN (analytical FLOPs of the input span / FCN wall time) against (a) the dense
  matmul rate measured here in the same precision (4096^2 tf.linalg.matmul) and (b) the data-sheet peak of
  known GPU models (DATASHEET_TFLOPS; 'unknown' for others);
* the share of the FCN's wall time spent reading and decoding the tile (in the read-ahead thread, which
  overlaps the network) versus computing: reader busy > network busy means the network waits for the
  reader (I/O-bound, the target on a data-centre GPU);
* what this gives for Brazil (~4,000 quadrants): hours of job time, one job per quadrant and per tile.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_quadrant as bq  # noqa: E402

BRAZIL_QUADRANTS = 4000
# data-sheet dense peaks (TFLOP/s): float32 without TF32, and bfloat16/float16 tensor cores; vendor figures,
# not measurements. TensorFlow runs float32 convolutions in TF32 on Ampere and later by default.
DATASHEET_TFLOPS = {
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0},
    "H100": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},  # SXM
    "L40S": {"float32": 91.6, "tf32": 183.0, "bfloat16": 362.0, "float16": 362.0},
    "V100": {"float32": 15.7, "float16": 125.0},
    "T4": {"float32": 8.1, "float16": 65.0},
}
FCN_LINE = re.compile(
    r"FCN \((\w+), (\d+)-cell \w+ x (\d+)\): .* in ([\d.]+) s \(([\d.]+) GFLOP, ([\d.]+) GFLOP/s; "
    r"read\+normalise ([\d.]+) s, network ([\d.]+) s\)"
)


def matmul_gflops(precision: str) -> float:
    import tensorflow as tf

    n = 4096
    dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}[precision]
    a, b = (tf.cast(tf.random.normal((n, n)), dtype) for _ in range(2))
    f = tf.function(tf.linalg.matmul)
    f(a, b).numpy()
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        f(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def datasheet(name: str, precision: str) -> str:
    for model, peaks in DATASHEET_TFLOPS.items():
        if model in name:
            keys = [precision] + (["tf32"] if precision == "float32" and "tf32" in peaks else [])
            return ", ".join(f"{k} {peaks[k]:.1f} TFLOP/s" for k in keys if k in peaks)
    return "unknown for this model"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="2304 px tile (1152 px quadrants): a check, not a figure"
    )
    ap.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--max-block-mb", type=float, default=None, help="default: from the device (as the rule)")
    ap.add_argument("--keep", default=None, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()

    from minescan.scan.device import setup

    dev = setup()
    print(dev.log_line())
    print(f"host: {bq.cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    tile_px = 2304 if args.quick else 9216
    q_px = tile_px // 2
    km2 = (q_px * 10 / 1000) ** 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="minescan-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        tile_path = work / f"{bq.tile_id(tile_px)}.tif"
        if not tile_path.exists():
            print(f"writing the synthetic {tile_px + 2 * bq.HALO} px tile ...", flush=True)
            bq.write_tile(tile_path, tile_px)
        fcn, impact = work / "models" / "fcn", work / "models" / "impact"
        if not (fcn / "card.json").exists():
            bq.save_models(work / "models")
        bq.write_region(work / "region.geojson", tile_px)
        ceiling = matmul_gflops(args.precision)

        def detect(tag: str) -> dict:
            q = work / f"q{tag}"
            extra = ["--max-block-mb", str(args.max_block_mb)] if args.max_block_mb else []
            r = bq.run(
                [
                    *bq.minescan_cmd(),
                    "detect",
                    "--tile",
                    bq.tile_id(tile_px),
                    "--quadrant",
                    "NW",
                    "--tile-path",
                    str(tile_path),
                    "--model",
                    str(fcn),
                    "--region",
                    str(work / "region.geojson"),
                    "--impact-model",
                    str(impact),
                    "--threshold",
                    "0.999",
                    "--precision",
                    args.precision,
                    *extra,
                    "--prob-out",
                    str(q / "probability.tif"),
                    "--candidates-out",
                    str(q / "candidates.csv"),
                    *bq.grid_args(tile_px),
                ],
                "minescan detect",
            )
            m = FCN_LINE.search(r["stderr"])
            if not m:
                raise SystemExit(f"no FCN line in the job's log:\n{r['stderr'][-3000:]}")
            device_line = next(
                (x.split(": ", 2)[-1] for x in r["stderr"].splitlines() if "device: " in x), "?"
            )
            return {
                "wall_s": r["wall_s"],
                "rss_mb": r["rss_mb"],
                "method": m.group(1),
                "strip_cells": int(m.group(2)),
                "strips": int(m.group(3)),
                "fcn_s": float(m.group(4)),
                "gflop": float(m.group(5)),
                "read_s": float(m.group(7)),
                "net_s": float(m.group(8)),
                "device": device_line,
            }

        detect("_warm")
        j = detect("")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    gflops = j["gflop"] / j["fcn_s"]
    print(
        f"\nquadrant {q_px} x {q_px} px = {km2:.0f} km2, FCN input span {j['gflop']:.1f} GFLOP "
        f"({j['method']}, {j['strips']} strip(s) of {j['strip_cells']} cells; precision {args.precision})"
    )
    print(f"job's device line: {j['device']}")
    print(
        f"detect job (start-up, read, FCN, impact CNN, writes): {j['wall_s']:.2f} s = "
        f"{km2 / j['wall_s']:.0f} km2/s; "
        f"peak RSS {j['rss_mb']:.0f} MB"
    )
    print(f"streamed FCN: {j['fcn_s']:.2f} s = {km2 / j['fcn_s']:.0f} km2/s, {gflops:.0f} GFLOP/s achieved")
    print(
        f"  vs dense {args.precision} matmul measured here: {ceiling:.0f} GFLOP/s "
        f"({100 * gflops / ceiling:.0f} %)"
    )
    if dev.kind == "GPU":
        print(f"  vs data-sheet peak of {dev.name}: {datasheet(dev.name, args.precision)}")
    read_share, net_share = j["read_s"] / j["fcn_s"], j["net_s"] / j["fcn_s"]
    print(
        f"time of the FCN stream: reading + decoding the tile {j['read_s']:.2f} s ({100 * read_share:.0f} %, "
        f"read-ahead thread), network {j['net_s']:.2f} s ({100 * net_share:.0f} %)"
    )
    if j["read_s"] >= j["net_s"]:
        print(
            "  -> I/O-bound: the network waits for the reader (reading overlaps compute; faster decoding, "
            "more cores per job or an uncompressed tile would help, a faster device would not)"
        )
    else:
        print("  -> compute-bound: the reader waits for the network")
    other = j["wall_s"] - j["fcn_s"]
    if args.quick:
        print("(--quick: small quadrants, no Brazil estimate)")
        return 0
    print(
        f"Brazil, {BRAZIL_QUADRANTS} quadrants at this rate: "
        f"{BRAZIL_QUADRANTS * j['wall_s'] / 3600:.1f} h of "
        f"job time with one job per quadrant; start-up and writes are {other:.2f} s of each job "
        f"({BRAZIL_QUADRANTS * j['fcn_s'] / 3600:.1f} h if only the FCN stream counted; "
        "detect.quadrants_per_job: tile shares one start-up among 4)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
