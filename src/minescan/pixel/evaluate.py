"""Chip-level evaluation of pixel models on a labelled RGB chip archive, split by year.

The pixel models are trained (``minescan.pixel.train``: grid search, grouped CV, each chip its own group)
on pixels of the chips outside the test year, every pixel taking its chip's label, then applied to
``score_pixels`` random pixels of each test chip; the chip's score is the mean (and the 90th percentile)
of its pixels' P(mine). Reported per model: chip-level AUC and the sensitivity at specificity >= 0.99
(the highest sensitivity of any threshold keeping 99 % of the non-mine chips below it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from minescan.io_utils import atomic_write_text
from minescan.pixel.features import FeatureSet
from minescan.pixel.samples import CHIP_BANDS, chip_features, chip_samples, load_chips
from minescan.pixel.train import load_pixel_model, train_pixel_model

log = logging.getLogger(__name__)


def sensitivity_at_specificity(y, score, specificity: float = 0.99) -> tuple[float, float]:
    """(sensitivity, threshold): the best sensitivity of a threshold with specificity >= ``specificity``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, score)
    ok = fpr <= 1 - specificity
    i = int(np.flatnonzero(ok)[np.argmax(tpr[ok])])
    return float(tpr[i]), float(thr[i])


def chip_scores(model, x: np.ndarray, fs: FeatureSet, score_pixels: int = 256, seed: int = 0):
    """(mean, 90th percentile) of P(mine) over ``score_pixels`` random pixels of each chip."""
    rng = np.random.default_rng(seed)
    h, w = x.shape[1:3]
    mean, p90 = np.zeros(len(x)), np.zeros(len(x))
    batch = 64
    for s in range(0, len(x), batch):
        feats, sizes = [], []
        for chip in x[s : s + batch]:
            f = chip_features(chip, fs).reshape(len(fs.features), -1)
            pick = rng.choice(h * w, min(score_pixels, h * w), replace=False)
            feats.append(f[:, pick].T)
            sizes.append(len(pick))
        p = model.predict_proba(np.concatenate(feats))
        for k, part in enumerate(np.split(p, np.cumsum(sizes)[:-1])):
            mean[s + k] = np.nanmean(part)
            p90[s + k] = np.nanpercentile(part, 90)
    return mean, p90


def evaluate_chips(
    npz_path,
    out_dir,
    *,
    test_year: int = 2024,
    models=("logistic", "forest"),
    feature_sets=("bands", "indices"),
    pixels_per_chip: int = 8,
    score_pixels: int = 256,
    folds: int = 3,
    precision_floor: float = 0.5,
    seed: int = 0,
) -> dict:
    """Train each (model, feature set) on chips of other years (undated included), test on ``test_year``."""
    from sklearn.metrics import roc_auc_score

    out_dir = Path(out_dir)
    arch = load_chips(npz_path)
    test = arch["year"] == test_year
    y_test = arch["y"][test].astype(int)
    result = {
        "chips": str(npz_path),
        "test_year": test_year,
        "train_chips": int((~test).sum()),
        "test_chips": int(test.sum()),
        "test_mines": int(y_test.sum()),
        "pixels_per_train_chip": pixels_per_chip,
        "score_pixels_per_test_chip": score_pixels,
        "models": {},
    }
    for set_name in feature_sets:
        fs = FeatureSet(set_name, CHIP_BANDS)
        samples, _ = chip_samples(npz_path, fs, pixels_per_chip, seed, select=~test)
        for model in models:
            key = f"{model}-{set_name}"
            card = train_pixel_model(
                samples,
                fs,
                out_dir / key,
                model=model,
                precision_floor=precision_floor,
                folds=folds,
                seed=seed,
                provenance={"chips": str(npz_path), "train": f"years != {test_year}"},
            )
            m = load_pixel_model(out_dir / key)
            entry = {"cv": card["metrics"]["cv"], "grid_best": card["metrics"]["grid"]["best"]}
            for stat, score in zip(
                ("mean", "p90"), chip_scores(m, arch["x"][test], fs, score_pixels, seed), strict=True
            ):
                sens, thr = sensitivity_at_specificity(y_test, score)
                entry[f"chip_{stat}"] = {
                    "auc": round(float(roc_auc_score(y_test, score)), 4),
                    "sensitivity_at_spec_0.99": round(sens, 4),
                    "threshold": round(thr, 6),
                }
            log.info("%s: %s", key, entry)
            result["models"][key] = entry
    atomic_write_text(out_dir / "chips_eval.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
