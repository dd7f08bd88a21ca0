"""Training pixel models and the pixel model directory (``model.skops`` + ``card.json``, ``kind: pixel``).

Models (scikit-learn pipelines):

- ``forest``: a random forest with balanced class weights (mines are a small share of the pixels), grid
  :data:`FOREST_GRID` (depth and leaf size; 100 trees);
- ``logistic``: the sparse (L1) logistic model of the band study on standardised features, grid
  :data:`LOGISTIC_GRID` over its inverse penalty ``C``.

The grid search optimises recall at a precision floor (:func:`recall_at_precision`: the best recall of any
threshold whose precision is at least the floor), cross-validated with groups (the image / site, or the
year) so that pixels of one image never sit in a training and a validation fold together. The model's
threshold is the one that reaches the floor on the out-of-fold probabilities of the chosen model.

Storage: skops (``skops.io``), which rebuilds objects from an explicit schema instead of unpickling code.
:func:`load_pixel_model` refuses a file holding any type outside scikit-learn's estimators and
:data:`TRUSTED_TYPES`, naming it; the zip is written with fixed timestamps so a rerun gives the same bytes.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minescan import __version__
from minescan.errors import InputDataError, ModelError
from minescan.io_utils import atomic_output, atomic_write_text
from minescan.pixel.features import FeatureSet
from minescan.pixel.samples import PixelSamples

log = logging.getLogger(__name__)

PIXEL_MODEL_FILE = "model.skops"
CARD_FILE = "card.json"
# types a pixel model file may hold beyond the scikit-learn estimators skops trusts by default
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
FOREST_GRID = {"clf__max_depth": [8, 16], "clf__min_samples_leaf": [1, 10]}
LOGISTIC_GRID = {"clf__C": [0.001, 0.01, 0.1, 1.0]}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def recall_at_precision(y, p, floor: float) -> tuple[float, float, float]:
    """(recall, precision, threshold) of the threshold with the highest recall whose precision >= floor
    (the highest such threshold);
    (0, nan, 1) when no threshold reaches the floor."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y)
    if y.sum() == 0:
        return 0.0, float("nan"), 1.0
    precision, recall, thr = precision_recall_curve(y, p)
    ok = precision[:-1] >= floor
    if not ok.any():
        return 0.0, float("nan"), 1.0
    cand = np.flatnonzero(ok)
    best = recall[cand].max()
    i = int(cand[recall[cand] == best].max())  # of equal recall, the highest threshold (fewest false alarms)
    return float(recall[i]), float(precision[i]), float(thr[i])


def _pipeline(model: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "forest":
        return Pipeline(
            [
                (
                    "clf",
                    RandomForestClassifier(
                        n_estimators=100, class_weight="balanced", n_jobs=1, random_state=seed
                    ),
                )
            ]
        ), FOREST_GRID
    if model == "logistic":
        return Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "clf",
                    LogisticRegression(
                        l1_ratio=1.0,
                        solver="liblinear",
                        class_weight="balanced",
                        max_iter=2000,
                        random_state=seed,
                    ),
                ),
            ]
        ), LOGISTIC_GRID
    raise ModelError(f"unknown pixel model '{model}' (forest or logistic)")


def train_pixel_model(
    samples: PixelSamples,
    fs: FeatureSet,
    out_dir,
    *,
    model: str = "forest",
    precision_floor: float = 0.5,
    folds: int = 3,
    group_by: str = "image",
    seed: int = 0,
    provenance: dict | None = None,
    name: str | None = None,
) -> dict:
    """Grid search (grouped CV, recall at ``precision_floor``), refit on all pixels, write the directory."""
    from sklearn.metrics import make_scorer, roc_auc_score
    from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_predict

    if list(samples.features) != list(fs.features):
        raise ModelError(f"samples hold features {samples.features[:4]}..., not those of set '{fs.name}'")
    keep = samples.mine >= 0
    X, y = samples.X[keep], samples.mine[keep].astype(int)
    groups = (samples.group if group_by == "image" else samples.year.astype(str))[keep]
    if len(np.unique(y)) < 2:
        raise InputDataError("training pixels hold only one class (need mine and not-mine pixels)")
    if len(np.unique(groups)) < folds:
        raise InputDataError(f"{len(np.unique(groups))} {group_by} groups for {folds} folds; lower --folds")
    pipe, grid = _pipeline(model, seed)
    scorer = make_scorer(
        lambda yt, p: recall_at_precision(yt, p, precision_floor)[0], response_method="predict_proba"
    )
    cv = GroupKFold(n_splits=folds)
    search = GridSearchCV(pipe, grid, scoring=scorer, cv=cv, refit=True, n_jobs=1)
    search.fit(X, y, groups=groups)
    oof = cross_val_predict(search.best_estimator_, X, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
    recall, precision, threshold = recall_at_precision(y, oof, precision_floor)
    card = {
        "kind": "pixel",
        "name": name or Path(out_dir).name,
        "estimator": model,
        "architecture": f"scikit-learn {type(search.best_estimator_[-1]).__name__} on per-pixel features",
        "bands": list(fs.bands),
        "feature_set": fs.as_card(),
        "window": 1,
        "stride": 1,
        "classes": ["background", "mine"],
        "positive_class": "mine",
        "threshold": round(threshold, 6),
        "cell_statistic": "max",
        "normalisation": {
            "note": "features from reflectance (tile value x reflectance_scale); any scaling is "
            "inside the pipeline"
        },
        "metrics": {
            "cv": {
                "folds": folds,
                "groups": group_by,
                "precision_floor": precision_floor,
                "recall": round(recall, 4),
                "precision": round(precision, 4),
                "auc": round(float(roc_auc_score(y, oof)), 4),
                "pixels": int(len(y)),
                "mine_pixels": int(y.sum()),
                "groups_n": int(len(np.unique(groups))),
            },
            "grid": {
                "params": {k: [_plain(v) for v in vs] for k, vs in grid.items()},
                "best": {k: _plain(v) for k, v in search.best_params_.items()},
                "best_cv_recall_at_floor": round(float(search.best_score_), 4),
            },
        },
        "training_data": provenance or {},
        "model_file": PIXEL_MODEL_FILE,
        "format": "skops (no code runs on load; types checked)",
        "package_version": __version__,
    }
    save_pixel_model(out_dir, search.best_estimator_, card)
    log.info(
        "pixel %s model %s: CV recall %.3f at precision %.3f (floor %.2f), threshold %.3f",
        model,
        out_dir,
        recall,
        precision,
        precision_floor,
        threshold,
    )
    return card


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def save_pixel_model(directory, estimator, card: dict) -> Path:
    """``model.skops`` (zip entries with fixed timestamps: same model, same bytes) and ``card.json``."""
    import skops.io as sio

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    src = zipfile.ZipFile(io.BytesIO(sio.dumps(estimator)))
    # skops names objects and array files by id() (memory addresses): renumber them in order of appearance
    ids: dict[str, str] = {}
    schema = re.sub(
        r'(?<="__id__": )\d+|\d+(?=\.npy")',
        lambda m: ids.setdefault(m.group(0), str(len(ids))),
        src.read("schema.json").decode(),
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        dst.writestr(zipfile.ZipInfo("schema.json", ZIP_DATE), schema, zipfile.ZIP_DEFLATED)
        renamed = {f"{ids.get(n[:-4], n[:-4])}.npy": n for n in src.namelist() if n.endswith(".npy")}
        for new in sorted(renamed, key=lambda n: int(n[:-4]) if n[:-4].isdigit() else -1):
            dst.writestr(zipfile.ZipInfo(new, ZIP_DATE), src.read(renamed[new]), zipfile.ZIP_DEFLATED)
    with atomic_output(directory / PIXEL_MODEL_FILE) as tmp:
        tmp.write_bytes(buf.getvalue())
    atomic_write_text(directory / CARD_FILE, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return directory


@dataclass
class PixelModel:
    path: Path
    card: dict
    estimator: object

    @property
    def feature_set(self) -> FeatureSet:
        return FeatureSet.from_card(self.card["feature_set"], str(self.path / CARD_FILE))

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(mine) of feature rows (n, F); NaN rows (nodata) give NaN."""
        X = np.asarray(X, dtype=np.float32)
        out = np.full(len(X), np.nan, dtype=np.float32)
        ok = np.all(np.isfinite(X), axis=1)
        if ok.any():
            out[ok] = self.estimator.predict_proba(X[ok])[:, 1]
        return out


def load_pixel_model(directory) -> PixelModel:
    """A pixel model directory; refuses a model file holding a type outside the trusted ones."""
    import skops.io as sio

    from minescan.models.store import read_card_of_kind

    directory = Path(directory)
    card = read_card_of_kind(directory, "pixel")
    path = directory / PIXEL_MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path}: pixel model file not found")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a corrupt zip or schema
        raise ModelError(f"{path}: not a readable skops file ({exc})") from exc
    refused = [t for t in untrusted if t not in TRUSTED_TYPES]
    if refused:
        raise ModelError(
            f"{path}: refused, it holds type(s) {', '.join(refused)} that a pixel model never "
            "holds (loading could run code)"
        )
    try:
        est = sio.load(path, trusted=TRUSTED_TYPES)
    except Exception as exc:
        raise ModelError(f"{path}: cannot be loaded ({exc})") from exc
    if not hasattr(est, "predict_proba"):
        raise ModelError(f"{path}: holds a {type(est).__name__}, not a classifier")
    model = PixelModel(directory, card, est)
    n_in = getattr(est, "n_features_in_", None)
    if n_in is not None and n_in != len(model.feature_set.features):
        raise ModelError(
            f"{directory}: card lists {len(model.feature_set.features)} features, the model takes {n_in}"
        )
    return model
