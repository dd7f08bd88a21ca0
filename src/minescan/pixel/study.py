"""The band and index study: a LASSO path over a grid of lambda, tracking performance and every |w_i|.

Two models per feature set, both on features standardised with the training pixels' mean and std (so the
weights are comparable):

- ``lasso``: linear LASSO on the signed distance to the nearest mine edge (scikit-learn ``lasso_path``,
  objective ``1/(2n) ||y - Xw||^2 + lambda ||w||_1`` with the label standardised too, so one lambda grid
  suits both models); validation R^2; the weights are reported in metres per feature standard deviation;
- ``logistic``: L1-penalised logistic regression on mine / not mine (class weights balanced), with
  ``C = 1 / (n lambda)`` so that lambda weighs the mean loss as in the LASSO; validation AUC and F1 (at 0.5).

As lambda grows the weights go to zero one after the other; the order in which features leave the model
(the largest lambda at which each is still non-zero) ranks them. The validation pixels come from other
images than the training pixels (:func:`grouped_split`), or from another year (``split_year``).

Outputs in the report folder, per feature set ``S`` and model ``M``: ``path_S_M.csv`` (lambda, scores,
number of non-zero weights, ``|w|`` of every feature), ``order_S_M.csv`` (features in the order they leave
the model, the last to leave first), ``coef_paths_S.png`` and ``score_vs_lambda_S.png``, and
``study.json`` (the split, the counts and the top features).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from minescan.errors import InputDataError
from minescan.io_utils import atomic_output, atomic_write_text
from minescan.pixel.samples import PixelSamples

log = logging.getLogger(__name__)


def lambda_grid(n: int = 30, lo: float = 1e-4, hi: float = 1.0) -> np.ndarray:
    """``n`` values of lambda, log-spaced from ``hi`` down to ``lo`` (the order lasso_path uses)."""
    return np.geomspace(hi, lo, n)


def grouped_split(
    groups: np.ndarray, val_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation): whole groups (images) go to one side, never both."""
    from sklearn.model_selection import GroupShuffleSplit

    groups = np.asarray(groups)
    if len(np.unique(groups)) < 2:
        raise InputDataError("a grouped split needs pixels from at least two images (groups)")
    tr, va = next(
        GroupShuffleSplit(1, test_size=val_fraction, random_state=seed).split(groups, groups=groups)
    )
    train = np.zeros(len(groups), bool)
    train[tr] = True
    return train, ~train


def _standardise(X_tr: np.ndarray, X_va: np.ndarray):
    mean = X_tr.mean(axis=0)
    std = X_tr.std(axis=0)
    std[std < 1e-9] = 1.0
    return (X_tr - mean) / std, (X_va - mean) / std


def lasso_path_table(X_tr, y_tr, X_va, y_va, names: list[str], lambdas: np.ndarray) -> pd.DataFrame:
    """Linear LASSO path on standardised features: lambda, val_r2, n_nonzero and ``|w|`` of each feature."""
    from sklearn.linear_model import lasso_path
    from sklearn.metrics import r2_score

    Z_tr, Z_va = _standardise(np.asarray(X_tr, np.float64), np.asarray(X_va, np.float64))
    y_mean, y_std = float(np.mean(y_tr)), float(np.std(y_tr)) or 1.0
    alphas, coefs, _ = lasso_path(
        Z_tr, (np.asarray(y_tr, np.float64) - y_mean) / y_std, alphas=lambdas, max_iter=5000
    )
    coefs = coefs * y_std  # weights in label units (metres per standard deviation of each feature)
    rows = []
    for j, lam in enumerate(alphas):
        w = coefs[:, j]
        rows.append(
            {
                "lambda": float(lam),
                "val_r2": float(r2_score(y_va, Z_va @ w + y_mean)),
                "n_nonzero": int(np.count_nonzero(w)),
                **{f"|w|_{n}": abs(float(v)) for n, v in zip(names, w, strict=True)},
            }
        )
    return pd.DataFrame(rows)


def logistic_path_table(X_tr, y_tr, X_va, y_va, names: list[str], lambdas: np.ndarray) -> pd.DataFrame:
    """L1-logistic path on standardised features: lambda, val_auc, val_f1, n_nonzero, ``|w|`` per feature."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score

    Z_tr, Z_va = _standardise(np.asarray(X_tr, np.float64), np.asarray(X_va, np.float64))
    n = len(y_tr)
    rows = []
    for lam in lambdas:
        clf = LogisticRegression(
            C=1.0 / (n * lam),
            l1_ratio=1.0,
            solver="liblinear",
            class_weight="balanced",
            max_iter=2000,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Z_tr, y_tr)
        w = clf.coef_[0]
        p = clf.predict_proba(Z_va)[:, 1]
        auc = float(roc_auc_score(y_va, p)) if len(np.unique(y_va)) == 2 else float("nan")
        rows.append(
            {
                "lambda": float(lam),
                "val_auc": auc,
                "val_f1": float(f1_score(y_va, p >= 0.5, zero_division=0)),
                "n_nonzero": int(np.count_nonzero(w)),
                **{f"|w|_{n_}": abs(float(v)) for n_, v in zip(names, w, strict=True)},
            }
        )
    return pd.DataFrame(rows)


def exit_order(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Features in the order they leave the model as lambda grows, the last to leave (most useful) first.

    ``leaves_at`` is the largest lambda at which the weight is still non-zero (0 = never entered)."""
    lam = table["lambda"].to_numpy()
    rows = []
    for n in names:
        nz = table[f"|w|_{n}"].to_numpy() > 0
        rows.append(
            {
                "feature": n,
                "leaves_at": float(lam[nz].max()) if nz.any() else 0.0,
                "max_abs_w": float(table[f"|w|_{n}"].max()),
            }
        )
    out = pd.DataFrame(rows).sort_values(["leaves_at", "max_abs_w"], ascending=False, kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


def _plots(
    tables: dict[str, pd.DataFrame], names: list[str], set_name: str, outdir: Path, top: int = 8
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    for ax, (model, t) in zip(fig.subplots(1, len(tables), squeeze=False)[0], tables.items(), strict=True):
        order = exit_order(t, names)["feature"].tolist()
        for n in names[::-1]:
            labelled = n in order[:top]
            ax.plot(
                t["lambda"],
                t[f"|w|_{n}"],
                lw=1.6 if labelled else 0.6,
                alpha=1 if labelled else 0.4,
                label=n if labelled else None,
                color=None if labelled else "#999999",
            )
        ax.set_xscale("log")
        ax.set_xlabel("lambda")
        ax.set_ylabel("|w| (standardised features)")
        ax.set_title(f"{set_name}: {model}")
        ax.legend(fontsize=7, title=f"last {top} to leave", title_fontsize=7)
    fig.tight_layout()
    with atomic_output(outdir / f"coef_paths_{set_name}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for model, t in tables.items():
        for col in [c for c in t.columns if c.startswith("val_")]:
            ax.plot(t["lambda"], t[col], marker=".", label=f"{model} {col[4:]}")
    ax.set_xscale("log")
    ax.set_xlabel("lambda")
    ax.set_ylabel("validation score")
    ax.set_title(f"{set_name}: score vs lambda")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(outdir / f"score_vs_lambda_{set_name}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})


def run_study(
    samples: dict[str, PixelSamples],
    outdir,
    lambdas: np.ndarray,
    *,
    val_fraction: float = 0.25,
    split_year: int | None = None,
    seed: int = 0,
    models=("lasso", "logistic"),
) -> dict:
    """The study of each feature set in ``samples`` (name -> pixels, the same pixels in every set).

    Validation: the images of a grouped split, or with ``split_year`` every pixel of a later year."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"lambdas": [float(v) for v in lambdas], "sets": {}}
    for set_name, s in samples.items():
        if split_year is not None:
            train, val = s.year <= split_year, s.year > split_year
            split = f"train: years <= {split_year}, validation: later years"
        else:
            train, val = grouped_split(s.group, val_fraction, seed)
            split = f"grouped by image, {val_fraction:.0%} of the images for validation (seed {seed})"
        if not train.any() or not val.any():
            raise InputDataError(
                f"feature set {set_name}: the split leaves no training or no validation pixel"
            )
        assert not set(s.group[train]) & set(s.group[val])  # no image on both sides
        tables = {}
        if "lasso" in models:
            if np.isnan(s.distance_m).all():
                log.warning("%s: no distance labels (chips): LASSO on the distance skipped", set_name)
            else:
                tables["lasso"] = lasso_path_table(
                    s.X[train], s.distance_m[train], s.X[val], s.distance_m[val], s.features, lambdas
                )
        if "logistic" in models:
            tables["logistic"] = logistic_path_table(
                s.X[train], s.mine[train], s.X[val], s.mine[val], s.features, lambdas
            )
        entry = {
            "split": split,
            "train_pixels": int(train.sum()),
            "val_pixels": int(val.sum()),
            "train_images": len(set(s.group[train])),
            "val_images": len(set(s.group[val])),
            "features": list(s.features),
            "models": {},
        }
        for model, t in tables.items():
            with atomic_output(outdir / f"path_{set_name}_{model}.csv") as tmp:
                t.to_csv(tmp, index=False, float_format="%.6g")
            order = exit_order(t, s.features)
            with atomic_output(outdir / f"order_{set_name}_{model}.csv") as tmp:
                order.to_csv(tmp, index=False, float_format="%.6g")
            score = "val_r2" if model == "lasso" else "val_auc"
            best = t.loc[t[score].idxmax()] if t[score].notna().any() else t.iloc[-1]
            entry["models"][model] = {
                "best_lambda": float(best["lambda"]),
                f"best_{score}": round(float(best[score]), 4),
                "nonzero_at_best": int(best["n_nonzero"]),
                "last_to_leave": order["feature"].head(10).tolist(),
            }
        if tables:
            _plots(tables, s.features, set_name, outdir)
        summary["sets"][set_name] = entry
    atomic_write_text(outdir / "study.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
