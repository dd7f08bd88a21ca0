"""The shipped real-data model ``models/amazon-rgb48``: what the scan relies on, and that it still scores dev
chips exactly as it did when it was trained (reference scores recorded in its card).

Tests that need the real chips skip when ../shared/data/real-chips/dev.npz is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "amazon-rgb48"
DEV = ROOT.parent / "shared" / "data" / "real-chips" / "dev.npz"

needs_dev = pytest.mark.skipif(not DEV.is_file(), reason=f"real chips not available at {DEV}")


@pytest.fixture(scope="module")
def model():
    from minescan.models.store import load_model

    return load_model(MODEL, expect_kind="discovery")


def test_card_has_what_the_scan_and_the_readme_need():
    card = json.loads((MODEL / "card.json").read_text())
    assert card["kind"] == "discovery"
    assert card["bands"] == ["B4", "B3", "B2"]
    assert card["window"] == 48 and card["stride"] == 27
    assert card["classes"] == ["background", "mine"] and card["positive_class"] == "mine"
    assert 0.0 < card["threshold"] < 1.0
    norm = card["normalisation"]
    assert norm["clip_max"] == pytest.approx(0.3)
    assert len(norm["mean"]) == 3 and len(norm["std"]) == 3 and min(norm["std"]) > 0
    assert 0.05 < norm["mean"][0] < 0.15  # reflectance, not uint8 or DN
    assert card["tta"] in ("none", "d4")
    m = card["metrics"]
    for key in ("auc", "sensitivity", "specificity", "precision", "f1", "sensitivity_at_specificity_0.99"):
        assert 0.0 <= m[key] <= 1.0, key
    # the card's threshold is the one chosen on validation, for the card's scoring mode
    assert m["threshold"] == pytest.approx(card["threshold"], abs=1e-6)
    # grouped splits: in every fold no gallery (and so no clear/cloudy twin) is on both sides
    assert len(m["folds"]) >= 1
    for fold in m["folds"]:
        assert fold["validation_galleries"]
        assert not set(fold["train_galleries"]) & set(fold["validation_galleries"])
    td = card["training_data"]
    assert "CC BY 4.0" in td["licence"] and "Earth Genome" in td["licence"]
    assert "earthrise-media/mining-detector" in td["source"]


def test_model_is_small():
    size = sum(f.stat().st_size for f in MODEL.iterdir() if f.is_file())
    assert size < 5 * 2**20


def test_fully_convolutional_with_stride_27(model):
    net = model.network
    assert tuple(net.input_shape) == (None, None, None, 3)
    rng = np.random.default_rng(1)
    chip = rng.normal(size=(1, 48, 48, 3)).astype(np.float32)
    out = np.asarray(net(chip, training=False))
    assert out.shape == (1, 1, 1, 2)
    assert out.sum(axis=-1) == pytest.approx(1.0, abs=1e-5)
    # a 7 x 7-cell array: cell (i, j) is the chip at pixels [27i, 27i + 48) wherever 'same' padding
    # does not reach (cells away from the array edge)
    big = rng.normal(size=(1, 27 * 7 + 21, 27 * 7 + 21, 3)).astype(np.float32)
    tile = np.asarray(net(big, training=False))
    assert tile.shape == (1, 7, 7, 2)
    for i, j in [(1, 1), (3, 4), (5, 2)]:
        crop = big[:, 27 * i - 27:27 * i + 48 + 27, 27 * j - 27:27 * j + 48 + 27]  # one cell of context
        sub = np.asarray(net(crop, training=False))
        assert sub[0, 1, 1] == pytest.approx(tile[0, i, j], abs=1e-5)


@needs_dev
def test_reference_scores_reproduce(model):
    from minescan.models.score_chips import score_chips

    ref = model.card["reference_scores"]
    d = np.load(DEV)
    x = d["x"][ref["indices"]]
    scores = score_chips(model, x, tta=ref["tta"])
    assert scores == pytest.approx(ref["scores"], abs=1e-4)


@needs_dev
def test_evaluate_chips_on_dev_sample(model, tmp_path, capsys):
    """The CLI on a fixed 200-chip sample of dev: same scores as the library, sane metrics, per-source rates."""
    from minescan.cli import run as main
    from minescan.models.score_chips import score_chips

    d = np.load(DEV)
    idx = np.random.default_rng(3).choice(len(d["y"]), 200, replace=False)
    path = tmp_path / "sample.npz"
    np.savez(path, x=d["x"][idx], y=d["y"][idx], source=d["source"][idx])
    assert main(["evaluate-chips", "--model", str(MODEL), "--chips", str(path), "--json",
                 "--out", str(tmp_path / "s.csv")]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["n"] == 200 and r["threshold"] == pytest.approx(model.threshold)
    for key in ("auc", "sensitivity", "specificity", "precision", "f1", "sensitivity_at_specificity_0.99"):
        assert key in r
    assert r["auc"] > 0.9  # chips the final model was fitted on: a sanity check, not a validation figure
    assert sum(v["n"] for v in r["per_source"].values()) == 200
    lib = score_chips(model, d["x"][idx])
    flagged = int((lib >= model.threshold).sum())
    assert r["n_flagged"] == flagged


# --- the training code (fast: tiny networks, synthetic chips) ---------------------------------------------------

def test_gallery_grouping_keeps_twins_together():
    from minescan.models.chips import gallery_of

    clear = "v3.1_2023_negatives_S2L1C_clear0.75_2023-01-01_2024-01-01"
    cloudy = "v3.1_2023_negatives_S2L1C_clear0.05_2023-01-01_2024-01-01"
    assert gallery_of(clear) == gallery_of(cloudy) == "v3.1_2023_negatives"
    assert gallery_of("punino_positives_curated2026-04-05_rgb_preview") == "punino_positives_curated2026-04-05"


@needs_dev
def test_temporal_folds_are_grouped_by_gallery():
    from minescan.models.chips import load_chips
    from minescan.models.train_chips import TrainConfig, galleries, temporal_split

    chips = load_chips(DEV)
    g = galleries(chips)
    held = np.zeros(len(chips), dtype=int)
    for years in TrainConfig().folds:
        tr, va = temporal_split(chips, years)
        assert not set(g[tr]) & set(g[va])
        assert {str(p)[:4] for p in chips.period[va]} == set(years)
        held[va] += 1
    assert held.max() == 1  # each chip is validated at most once
    assert set(chips.period[held == 0]) == {"unknown"}  # only the undated galleries always train


def _synthetic_chips(tmp_path, n=96):
    """Mines are bright squares on a dark background; sources and periods as in dev.npz."""
    rng = np.random.default_rng(0)
    x = rng.integers(40, 70, (n, 48, 48, 3)).astype(np.uint8)
    y = (np.arange(n) % 2).astype(np.int8)
    for i in np.flatnonzero(y):
        r, c = rng.integers(4, 30, 2)
        x[i, r:r + 12, c:c + 12] = 200
    x[0] = 255  # a saturated chip and a no-data patch, as in the real data
    x[2, :10, :10] = 0
    period = np.where(np.arange(n) < n // 2, "2024-01-01_2025-01-01", "2019-01-01_2020-01-01")
    source = np.array([f"g{y_}_{p[:4]}_S2L1C_clear0.75_{p}" for y_, p in zip(y, period, strict=True)])
    path = tmp_path / "synthetic.npz"
    np.savez(path, x=x, y=y, source=source, period=period, clear=np.array(["0.75"] * n))
    return path


def test_train_chips_writes_a_scan_ready_model(tmp_path, capsys):
    from minescan.cli import run as main
    from minescan.models.store import load_model

    chips = _synthetic_chips(tmp_path)
    config = json.dumps({"branches": [[4, 4, 4, 4], [4, 4, 4, 4]], "epochs": 2, "batch_size": 32,
                         "folds": [["2024"], ["2019"]]})
    out = tmp_path / "model"
    assert main(["train-chips", "--chips", str(chips), "--out", str(out), "--config", config, "--seed", "3"]) == 0
    m = load_model(out, expect_kind="discovery")
    card = m.card
    assert card["bands"] == ["B4", "B3", "B2"] and card["window"] == 48 and card["stride"] == 27
    assert tuple(m.network.input_shape) == (None, None, None, 3)
    assert m.network(np.zeros((1, 48, 48, 3), np.float32)).shape == (1, 1, 1, 2)
    assert card["metrics"]["n"] == 96 and len(card["metrics"]["folds"]) == 2
    assert card["threshold"] == pytest.approx(card["metrics"]["threshold"], abs=1e-6)
    assert card["training_data"]["n_chips"] == 96 and card["training"]["seed"] == 3
    # the recorded reference scores are what the saved model gives
    from minescan.models.score_chips import score_chips

    ref = card["reference_scores"]
    x = np.load(chips)["x"][ref["indices"]]
    assert score_chips(m, x, tta=ref["tta"]) == pytest.approx(ref["scores"], abs=1e-5)


def test_train_chips_rejects_unlabelled_input(tmp_path, capsys):
    from minescan.cli import run as main

    path = tmp_path / "u.npz"
    np.savez(path, x=np.zeros((4, 48, 48, 3), np.uint8))
    assert main(["train-chips", "--chips", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "'y'" in err and str(path) in err


def test_scan_applies_the_shipped_model_to_12_band_tiles(tmp_path):
    """A scan config can name models/amazon-rgb48: bands are picked by name, cells on the 27 px stride."""
    import rasterio
    from conftest import grid_tile, write_scene
    from shapely.geometry import box

    from minescan import SENTINEL2_BANDS
    from minescan.grid import to_crs
    from minescan.models.store import load_model
    from minescan.scan.detect import run_detect
    from minescan.sources.local import make_tile

    model = load_model(ROOT / "models" / "amazon-rgb48", expect_kind="discovery")
    assert model.band_indices(list(SENTINEL2_BANDS), "tile") == [3, 2, 1]
    assert model.scan_threshold == model.card["threshold_without_tta"] != model.threshold
    t = grid_tile()
    scene = write_scene(tmp_path / "scene.tif", [t], noise_seed=2)
    make_tile(t, [scene], list(SENTINEL2_BANDS), tmp_path / "tile.tif")
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    info = run_detect(tmp_path / "tile.tif", t, "NE", model, region, 1e-4, None, 8, tmp_path / "p.tif",
                      tmp_path / "c.csv")
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.res == (270.0, 270.0)
        p = ds.read(1)
    assert info["valid_cells"] == p.size == 12 * 12
    assert ((p >= 0) & (p <= 1)).all()
