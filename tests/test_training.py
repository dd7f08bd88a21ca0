"""Training from points + images: chips, CV metrics, card, and a model that loads and applies."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import grid_tile, write_scene

from minescan import SENTINEL2_BANDS
from minescan.errors import InputDataError
from minescan.grid import _transformer
from minescan.models.store import load_model
from minescan.models.train_points import extract_chips, read_points, train


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    t = grid_tile()
    c0, r0, c1, r1 = t.core_px()
    centres = [(int(c0 + 120 + 95 * i), int(r0 + 160 + 200 * j)) for i in range(5) for j in range(2)]
    squares = [(x - 20, y - 20, x + 20, y + 20) for x, y in centres[:5]]
    scene = write_scene(d / "scene.tif", [t], squares=squares, noise_seed=1)
    to_ll = _transformer(t.id.epsg, 4326)
    rows = []
    for k, (x, y) in enumerate(centres):
        lon, lat = to_ll.transform((x + 0.5) * 10, -(y + 0.5) * 10)
        rows.append({"lon": lon, "lat": lat, "class": "mine" if k < 5 else 0,
                     "impact": ["high", "low"][k % 2] if k < 5 else "no_ore"})
    rows.append({"lon": 10.0, "lat": 10.0, "class": 0, "impact": "no_ore"})  # outside every image
    pts = d / "points.csv"
    pd.DataFrame(rows).to_csv(pts, index=False)
    return d, t, scene, pts, squares


def test_chips_are_cut_centred_on_points(labelled):
    d, t, scene, pts, squares = labelled
    points = read_points(pts)
    chips, valid, used = extract_chips(points, [scene], 41, ["B1", "B2"], 1e-4)
    assert chips.shape == (10, 41, 41, 2) and valid.all()
    assert list(used) == list(range(10))  # the far-away point is skipped
    # a mine chip holds its 40 px square (band B1 exactly 0.5) at pixels [0, 40) of the 41 px chip: the
    # point is the square's centre pixel (x + 0.5, y + 0.5), the chip is centred on that pixel; the last
    # row and column are the noisy background (0.05 to 0.35), so a chip off by one pixel fails
    for k in range(5):
        assert (chips[k, :40, :40, 0] == np.float32(0.5)).all(), k
        assert chips[k, 40, :, 0].max() < 0.36 and chips[k, :, 40, 0].max() < 0.36, k
    # background chips hold no part of a square
    assert chips[5:, :, :, 0].max() < 0.36


def test_points_file_errors(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("lon,lat\n1,2\n")
    with pytest.raises(InputDataError, match="column 'class' is missing"):
        read_points(p)
    p.write_text("lon,lat,class\n1,2,maybe\n")
    with pytest.raises(InputDataError, match="class"):
        read_points(p)
    p.write_text("lon,lat,class,impact\n1,2,1,huge\n")
    with pytest.raises(InputDataError, match="unknown classes"):
        read_points(p)


@pytest.mark.parametrize("kind", ["discovery", "impact"])
def test_train_writes_a_model_with_card_and_cv_metrics(labelled, tmp_path, kind):
    d, t, scene, pts, _ = labelled
    bands = ["B1", "B2", "B3"]
    window = 81 if kind == "discovery" else 21
    card = train(kind, pts, [scene], tmp_path / kind, bands=bands, scale=1e-4, window=window, folds=2,
                 epochs=1, batch_size=4, seed=1)
    saved = json.loads((tmp_path / kind / "card.json").read_text())
    assert saved == json.loads(json.dumps(card))
    assert saved["bands"] == bands and saved["window"] == window and len(saved["metrics"]["folds"]) == 2
    assert len(saved["normalisation"]["mean"]) == 3
    # the metrics follow from the confusion matrices, and the folds partition the 10 chips by class
    folds = saved["metrics"]["folds"]
    counts = [5, 5] if kind == "discovery" else [3, 2, 5]  # background/mine, or high/low/no_ore
    cms = [np.array(f["confusion_matrix"]) for f in folds]
    assert sum(f["n"] for f in folds) == 10
    assert np.sum(cms, axis=0).sum(axis=1).tolist() == counts  # every chip tested once, in its true class
    assert np.sum(cms, axis=0).tolist() == saved["metrics"]["confusion_matrix_total"]
    for fold, cm in zip(folds, cms, strict=True):
        assert cm.sum() == fold["n"]
        assert fold["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
        f1s = [2 * cm[c, c] / (cm[c, :].sum() + cm[:, c].sum()) if cm[c, :].sum() + cm[:, c].sum() else 0.0
               for c in range(len(counts))]
        assert fold["f1"] == pytest.approx(f1s[1] if kind == "discovery" else np.mean(f1s), abs=1e-4)
    mean_accuracy = np.mean([f["accuracy"] for f in folds])
    assert saved["metrics"]["mean_accuracy"] == pytest.approx(mean_accuracy, abs=1e-4)
    model = load_model(tmp_path / kind, expect_kind=kind)
    assert model.band_indices(list(SENTINEL2_BANDS), "tile.tif") == [0, 1, 2]
    if kind == "discovery":
        assert saved["threshold"] == 0.6 and saved["stride"] == 27
