"""minescan pixel demo-eval on a tiny SIMULATED demo scene: a logistic pixel model trained on the training
scene, scored on two periods and their median, next to stand-in 'FCN' sites."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from shapely.geometry import box

from minescan.cli import run
from minescan.vector_io import read_vector, write_vector

pytestmark = pytest.mark.slow


def demo_scene(d, name, period=None):
    args = ["--training"] if period is None else ["--period", period]
    assert (
        run(
            [
                "demo-scene",
                "--region",
                str(d / "region.geojson"),
                *args,
                "--seed",
                "3",
                "--sites-per-tile",
                "25",
                "--tile-px",
                "256",
                "--halo-px",
                "32",
                "--resolution-m",
                "10",
                "--scene",
                str(d / f"s_{name}.tif"),
                "--truth",
                str(d / f"t_{name}.gpkg"),
            ]
        )
        == 0
    )
    return d / f"s_{name}.tif", d / f"t_{name}.gpkg"


def test_demo_eval_on_a_tiny_scene(tmp_path, capsys):
    region = box(-55.80, -6.02, -55.76, -5.98)  # 4.4 km inside the demo region
    gpd.GeoDataFrame({"name": ["t"]}, geometry=[region], crs=4326).to_file(tmp_path / "region.geojson")
    train = demo_scene(tmp_path, "training")
    scenes = [demo_scene(tmp_path, p, p) for p in ("2026Q1", "2026Q2")]
    # stand-in FCN sites: the 2026Q1 true mines themselves, so within the crop recall = precision = 1
    truth = read_vector(scenes[0][1])
    # plus one 'site' far outside the crop, which must not count
    fcn = truth[truth["class"] == "mine"].to_crs(4326)
    far = gpd.GeoDataFrame(geometry=[box(-55.60, -5.90, -55.59, -5.89)], crs=4326)
    write_vector(gpd.pd.concat([fcn, far], ignore_index=True), tmp_path / "fcn_sites.gpkg")
    (tmp_path / "summary.json").write_text(json.dumps({"evaluation": {"recall": 0.5, "precision": 0.25}}))
    out = tmp_path / "pixel" / "evaluation.json"
    args = ["pixel", "demo-eval", "--training-scene", str(train[0]), "--training-truth", str(train[1]),
            "--scenes", *(str(s) for s, _ in scenes), "--truths", *(str(t) for _, t in scenes),
            "--periods", "2026Q1", "2026Q2", "--fcn-sites", str(tmp_path / "fcn_sites.gpkg"),
            "--fcn-summary", str(tmp_path / "summary.json"), "--crop-px", "512", "--max-pixels", "3000",
            "--out", str(out)]  # fmt: skip
    assert run(args) == 0
    printed = capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert rep["periods"] == ["2026Q1", "2026Q2"] and rep["crop_px"] == 512
    m = rep["models"]["logistic"]
    assert (tmp_path / "pixel" / "model-logistic" / "card.json").is_file()
    for period in ("2026Q1", "2026Q2"):
        px = m["per_period"][period]["pixel"]
        assert px["tp"] + px["fn"] > 100  # the crop holds mine pixels
        assert px["recall"] > 0.5  # the simulated mines are spectrally distinct
        assert m["per_period"][period]["site"]["truth_mines"] >= 1
    assert m["median"]["periods"] == 2 and m["median"]["truth_period"] == "2026Q2"
    fcn = rep["fcn"]["crop"]
    assert fcn["truth_mines"] >= 1 and fcn["recall"] == 1.0 and fcn["precision"] == 1.0
    assert rep["fcn"]["whole_region"]["recall"] == 0.5
    assert "logistic median of 2" in printed and "FCN scan 2026Q1, same crop: site recall 1.0" in printed
    # one scene per period
    bad = [*args[: args.index("--truths") + 1], str(scenes[0][1]), *args[args.index("--periods") :]]
    assert run(bad) == 2
    assert "2 scenes, 1 truths and 2 periods" in capsys.readouterr().err
