"""One detect job per quadrant versus one per tile (detect.quadrants_per_job: tile), on the tiny test scan.

    .venv/bin/python benchmarks/bench_tile_jobs.py [--tiles 2] [--repeat 2]

Builds the tiny scan of the tests (648 px tiles, 4 quadrants each, hand-set models; tests/conftest.py) in a
temporary directory and runs its Snakemake workflow to summary.json with ``--cores 1``, once with one detect
job per quadrant and once with one per tile, ``--repeat`` times each (alternating). Prints the wall time of
the detect jobs (the sum of their Snakemake benchmark files: what a cluster is billed for) and of the whole
run. The quadrants are tiny, so this measures the fixed cost per job (process, TensorFlow start, model
load) that grouping saves; on a GPU the saving per job is that plus the CUDA initialisation. Both ways must
give identical quadrant files (else exit 1).
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from conftest import (  # noqa: E402
    bright_square_fcn,
    constant_impact_cnn,
    grid_tile,
    mine_squares,
    run_snakemake,
    save_test_model,
    write_tiny_config,
    write_tiny_scene,
)


def detect_seconds(work: Path) -> tuple[int, float]:
    files = sorted((work / "results" / "benchmarks" / "tiny" / "2026Q1" / "detect").glob("*.tsv"))
    total = 0.0
    for f in files:
        with open(f) as fh:
            total += float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    return len(files), total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tile-jobs-"))
    try:
        tiles = [grid_tile(93 + i, 1440) for i in range(args.tiles)]
        base = tmp / "base"
        base.mkdir()
        write_tiny_scene(base, tiles, mine_squares(tiles))
        save_test_model(tmp / "models" / "discovery", "discovery", bright_square_fcn())
        save_test_model(tmp / "models" / "impact", "impact", constant_impact_cnn())
        rows = {"quadrant": [], "tile": []}
        for r in range(args.repeat):
            for mode in ("quadrant", "tile"):
                work = tmp / f"{mode}{r}"
                shutil.copytree(base, work)
                write_tiny_config(
                    work,
                    tmp / "models" / "discovery",
                    tmp / "models" / "impact",
                    detect={"block_cells": 7, "quadrants_per_job": mode},
                )
                # the tiles first (not timed), then the detect jobs and the rest of the scan
                run_snakemake(work, "--until", "tile", profile_args=("--cores", "1"))
                t0 = time.monotonic()
                run_snakemake(work, "results/tiny/2026Q1/summary.json", profile_args=("--cores", "1"))
                wall = time.monotonic() - t0
                jobs, seconds = detect_seconds(work)
                rows[mode].append((jobs, seconds, wall, os.getloadavg()[0]))
                print(
                    f"{mode:8s} run {r}: {jobs} detect jobs, {seconds:6.1f} s in detect jobs, "
                    f"{wall:6.1f} s whole run (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        q, t = (
            tmp / "quadrant0" / "results" / "tiny" / "2026Q1",
            tmp / "tile0" / "results" / "tiny" / "2026Q1",
        )
        for f in sorted(q.glob("quadrants/*/*.csv")) + [q / "summary.json", q / "detections.csv"]:
            if not filecmp.cmp(f, t / f.relative_to(q), shallow=False):
                print(f"bench_tile_jobs: {f.relative_to(q)} differs between the two ways", file=sys.stderr)
                return 1
        best = {m: min(rows[m], key=lambda x: x[1]) for m in rows}
        n_q = 4 * args.tiles
        print(f"\n{args.tiles} tiles, {n_q} quadrants (best of {args.repeat}):")
        for m, (jobs, s, wall, _) in best.items():
            print(
                f"  per {m:8s}: {jobs:2d} detect jobs, {s:6.1f} s of detect jobs ({s / n_q:.2f} s per "
                f"quadrant), "
                f"whole run {wall:.1f} s"
            )
        saved = (best["quadrant"][1] - best["tile"][1]) / (n_q - args.tiles)
        print(f"  saved per job avoided: {saved:.2f} s (process start, TensorFlow import, model load)")
        print("  quadrant outputs identical: yes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
