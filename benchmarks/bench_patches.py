"""An imported patch classifier on one full-size quadrant: fully convolutional form vs batched patch
evaluation vs AMW-style patch by patch.

    python benchmarks/bench_patches.py [--quick] [--single N] [--json out.json]

Writes a synthetic 13-band L1C tile (9216 px core + 160 px halo, uint16, smooth fields + noise; only the NW
quadrant and its halo hold data, the rest of the file is sparse), saves an AMW-2024-style patch classifier
as ``.h5`` (48 x 48 x 13 -> Conv32 3x3 valid -> MaxPool2 -> BatchNorm -> Conv64 3x3 valid -> MaxPool2 ->
Conv128 3x3 valid -> MaxPool2 -> Flatten -> Dense 256 -> Dropout -> Dense 1 sigmoid; random weights,
~620k parameters), imports it with ``--preset amw-2024`` and scans quadrant NW at the default stride
(24 px: 192 x 192 = 36,864 positions, 2,123 km2):

1. ``fcn``: the fully convolutional form (:mod:`minescan.scan.patches`), strips of ``max_block_mb``;
2. ``patches``: batched patch evaluation of the saved network, same strips;
3. ``single``: AMW-style, every patch through the network on its own (one ``predict_on_batch`` per patch,
   as a per-patch loop would); measured on ``--single`` positions spread over the quadrant (default 1500)
   and **extrapolated** to all positions (said in the output).

(1) must equal (2) on every position and (3) on its sample to 1e-5, else exit 1. FLOPs are analytical
(2 x multiply-adds of convolutions and dense layers). ``--quick`` uses a 2304 px tile. Default run: about
2-4 minutes on 2 cores (most of it (2)). Everything runs in this process after a warm-up of each method.
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


def say(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] load {os.getloadavg()[0]:.2f}  {msg}", file=sys.stderr, flush=True)


def write_tile(path: Path, tile_px: int):
    """The tile GeoTIFF; data only where quadrant NW's patches read (core + halo), the rest sparse."""
    import rasterio
    from rasterio.windows import Window

    from minescan.grid import GridSpec, Tile, TileId
    from minescan.models.imported import L1C_BANDS
    from minescan.sources.local import TILE_PROFILE

    m = tile_px * 10
    tile = Tile(TileId.parse(f"21S-E{int(500_000 // m):03d}-N{int(9_280_000 // m):04d}"),
                GridSpec(tile_px, 10.0, HALO))
    size = tile.size_px
    rng = np.random.default_rng(0)
    prof = dict(TILE_PROFILE, count=13, width=size, height=size, crs=tile.crs, transform=tile.transform,
                nodata=0, sparse_ok=True)
    used = tile_px // 2 + 2 * HALO
    xx = np.arange(used)[None, :]
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(path, "w", **prof) as dst:
        dst.descriptions = L1C_BANDS
        for r0 in range(0, used, 512):
            h = min(512, used - r0)
            yy = np.arange(r0, r0 + h)[:, None]
            field = 0.5 + 0.25 * np.sin(xx / 97.0 + yy / 311.0) * np.cos(yy / 131.0 - xx / 577.0)
            block = np.empty((13, h, used), np.uint16)
            for b in range(13):
                block[b] = np.clip(1500 + 1200 * (field - 0.5) * (1 + b / 13) + rng.normal(0, 60, (h, used)),
                                   1, 65535).astype(np.uint16)
            dst.write(block, window=Window(0, r0, used, h))
    return tile


def amw_style_h5(path: Path) -> Path:
    from minescan.models.networks import _keras

    keras = _keras()
    L = keras.layers
    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((48, 48, 13)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2), L.BatchNormalization(),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(0.3), L.Dense(1, activation="sigmoid"),
    ], name="amw_style_cnn")
    net.save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2304 px tile (1152 px quadrant)")
    ap.add_argument("--single", type=int, default=1500, help="positions timed one patch at a time")
    ap.add_argument("--max-block-mb", type=float, default=384)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from minescan.models.imported import import_h5, spec_from_preset
    from minescan.models.store import load_model
    from minescan.scan.detect import open_tile
    from minescan.scan.inference import InferenceStats, Normalisation
    from minescan.scan.patches import PatchGeometry, patch_flops, patch_net, quadrant_patch_probabilities

    tile_px = 2304 if args.quick else 9216
    res: dict = {"tile_px": tile_px, "quadrant_px": tile_px // 2, "cpus": os.cpu_count(),
                 "max_block_mb": args.max_block_mb}
    with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
        d = Path(tmp)
        say(f"writing the synthetic {tile_px} px 13-band tile (quadrant NW + halo) ...")
        t = time.perf_counter()
        tile = write_tile(d / "tile.tif", tile_px)
        say(f"  {time.perf_counter() - t:.1f} s")
        import_h5([amw_style_h5(d / "amw.h5")], d / "model", spec_from_preset("amw-2024"))
        model = load_model(d / "model")
        net = patch_net(model)
        res["parameters"] = int(model.card["import"]["parameters"])
        area_km2 = (tile_px // 2 * 10 / 1000) ** 2
        res["area_km2"] = area_km2
        out = {}
        with open_tile(d / "tile.tif", tile) as raster:
            # warm-up of both methods (tracing) on a small core
            c0, r0, _, _ = tile.quadrant_core_px("NW")
            for method in ("fcn", "patches"):
                quadrant_patch_probabilities(raster, tile, "NW", model, 1e-4, method=method,
                                             core_px=(c0, r0, c0 + 96, r0 + 96))
            for method in ("fcn", "patches"):
                say(f"{method} on quadrant NW ...")
                st = InferenceStats()
                prob, kx, ky, _ = quadrant_patch_probabilities(raster, tile, "NW", model, 1e-4, method=method,
                                                               max_block_mb=args.max_block_mb, stats=st)
                out[method] = prob
                res[method] = {"wall_s": round(st.wall_s, 2), "network_s": round(st.compute_s, 2),
                               "read_s": round(st.read_s, 2), "strip_rows": st.chunk_cells,
                               "gflop": round(st.flops / 1e9, 1), "km2_per_s": round(area_km2 / st.wall_s, 1),
                               "gflop_per_s": round(st.flops / 1e9 / st.wall_s, 1)}
                say(f"  {st.wall_s:.1f} s")
            n = prob.size
            res["positions"] = n
            diff = float(np.nanmax(np.abs(out["fcn"] - out["patches"])))
            res["max_abs_diff_fcn_vs_patches"] = diff
            # AMW-style: one patch per network call, on a sample, extrapolated
            say(f"single: {args.single} patches one at a time ...")
            geo = PatchGeometry(net.window, net.stride)
            bands = model.band_indices(raster.band_names, str(raster.path))
            norm = Normalisation.from_card(model.card["normalisation"], 1e-4, raster.nodata)
            rng = np.random.default_rng(1)
            pick = rng.choice(n, size=min(args.single, n), replace=False)
            net.run(np.zeros((1, 48, 48, 13), np.float32))  # warm-up
            single = np.empty(len(pick), np.float32)
            t = time.perf_counter()
            for i, k in enumerate(pick):
                y, x = ky[k // len(kx)], kx[k % len(kx)]
                z, _ = norm.apply(raster.read_px(geo.start(x), geo.start(y), geo.start(x) + 48,
                                                 geo.start(y) + 48, bands))
                single[i] = np.asarray(model.network.predict_on_batch(z[None]))[0, 1]
            per = (time.perf_counter() - t) / len(pick)
            sdiff = float(np.max(np.abs(single - out["fcn"].reshape(-1)[pick])))
            flops = patch_flops(net, "single", len(kx), len(ky))
            res["single"] = {"sampled_positions": int(len(pick)), "s_per_patch": per,
                             "wall_s_extrapolated": round(per * n, 1), "gflop": round(flops / 1e9, 1),
                             "km2_per_s": round(area_km2 / (per * n), 2),
                             "gflop_per_s": round(flops / 1e9 / (per * n), 1)}
            res["max_abs_diff_single_vs_fcn"] = sdiff
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if diff > 1e-5 or sdiff > 1e-5:
        print(f"FAIL: methods disagree (fcn vs patches {diff:.2e}, single vs fcn {sdiff:.2e})")
        sys.exit(1)


def report(r: dict) -> None:
    print(f"patch classifier ({r['parameters']:,} parameters, 48 px, stride 24 px) on a "
          f"{r['quadrant_px']} px quadrant: {r['positions']:,} positions, {r['area_km2']:.0f} km2, "
          f"{r['cpus']} CPUs, max_block_mb {r['max_block_mb']:g}")
    rows = [("fcn (fully convolutional)", r["fcn"]["wall_s"], r["fcn"]),
            ("patches (batched)", r["patches"]["wall_s"], r["patches"]),
            ("single (AMW-style, extrapolated from "
             f"{r['single']['sampled_positions']} patches)", r["single"]["wall_s_extrapolated"], r["single"])]
    print(f"  {'method':58s} {'time s':>8s} {'km2/s':>8s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'vs single':>9s}")
    base = r["single"]["wall_s_extrapolated"]
    for name, wall, v in rows:
        print(f"  {name:58s} {wall:8.1f} {v['km2_per_s']:8.1f} {v['gflop']:8.1f} {v['gflop_per_s']:8.1f} "
              f"{base / wall:8.1f}x")
    print(f"  max |fcn - patches| = {r['max_abs_diff_fcn_vs_patches']:.2e} over every position; "
          f"max |single - fcn| = {r['max_abs_diff_single_vs_fcn']:.2e} on the sample")


if __name__ == "__main__":
    main()
