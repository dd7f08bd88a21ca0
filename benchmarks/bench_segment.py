"""The segment step (``minescan segment predict``) on a synthetic full-size quadrant.

    .venv/bin/python benchmarks/bench_segment.py [--quick] [--window 512] [--overlap 64] [--json out.json]

Writes the synthetic 12-band tile of ``bench_quadrant.py`` (9216 px core + 160 px halo; ``--quick``: 2304
px), saves a randomly initialised ``small`` SegFormer as a segmentation model directory, and writes a
candidates.csv of quadrant NW with 1 % of its 27 px cells detected, in clusters of 3 x 3 cells (as
mining sites come). Then runs the real job twice, each in its own child process (wall time and peak RSS
from ``wait4``): ``--where detections`` (windows around the detected cells, the default) and
``--where everywhere`` (the whole quadrant core). Prints seconds, km2 of quadrant per second and peak RSS
(target: <= 2.5 GB). Measure on a quiet machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_quadrant import HALO, MEAN, STD, grid_args, minescan_cmd, run, tile_id, write_tile  # noqa: E402

RSS_TARGET_MB = 2500


def save_segmenter(d: Path, window: int, overlap: int) -> Path:
    from minescan import SENTINEL2_BANDS
    from minescan.models.networks import _keras
    from minescan.models.store import save_model
    from minescan.segment.network import build_segformer, variant_config

    _keras().utils.set_random_seed(5)
    arch = variant_config("small")
    return save_model(d / "segment", build_segformer(12, arch), {
        "kind": "segmentation", "name": "bench-segment", "bands": list(SENTINEL2_BANDS), "window": 128,
        "classes": ["background", "disturbed"], "threshold": 0.5, "architecture": arch,
        "normalisation": {"clip_max": None, "mean": MEAN, "std": STD},
        "prediction": {"window_px": window, "overlap_px": overlap}, "metrics": {},
        "training_data": {"note": "random weights (benchmark)"}})


def write_candidates(path: Path, tile_px: int, fraction: float = 0.01) -> int:
    import pandas as pd

    from minescan.grid import GridSpec, Tile, TileId, cells_in_core

    tile = Tile(TileId.parse(tile_id(tile_px)), GridSpec(tile_px, 10.0, HALO))
    kx, ky = cells_in_core(tile.quadrant_core_px("NW"))
    rng = np.random.default_rng(1)
    n_clusters = max(1, int(fraction * len(kx) * len(ky) / 9))
    cells = set()
    for cx, cy in zip(rng.integers(kx.start, kx.stop - 3, n_clusters), rng.integers(ky.start, ky.stop - 3, n_clusters),
                      strict=True):
        cells.update((int(cx + i), int(cy + j)) for i in range(3) for j in range(3))
    cells = sorted(cells)
    pd.DataFrame({"cell_x": [c[0] for c in cells], "cell_y": [c[1] for c in cells]}).to_csv(path, index=False)
    return len(cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2304 px tile (1152 px quadrant)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tile_px = 2304 if args.quick else 9216
    quad_km2 = (tile_px // 2 * 10 / 1000) ** 2
    results = {"tile_px": tile_px, "quadrant_km2": quad_km2, "window_px": args.window, "overlap_px": args.overlap,
               "cpus": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory(prefix="bench_segment_") as tmp:
        d = Path(tmp)
        print(f"load {os.getloadavg()[0]:.2f}: writing the {tile_px} px tile ...", file=sys.stderr, flush=True)
        write_tile(d / "tile.tif", tile_px)
        model = save_segmenter(d, args.window, args.overlap)
        results["detected_cells"] = write_candidates(d / "candidates.csv", tile_px)
        for where in ("detections", "everywhere"):
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = run([*minescan_cmd(), "segment", "predict", "--tile", tile_id(tile_px), "--quadrant", "NW",
                     "--tile-path", str(d / "tile.tif"), "--model", str(model), "--candidates",
                     str(d / "candidates.csv"), "--where", where, *grid_args(tile_px),
                     "--mask-out", str(d / f"{where}.tif"), "--extents-out", str(d / f"{where}.gpkg")],
                    f"segment predict --where {where}")
            wall = time.perf_counter() - t0
            windows = [ln for ln in r["stderr"].splitlines() if "windows" in ln]
            results[where] = {"seconds": round(wall, 1), "km2_per_s": round(quad_km2 / wall, 2),
                              "peak_rss_mb": round(r["rss_mb"]), "cpu_s": round(r["cpu_s"], 1),
                              "load_at_start": round(load0, 2), "log": windows[-1].split(": ", 1)[-1] if windows else ""}
            ok = "ok" if r["rss_mb"] <= RSS_TARGET_MB else f"ABOVE {RSS_TARGET_MB} MB"
            print(f"segment --where {where}: {wall:.1f} s, {quad_km2 / wall:.2f} km2/s of quadrant, peak RSS "
                  f"{r['rss_mb']:.0f} MB ({ok}), load {load0:.2f}; {results[where]['log']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(results[w]["peak_rss_mb"] <= RSS_TARGET_MB for w in ("detections", "everywhere")) else 1


if __name__ == "__main__":
    sys.exit(main())
