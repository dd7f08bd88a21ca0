"""Pixel models on the SIMULATED demo scene: pixel and site precision/recall per period and with the
temporal median (docs/pixel-classifiers.md quotes its output).

    python scripts/pixel_demo_eval.py --out results/pixel-demo-eval [--periods 2026Q1 2026Q2 2026Q3]

1. The demo's independent training scene (``minescan demo-scene --training``, as the demo's FCN is trained)
   gives labelled pixels (mine polygons of its truth; confusers are 'not mine'); a random forest and a
   sparse logistic model are trained on them (``minescan.pixel.train``, 'indices' feature set).
2. The demo scene (seed 7) of each period (the demo world opens, grows and closes mines quarter by quarter)
   is cropped to ``--crop`` px around its centre and every pixel is scored, chunk by chunk (dask).
3. Pixel precision / recall against the period's truth mask at the model's threshold, per period and for
   the median over the periods (against the last period's truth); sites = connected pixels >= threshold,
   a truth mine is found when a site touches it, a site is correct when it touches a truth mine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]


def demo_scene(out: Path, period: str, training: bool) -> tuple[Path, Path]:
    name = "training" if training else period
    tif, truth = out / f"scene_{name}.tif", out / f"truth_{name}.gpkg"
    if not tif.exists():
        cmd = [
            sys.executable,
            "-m",
            "minescan.cli",
            "demo-scene",
            "--region",
            str(ROOT / "config/demo_region.geojson"),
            "--seed",
            "7",
            "--sites-per-tile",
            "8",
            "--tile-px",
            "1024",
            "--halo-px",
            "160",
            "--scene",
            str(tif),
            "--truth",
            str(truth),
        ] + (["--training"] if training else ["--period", period])
        subprocess.run(cmd, check=True)
    return tif, truth


def mines_only(truth: Path, out: Path) -> Path:
    from minescan.vector_io import read_vector, write_vector

    gdf = read_vector(truth)
    write_vector(gdf[gdf["class"] == "mine"], out)
    return out


def score_scene(model, tif: Path, crop: int, out_tif: Path):
    """P(mine) of the central ``crop`` px square of a scene, written as a GeoTIFF; (prob, transform, crs)."""
    import dask

    from minescan.pixel.features import feature_array, open_bands

    fs = model.feature_set
    arr = open_bands(tif, fs.bands, chunk_blocks=2)
    h, w = arr.shape[1:]
    r0, c0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    raw = arr.data[:, r0 : r0 + crop, c0 : c0 + crop]
    feats = feature_array(raw, fs, 1e-4, 0, 10.0)

    def predict(block):
        f, bh, bw = block.shape
        return model.predict_proba(block.reshape(f, -1).T).reshape(bh, bw)

    import dask.array as da

    with dask.config.set(scheduler="threads", num_workers=2):
        prob = da.map_blocks(predict, feats, drop_axis=0, dtype=np.float32).compute()
    with rasterio.open(tif) as ds:
        t = ds.transform * Affine.translation(c0, r0)
        crs = ds.crs
    with rasterio.open(
        out_tif,
        "w",
        driver="GTiff",
        dtype="float32",
        count=1,
        width=prob.shape[1],
        height=prob.shape[0],
        crs=crs,
        transform=t,
        nodata=float("nan"),
    ) as dst:
        dst.write(prob, 1)
    return prob, t, crs


def site_scores(prob_tif: Path, truth_mines, threshold: float) -> dict:
    from minescan.pixel.temporal import temporal_sites

    sites = temporal_sites(prob_tif, threshold)
    sites = sites[sites["pixels"] >= 9]  # at least 9 px (0.09 ha), as a cell-sized blob
    t = truth_mines.to_crs(sites.crs)
    with rasterio.open(prob_tif) as ds:
        from shapely.geometry import box

        frame = box(*ds.bounds)
    t = t[t.intersects(frame)]
    found = sum(bool(sites.intersects(g).any()) for g in t.geometry)
    correct = sum(bool(t.intersects(g).any()) for g in sites.geometry)
    return {
        "truth_mines": len(t),
        "found": found,
        "recall": round(found / len(t), 4) if len(t) else None,
        "sites": len(sites),
        "correct_sites": correct,
        "precision": round(correct / len(sites), 4) if len(sites) else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--periods", nargs="+", default=["2026Q1", "2026Q2", "2026Q3"])
    ap.add_argument("--crop", type=int, default=1536)
    ap.add_argument("--models", nargs="+", default=["logistic", "forest"])
    ap.add_argument("--max-pixels", type=int, default=20000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from minescan import SENTINEL2_BANDS
    from minescan.pixel.features import FeatureSet
    from minescan.pixel.labels import pixel_labels, polygons_in_crs
    from minescan.pixel.samples import image_samples
    from minescan.pixel.temporal import pixel_scores, temporal_median
    from minescan.pixel.train import load_pixel_model, train_pixel_model
    from minescan.vector_io import read_vector

    tr_tif, tr_truth = demo_scene(args.out, "", training=True)
    fs = FeatureSet("indices", SENTINEL2_BANDS)
    samples = image_samples(
        tr_tif,
        fs,
        mines_only(tr_truth, args.out / "training_mines.gpkg"),
        "2026Q1",
        max_pixels=args.max_pixels,
        seed=0,
    )
    # one training image: its pixels go to 5 random CV groups (neighbouring pixels share folds: the CV figures
    # are optimistic; the test figures below are on other scenes)
    report: dict = {"periods": args.periods, "crop_px": args.crop, "feature_set": fs.name, "models": {}}
    scenes = [demo_scene(args.out, p, training=False) for p in args.periods]
    for name in args.models:
        mdir = args.out / f"model-{name}"
        if not (mdir / "card.json").exists():
            s = samples
            s.group = np.array([f"block{i % 5}" for i in range(len(s.group))])  # 5 random folds of pixels
            train_pixel_model(s, fs, mdir, model=name, precision_floor=0.8, folds=3, seed=0)
        model = load_pixel_model(mdir)
        thr = model.threshold
        entry: dict = {"threshold": thr, "cv": model.card["metrics"]["cv"], "per_period": {}}
        probs = []
        for period, (tif, truth) in zip(args.periods, scenes, strict=True):
            out_tif = args.out / f"prob_{name}_{period}.tif"
            prob, t, crs = score_scene(model, tif, args.crop, out_tif)
            probs.append(out_tif)
            truth_mines = read_vector(truth)
            truth_mines = truth_mines[truth_mines["class"] == "mine"]
            lab = pixel_labels(
                polygons_in_crs(mines_only(truth, args.out / f"mines_{period}.gpkg"), crs),
                t,
                prob.shape,
                10.0,
            )
            entry["per_period"][period] = {
                "pixel": pixel_scores(prob, lab.mine == 1, thr),
                "site": site_scores(out_tif, truth_mines, thr),
            }
        med = args.out / f"median_{name}.tif"
        temporal_median(probs, med, last_n=len(probs))
        with rasterio.open(med) as ds:
            mprob = ds.read(1)
        last_truth = read_vector(scenes[-1][1])
        last_truth = last_truth[last_truth["class"] == "mine"]
        entry["median"] = {
            "pixel": pixel_scores(mprob, lab.mine == 1, thr),
            "site": site_scores(med, last_truth, thr),
        }
        report["models"][name] = entry
        print(name, json.dumps(entry, indent=1))
    out = args.out / f"pixel_demo_eval_{'-'.join(args.models)}.json"
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
