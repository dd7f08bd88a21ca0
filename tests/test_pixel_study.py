"""The band study: LASSO / L1-logistic paths, the order features leave, grouped splits, the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from minescan.pixel.samples import PixelSamples
from minescan.pixel.study import (
    exit_order,
    grouped_split,
    lambda_grid,
    lasso_path_table,
    logistic_path_table,
    run_study,
)

NAMES = ["f0", "f1", "f2", "f3", "f4", "f5"]


def two_feature_problem(n=3000, seed=0):
    """Only f0 (strongly) and f2 (weakly) matter; the other four are noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    score = 3.0 * X[:, 0] + 1.0 * X[:, 2]
    dist = -score * 20 + rng.normal(scale=5.0, size=n)
    mine = (score + rng.normal(scale=0.5, size=n) > 0).astype(np.int8)
    groups = np.repeat([f"img{i}" for i in range(20)], n // 20)
    return PixelSamples(NAMES, X.astype(np.float32), dist.astype(np.float32), mine, groups, np.zeros(n, int))


@pytest.mark.parametrize("model", ["lasso", "logistic"])
def test_weights_reach_zero_in_order(model):
    s = two_feature_problem()
    lam = lambda_grid(40, 1e-4, 100.0 if model == "lasso" else 1.0)
    tr, va = grouped_split(s.group, 0.25, 0)
    if model == "lasso":
        t = lasso_path_table(s.X[tr], s.distance_m[tr], s.X[va], s.distance_m[va], NAMES, lam)
        assert t["val_r2"].max() > 0.9
    else:
        t = logistic_path_table(s.X[tr], s.mine[tr], s.X[va], s.mine[va], NAMES, lam)
        assert t["val_auc"].max() > 0.95
    order = exit_order(t, NAMES)
    assert order["feature"].tolist()[:2] == ["f0", "f2"]  # the two that matter leave last, f0 after f2
    lv = dict(zip(order["feature"], order["leaves_at"], strict=True))
    assert lv["f0"] > lv["f2"] > max(lv[f] for f in ("f1", "f3", "f4", "f5"))
    assert t["n_nonzero"].iloc[0] <= 1 and t["n_nonzero"].iloc[-1] >= 4  # large lambda: (almost) nothing


def test_grouped_split_never_shares_an_image():
    groups = np.repeat(np.arange(30).astype(str), 17)
    for seed in range(5):
        tr, va = grouped_split(groups, 0.3, seed)
        assert tr.any() and va.any() and not (tr & va).any() and (tr | va).all()
        assert not set(groups[tr]) & set(groups[va])


def test_study_report(tmp_path):
    s = two_feature_problem(1200)
    summary = run_study({"toy": s}, tmp_path, lambda_grid(12, 1e-3, 10.0))
    for name in (
        "path_toy_lasso.csv",
        "path_toy_logistic.csv",
        "order_toy_lasso.csv",
        "order_toy_logistic.csv",
        "coef_paths_toy.png",
        "score_vs_lambda_toy.png",
        "study.json",
    ):
        assert (tmp_path / name).is_file(), name
    t = pd.read_csv(tmp_path / "path_toy_lasso.csv")
    assert list(t.columns) == ["lambda", "val_r2", "n_nonzero", *[f"|w|_{n}" for n in NAMES]]
    assert summary["sets"]["toy"]["models"]["lasso"]["last_to_leave"][:2] == ["f0", "f2"]
    assert json.loads((tmp_path / "study.json").read_text()) == summary
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    run_study({"toy": s}, tmp_path, lambda_grid(12, 1e-3, 10.0))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first  # reruns give the same bytes


def test_chip_evaluation_on_a_toy_archive(tmp_path):
    """Mine chips are redder (B4 > B2) than the others; the pixel models must see it."""
    from minescan.pixel.evaluate import evaluate_chips, sensitivity_at_specificity

    rng = np.random.default_rng(0)
    n = 120
    y = (np.arange(n) % 3 == 0).astype(np.int8)
    x = rng.integers(60, 120, (n, 8, 8, 3)).astype(np.uint8)
    x[y == 1, :, :, 0] += 60
    period = np.where(np.arange(n) < 80, "2023-01-01_2024-01-01", "2024-01-01_2025-01-01")
    np.savez(tmp_path / "chips.npz", x=x, y=y, period=period)
    res = evaluate_chips(
        tmp_path / "chips.npz",
        tmp_path / "out",
        models=("logistic",),
        feature_sets=("indices",),
        pixels_per_chip=4,
        score_pixels=16,
        folds=2,
    )
    e = res["models"]["logistic-indices"]
    assert res["test_chips"] == 40 and res["train_chips"] == 80
    assert e["chip_mean"]["auc"] == 1.0 and e["chip_mean"]["sensitivity_at_spec_0.99"] == 1.0
    assert (tmp_path / "out" / "chips_eval.json").is_file()
    assert sensitivity_at_specificity([0, 0, 1, 1], [0.1, 0.6, 0.5, 0.9])[0] == 0.5


def test_study_without_distance_labels(tmp_path):
    s = two_feature_problem(600)
    s.distance_m[:] = np.nan  # chips: mine / not mine only
    summary = run_study({"toy": s}, tmp_path, lambda_grid(5, 1e-3, 1.0))
    assert list(summary["sets"]["toy"]["models"]) == ["logistic"]
    assert (tmp_path / "coef_paths_toy.png").is_file() and not (tmp_path / "path_toy_lasso.csv").exists()
