"""Training the discovery FCN and the impact CNN from labelled points and the images they fall in.

Points: CSV with ``lon, lat, class`` (1/mine, 0/background) and optional ``impact`` (high, low, no_ore),
or any vector file of points with those attributes. Chips (201 x 201 for discovery, 21 x 21 for impact, as
published) are cut around each point from the first image that holds the whole chip. Per-band z-score
statistics are computed on the training chips and stored in the model card. k-fold cross-validation
(stratified, seeded) reports accuracy, F1 and the confusion matrix per fold; the final model is then
trained on all chips.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer

from minescan import __version__
from minescan.errors import InputDataError
from minescan.models.networks import DISCOVERY_CLASSES, IMPACT_CLASSES, build_discovery_fcn, build_impact_cnn
from minescan.models.store import normalisation_stats, normalise, save_model
from minescan.sources.local import TileRaster

log = logging.getLogger(__name__)

DEFAULT_WINDOW = {"discovery": 201, "impact": 21}
MAX_NODATA_FRACTION = 0.1


def _bad_rows(path, where: str, col: str, bad: pd.Series, values: pd.Series, what: str) -> None:
    """Raise one line naming the file, the first bad row and column, its value, and how many rows are bad."""
    if not bad.any():
        return
    rows = list(bad[bad].index)
    first = rows[0]
    raw = values.loc[first]
    shown = "blank" if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "" \
        else repr(str(raw))
    more = f" ({len(rows)} bad rows)" if len(rows) > 1 else ""
    raise InputDataError(f"{path}: {where(first)}, column '{col}': {shown} is not {what}{more}")


def read_points(path) -> pd.DataFrame:
    """Labelled points as a DataFrame (lon, lat, class 0/1[, impact]), every row checked.

    A bad row (a lon or lat that is blank, not a number or out of range, an unknown class) is reported in
    one line naming the file, the row (the CSV line number, or the feature number of a vector file) and the
    column, with the number of bad rows, before any image is opened.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: points file not found")
    if path.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                             encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not part of 'lon'
        except pd.errors.EmptyDataError:
            raise InputDataError(f"{path}: points file is empty (need a header lon, lat, class[, impact])") \
                from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputDataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
        df = df.replace("", np.nan)

        def where(i):
            return f"line {i + 2}"  # the header is line 1
    else:
        from minescan.vector_io import read_vector

        gdf = read_vector(path, what="points file")
        if len(gdf) and not set(gdf.geometry.dropna().geom_type) <= {"Point"}:
            kinds = sorted(set(gdf.geom_type.dropna()))
            raise InputDataError(f"{path}: points file holds {kinds} geometries, not points")
        gdf = gdf.to_crs(4326)
        df = pd.DataFrame(gdf.drop(columns="geometry"))
        df["lon"], df["lat"] = gdf.geometry.x, gdf.geometry.y

        def where(i):
            return f"feature {i + 1}"
    df = df.reset_index(drop=True)
    for col in ("lon", "lat", "class"):
        if col not in df.columns:
            raise InputDataError(f"{path}: column '{col}' is missing (need lon, lat, class[, impact])")
    if df.empty:
        raise InputDataError(f"{path}: points file holds no point")
    for col, lo, hi, what in (("lon", -180, 180, "a longitude in [-180, 180]"),
                              ("lat", -90, 90, "a latitude in [-90, 90]")):
        num = pd.to_numeric(df[col], errors="coerce")
        _bad_rows(path, where, col, num.isna() | (num < lo) | (num > hi), df[col], what)
        df[col] = num.astype(float)
    names = {"mine": 1, "background": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}
    cls = df["class"].map(lambda v: names.get(str(v).strip().lower()))
    _bad_rows(path, where, "class", cls.isna(), df["class"], "a class (1/0 or mine/background)")
    df["class"] = cls.astype(int)
    if "impact" in df.columns:
        bad = df["impact"].notna() & ~df["impact"].isin(IMPACT_CLASSES)
        if bad.any():
            values = sorted(set(df.loc[bad, "impact"].astype(str)))
            first = int(bad[bad].index[0])
            raise InputDataError(f"{path}: {where(first)}, column 'impact': unknown classes {values} "
                                 f"(use {', '.join(IMPACT_CLASSES)}; {int(bad.sum())} bad rows)")
    return df


def extract_chips(points: pd.DataFrame, images: list, window: int, bands: list[str], scale: float):
    """Reflectance chips (N, w, w, B) float32, their valid masks and the row indices of ``points`` used."""
    chips, valids, used = [], [], []
    remaining = set(range(len(points)))
    for image in images:
        if not remaining:
            break
        with TileRaster(image) as raster:
            idx = raster.band_indices(bands)
            to_img = Transformer.from_crs(4326, raster.ds.crs, always_xy=True)
            todo = np.array(sorted(remaining), dtype=np.int64)
            xs, ys = to_img.transform(points["lon"].to_numpy()[todo], points["lat"].to_numpy()[todo])
            cols, rows = ~raster.ds.transform @ (np.asarray(xs), np.asarray(ys))
            c0s = np.floor(cols).astype(np.int64) - window // 2
            r0s = np.floor(rows).astype(np.int64) - window // 2
            inside = (c0s >= 0) & (r0s >= 0) & (c0s + window <= raster.ds.width) & (r0s + window <= raster.ds.height)
            for i, c0, r0 in zip(todo[inside], c0s[inside], r0s[inside], strict=True):
                i, c0, r0 = int(i), int(c0), int(r0)
                raw = raster.read_px(c0, r0, c0 + window, r0 + window, idx)
                valid = np.all(raw != raster.nodata, axis=-1)
                remaining.discard(i)
                if valid.mean() < 1 - MAX_NODATA_FRACTION:
                    log.warning("point %d (%.5f, %.5f): chip is more than %d %% nodata, skipped", i,
                                points.at[i, "lon"], points.at[i, "lat"], 100 * MAX_NODATA_FRACTION)
                    continue
                chips.append(raw.astype(np.float32) * np.float32(scale))
                valids.append(valid)
                used.append(i)
    if remaining:
        log.warning("%d of %d points lie outside every image (or too near an edge) and were skipped",
                    len(remaining), len(points))
    if not chips:
        raise InputDataError("no training chip could be cut: no point lies inside the images "
                             f"({', '.join(str(i) for i in images)})")
    return np.stack(chips), np.stack(valids), np.asarray(used)


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of (H, W, C) images, applied on axes 1, 2 of a batch."""
    x = np.rot90(x, k % 4, axes=(1, 2))
    return x[:, :, ::-1] if k >= 4 else x


class _EpochLogger:
    def __init__(self, what: str):
        from minescan.models.networks import _keras

        keras = _keras()
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log.info("%s: epoch %d/%d loss %.4f acc %.3f (%.0f s)", what, epoch + 1, self.params["epochs"],
                         logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
                         time.monotonic() - outer.start)

        self.start = time.monotonic()
        self.callback = Callback()


def _fit(kind: str, n_bands: int, window: int, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
         learning_rate: float, seed: int, what: str):
    from minescan.models.networks import _keras

    keras = _keras()
    keras.utils.set_random_seed(seed)
    net = build_discovery_fcn(n_bands, window) if kind == "discovery" else build_impact_cnn(n_bands, window)
    net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    # augmentation: every epoch sees each chip under one random flip/rotation (8 symmetries)
    target = y.reshape(-1, 1, 1) if kind == "discovery" else y
    logger = _EpochLogger(what)
    for epoch in range(epochs):
        k = rng.integers(0, 8, len(x))
        xa = np.empty_like(x)
        for s in range(8):
            sel = k == s
            if sel.any():
                xa[sel] = _dihedral(x[sel], s)
        net.fit(xa, target, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch, shuffle=True,
                verbose=0, callbacks=[logger.callback])
    return net


def _predict(kind: str, net, x: np.ndarray) -> np.ndarray:
    p = net.predict(x, batch_size=64, verbose=0)
    return p.reshape(len(x), -1)


def _fold_metrics(kind: str, y_true: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if kind == "discovery":
        y_pred = (probs[:, 1] >= threshold).astype(int)
        labels = [0, 1]
        f1 = f1_score(y_true, y_pred, zero_division=0)
    else:
        y_pred = probs.argmax(axis=1)
        labels = [0, 1, 2]
        f1 = f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
    return {"n": len(y_true), "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
            "f1": round(float(f1), 4),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


def train(kind: str, points_path, images: list, out_dir, *, bands: list[str], scale: float,
          window: int | None = None, folds: int = 10, epochs: int = 20, batch_size: int = 32,
          learning_rate: float = 1e-3, seed: int = 42, threshold: float = 0.6, name: str | None = None) -> dict:
    from sklearn.model_selection import StratifiedKFold

    if kind not in DEFAULT_WINDOW:
        raise InputDataError(f"unknown model kind '{kind}' (discovery or impact)")
    window = window or DEFAULT_WINDOW[kind]
    points = read_points(points_path)
    if kind == "impact":
        if "impact" not in points.columns:
            raise InputDataError(f"{points_path}: column 'impact' is needed to train the impact model")
        points = points.dropna(subset=["impact"]).reset_index(drop=True)
    refl, valid, used = extract_chips(points, images, window, bands, scale)
    if kind == "discovery":
        y = points.loc[used, "class"].to_numpy().astype(np.int64)
        classes = list(DISCOVERY_CLASSES)
    else:
        y = points.loc[used, "impact"].map(IMPACT_CLASSES.index).to_numpy().astype(np.int64)
        classes = list(IMPACT_CLASSES)
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    log.info("%s: %d chips of %d px from %d points (%s)", kind, len(y), window, len(points), counts)

    cv = []
    if folds >= 2:
        n_splits = min(folds, min(v for v in counts.values() if v > 0))
        if n_splits < folds:
            log.warning("%s: only %d-fold CV possible (smallest class has %d chips)", kind, n_splits, n_splits)
        if n_splits >= 2:
            skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            for f, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
                stats = normalisation_stats(refl[tr], valid[tr])
                xtr, xte = normalise(refl[tr], stats, valid[tr]), normalise(refl[te], stats, valid[te])
                net = _fit(kind, len(bands), window, xtr, y[tr], epochs, batch_size, learning_rate, seed + f,
                           f"{kind} fold {f + 1}/{n_splits}")
                m = _fold_metrics(kind, y[te], _predict(kind, net, xte), threshold)
                log.info("%s fold %d/%d: accuracy %.3f F1 %.3f", kind, f + 1, n_splits, m["accuracy"], m["f1"])
                cv.append(m)
    stats = normalisation_stats(refl, valid)
    x = normalise(refl, stats, valid)
    net = _fit(kind, len(bands), window, x, y, epochs, batch_size, learning_rate, seed, f"{kind} final")
    metrics = {"folds": cv}
    if cv:
        metrics["mean_accuracy"] = round(float(np.mean([m["accuracy"] for m in cv])), 4)
        metrics["mean_f1"] = round(float(np.mean([m["f1"] for m in cv])), 4)
        metrics["confusion_matrix_total"] = np.sum([m["confusion_matrix"] for m in cv], axis=0).tolist()
    card = {
        "kind": kind, "name": name or Path(out_dir).name,
        "architecture": "balaniuk2020-fcn" if kind == "discovery" else "balaniuk2020-impact-cnn",
        "bands": list(bands), "window": window, "classes": classes, "normalisation": stats,
        "metrics": metrics, "parameters": int(net.count_params()),
        "training": {"folds": folds, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                     "seed": seed, "augmentation": "8 flips/rotations"},
        "training_data": {"points": str(points_path), "images": [str(i) for i in images], "chips": len(y),
                          "class_counts": counts},
        "package_version": __version__,
    }
    if kind == "discovery":
        card.update({"stride": 27, "positive_class": "mine", "threshold": threshold})
    save_model(out_dir, net, card)
    return card
