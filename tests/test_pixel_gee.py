"""A linear pixel model as an Earth Engine expression (recording fake ``ee``): the exact text, and that the
formula computes the model's own probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minescan.errors import ModelError
from minescan.pixel.features import FeatureSet, compute_features
from minescan.pixel.train import PixelModel
from minescan.sources.gee.pixel_map import linear_terms, pixel_map_image, probability_formula
from minescan.sources.gee.recorder import RecordingEE
from minescan.sources.gee.settings import GeeSettings


def rgb_logistic(tmp_path, name="indices"):
    """StandardScaler + logistic on (B4, B3, B2) indices with hand-set weights; B3's weight is zero."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    fs = FeatureSet(name, ("B4", "B3", "B2"))
    n = len(fs.features)
    rng = np.random.default_rng(0)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    pipe.fit(rng.normal(size=(20, n)), np.arange(20) % 2)
    pipe["scale"].mean_ = np.array([0.1] + [0.0] * (n - 1))
    pipe["scale"].scale_ = np.array([2.0] + [1.0] * (n - 1))
    coef = np.zeros(n)
    coef[0], coef[2] = 4.0, -1.5  # B4 (standardised), B2
    if name == "indices":
        coef[fs.features.index("AMWI")] = 3.0
    pipe["clf"].coef_ = coef[None]
    pipe["clf"].intercept_ = np.array([-0.5])
    card = {"kind": "pixel", "estimator": "logistic", "feature_set": fs.as_card(), "threshold": 0.5}
    return PixelModel(tmp_path, card, pipe)


def test_linear_terms_fold_the_standardisation(tmp_path):
    b, terms = linear_terms(rgb_logistic(tmp_path))
    assert b == pytest.approx(-0.5 - 4.0 * 0.1 / 2.0)
    assert terms == [("B4", pytest.approx(2.0)), ("B2", pytest.approx(-1.5)), ("AMWI", pytest.approx(3.0))]


def test_formula_computes_the_models_probabilities(tmp_path):
    model = rgb_logistic(tmp_path)
    formula, used = probability_formula(model)
    assert formula == "1 / (1 + exp(-(-0.7 + 2 * B4 - 1.5 * B2 + 3 * (B4 - B2) / (B4 + B2))))"
    assert used == ["B4", "B2"]  # B3 has no weight: not read
    rng = np.random.default_rng(1)
    raw = rng.integers(100, 4000, (3, 5, 5)).astype(np.uint16)
    feats = compute_features(raw, model.feature_set, 1e-4, 0)
    want = model.predict_proba(feats.reshape(len(model.feature_set.features), -1).T)
    refl = raw.astype(np.float64) * 1e-4
    got = [
        eval(
            formula, {"exp": math.exp}, {"B4": refl[0].flat[i], "B3": refl[1].flat[i], "B2": refl[2].flat[i]}
        )
        for i in range(25)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_expression_text(tmp_path):
    from minescan.sources.gee.composite import build_composite

    ee = RecordingEE()
    settings = GeeSettings(cloud_mask="none")
    area = ee.Geometry({"type": "Point"})
    text = repr(pixel_map_image(ee, settings, rgb_logistic(tmp_path), "2024", area))
    c = repr(build_composite(ee, settings, "2024", area, warn=False))
    assert c.startswith(
        "ee.ImageCollection('COPERNICUS/S2_HARMONIZED').filterDate('2024-01-01', '2025-01-01')"
        ".filterBounds(ee.Geometry({'type': 'Point'}))"
    )
    r = f"{c}.updateMask({c}.neq(0).reduce(ee.Reducer.min())).select(['B4', 'B2']).toFloat().multiply(0.0001)"
    assert text == (
        f"{r}.expression('1 / (1 + exp(-(-0.7 + 2 * B4 - 1.5 * B2 + 3 * (B4 - B2) / (B4 + B2))))', "
        f"{{'B4': {r}.select('B4'), 'B2': {r}.select('B2')}}).rename('mine_probability').toFloat()"
    )


def test_refuses_models_without_an_expression(tmp_path):
    with pytest.raises(ModelError, match="dist_water"):
        linear_terms(rgb_logistic(tmp_path, "full"))
    from sklearn.ensemble import RandomForestClassifier

    forest = PixelModel(
        tmp_path,
        {"estimator": "forest", "feature_set": FeatureSet("bands", ("B4",)).as_card()},
        RandomForestClassifier(2).fit([[0.0], [1.0]], [0, 1]),
    )
    with pytest.raises(ModelError, match="no Earth Engine expression"):
        linear_terms(forest)


def test_cli_show_expression(tmp_path, capsys):
    import geopandas as gpd
    import yaml
    from shapely.geometry import box

    from minescan.cli import run
    from minescan.pixel.train import save_pixel_model

    m = rgb_logistic(tmp_path)
    save_pixel_model(
        tmp_path / "model",
        m.estimator,
        {
            **m.card,
            "bands": ["B4", "B3", "B2"],
            "window": 1,
            "classes": ["background", "mine"],
            "normalisation": {},
        },
    )
    gpd.GeoDataFrame(geometry=[box(-55, -10, -54.9, -9.9)], crs=4326).to_file(tmp_path / "region.geojson")
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "region": {"name": "r", "file": str(tmp_path / "region.geojson")},
                "periods": ["2023", "2024"],
                "source": {"kind": "gee"},
            }
        )
    )
    assert (
        run(
            [
                "gee",
                "pixel-map",
                "--config",
                str(tmp_path / "c.yaml"),
                "--model",
                str(tmp_path / "model"),
                "--show-expression",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "filterDate('2024-01-01', '2025-01-01')" in out and "ee.Geometry({'type': 'Polygon'" in out
    assert ".expression('1 / (1 + exp(-(-0.7 + 2 * B4" in out
