"""amazon-rgb48 v2 (issue 18): forward-chaining folds, the centred 54 px window, the training options, and the
shipped ``models/amazon-rgb48-v2``.

Tests that need the real chips skip when ../shared/data/real-chips/dev.npz is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minescan.errors import InputDataError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "amazon-rgb48-v2"
DEV = ROOT.parent / "shared" / "data" / "real-chips" / "dev.npz"

needs_dev = pytest.mark.skipif(not DEV.is_file(), reason=f"real chips not available at {DEV}")
needs_model = pytest.mark.skipif(not (MODEL / "card.json").is_file(), reason=f"{MODEL} not shipped")


def _chipset(galleries_years: dict, n_per: int = 4):
    """A ChipSet with clear and cloudy twins of every gallery; ``{gallery: year or None (undated)}``."""
    from minescan.models.chips import ChipSet

    src, per, y = [], [], []
    for k, (g, year) in enumerate(galleries_years.items()):
        period = f"{year}-01-01_{int(year) + 1}-01-01" if year else "unknown"
        twins = ("0.75", "0.05") if year else ("",)
        for clear in twins:
            for _ in range(n_per):
                src.append(f"{g}_S2L1C_clear{clear}_{period}" if year else f"{g}_rgb_preview")
                per.append(period)
                y.append(k % 2)
    n = len(src)
    return ChipSet(Path("mem.npz"), np.zeros((n, 48, 48, 3), np.uint8), np.array(y, np.int8), np.array(src),
                   np.array(per))


# --- forward-chaining folds -------------------------------------------------------------------------------------

def test_forward_folds_never_share_a_gallery_or_twin():
    from minescan.models.train_chips import TrainConfig, fold_splits, forward_split, galleries

    chips = _chipset({"a": 2019, "b": 2019, "c": 2023, "d": 2023, "e": 2024, "f": 2024, "u1": None, "u2": None})
    g = galleries(chips)
    years = np.array([str(p)[:4] for p in chips.period])
    folds = fold_splits(chips, TrainConfig(validation="forward"))
    assert [d["validation_years"] for d, _, _ in folds] == [["2024"], ["2023"]]
    for (desc, tr, va), last in zip(folds, ("2023", "2019"), strict=True):
        assert not set(g[tr]) & set(g[va])  # twins share a gallery name, so no twin crosses either
        assert set(years[va]) == set(desc["validation_years"])
        assert {y for y in years[tr] if y.isdigit()} <= {str(v) for v in range(2000, int(last) + 1)}
        assert {"u1", "u2"} <= set(g[tr])  # the undated galleries always train
    # fold B leaves the 2024 galleries out entirely
    _, tr, va = folds[1]
    assert not {"e", "f"} & set(g[np.concatenate([tr, va])])
    # a gallery whose twins carry different years would cross the split: refused
    bad = _chipset({"a": 2019, "e": 2024})
    bad.source[bad.period == "2019-01-01_2020-01-01"] = bad.source[-1]
    with pytest.raises(InputDataError, match="span both sides"):
        forward_split(bad, "2024", "2023")
    with pytest.raises(InputDataError, match="later"):
        forward_split(chips, "2023", "2023")


def test_config_checks_forward_folds_and_options():
    from minescan.models.train_chips import TrainConfig

    assert TrainConfig.from_json('{"validation": "forward", "pad": 3}').window == 54
    for bad in ('{"validation": "sideways"}', '{"forward_folds": [["2019", "2023"]]}', '{"bootstrap": 1.5}',
                '{"pad": -1}'):
        with pytest.raises(InputDataError, match="training config"):
            TrainConfig.from_json(bad)


@needs_dev
def test_forward_folds_on_dev_chips():
    from minescan.models.chips import load_chips
    from minescan.models.train_chips import TrainConfig, fold_splits, galleries

    chips = load_chips(DEV)
    g = galleries(chips)
    years = np.array([str(p)[:4] for p in chips.period])
    for desc, tr, va in fold_splits(chips, TrainConfig(validation="forward")):
        assert not set(g[tr]) & set(g[va])
        assert set(years[va]) == set(desc["validation_years"])
        dated = {y for y in years[tr] if y != "unkn"}
        assert max(int(y) for y in dated) <= int(desc["train_years_up_to"])
        assert "unkn" in set(years[tr])
        assert len(np.unique(chips.y[va])) == 2


# --- the centred window -----------------------------------------------------------------------------------------

def _v2_ensemble(seed=5, n=2):
    import keras

    from minescan.models.networks import build_discovery_fcn
    from minescan.models.train_chips import build_ensemble

    keras.utils.set_random_seed(seed)
    return build_ensemble([build_discovery_fcn(3, 54, (4, 6, 6, 8), name=f"b{i}") for i in range(n)])


def test_54px_window_sees_the_chip_symmetrically():
    """The single output cell of a 54 px window depends on window pixels -13..66 (same-padding reach
    included): centred on the window's centre 26.5, so on the centre 23.5 of a 48 px chip padded by 3."""
    import keras

    from minescan.models.networks import build_discovery_fcn

    keras.utils.set_random_seed(3)
    net = build_discovery_fcn(3, 54, (4, 6, 6, 8))
    rng = np.random.default_rng(0)
    ctx = 27  # one cell of real context on every side, as in a tile
    base = rng.normal(size=(1, 54 + 2 * ctx, 54 + 2 * ctx, 3)).astype(np.float32)
    inside = [(-13, 26), (66, 26), (26, -13), (26, 66), (0, 0), (53, 53)]
    outside = [(-14, 26), (67, 26), (26, -14), (26, 67)]
    batch = np.repeat(base, 1 + len(inside) + len(outside), axis=0)
    for k, (r, c) in enumerate(inside + outside, start=1):
        batch[k, ctx + r, ctx + c] += 50.0
    p = np.asarray(net(batch, training=False))[:, 1, 1, 1]
    moved = np.abs(p[1:] - p[0]) > 1e-7
    assert moved[:len(inside)].all()
    assert not moved[len(inside):].any()
    assert (-13 + 66) / 2 == (54 - 1) / 2


def test_v2_geometry_tile_scan_equals_chip_scoring():
    """The scan (predict_cells over a tile, blocks and stream where possible) gives every cell the value of
    the network on that cell's 54 px window cut from the tile (with one cell of context, as the scan has)."""
    from minescan.models.networks import STRIDE, FcnGeometry
    from minescan.scan.inference import Normalisation, predict_cells

    net = _v2_ensemble()
    g = FcnGeometry(54)
    assert (g.valid_kernel, g.offset) == (2, 13)
    rng = np.random.default_rng(2)
    h, w = 400, 430
    img = rng.integers(1, 3000, (h, w, 3), dtype=np.uint16)
    norm = Normalisation(1e-4, (0.09, 0.11, 0.11), (0.05, 0.04, 0.03), 0.3, 0)

    def read(c0, r0, c1, r1):
        out = np.zeros((r1 - r0, c1 - c0, 3), np.uint16)
        a0, b0, a1, b1 = max(c0, 0), max(r0, 0), min(c1, w), min(r1, h)
        if a1 > a0 and b1 > b0:
            out[b0 - r0:b1 - r0, a0 - c0:a1 - c0] = img[b0:b1, a0:a1]
        return out

    kx, ky = range(1, 12), range(1, 11)
    got = predict_cells(net, g, read, norm, kx, ky, block_cells=3)
    assert np.isfinite(got).all()
    for j, i in [(1, 1), (4, 7), (9, 10), (10, 3)]:
        start_r, start_c = STRIDE * j - g.offset, STRIDE * i - g.offset  # the cell's 54 px window
        raw = read(start_c - STRIDE, start_r - STRIDE, start_c + 54 + STRIDE, start_r + 54 + STRIDE)
        z = ((np.minimum(raw * 1e-4, 0.3) - np.array(norm.mean)) / np.array(norm.std)).astype(np.float32)
        p = np.asarray(net(z[None], training=False))[0, 1, 1, 1]
        assert got[j - ky.start, i - kx.start] == pytest.approx(p, abs=1e-5)


def test_score_chips_reflect_pads_to_the_card_window(tmp_path):
    from minescan.models.chips import reflect_pad
    from minescan.models.score_chips import prepare_chips, score_chips
    from minescan.models.store import load_model, save_model

    net = _v2_ensemble(n=1)
    norm = {"mean": [0.09, 0.11, 0.11], "std": [0.05, 0.04, 0.03], "clip_max": 0.3}
    save_model(tmp_path / "m", net, {"kind": "discovery", "bands": ["B4", "B3", "B2"], "window": 54,
                                     "chip_window": 48, "chip_pad": 3, "stride": 27, "classes": ["background", "mine"],
                                     "positive_class": "mine", "threshold": 0.5, "normalisation": norm, "tta": "d4"})
    m = load_model(tmp_path / "m")
    x = np.random.default_rng(1).integers(1, 255, (5, 48, 48, 3), dtype=np.uint8)
    padded = reflect_pad(x, 3)
    assert padded.shape == (5, 54, 54, 3)
    assert (padded[:, 3:51, 3:51] == x).all()
    assert (padded[:, 2, 3:51] == x[:, 0]).all() and (padded[:, 0, 3:51] == x[:, 2]).all()  # mirrored outwards
    want = np.asarray(net(prepare_chips(padded, norm), training=False))[:, 0, 0, 1]
    assert score_chips(m, x, tta="none") == pytest.approx(want, abs=1e-6)


# --- training options -------------------------------------------------------------------------------------------

def test_affine_augmentation_and_sample_weights():
    from minescan.models.train_chips import TrainConfig, affine_random, sample_weights

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (6, 54, 54, 3), dtype=np.uint8)
    assert (affine_random(x, rng, 0, 0, 0) == x).all()
    r = affine_random(x, rng, 180, 0.1, 0.1)
    assert r.shape == x.shape and r.dtype == np.uint8 and (r != x).any()

    y = np.array([1, 0, 0, 0, 1, 0, 0, 0] * 50, np.int8)
    clear = np.array(["0.75", "0.05"] * 200)
    plain = sample_weights(y, clear, TrainConfig(), 2, rng)
    assert plain.shape == (2, 400) and (plain[0] == plain[1]).all()
    assert plain[0][y == 1].sum() == pytest.approx(plain[0][y == 0].sum())
    hard = sample_weights(y, clear, TrainConfig(hard_negative_weight=3.0), 1, rng)[0]
    neg_cloudy, neg_clear = (y == 0) & (clear == "0.05"), (y == 0) & (clear == "0.75")
    assert hard[neg_cloudy].mean() == pytest.approx(3 * hard[neg_clear].mean())
    boot = sample_weights(y, clear, TrainConfig(bootstrap=0.7), 5, rng)
    oob = (boot == 0).mean(axis=1)
    assert ((oob > 0.4) & (oob < 0.6)).all()  # 0.7 N draws with replacement leave ~exp(-0.7) = 50 % out
    assert not (boot[0] == boot[1]).all()


def test_train_chips_forward_with_v2_options(tmp_path):
    from test_real_model import _synthetic_chips

    from minescan.cli import run as main
    from minescan.models.score_chips import score_chips
    from minescan.models.store import load_model

    chips = _synthetic_chips(tmp_path)
    cfg = {"branches": [[4, 4, 4, 4]] * 2, "bootstrap": 0.7, "pad": 3, "aug_rotate": 180, "aug_shift": 0.1,
           "aug_zoom": 0.1, "plateau_patience": 1, "early_stop_patience": 2, "hard_negative_weight": 2.0,
           "epochs": 2, "batch_size": 32, "validation": "forward", "forward_folds": [["2024", "2019"]],
           "spec_target": 0.995, "refit": False}
    assert main(["train-chips", "--chips", str(chips), "--out", str(tmp_path / "m"), "--config", json.dumps(cfg),
                 "--name", "t"]) == 0
    m = load_model(tmp_path / "m")
    c = m.card
    assert (c["name"], c["window"], c["chip_window"], c["chip_pad"], c["stride"]) == ("t", 54, 48, 3, 27)
    met = c["metrics"]
    assert met["split"]["scheme"] == "forward" and met["n"] == 48
    fold = met["folds"][0]
    assert fold["validation_years"] == ["2024"] and fold["train_years_up_to"] == "2019"
    for key in ("auc", "sensitivity_at_specificity_0.99", "sensitivity_at_specificity_0.995"):
        assert key in met and key in fold
    assert set(met["per_gallery"]) == {"g0_2024", "g1_2024"} and fold["per_gallery"]
    ref = c["reference_scores"]
    x = np.load(chips)["x"][ref["indices"]]
    assert score_chips(m, x, tta=ref["tta"]) == pytest.approx(ref["scores"], abs=1e-5)


# --- the shipped model ------------------------------------------------------------------------------------------

@needs_model
def test_shipped_v2_card():
    card = json.loads((MODEL / "card.json").read_text())
    assert card["name"] == "amazon-rgb48-v2" and card["kind"] == "discovery"
    assert card["bands"] == ["B4", "B3", "B2"] and card["stride"] == 27
    assert (card["window"], card["chip_window"], card["chip_pad"]) == (54, 48, 3)
    m = card["metrics"]
    assert m["split"]["scheme"] == "forward"
    assert [f["validation_years"] for f in m["folds"]] == [["2024"], ["2023"]]
    for f in m["folds"]:
        assert not set(f["train_galleries"]) & set(f["validation_galleries"])
        for key in ("auc", "sensitivity_at_specificity_0.99", "sensitivity_at_specificity_0.995"):
            assert 0.0 <= f[key] <= 1.0
    for key in ("auc", "sensitivity_at_specificity_0.99", "sensitivity_at_specificity_0.995"):
        assert 0.0 <= m[key] <= 1.0
    assert m["threshold"] == pytest.approx(card["threshold"], abs=1e-6)
    assert m["per_gallery"] and card["training"]["validation"] == "forward"
    rows = {r["row"] for r in card["ablation"]["rows"]}
    assert {"baseline", "geometry", "ensemble", "augment", "plateau", "hardneg"} <= rows
    assert card["previous_model"]["name"] == "amazon-rgb48" and card["previous_model"]["forward_folds"]
    size = sum(f.stat().st_size for f in MODEL.iterdir() if f.is_file())
    assert size < 5 * 2**20


@needs_model
@needs_dev
def test_shipped_v2_loads_and_scores(tmp_path, capsys):
    from minescan.cli import run as main
    from minescan.models.score_chips import score_chips
    from minescan.models.store import load_model

    model = load_model(MODEL, expect_kind="discovery")
    ref = model.card["reference_scores"]
    d = np.load(DEV)
    assert score_chips(model, d["x"][ref["indices"]], tta=ref["tta"]) == pytest.approx(ref["scores"], abs=1e-4)
    idx = np.random.default_rng(0).choice(len(d["x"]), 64, replace=False)
    path = tmp_path / "s.npz"
    np.savez(path, x=d["x"][idx], y=d["y"][idx], source=d["source"][idx])
    assert main(["evaluate-chips", "--model", str(MODEL), "--chips", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["n"] == 64 and r["threshold"] == pytest.approx(model.threshold)


@needs_model
def test_scan_applies_the_v2_model_to_12_band_tiles(tmp_path):
    """A scan config can name models/amazon-rgb48-v2 (window 54): bands picked by name, 27 px cells, every
    cell of a quadrant computed."""
    import rasterio
    from conftest import grid_tile, write_scene
    from shapely.geometry import box

    from minescan import SENTINEL2_BANDS
    from minescan.grid import to_crs
    from minescan.models.store import load_model
    from minescan.scan.detect import run_detect
    from minescan.sources.local import make_tile

    model = load_model(MODEL, expect_kind="discovery")
    assert model.band_indices(list(SENTINEL2_BANDS), "tile") == [3, 2, 1]
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
