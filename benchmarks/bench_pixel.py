"""The pixel detector on a synthetic quadrant: km2/s and peak RSS per job, random forest predictions/s.

    .venv/bin/python benchmarks/bench_pixel.py [--quick] [--json out.json] [--with-fcn]

Writes the synthetic tile of ``bench_quadrant.py`` (9216 px core + 160 px halo; ``--quick``: 2304 px), trains
two pixel models on random pixels of the 'indices' feature set (79 features: 12 bands, 66 normalised
differences, MSI) with the real training code (a random forest of 100 trees, depth <= 16, and the sparse
logistic model), then runs ``minescan detect`` with each on quadrant NW in its own process (wall time and
peak RSS from ``wait4``), and on the whole tile (core = 4 quadrants) for the memory bound. ``--with-fcn``
adds the discovery FCN's detect job on the same quadrant (a randomly initialised published FCN).
Separately, in this process: random forest predictions per second on 10^6 feature rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quadrant as bq  # noqa: E402


def train_models(d: Path) -> dict[str, Path]:
    from minescan import SENTINEL2_BANDS
    from minescan.pixel.features import FeatureSet
    from minescan.pixel.samples import PixelSamples
    from minescan.pixel.train import train_pixel_model

    fs = FeatureSet("indices", SENTINEL2_BANDS)
    rng = np.random.default_rng(0)
    n = 6000
    X = rng.normal(size=(n, len(fs.features))).astype(np.float32)
    y = ((X[:, 3] + 0.5 * X[:, 20] + rng.normal(scale=0.7, size=n)) > 1.2).astype(np.int8)
    s = PixelSamples(
        list(fs.features),
        X,
        np.zeros(n, np.float32),
        y,
        np.array([f"g{i % 6}" for i in range(n)]),
        np.zeros(n, int),
    )
    out = {}
    for model in ("forest", "logistic"):
        train_pixel_model(s, fs, d / f"pixel-{model}", model=model, precision_floor=0.3, folds=3)
        out[model] = d / f"pixel-{model}"
    return out


def detect(d: Path, tile_path: Path, tile_px: int, model: Path, quadrant: str = "NW") -> dict:
    q = d / f"{model.name}_{quadrant}"
    r = bq.run(
        [
            *bq.minescan_cmd(),
            "detect",
            "--tile",
            bq.tile_id(tile_px),
            "--quadrant",
            quadrant,
            "--tile-path",
            str(tile_path),
            "--model",
            str(model),
            "--region",
            str(d / "region.geojson"),
            "--scale",
            str(bq.SCALE),
            "--threshold",
            "0.5",
            "--period",
            "2026Q1",
            "--prob-out",
            str(q / "probability.tif"),
            "--candidates-out",
            str(q / "candidates.csv"),
            *bq.grid_args(tile_px),
        ],
        f"detect {model.name}",
    )
    km2 = (tile_px // 2 * 10 / 1000) ** 2
    return {
        "wall_s": round(r["wall_s"], 1),
        "cpu_s": round(r["cpu_s"], 1),
        "rss_mb": round(r["rss_mb"]),
        "km2": km2,
        "km2_per_s": round(km2 / r["wall_s"], 2),
        "load": round(os.getloadavg()[0], 2),
    }


def forest_rate(model_dir: Path, rows: int = 1_000_000) -> dict:
    from minescan.pixel.train import load_pixel_model

    m = load_pixel_model(model_dir)
    X = np.random.default_rng(1).normal(size=(rows, len(m.feature_set.features))).astype(np.float32)
    m.predict_proba(X[:1000])
    t0 = time.perf_counter()
    m.predict_proba(X)
    dt = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds": round(dt, 2),
        "predictions_per_s": round(rows / dt),
        "trees": m.estimator[-1].n_estimators,
        "max_depth": m.card["metrics"]["grid"]["best"].get("clf__max_depth"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2304 px tile instead of 9216 px")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--with-fcn", action="store_true", help="also the FCN detect job on the same quadrant")
    args = ap.parse_args()
    tile_px = 2304 if args.quick else 9216
    res: dict = {
        "tile_px": tile_px,
        "quadrant_px": tile_px // 2,
        "cpu": bq.cpu_name(),
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="bench_pixel_") as tmp:
        d = Path(tmp)
        bq.say("writing the synthetic tile")
        tile_path = d / f"{bq.tile_id(tile_px)}.tif"
        bq.write_tile(tile_path, tile_px)
        bq.write_region(d / "region.geojson", tile_px)
        bq.say("training the pixel models")
        models = train_models(d)
        for name, path in models.items():
            bq.say(f"detect NW with the {name} pixel model")
            res[f"detect_{name}"] = detect(d, tile_path, tile_px, path)
        bq.say("random forest predictions per second")
        res["forest_rate"] = forest_rate(models["forest"])
        if args.with_fcn:
            fcn, _ = bq.save_models(d)
            bq.say("detect NW with the discovery FCN")
            res["detect_fcn"] = detect(d, tile_path, tile_px, fcn)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
