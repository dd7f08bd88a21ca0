"""Pyramid scan against the full scan on a synthetic full-size quadrant.

    .venv/bin/python benchmarks/bench_pyramid.py [--quick] [--json out.json]

Writes a synthetic tile (9216 px core + 160 px halo, 12-band uint16, in the tile format of ``minescan
make-tile``): forest (Sentinel-2-like forest spectrum with smooth variation and noise) with scattered bare
patches (soil/pit spectrum, 100-400 px) in about a fifth of the 4.3 km blocks, and a randomly initialised
published discovery FCN. Then, in this process (TensorFlow loaded and the network traced once by a warm-up):

1. the full scan of quadrant NW (``run_detect``, streamed FCN);
2. the pyramid scan with the default screen (spectral, 80 m then 40 m, thresholds 0.3, 100 px margin),
   blocks of 16 (default) and 32 cells: wall time, blocks kept, share of cells skipped, speed-up; the
   probabilities of the kept blocks must equal the full scan's (else exit 1);
3. the screen alone (a threshold no block reaches: nothing left for the FCN): its overhead.

A random network has no meaningful detections, so site recall is measured on the demo instead
(docs/pyramid.md). ``--quick`` uses a 2304 px tile (1152 px quadrants) as a ~1 minute check.
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

import numpy as np  # noqa: E402

HALO = 160
SCALE = 1e-4
FOREST = [0.025, 0.030, 0.055, 0.030, 0.085, 0.250, 0.300, 0.330, 0.350, 0.110, 0.150, 0.070]
BARE = [0.090, 0.105, 0.140, 0.210, 0.240, 0.250, 0.260, 0.270, 0.275, 0.100, 0.360, 0.320]


def tile_of(tile_px: int):
    from minescan.grid import GridSpec, Tile, TileId

    m = tile_px * 10
    return Tile(TileId.parse(f"21S-E{int(500_000 // m):03d}-N{int(9_280_000 // m):04d}"), GridSpec(tile_px, 10.0, HALO))


def write_tile(path: Path, tile, seed: int = 0) -> int:
    """Forest with bare patches; returns the number of patches."""
    import rasterio
    from rasterio.windows import Window

    from minescan import SENTINEL2_BANDS
    from minescan.sources.local import TILE_PROFILE

    size = tile.size_px
    rng = np.random.default_rng(seed)
    n = max(4, int(40 * (size / 9536) ** 2))
    patches = [(int(rng.integers(0, size - 400)), int(rng.integers(0, size - 400)), int(rng.integers(100, 400)))
               for _ in range(n)]
    prof = dict(TILE_PROFILE, count=12, width=size, height=size, crs=tile.crs, transform=tile.transform, nodata=0)
    xx = np.arange(size)[None, :]
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(path, "w", **prof) as dst:
        dst.descriptions = tuple(SENTINEL2_BANDS)
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            yy = np.arange(r0, r0 + h)[:, None]
            field = 1.0 + 0.15 * np.sin(xx / 97.0 + yy / 311.0) * np.cos(yy / 131.0 - xx / 577.0)
            bare = np.zeros((h, size), bool)
            for pc, pr, s in patches:
                if pr < r0 + h and pr + s > r0:
                    bare[max(0, pr - r0) : min(h, pr + s - r0), pc : pc + s] = True
            block = np.empty((12, h, size), np.uint16)
            for b in range(12):
                refl = np.where(bare, BARE[b], FOREST[b] * field)
                block[b] = np.clip(refl / SCALE + rng.normal(0, 40, (h, size)), 1, 65535).astype(np.uint16)
            dst.write(block, window=Window(0, r0, size, h))
    return n


def save_fcn(d: Path):
    from minescan import SENTINEL2_BANDS
    from minescan.models.networks import _keras, build_discovery_fcn
    from minescan.models.store import load_model, save_model

    _keras().utils.set_random_seed(5)
    card = {"kind": "discovery", "name": "bench-fcn", "window": 201, "stride": 27, "threshold": 0.6,
            "classes": ["background", "mine"], "positive_class": "mine", "bands": list(SENTINEL2_BANDS),
            "normalisation": {"clip_max": None, "mean": [0.1] * 12, "std": [0.1] * 12}, "metrics": {},
            "training_data": {"note": "random weights (benchmark)"}}
    return load_model(save_model(d / "fcn", build_discovery_fcn(12, 201), card))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2304 px tile (1152 px quadrants)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    import rasterio
    from shapely.geometry import box

    from minescan.grid import to_crs
    from minescan.scan.detect import run_detect
    from minescan.scan.inference import import_keras_lean
    from minescan.scan.pyramid import Level, Pyramid

    import_keras_lean()
    tile_px = 2304 if args.quick else 9216
    tile = tile_of(tile_px)
    out: dict = {"tile_px": tile_px, "quadrant_px": tile_px // 2, "cpus": os.cpu_count(), "load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        out["patches"] = write_tile(d / "tile.tif", tile)
        print(f"  tile written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        model = save_fcn(d)
        region = to_crs(box(*tile.core_bounds), tile.id.epsg, 4326)

        def detect(name, pyramid=None, quadrant="NW"):
            t0 = time.perf_counter()
            run_detect(d / "tile.tif", tile, quadrant, model, region, SCALE, 0.99, None, d / name / "p.tif",
                       d / name / "c.csv", "warn", pyramid=pyramid)
            wall = time.perf_counter() - t0
            with rasterio.open(d / name / "p.tif") as ds:
                return wall, ds.read(1)

        detect("warmup", quadrant="SE")  # TensorFlow start-up and tracing, not counted
        full_s, full = detect("full")
        same = True
        for cells in (16, 32):
            pyr = Pyramid((Level(8, 0.3), Level(4, 0.3)), block_cells=cells, margin_px=100)
            pyr_s, prob = detect(f"pyramid{cells}", pyr)
            kept = np.isfinite(prob)
            same &= bool(np.array_equal(prob[kept], full[kept]))
            out[f"blocks{cells}"] = {"pyramid_s": round(pyr_s, 2), "speedup": round(full_s / pyr_s, 2),
                                     **pyr.info}
        screen = Pyramid((Level(8, 2.0), Level(4, 2.0)), block_cells=16, margin_px=100)  # drops every block
        screen_s, _ = detect("screen", screen)
        out.update(full_s=round(full_s, 2), screen_only_s=round(screen_s, 2), kept_equal_full=same,
                   load_end=os.getloadavg()[0])
    runs = "; ".join(f"{c}-cell blocks {b['pyramid_s']} s = x{b['speedup']} ({b['blocks_kept']}/{b['blocks']} kept, "
                     f"{100 * b['skipped_fraction']:.1f} % of the cells skipped)"
                     for c, b in ((c, out[f"blocks{c}"]) for c in (16, 32)))
    print(f"quadrant {tile_px // 2} px: full scan {out['full_s']} s; pyramid (spectral 80 m + 40 m, 0.3): {runs}; "
          f"screen alone {out['screen_only_s']} s; kept blocks equal the full scan: {same}; "
          f"load {out['load_start']:.1f} -> {out['load_end']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True))
    if not same:
        sys.exit("pyramid probabilities differ from the full scan over the kept blocks")


if __name__ == "__main__":
    main()
