"""Imported Keras .h5 patch classifiers: import, safety, exact patch scans (FCN form and batched), seams."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from conftest import grid_tile, write_scene

from minescan.cli import run
from minescan.errors import ModelError
from minescan.grid import QUADRANTS, cells_in_core
from minescan.models.imported import (
    L1C_BANDS,
    PRESETS,
    ImportSpec,
    import_h5,
    read_h5_config,
    spec_from_preset,
)
from minescan.models.store import load_model
from minescan.scan.inference import Normalisation
from minescan.scan.patches import PatchNet, quadrant_patch_probabilities
from minescan.sources.local import TileRaster, make_tile

RGB_MEAN = (1091.9574, 1172.4902, 1175.9235)
RGB_STD = (748.6153, 504.557, 398.5558)


def tiny_h5(path, *, bands=13, size=48, head="sigmoid", padding="valid", bn=True, seed=0):
    """A Sequential patch classifier of the published layer families, with random weights and (when ``bn``)
    non-trivial BatchNormalization statistics, saved as legacy .h5."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(seed)
    net = keras.Sequential([
        keras.Input((size, size, bands)),
        L.Conv2D(6, 3, padding=padding, activation="relu"),
        L.MaxPooling2D(2),
        *([L.BatchNormalization()] if bn else []),
        L.Conv2D(8, 3, padding=padding, activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(12, activation="relu"),
        L.Dropout(0.3),
        L.Dense(1, activation="sigmoid") if head == "sigmoid" else L.Dense(2, activation="softmax"),
    ])
    rng = np.random.default_rng(seed)
    for la in net.layers:
        if isinstance(la, L.BatchNormalization):
            g, b, m, v = la.get_weights()
            la.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                            rng.normal(0, 0.3, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    net.save(path)
    return path


def h5_scores(path, x: np.ndarray) -> np.ndarray:
    """P(mine) of the .h5 model itself on network inputs ``x`` (sigmoid: the unit; softmax: output 1)."""
    import keras

    out = np.asarray(keras.models.load_model(path, compile=False).predict_on_batch(x.astype(np.float32)))
    return out[:, 0] if out.shape[1] == 1 else out[:, 1]


@pytest.fixture(scope="module")
def h5s(tmp_path_factory):
    d = tmp_path_factory.mktemp("h5")
    return {
        "valid": tiny_h5(d / "valid.h5", seed=1),
        "valid_softmax": tiny_h5(d / "valid_softmax.h5", head="softmax", seed=2),
        "same": tiny_h5(d / "same.h5", padding="same", seed=3),
        "rgb": tiny_h5(d / "rgb.h5", bands=3, size=44, head="softmax", seed=4),
    }


@pytest.fixture(scope="module")
def l1c_tile(tmp_path_factory):
    """A noisy 13-band tile (B10 included) with a nodata hole across the NE/SE seam, and its neighbour."""
    d = tmp_path_factory.mktemp("l1c")
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    scene = write_scene(d / "scene.tif", tiles, bands=L1C_BANDS, noise_seed=5)
    out = []
    for t in tiles:
        make_tile(t, [scene], list(L1C_BANDS), d / f"{t.name}.tif")
        out.append((t, d / f"{t.name}.tif"))
    import rasterio

    with rasterio.open(out[0][1], "r+") as ds:
        arr = ds.read()
        arr[:, 420:500, 440:560] = 0
        ds.write(arr)
    return out


def _imported(h5, tmp_path, name="m", **spec):
    import_h5([h5] if not isinstance(h5, list) else h5, tmp_path / name,
              spec_from_preset(spec.pop("preset", "amw-2024"), **spec))
    return load_model(tmp_path / name)


def _patch_by_patch(raster, h5, kx, ky, stride, window=48, prepare=None, bands=None):
    """Reference: every position's patch (centred on its cell: it starts at stride * k + stride // 2 - 24)
    read alone and prepared as the .h5 model expects (default: DN / 10000), through the .h5 model."""
    bands = bands or list(range(13))
    patches, where = [], []
    for j, y in enumerate(ky):
        for i, x in enumerate(kx):
            c, r = stride * x + stride // 2 - window // 2, stride * y + stride // 2 - window // 2
            patches.append(raster.read_px(c, r, c + window, r + window, bands))
            where.append((j, i))
    raw = np.stack(patches)
    ref = np.full((len(ky), len(kx)), np.nan, dtype=np.float32)
    p = h5_scores(h5, prepare(raw) if prepare else raw.astype(np.float64) / 10000)
    # a cell is no data when less than half of its stride x stride footprint is valid
    off = window // 2 - stride // 2
    valid = np.all(raw != 0, axis=-1)[:, off : off + stride, off : off + stride].mean(axis=(1, 2))
    for (j, i), v, f in zip(where, p, valid, strict=True):
        ref[j, i] = v if f >= 0.5 else np.nan
    return ref


# --------------------------------------------------------------------------------------------- import
def test_import_round_trip_scores_equal_the_h5_model(h5s, tmp_path):
    model = _imported(h5s["valid"], tmp_path)
    card = model.card
    assert card["kind"] == "discovery" and card["bands"] == list(L1C_BANDS) and card["window"] == 48
    assert card["stride"] == 24 and card["threshold"] == 0.43
    assert card["spatial_prior"] == {"isolated_threshold": 0.75, "isolation_k": 5, "isolation_km": 3.0}
    assert card["import"]["files"][0]["name"] == "valid.h5" and len(card["import"]["files"][0]["sha256"]) == 64
    x = np.random.default_rng(0).uniform(0, 0.4, (32, 48, 48, 13)).astype(np.float32)
    got = np.asarray(model.network.predict_on_batch(x))
    np.testing.assert_allclose(got[:, 1], h5_scores(h5s["valid"], x), atol=1e-6)
    np.testing.assert_allclose(got[:, 0], 1 - got[:, 1], atol=1e-6)
    # DN / 10000 as a card normalisation on reflectance (DN x 1e-4): the identity
    assert card["normalisation"]["mean"] == [0.0] * 13 and card["normalisation"]["std"] == [1.0] * 13


def test_ensemble_equals_the_mean_of_its_members(h5s, tmp_path):
    model = _imported([h5s["valid"], h5s["valid_softmax"]], tmp_path)
    assert [h["kind"] for h in model.card["patch"]["heads"]] == ["sigmoid", "softmax"]
    x = np.random.default_rng(1).uniform(0, 0.4, (20, 48, 48, 13)).astype(np.float32)
    mean = (h5_scores(h5s["valid"], x) + h5_scores(h5s["valid_softmax"], x)) / 2
    np.testing.assert_allclose(np.asarray(model.network.predict_on_batch(x))[:, 1], mean, atol=1e-6)


def test_zscore_crop_preset_on_hand_computed_inputs(h5s, tmp_path):
    """amw-2021-rgb: R, G, B = B4, B3, B2; (DN - mean_b) / std_b on the 44 px centre crop of the 48 px patch."""
    model = _imported(h5s["rgb"], tmp_path, preset="amw-2021-rgb")
    assert model.card["bands"] == ["B4", "B3", "B2"] and model.card["patch"]["crop"] == 44
    raw = np.zeros((2, 48, 48, 3), dtype=np.uint16)
    yy, xx = np.mgrid[0:48, 0:48]
    for b in range(3):
        raw[0, :, :, b] = 500 + 37 * yy + 11 * xx + 100 * b
        raw[1, :, :, b] = 3000 - 20 * xx + 5 * b
    raw[:, :2] = 60000  # outside the crop: must not matter
    hand = np.empty((2, 44, 44, 3))
    for b in range(3):
        hand[..., b] = (raw[:, 2:46, 2:46, b].astype(np.float64) - RGB_MEAN[b]) / RGB_STD[b]
    z, _ = Normalisation.from_card(model.card["normalisation"], 1e-4, 0).apply(raw)
    np.testing.assert_allclose(z[:, 2:46, 2:46], hand, rtol=1e-5, atol=1e-5)
    net = PatchNet.from_model(model)
    np.testing.assert_allclose(net.run(z), h5_scores(h5s["rgb"], hand), atol=1e-5)


def test_lambda_layers_are_refused_before_anything_is_loaded(tmp_path, monkeypatch):
    import keras

    net = keras.Sequential([keras.Input((48, 48, 13)), keras.layers.Lambda(lambda x: x * 2.0),
                            keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    net.save(tmp_path / "lambda.h5")
    assert "Lambda" in json.dumps(read_h5_config(tmp_path / "lambda.h5"))

    def boom(*a, **k):
        raise AssertionError("Keras was asked to load a file with a Lambda layer")

    monkeypatch.setattr(keras.models, "load_model", boom)
    with pytest.raises(ModelError, match="Lambda is not allowed .*run Python code"):
        import_h5([tmp_path / "lambda.h5"], tmp_path / "out", spec_from_preset("amw-2024"))
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    assert run(["import-model", "--preset", "amw-2024", "--h5", str(tmp_path / "lambda.h5"),
                "--out", str(tmp_path / "o2")]) == 2


def test_other_unlisted_layers_and_bad_settings_are_refused(h5s, tmp_path):
    import keras

    net = keras.Sequential([keras.Input((48, 48, 13)), keras.layers.Rescaling(0.5), keras.layers.Flatten(),
                            keras.layers.Dense(1, activation="sigmoid")])
    net.save(tmp_path / "resc.h5")
    with pytest.raises(ModelError, match="Rescaling is not allowed"):
        import_h5([tmp_path / "resc.h5"], tmp_path / "out", spec_from_preset("amw-2024"))
    with pytest.raises(ModelError, match=r"takes \(48, 48, 13\) but .* \(44, 44, 13\)"):
        import_h5([h5s["valid"]], tmp_path / "o", spec_from_preset("amw-2024", crop=44))
    with pytest.raises(ModelError, match="--mine-output 2 is not one of its 2 outputs"):
        import_h5([h5s["valid_softmax"]], tmp_path / "o", spec_from_preset("amw-2024", mine_output=2))
    with pytest.raises(ModelError, match="--bands is required"):
        spec_from_preset(None)


def test_import_model_cli_with_explicit_options(h5s, tmp_path, capsys):
    out = tmp_path / "rgb"
    assert run(["import-model", "--h5", str(h5s["rgb"]), "--out", str(out), "--bands", "B4", "B3", "B2",
                "--crop", "44", "--zscore-mean", ",".join(map(str, RGB_MEAN)),
                "--zscore-std", ",".join(map(str, RGB_STD)), "--mine-output", "1", "--threshold", "0.8"]) == 0
    card = json.loads((out / "card.json").read_text())
    ref = _imported(h5s["rgb"], tmp_path, preset="amw-2021-rgb").card
    assert card["normalisation"] == ref["normalisation"] and card["patch"] == ref["patch"]
    assert "spatial_prior" not in card and card["threshold"] == 0.8
    assert "stride 24 px" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ scan
@pytest.mark.parametrize("method", ["fcn", "patches"])
def test_patch_scan_equals_patch_by_patch_on_every_position(h5s, tmp_path, l1c_tile, method):
    (t, path), _ = l1c_tile
    model = _imported(h5s["valid"], tmp_path)
    with TileRaster(path, t) as raster:
        for q in ("NE", "SE"):  # the nodata hole crosses their seam
            prob, kx, ky, cell = quadrant_patch_probabilities(raster, t, q, model, 1e-4, method=method,
                                                              block_rows=4)
            assert cell == 24 and prob.shape == (len(ky), len(kx)) and {len(kx), len(ky)} <= {13, 14}
            ref = _patch_by_patch(raster, h5s["valid"], kx, ky, 24)
            assert np.array_equal(np.isnan(prob), np.isnan(ref)) and np.isnan(ref).any()
            np.testing.assert_allclose(prob, ref, atol=1e-5)


@pytest.mark.parametrize("method", ["fcn", "patches"])
def test_cropped_zscored_rgb_model_scans_exactly(h5s, tmp_path, l1c_tile, method):
    """The 2021 RGB family in the scan: bands B4, B3, B2 picked from the 13-band tile, z-scored in DN,
    44 px centre crop of each 48 px patch."""
    (t, path), _ = l1c_tile
    model = _imported(h5s["rgb"], tmp_path, preset="amw-2021-rgb")
    assert PatchNet.from_model(model).fcn is not None

    def prepare(raw):  # nodata pixels (0 in every band) enter as z = 0, the band mean, as cards define
        dn = raw[:, 2:46, 2:46].astype(np.float64)
        return (dn - np.array(RGB_MEAN)) / np.array(RGB_STD) * np.all(dn != 0, axis=-1)[..., None]

    with TileRaster(path, t) as raster:
        prob, kx, ky, _ = quadrant_patch_probabilities(raster, t, "SE", model, 1e-4, method=method, block_rows=5)
        b = [raster.band_names.index(n) for n in ("B4", "B3", "B2")]
        ref = _patch_by_patch(raster, h5s["rgb"], kx, ky, 24, prepare=prepare, bands=b)
    np.testing.assert_allclose(prob, ref, atol=1e-5)


def test_fcn_form_is_refused_for_same_padding_and_unaligned_pooling(h5s, tmp_path, l1c_tile, caplog):
    (t, path), _ = l1c_tile
    same = _imported(h5s["same"], tmp_path, "same")
    net = PatchNet.from_model(same)
    assert net.fcn is None and "'same' padding" in net.reason
    assert PatchNet.from_model(_imported(h5s["valid"], tmp_path, "v"), stride=22).fcn is None  # 22 % 4
    with TileRaster(path, t) as raster:
        with pytest.raises(ModelError, match="cannot run fully convolutionally"):
            quadrant_patch_probabilities(raster, t, "NW", same, 1e-4, method="fcn")
        with caplog.at_level(logging.INFO, logger="minescan.scan.patches"):
            prob, kx, ky, _ = quadrant_patch_probabilities(raster, t, "NW", same, 1e-4)
        assert "batched patch evaluation" in caplog.text and "(patches," in caplog.text
        np.testing.assert_allclose(prob, _patch_by_patch(raster, h5s["same"], kx, ky, 24), atol=1e-5)


@pytest.mark.parametrize("stride", [24, 20])
def test_seams_every_position_once_and_equal_to_the_whole_tile(h5s, tmp_path, l1c_tile, stride):
    """Quadrants partition the tile's positions, and each equals the whole-tile scan; the neighbour tile's
    first column of positions continues the grid (positions only depend on global pixels)."""
    (t, path), (t2, path2) = l1c_tile
    model = _imported(h5s["valid"], tmp_path, stride=stride)
    with TileRaster(path, t) as raster:
        whole, kx, ky, _ = quadrant_patch_probabilities(raster, t, "NW", model, 1e-4, core_px=t.core_px())
        seen = np.zeros_like(whole, dtype=int)
        for q in QUADRANTS:
            p, qx, qy, _ = quadrant_patch_probabilities(raster, t, q, model, 1e-4, block_rows=3)
            sl = (slice(qy.start - ky.start, qy.stop - ky.start), slice(qx.start - kx.start, qx.stop - kx.start))
            seen[sl] += 1
            np.testing.assert_allclose(p, whole[sl], atol=1e-5)
            # a position belongs to the quadrant whose core holds its centre (pixel stride * k + stride // 2)
            c0, r0, c1, r1 = t.quadrant_core_px(q)
            for ks, lo, hi in ((qx, c0, c1), (qy, r0, r1)):
                centres = stride * np.arange(ks.start - 1, ks.stop + 1) + stride // 2
                assert (lo <= centres[1:-1]).all() and (centres[1:-1] < hi).all()
                assert centres[0] < lo and centres[-1] >= hi
    assert (seen == 1).all()
    kx2, _ = cells_in_core(t2.core_px(), stride)
    assert kx2.start == kx.stop  # no position lost or repeated between the tiles


def test_detect_and_merge_use_the_patch_cells_and_the_cards_dual_threshold(h5s, tmp_path, l1c_tile):
    import geopandas as gpd
    from shapely.geometry import box

    from minescan.grid import to_crs

    (t, path), _ = l1c_tile
    out = tmp_path / "m"
    assert run(["import-model", "--preset", "amw-2024", "--h5", str(h5s["valid"]), "--out", str(out),
                "--threshold", "0.0", "--isolated-threshold", "1.0", "--isolation-k", "1",
                "--isolation-km", "0.1"]) == 0
    region = to_crs(box(*t.core_bounds), t.id.epsg, 4326)
    gpd.GeoDataFrame(geometry=[region], crs=4326).to_file(tmp_path / "region.geojson")
    q = tmp_path / "q"
    grid = ["--tile-px", str(t.grid.tile_px), "--halo-px", str(t.grid.halo_px), "--resolution-m", "10"]
    assert run(["detect", "--tile", t.name, "--quadrant", "NW", "--tile-path", str(path), "--model", str(out),
                "--region", str(tmp_path / "region.geojson"), "--prob-out", str(q / "p.tif"),
                "--candidates-out", str(q / "c.csv"), *grid]) == 0
    import pandas as pd
    import rasterio

    with rasterio.open(q / "p.tif") as ds:
        assert ds.res == (240.0, 240.0) and ds.tags()["CELL_PX"] == "24"
        n_cells = int(np.isfinite(ds.read(1)).sum())
    cands = pd.read_csv(q / "c.csv")
    assert 0.95 * n_cells <= len(cands) <= n_cells  # threshold 0: every position in the region
    np.testing.assert_allclose(cands["easting"], (24 * cands["cell_x"] + 12) * 10.0)
    assert run(["classify", "--tile", t.name, "--tile-path", str(path), "--model", "none", "--candidates",
                str(q / "c.csv"), "--out", str(q / "classified.csv"), *grid]) == 0
    res = tmp_path / "res"
    assert run(["merge", "--classified", str(q / "classified.csv"), "--outdir", str(res), "--region",
                str(tmp_path / "region.geojson"), "--region-name", "x", "--period", "2026Q1",
                "--discovery-model", str(out), "--resolution-m", "10"]) == 0
    summary = json.loads((res / "summary.json").read_text())
    # the card's dual threshold: every candidate has a neighbour within 0.1 km? no: cells are 240 m apart,
    # so all are isolated and none reaches 1.0
    assert summary["spatial_prior"]["isolated_threshold"] == 1.0
    assert summary["spatial_prior"]["candidates_removed"] == len(cands) and summary["detections"] == 0
    assert run(["merge", "--classified", str(q / "classified.csv"), "--outdir", str(res), "--region",
                str(tmp_path / "region.geojson"), "--region-name", "x", "--period", "2026Q1",
                "--discovery-model", str(out), "--resolution-m", "10", "--isolated-threshold", "0"]) == 0
    sites = gpd.read_file(res / "sites.gpkg")
    assert json.loads((res / "summary.json").read_text())["detections"] == len(cands)
    assert sites["area_ha"].sum() == pytest.approx(len(cands) * 5.76)  # 240 m x 240 m cells


def test_spec_options_override_the_preset():
    spec = spec_from_preset("amw-2021-rgb", input_scale=1e-4)
    assert spec.zscore is None and spec.input_scale == 1e-4 and spec.crop == 44
    assert isinstance(spec_from_preset(None, bands=("B4",)), ImportSpec)


def test_the_parser_lists_and_checks_the_presets_without_importing_them(capsys):
    """Every command builds the whole parser: the import-model presets are a constant there
    (minescan.cli.models.IMPORT_PRESETS), so minescan.models.imported is only imported to import a model."""
    from minescan.cli.models import IMPORT_PRESETS

    assert IMPORT_PRESETS == tuple(sorted(PRESETS))
    code = "import sys\nfrom minescan.cli import build_parser\nbuild_parser()\nprint('minescan.models.imported' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["False"], r.stderr[-2000:]
    with pytest.raises(SystemExit):
        run(["import-model", "--help"])
    assert "Presets: amw-2021-rgb, amw-2024." in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        run(["import-model", "--preset", "amw-2023", "--h5", "x.h5", "--out", "m"])
    assert "invalid choice: 'amw-2023' (choose from 'amw-2021-rgb', 'amw-2024')" in capsys.readouterr().err


def test_evaluate_chips_scores_rgb_chips_with_an_imported_rgb_model(h5s, tmp_path, capsys):
    """uint8 preview chips: DN = uint8 / 255 x 3000, z-scored with the preset's constants, 44 px centre crop."""
    import pandas as pd

    model_dir = tmp_path / "rgb"
    assert run(["import-model", "--preset", "amw-2021-rgb", "--h5", str(h5s["rgb"]), "--out", str(model_dir)]) == 0
    rng = np.random.default_rng(7)
    x = rng.integers(1, 256, (12, 48, 48, 3)).astype(np.uint8)
    y = np.array([0, 1] * 6, dtype=np.int8)
    np.savez(tmp_path / "chips.npz", x=x, y=y)
    assert run(["evaluate-chips", "--model", str(model_dir), "--chips", str(tmp_path / "chips.npz"),
                "--out", str(tmp_path / "s.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["threshold"] == 0.8 and result["tta"] == "none" and result["n"] == 12
    dn = x.astype(np.float64) / 255 * 3000
    hand = (dn[:, 2:46, 2:46] - np.array(RGB_MEAN)) / np.array(RGB_STD)
    scores = pd.read_csv(tmp_path / "s.csv")["score"].to_numpy()
    np.testing.assert_allclose(scores, h5_scores(h5s["rgb"], hand), atol=2e-6)
    # a 13-band model cannot score RGB chips: one line naming both band lists
    assert run(["import-model", "--preset", "amw-2024", "--h5", str(h5s["valid"]), "--out", str(tmp_path / "l1c")]) == 0
    capsys.readouterr()
    assert run(["evaluate-chips", "--model", str(tmp_path / "l1c"), "--chips", str(tmp_path / "chips.npz")]) == 2
    assert "takes B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10" in capsys.readouterr().err


def test_b10_in_the_config_and_the_l1c_composite_and_a_missing_band_names_band_and_model(h5s, tmp_path):
    from minescan import SENTINEL2_BANDS
    from minescan import config as cfgmod
    from minescan.errors import BandMismatchError
    from minescan.sources.gee.composite import build_composite
    from minescan.sources.gee.recorder import RecordingEE
    from minescan.sources.gee.settings import GeeSettings

    cfg = cfgmod.validate({"region": {"name": "r", "file": "x.geojson"}, "periods": ["2026Q1"],
                           "bands": list(L1C_BANDS),
                           "source": {"kind": "gee", "gee": {"collection": "COPERNICUS/S2_HARMONIZED"}}})
    settings = GeeSettings.from_config(cfg)
    assert settings.bands == L1C_BANDS
    image = repr(build_composite(RecordingEE(), settings, "2026Q1", None))
    assert ".select(" + repr(list(L1C_BANDS)) + ")" in image
    # a 12-band tile (no B10) and a 13-band model: one line naming the band, the tile and the model
    t = grid_tile(93, 1440)
    scene = write_scene(tmp_path / "scene.tif", [t], bands=SENTINEL2_BANDS)
    make_tile(t, [scene], list(SENTINEL2_BANDS), tmp_path / "t.tif")
    model = _imported(h5s["valid"], tmp_path)
    with TileRaster(tmp_path / "t.tif", t) as raster, \
            pytest.raises(BandMismatchError, match=r"t\.tif: band\(s\) B10 required by model .*/m are missing"):
        quadrant_patch_probabilities(raster, t, "NW", model, 1e-4)


def bright_patch_h5(path):
    """A 'valid' patch classifier (pool factor 8) whose P(mine) ~ 1 when band 0 is bright (reflectance 0.5)
    in the 16 px centre of the patch and ~ 0 on the background (0.05)."""
    import keras
    from keras import layers as L

    net = keras.Sequential([keras.Input((48, 48, 12)), L.Conv2D(1, 1), L.MaxPooling2D(8), L.Flatten(),
                            L.Dense(1, activation="sigmoid")])
    pick = np.zeros((1, 1, 12, 1), np.float32)
    pick[0, 0, 0, 0] = 1.0
    net.layers[0].set_weights([pick, np.zeros(1, np.float32)])
    dense = np.zeros((36, 1), np.float32)
    dense[[14, 15, 20, 21], 0] = 10.0  # the 2 x 2 centre cells of the 6 x 6 pooled map
    net.layers[-1].set_weights([dense, np.full(1, -10.0, np.float32)])
    net.save(path)
    return path


@pytest.mark.slow
def test_dag_scans_with_an_imported_patch_model(tmp_path, impact_model_dir):
    """The real Snakemake DAG with an imported .h5 model: detect (fcn form), classify, merge; sites of
    24 px cells, one per bright square."""
    import geopandas as gpd
    import rasterio
    from conftest import mine_squares, run_snakemake, write_tiny_config, write_tiny_scene

    from minescan import SENTINEL2_BANDS

    model = tmp_path / "imported"
    assert run(["import-model", "--h5", str(bright_patch_h5(tmp_path / "bright.h5")), "--out", str(model),
                "--bands", *SENTINEL2_BANDS, "--threshold", "0.5"]) == 0
    d = tmp_path / "dag"
    d.mkdir()
    tiles = [grid_tile(93, 1440), grid_tile(94, 1440)]
    squares = mine_squares(tiles)
    write_tiny_scene(d, tiles, squares)
    write_tiny_config(d, model, impact_model_dir, detect={"patch_inference": "fcn", "block_cells": 3})
    run_snakemake(d)
    out = d / "results" / "tiny" / "2026Q1"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sites"] == len(squares) and summary["sites_by_impact"] == {"high": len(squares)}
    with rasterio.open(out / "quadrants" / f"{tiles[0].name}_NW" / "probability.tif") as ds:
        assert ds.res == (240.0, 240.0)
    sites = gpd.read_file(out / "sites.gpkg")
    cells = sites["area_ha"].to_numpy() / 5.76  # 240 m x 240 m cells
    np.testing.assert_allclose(cells, np.round(cells), atol=1e-6)
    assert (sites["n_cells"] == np.round(cells)).all()
    log = (d / "results" / "logs" / "tiny" / "2026Q1" / "detect" / f"{tiles[0].name}_NW.log").read_text()
    assert "patch model (fcn, stride 24 px" in log


def test_safety_check_on_hand_written_configs():
    """Old Keras Sequential configs (a bare list of layers), nested models and stray code references."""
    from minescan.models.imported import check_safe

    conv = {"class_name": "Conv2D", "config": {"name": "c", "activation": "relu"}}
    check_safe({"class_name": "Sequential", "config": [conv]}, "ok.h5")
    lam = {"class_name": "Lambda", "config": {"name": "l", "function": ["4wEAAAAA", None, None]}}
    for cfg in ({"class_name": "Sequential", "config": [conv, lam]},
                {"class_name": "Sequential", "config": {"name": "s", "layers": [
                    {"class_name": "Sequential", "config": {"name": "inner", "layers": [lam]}}]}}):
        with pytest.raises(ModelError, match="Lambda"):
            check_safe(cfg, "bad.h5")
    with pytest.raises(ModelError, match="activation"):
        check_safe({"class_name": "Sequential", "config": [
            {"class_name": "Dense", "config": {"name": "d", "activation": {"class_name": "function",
                                                                          "config": "my_act"}}}]}, "x.h5")
    with pytest.raises(ModelError, match="module 'evil'"):
        check_safe({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "Dense", "module": "evil", "config": {"name": "d"}}]}}, "x.h5")
