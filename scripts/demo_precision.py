"""bfloat16 against float32 on the demo scan: the largest probability difference and the candidates.

    make demo                              # once: the demo tiles and trained models this script reuses
    .venv/bin/python scripts/demo_precision.py [--out /tmp/demo-precision]

Runs ``minescan detect`` on each demo tile (its four quadrants in one process) with ``--precision float32``
and with ``--precision bfloat16`` on TensorFlow and (where the CPU has bfloat16 units) on OpenVINO, with the
demo's own settings, and compares each bfloat16 run's probability rasters with float32's cell by cell (NaN
cells must match) and the candidate cells. Prints one line per bfloat16 run and writes
``OUT/precision.json``. The float32 run is also compared with the demo scan's own probability rasters.

Then the demo tiles are stored uncompressed (``source.tile_compression: none``, with
:func:`minescan.sources.local.recompress_tile`) and float32 runs again on them: its probability rasters
and candidates must be byte-identical to the ZSTD tiles' (one more line, and ``tile_compression`` in the
JSON). Last, all the demo tiles run in one detect process (``detect.tiles_per_job``): byte-identical to the
process per tile, with both wall times (one more line, ``tiles_in_one_process``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SCAN = ROOT / "results" / "demo" / "2026Q1"
QUADRANTS = ("NW", "NE", "SW", "SE")


def runs() -> dict[str, list[str]]:
    """name -> detect options: float32 (the default runtime) and bfloat16 on each runtime that computes it."""
    from minescan.models.onnx_net import available, ov_cpu_bf16

    r = {"float32": ["--precision", "float32"], "bfloat16": ["--precision", "bfloat16", "--runtime", "tensorflow"]}
    if available("openvino") and ov_cpu_bf16():
        r["bfloat16-openvino"] = ["--precision", "bfloat16", "--runtime", "openvino"]
    return r


def detect(tile: Path | list[Path], name: str, options: list[str], out: Path) -> float:
    """``minescan detect`` on a tile's four quadrants (or several tiles' in one process, as a batch of
    ``detect.tiles_per_job`` runs); returns the process's wall time (s)."""
    tiles = tile if isinstance(tile, list) else [tile]
    dirs = [out / name / f"{t.stem}_{q}" for t in tiles for q in QUADRANTS]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "minescan"), "detect", "--tile", *[t.stem for t in tiles],
           "--quadrant", *QUADRANTS, "--tile-path", *map(str, tiles), "--model", "results/models/demo-discovery",
           "--region",
           "config/demo_region.geojson", "--scale", "0.0001", "--threshold", "0.6", *options,
           "--impact-model", "results/models/demo-impact", "--on-empty", "error", "--tile-px", "1024",
           "--halo-px", "160", "--resolution-m", "10", "--period", "2026Q1",
           "--prob-out", *[str(d / "probability.tif") for d in dirs],
           "--candidates-out", *[str(d / "candidates.csv") for d in dirs]]
    t0 = time.perf_counter()
    with open(out / name / f"{tiles[0].stem}{'+' if len(tiles) > 1 else ''}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, stderr=log, check=True)
    return time.perf_counter() - t0


def tiles_in_one_process(tiles: list[Path], options: list[str], out: Path, per_tile_s: float) -> dict:
    """float32 on all the demo tiles in one detect process (``detect.tiles_per_job``); its outputs must
    equal the per-tile processes' byte for byte."""
    wall = detect(tiles, "float32-one-process", options, out)
    same = same_as_float32(out, "float32-one-process")
    r = {"tiles": len(tiles), "per_tile_processes_s": round(per_tile_s, 2), "one_process_s": round(wall, 2),
         "outputs_identical": same}
    print(f"demo, {len(tiles)} tiles in one detect process (detect.tiles_per_job): {wall:.1f} s against "
          f"{per_tile_s:.1f} s in {len(tiles)} processes; probabilities and candidates byte-identical: {same}")
    if not same:
        raise SystemExit("demo_precision: the tiles in one process gave other outputs than a process per tile")
    return r


def same_as_float32(out: Path, name: str) -> bool:
    """Whether run ``name`` wrote the float32 run's probability rasters and candidates, byte for byte."""
    return all((d / f).read_bytes() == (out / name / d.name / f).read_bytes()
               for d in sorted((out / "float32").glob("*_*/")) for f in ("probability.tif", "candidates.csv"))


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1).astype(np.float64)


def uncompressed_tiles(tiles: list[Path], options: list[str], out: Path) -> dict:
    """float32 again on the tiles stored uncompressed; its outputs must equal the ZSTD tiles' byte for byte."""
    from minescan.sources.local import recompress_tile

    raw = out / "tiles-none"
    for tile in tiles:
        recompress_tile(tile, raw / tile.name, "none")
        detect(raw / tile.name, "float32-uncompressed-tiles", options, out)
    same = same_as_float32(out, "float32-uncompressed-tiles")
    r = {"tiles": len(tiles), "zstd_mb": sum(t.stat().st_size for t in tiles) / 2**20,
         "none_mb": sum((raw / t.name).stat().st_size for t in tiles) / 2**20, "outputs_identical": same}
    print(f"demo, uncompressed tiles (source.tile_compression: none): {r['tiles']} tiles, {r['none_mb']:.0f} MB "
          f"against {r['zstd_mb']:.0f} MB stored as ZSTD; probabilities and candidates byte-identical: {same}")
    if not same:
        raise SystemExit("demo_precision: the uncompressed tiles gave other outputs than the ZSTD tiles")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/demo-precision")
    args = ap.parse_args(argv)
    out = Path(args.out)
    tiles = sorted((SCAN / "tiles").glob("*.tif"))
    if not tiles or not (ROOT / "results/models/demo-discovery/card.json").exists():
        raise SystemExit("demo_precision: run `make demo` first (tiles and trained demo models)")
    todo = runs()
    walls: dict[str, float] = {}
    for name, options in todo.items():
        for tile in tiles:
            walls[name] = walls.get(name, 0.0) + detect(tile, name, options, out)
    res: dict = {}
    for name in [n for n in todo if n != "float32"]:
        diff = to_scan = 0.0
        cells = 0
        cand: dict = {"float32": set(), name: set()}
        for d in sorted((out / "float32").glob("*_*/")):
            a, b = read(d / "probability.tif"), read(out / name / d.name / "probability.tif")
            ok = ~np.isnan(a)
            if not np.array_equal(ok, ~np.isnan(b)):
                raise SystemExit(f"{d.name}: float32 and {name} differ in their NaN cells")
            cells += int(ok.sum())
            diff = max(diff, float(np.abs(a[ok] - b[ok]).max()) if ok.any() else 0.0)
            ref = SCAN / "quadrants" / d.name / "probability.tif"
            if ref.exists():
                to_scan = max(to_scan, float(np.nanmax(np.abs(a - read(ref)))) if ok.any() else 0.0)
            for p in cand:
                c = pd.read_csv(out / p / d.name / "candidates.csv")
                cand[p] |= {(d.name, int(x), int(y)) for x, y in zip(c["cell_x"], c["cell_y"], strict=True)}
        res[name] = {"options": todo[name], "cells": cells, "max_abs_difference": round(diff, 6),
                     "candidates_float32": len(cand["float32"]), "candidates_bfloat16": len(cand[name]),
                     "candidates_common": len(cand["float32"] & cand[name]),
                     "float32_vs_demo_scan_max_abs_difference": to_scan}
        r = res[name]
        print(f"demo, {cells} cells, {name} ({' '.join(todo[name])}): largest |bfloat16 - float32| = {diff:.4f}; "
              f"candidates float32 {r['candidates_float32']}, bfloat16 {r['candidates_bfloat16']}, in common "
              f"{r['candidates_common']}; float32 vs the demo scan's rasters: {to_scan:g}")
    res["tile_compression"] = uncompressed_tiles(tiles, todo["float32"], out)
    res["tiles_in_one_process"] = tiles_in_one_process(tiles, todo["float32"], out, walls["float32"])
    (out / "precision.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
