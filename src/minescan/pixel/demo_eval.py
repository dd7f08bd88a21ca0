"""Pixel models on the SIMULATED demo scene: pixel and site precision / recall per period and for the
temporal median, next to the FCN's sites (``minescan pixel demo-eval``; rule ``pixel_demo_eval``).

1. The demo's independent training scene (the one the demo FCN is trained on) gives labelled pixels: its
   mine polygons are 'mine', everything else (confusers included) 'not mine'. Each model is trained on
   them with ``minescan.pixel.train`` (feature set 'indices'; grid search for recall at the precision
   floor). One image: its pixels go to 5 random CV groups, so neighbouring pixels share folds and the CV
   figures are optimistic; the test figures are on other scenes.
2. The demo scene of each period (the demo world opens, grows and closes mines quarter by quarter) is
   cropped to ``crop_px`` around its centre and every pixel is scored, chunk by chunk (dask).
3. Pixel precision / recall against the period's truth mask at the model's threshold, per period and for the
   per-pixel median over the periods (:func:`minescan.pixel.temporal.temporal_median`, against the last
   period's truth). Sites = connected pixels >= threshold of at least ``min_site_pixels``; site recall and
   precision as the scan's summary counts them (:func:`minescan.scan.merge.evaluate_sites`: a true mine is
   found when a site touches it, a site is correct when it touches a true mine), within the crop.
4. The FCN: the scan's sites (first period) evaluated the same way within the same crop, and the scan's
   own whole-region figures from its summary.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from minescan.errors import InputDataError
from minescan.io_utils import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

# the site-level figures of a scan's evaluation (scan.merge.evaluate_sites) that the report carries
SITE_KEYS = ("truth_mines", "found_mines", "recall", "detected_sites", "correct_sites", "precision")


def _mines(truth, out: Path) -> Path:
    """The truth layer's mine polygons (class == 'mine') written to ``out``."""
    from minescan.vector_io import read_vector, write_vector

    gdf = read_vector(truth, None, "demo truth")
    if "class" not in gdf.columns:
        raise InputDataError(f"{truth}: no 'class' column (expected a demo truth layer)")
    write_vector(gdf[gdf["class"] == "mine"], out)
    return out


def score_crop(model, tif, crop: int, out_tif) -> tuple[np.ndarray, object, object]:
    """P(mine) of the central ``crop`` px square of a scene, written as a GeoTIFF; (prob, transform, crs)."""
    import dask
    import dask.array as da
    import rasterio
    from affine import Affine

    from minescan.pixel.features import feature_array, open_bands

    fs = model.feature_set
    arr = open_bands(tif, fs.bands, chunk_blocks=2)
    h, w = arr.shape[1:]
    if h < crop or w < crop:
        raise InputDataError(f"{tif}: {w}x{h} px, smaller than the evaluation crop of {crop} px")
    r0, c0 = (h - crop) // 2, (w - crop) // 2
    with rasterio.open(tif) as ds:
        t = ds.transform @ Affine.translation(c0, r0)
        crs, res = ds.crs, abs(ds.transform.a)
    feats = feature_array(arr.data[:, r0 : r0 + crop, c0 : c0 + crop], fs, 1e-4, 0, res, None, None, str(tif))

    def predict(block):
        f, bh, bw = block.shape
        return model.predict_proba(block.reshape(f, -1).T).reshape(bh, bw).astype(np.float32)

    with dask.config.set(scheduler="threads", num_workers=2):
        prob = da.map_blocks(predict, feats, drop_axis=0, dtype=np.float32).compute()
    profile = dict(
        driver="GTiff",
        dtype="float32",
        count=1,
        width=crop,
        height=crop,
        crs=crs,
        transform=t,
        nodata=float("nan"),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with atomic_output(out_tif) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(prob, 1)
    return prob, t, crs


def _frame_lonlat(tif):
    import rasterio
    from shapely.geometry import box

    from minescan.grid import to_crs

    with rasterio.open(tif) as ds:
        return to_crs(box(*ds.bounds), ds.crs.to_epsg(), 4326)


def _site_scores(sites, truth_path, frame_lonlat) -> dict:
    from minescan.scan.merge import evaluate_sites
    from minescan.vector_io import read_vector

    sites = sites.to_crs(4326)
    sites = sites[sites.intersects(frame_lonlat)]  # the sites within the evaluated crop
    ev = evaluate_sites(sites, read_vector(truth_path, None, "demo truth"), frame_lonlat)
    return {k: ev[k] for k in (*SITE_KEYS, "confusers_hit")}


def _prob_sites(prob_tif, threshold: float, min_pixels: int):
    from minescan.pixel.temporal import temporal_sites

    sites = temporal_sites(prob_tif, threshold)
    return sites[sites["pixels"] >= min_pixels]


def evaluate_demo(
    training_scene,
    training_truth,
    scenes: list,
    truths: list,
    periods: list[str],
    out,
    *,
    fcn_sites=None,
    fcn_summary=None,
    models=("logistic",),
    crop_px: int = 1536,
    max_pixels: int = 20000,
    precision_floor: float = 0.8,
    min_site_pixels: int = 9,
    seed: int = 0,
) -> dict:
    """Train, score every period and the median, compare with the FCN; writes ``out`` (JSON) and the
    models beside it (``model-{name}/``); returns the report."""
    from minescan import SENTINEL2_BANDS
    from minescan.pixel.features import FeatureSet
    from minescan.pixel.labels import pixel_labels, polygons_in_crs
    from minescan.pixel.samples import image_samples
    from minescan.pixel.temporal import pixel_scores, temporal_median
    from minescan.pixel.train import load_pixel_model, train_pixel_model
    from minescan.vector_io import read_vector

    if not (len(scenes) == len(truths) == len(periods)) or not periods:
        raise InputDataError(
            f"demo evaluation: {len(scenes)} scenes, {len(truths)} truths and {len(periods)} periods "
            "(need one scene and one truth per period, at least one)"
        )
    out = Path(out)
    t_start = time.perf_counter()
    report: dict = {
        "scene": "SIMULATED demo scene (minescan.sources.demo), not real imagery",
        "periods": list(periods),
        "crop_px": crop_px,
        "feature_set": "indices",
        "min_site_pixels": min_site_pixels,
        "precision_floor": precision_floor,
        "models": {},
    }
    with tempfile.TemporaryDirectory(
        prefix="demo_eval_", dir=out.parent if out.parent.exists() else None
    ) as td:
        work = Path(td)
        fs = FeatureSet("indices", SENTINEL2_BANDS)
        samples = image_samples(
            training_scene,
            fs,
            _mines(training_truth, work / "training_mines.gpkg"),
            periods[0],
            max_pixels=max_pixels,
            seed=seed,
        )
        samples.group = np.array([f"block{i % 5}" for i in range(len(samples.group))])
        truth_masks = []
        frame = None
        for name in models:
            t0 = time.perf_counter()
            mdir = out.parent / f"model-{name}"
            train_pixel_model(
                samples,
                fs,
                mdir,
                model=name,
                precision_floor=precision_floor,
                folds=3,
                seed=seed,
                provenance={"training_scene": str(training_scene)},
                name=f"demo-pixel-{name}",
            )
            model = load_pixel_model(mdir)
            thr = model.threshold
            entry: dict = {
                "model": str(mdir),
                "threshold": round(float(thr), 6),
                "cv": model.card["metrics"]["cv"],
                "per_period": {},
            }
            probs = []
            for i, (period, tif, truth) in enumerate(zip(periods, scenes, truths, strict=True)):
                prob_tif = work / f"prob_{name}_{period}.tif"
                prob, t, crs = score_crop(model, tif, crop_px, prob_tif)
                probs.append(prob_tif)
                if len(truth_masks) <= i:
                    lab = pixel_labels(
                        polygons_in_crs(_mines(truth, work / f"mines_{period}.gpkg"), crs),
                        t,
                        prob.shape,
                        abs(t.a),
                    )
                    truth_masks.append(lab.mine == 1)
                frame = frame or _frame_lonlat(prob_tif)
                entry["per_period"][period] = {
                    "pixel": pixel_scores(prob, truth_masks[i], thr),
                    "site": _site_scores(_prob_sites(prob_tif, thr, min_site_pixels), truth, frame),
                }
            med = work / f"median_{name}.tif"
            temporal_median(probs, med, last_n=len(probs))
            import rasterio

            with rasterio.open(med) as ds:
                mprob = ds.read(1)
            entry["median"] = {
                "periods": len(probs),
                "truth_period": periods[-1],
                "pixel": pixel_scores(mprob, truth_masks[-1], thr),
                "site": _site_scores(_prob_sites(med, thr, min_site_pixels), truths[-1], frame),
            }
            log.info("%s: trained and evaluated in %.1f s", name, time.perf_counter() - t0)
            report["models"][name] = entry
            log.info("demo pixel evaluation %s: %s", name, json.dumps(entry["median"]))
    if fcn_sites is not None:
        fcn = {
            "period": periods[0],
            "crop": _site_scores(read_vector(fcn_sites, None, "FCN sites"), truths[0], frame),
        }
        if fcn_summary is not None:
            try:
                ev = json.loads(Path(fcn_summary).read_text())["evaluation"]
            except (OSError, ValueError, KeyError) as exc:
                raise InputDataError(f"{fcn_summary}: no scan summary with an 'evaluation' ({exc})") from exc
            fcn["whole_region"] = {k: ev.get(k) for k in SITE_KEYS}
        report["fcn"] = fcn
    # no timings in the report: the demo's outputs are compared byte for byte (scripts/demo_hashes.py)
    log.info("demo pixel evaluation in %.1f s", time.perf_counter() - t_start)
    atomic_write_text(out, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def summary_lines(report: dict) -> list[str]:
    """The report in a few lines (printed by the command and by `make demo`)."""
    lines = [
        f"pixel models on the SIMULATED demo scene, central {report['crop_px']} px, periods "
        f"{', '.join(report['periods'])}:"
    ]

    def fmt(m):
        return (
            f"pixel precision {m['pixel']['precision']} recall {m['pixel']['recall']}; site recall "
            f"{m['site']['recall']} ({m['site']['found_mines']}/{m['site']['truth_mines']}), precision "
            f"{m['site']['precision']} ({m['site']['correct_sites']}/{m['site']['detected_sites']})"
        )

    for name, e in report["models"].items():
        for period, m in e["per_period"].items():
            lines.append(f"  {name} (threshold {e['threshold']}) {period}: {fmt(m)}")
        lines.append(f"  {name} median of {e['median']['periods']}: {fmt(e['median'])}")
    if "fcn" in report:
        c = report["fcn"]["crop"]
        lines.append(
            f"  FCN scan {report['fcn']['period']}, same crop: site recall {c['recall']} "
            f"({c['found_mines']}/{c['truth_mines']}), precision {c['precision']} "
            f"({c['correct_sites']}/{c['detected_sites']})"
        )
    return lines
