"""The real Snakemake DAG with a pixel model as the detector: classify, merge and sites unchanged."""

import json

import numpy as np
import pytest
from conftest import grid_tile, mine_squares, run_snakemake, write_tiny_config, write_tiny_scene

from minescan import SENTINEL2_BANDS
from minescan.pixel.features import FeatureSet
from minescan.pixel.train import save_pixel_model

pytestmark = pytest.mark.slow


def bright_b1_pixel_model(path):
    """Logistic model on the 'bands' set: P(mine) = sigmoid(40 B1 - 17) (the bright squares' B1 is 0.5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    fs = FeatureSet("bands", SENTINEL2_BANDS)
    pipe = make_pipeline(LogisticRegression()).fit(
        np.random.default_rng(0).normal(size=(20, 12)), np.arange(20) % 2
    )
    pipe[-1].coef_[:] = 0
    pipe[-1].coef_[0, 0] = 40.0
    pipe[-1].intercept_[:] = -17.0
    save_pixel_model(
        path,
        pipe,
        {
            "kind": "pixel",
            "name": "bright-b1",
            "bands": list(fs.bands),
            "feature_set": fs.as_card(),
            "window": 1,
            "classes": ["background", "mine"],
            "normalisation": {},
            "threshold": 0.6,
            "cell_statistic": "max",
        },
    )
    return path


def test_scan_with_a_pixel_model(tmp_path, impact_model_dir):
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    squares = mine_squares(tiles)
    write_tiny_scene(tmp_path, tiles, squares)
    model = bright_b1_pixel_model(tmp_path / "pixel-model")
    write_tiny_config(tmp_path, model, impact_model_dir)
    run_snakemake(tmp_path)
    out = tmp_path / "results" / "tiny" / "2026Q1"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quadrants"] == 8
    assert summary["sites"] == len(squares) and summary["sites_by_impact"] == {"high": len(squares)}
    q = out / "quadrants" / f"{tiles[0].name}_NW"
    assert (q / "probability_10m.tif").is_file() and (q / "mine_fraction.tif").is_file()
