"""Pixel models: samples from images + polygons, training with grouped CV, the skops model directory."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from conftest import SMALL_GRID, grid_tile, write_scene
from shapely.geometry import box

from minescan import SENTINEL2_BANDS
from minescan.errors import ModelError
from minescan.pixel.features import FeatureSet
from minescan.pixel.samples import PixelSamples, image_samples
from minescan.pixel.train import (
    PIXEL_MODEL_FILE,
    load_pixel_model,
    recall_at_precision,
    save_pixel_model,
    train_pixel_model,
)


def squares_of(tile, k):
    c0, r0, _, _ = tile.core_px()
    return [
        (c0 + 100 + 40 * k, r0 + 120, c0 + 160 + 40 * k, r0 + 170),
        (c0 + 400, r0 + 300 + 30 * k, c0 + 440, r0 + 360 + 30 * k),
    ]


def squares_polygons(tile, squares, path):
    r = SMALL_GRID.resolution_m
    geoms = [box(c0 * r, -r1 * r, c1 * r, -r0 * r) for c0, r0, c1, r1 in squares]
    gpd.GeoDataFrame(geometry=geoms, crs=tile.id.epsg).to_crs(4326).to_file(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("pixel-images")
    tile = grid_tile()
    squares = squares_of(tile, 1)  # the same mines in every image (noise differs)
    paths = [
        write_scene(d / f"img{k}.tif", [tile], squares=squares, noise_seed=k, margin_px=0) for k in range(4)
    ]
    return paths, squares_polygons(tile, squares, d / "mines.geojson")


@pytest.fixture(scope="module")
def samples(images):
    paths, polygons = images
    fs = FeatureSet("indices", SENTINEL2_BANDS)
    return fs, PixelSamples.concat(
        [image_samples(p, fs, polygons, "2026Q1", max_pixels=400, seed=1) for p in paths]
    )


def test_samples_from_images(samples):
    fs, s = samples
    assert s.X.shape == (1600, len(fs.features)) and sorted(set(s.group)) == [f"img{k}.tif" for k in range(4)]
    assert 0.3 < s.mine.mean() <= 0.5 and (s.year == 2026).all()
    assert (s.distance_m[s.mine == 1] < 0).all() and (s.distance_m[s.mine == 0] > 0).all()
    b1 = s.X[:, 0]
    assert b1[s.mine == 1].min() == pytest.approx(0.5)  # the bright squares' B1


def test_recall_at_precision():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.7, 0.9])
    assert recall_at_precision(y, p, 0.6) == pytest.approx((1.0, 0.75, 0.3))
    assert recall_at_precision(y, p, 0.9) == pytest.approx((2 / 3, 1.0, 0.8))


@pytest.mark.parametrize("model", ["forest", "logistic"])
def test_train_and_load(samples, tmp_path, model):
    fs, s = samples
    card = train_pixel_model(s, fs, tmp_path / model, model=model, precision_floor=0.9, folds=2, seed=0)
    assert card["kind"] == "pixel" and card["feature_set"]["features"] == list(fs.features)
    assert card["metrics"]["cv"]["recall"] > 0.9 and card["metrics"]["cv"]["groups"] == "image"
    m = load_pixel_model(tmp_path / model)
    p = m.predict_proba(s.X[:200])
    assert ((p >= m.threshold) == (s.mine[:200] == 1)).mean() > 0.95
    assert np.isnan(m.predict_proba(np.full((1, len(fs.features)), np.nan)))[0]
    first = (tmp_path / model / PIXEL_MODEL_FILE).read_bytes()
    train_pixel_model(s, fs, tmp_path / model, model=model, precision_floor=0.9, folds=2, seed=0)
    assert (tmp_path / model / PIXEL_MODEL_FILE).read_bytes() == first  # same inputs, same bytes


def test_model_file_that_would_run_code_is_refused(tmp_path):
    import os

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    fs = FeatureSet("bands", ("B4", "B3", "B2"))
    card = {
        "kind": "pixel",
        "bands": list(fs.bands),
        "feature_set": fs.as_card(),
        "window": 1,
        "classes": ["background", "mine"],
        "normalisation": {},
        "threshold": 0.5,
    }
    save_pixel_model(tmp_path / "evil", make_pipeline(FunctionTransformer(os.system)), card)
    with pytest.raises(ModelError, match=r"model.skops: refused, .*system"):
        load_pixel_model(tmp_path / "evil")
    (tmp_path / "evil" / PIXEL_MODEL_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable skops file"):
        load_pixel_model(tmp_path / "evil")
    (tmp_path / "evil" / "card.json").write_text(json.dumps({**card, "kind": "discovery"}))
    with pytest.raises(ModelError, match="expected 'pixel'"):
        load_pixel_model(tmp_path / "evil")


def test_cli_study_and_train(images, tmp_path, capsys):
    from minescan.cli import run

    paths, polygons = images
    data = [
        "--images",
        *map(str, paths),
        "--periods",
        "2025",
        "2025",
        "2026",
        "2026",
        "--polygons",
        str(polygons),
        "--max-pixels-per-image",
        "300",
    ]
    assert run(["pixel", "study", *data, "--n-lambdas", "6", "--out", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out
    assert "bands lasso" in out and "indices logistic" in out
    assert (tmp_path / "study" / "order_indices_lasso.csv").is_file()
    assert (
        run(
            [
                "pixel",
                "study",
                *data,
                "--split-year",
                "2025",
                "--feature-sets",
                "bands",
                "--n-lambdas",
                "4",
                "--out",
                str(tmp_path / "by-year"),
            ]
        )
        == 0
    )
    assert "years <= 2025" in (tmp_path / "by-year" / "study.json").read_text()
    assert (
        run(
            [
                "pixel",
                "train",
                *data,
                "--feature-set",
                "bands",
                "--model",
                "logistic",
                "--folds",
                "2",
                "--out",
                str(tmp_path / "model"),
            ]
        )
        == 0
    )
    assert load_pixel_model(tmp_path / "model").card["training_data"]["periods"] == [
        "2025",
        "2025",
        "2026",
        "2026",
    ]
    assert (
        run(
            [
                "pixel",
                "study",
                "--images",
                str(paths[0]),
                "--polygons",
                str(tmp_path / "nope.gpkg"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "nope.gpkg: mine polygon file not found" in capsys.readouterr().err
