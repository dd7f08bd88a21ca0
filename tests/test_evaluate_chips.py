"""``minescan evaluate-chips``: metrics against hand-computed values on a tiny fixture, and input errors.

The fixture model is a 1-channel member of the discovery FCN family whose weights are set by hand so that,
on a chip of constant colour, P(mine) = sigmoid(W * r) with r the red reflectance: every convolution passes
the red channel through its centre tap, ReLU and max-pooling leave a constant positive image unchanged, and
the final 1x1 softmax compares W * v with 0. Constant chips are also invariant under the D4 transforms, so
the hand-computed scores hold with and without test-time augmentation; test-time augmentation itself is
tested on asymmetric random chips with a random network, against a view-by-view mean.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from minescan.cli import run as main
from minescan.models.score_chips import binary_metrics, threshold_at_specificity

W = 20.0
THRESHOLD = 0.8
# red uint8 value of each constant chip, label and source
RED = [10, 40, 80, 120, 160, 200, 230, 255, 60, 180]
Y = [0, 0, 1, 0, 1, 1, 0, 1, 0, 1]
SOURCE = ["a", "a", "a", "b", "b", "b", "b", "b", "c", "c"]


def expected_scores():
    r = np.array(RED, dtype=np.float64) / 255 * 0.3
    return 1.0 / (1.0 + np.exp(-W * r))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from minescan.models.networks import build_discovery_fcn
    from minescan.models.store import save_model

    net = build_discovery_fcn(3, 48, widths=(1, 1, 1, 1), dropout=0.0, name="tiny")
    for layer in net.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel, bias = weights
        kernel = np.zeros_like(kernel)
        bias = np.zeros_like(bias)
        if layer.name == "softmax":
            kernel[0, 0, 0, 1] = W  # mine logit = W * v, background logit = 0
        else:
            c = kernel.shape[0] // 2
            kernel[c, c, 0, 0] = 1.0  # pass channel 0 (red) through
        layer.set_weights([kernel, bias])
    card = {
        "kind": "discovery", "name": "tiny", "architecture": "hand-set FCN", "bands": ["B4", "B3", "B2"],
        "window": 48, "stride": 27, "classes": ["background", "mine"], "positive_class": "mine",
        "threshold": THRESHOLD, "tta": "d4",
        "normalisation": {"clip_max": None, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    }
    d = tmp_path_factory.mktemp("model") / "tiny"
    save_model(d, net, card)
    return d


def write_chips(path, n=None, **arrays):
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def labelled(tmp_path):
    x = np.full((len(RED), 48, 48, 3), 90, dtype=np.uint8)
    x[..., 0] = np.array(RED, dtype=np.uint8)[:, None, None]
    return write_chips(tmp_path / "chips.npz", x=x, y=np.array(Y, dtype=np.int8), source=np.array(SOURCE))


def run_json(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    return json.loads(out[-1])


def test_metrics_match_hand_computed_values(tiny_model, labelled, capsys, tmp_path):
    out_csv = tmp_path / "scores.csv"
    r = run_json(capsys, "evaluate-chips", "--model", str(tiny_model), "--chips", str(labelled),
                 "--out", str(out_csv), "--json")
    p = expected_scores()
    # by hand: flagged = score >= 0.8  <=>  r >= ln(4)/20 = 0.0693  <=>  red >= 58.9 (uint8)
    flagged = [v >= 59 for v in RED]
    assert flagged == [False, False, True, True, True, True, True, True, True, True]
    # positives (2,4,5,7,9) all flagged: tp 5, fn 0; negatives 0,1 not flagged, 3,6,8 flagged: fp 3, tn 2
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (5, 0, 3, 2)
    assert r["n"] == 10
    assert r["sensitivity"] == pytest.approx(1.0)
    assert r["specificity"] == pytest.approx(2 / 5)
    assert r["precision"] == pytest.approx(5 / 8)
    assert r["f1"] == pytest.approx(2 * 5 / (2 * 5 + 3 + 0))
    # AUC by pair counting: positive reds 80,160,200,255,180 vs negative reds 10,40,120,230,60
    pos = [80, 160, 200, 255, 180]
    neg = [10, 40, 120, 230, 60]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    assert wins == 3 + 4 + 4 + 5 + 4  # 80 beats 10,40,60; 160 and 200 and 180 beat four; 255 beats all
    assert r["auc"] == pytest.approx(20 / 25)
    # at specificity >= 0.99 no negative may be flagged: cut-off above the top negative (230), so
    # positives with red 255 only -> sensitivity 1/5
    assert r["sensitivity_at_specificity_0.99"] == pytest.approx(0.2)
    # per-source rates
    ps = r["per_source"]
    assert ps["a"] == {"n": 3, "n_positive": 1, "n_negative": 2, "flagged_rate": pytest.approx(1 / 3),
                       "sensitivity": 1.0, "specificity": 1.0}
    assert ps["b"]["flagged_rate"] == pytest.approx(1.0) and ps["b"]["specificity"] == pytest.approx(0.0)
    assert ps["c"]["n"] == 2 and ps["c"]["specificity"] == pytest.approx(0.0)
    # the CSV carries the (hand-computed) scores
    with open(out_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert [float(row["score"]) for row in rows] == pytest.approx(list(p), abs=2e-6)
    assert [int(row["flagged"]) for row in rows] == [int(f) for f in flagged]
    assert [row["source"] for row in rows] == SOURCE


def test_tta_none_gives_same_scores_on_constant_chips(tiny_model, labelled, capsys):
    a = run_json(capsys, "evaluate-chips", "--model", str(tiny_model), "--chips", str(labelled), "--json")
    b = run_json(capsys, "evaluate-chips", "--model", str(tiny_model), "--chips", str(labelled), "--json",
                 "--tta", "none")
    assert a["tta"] == "d4" and b["tta"] == "none"
    assert a["auc"] == b["auc"] and a["tp"] == b["tp"]


def test_tta_d4_is_the_mean_of_the_eight_views_of_an_asymmetric_chip(tmp_path, capsys):
    """Random weights and random chips, so the 8 views give 8 different scores: the d4 score must be their
    mean, computed here view by view with plain numpy flips/rotations and one forward pass each."""
    import keras

    from minescan.models.networks import build_discovery_fcn
    from minescan.models.score_chips import prepare_chips
    from minescan.models.store import load_model, save_model

    keras.utils.set_random_seed(5)
    net = build_discovery_fcn(3, 48, widths=(4, 4, 4, 4), dropout=0.0, name="random")
    card = {"kind": "discovery", "name": "random", "bands": ["B4", "B3", "B2"], "window": 48, "stride": 27,
            "classes": ["background", "mine"], "positive_class": "mine", "threshold": 0.5, "tta": "d4",
            "normalisation": {"clip_max": None, "mean": [0.1, 0.1, 0.1], "std": [0.05, 0.05, 0.05]}}
    save_model(tmp_path / "m", net, card)
    x = np.random.default_rng(3).integers(1, 256, (3, 48, 48, 3), dtype=np.uint8)
    chips = write_chips(tmp_path / "asym.npz", x=x)
    scores = {}
    for tta in ("d4", "none"):
        assert main(["evaluate-chips", "--model", str(tmp_path / "m"), "--chips", str(chips), "--tta", tta,
                     "--out", str(tmp_path / f"{tta}.csv")]) == 0
        with open(tmp_path / f"{tta}.csv") as fh:
            scores[tta] = np.array([float(row["score"]) for row in csv.DictReader(fh)])
    capsys.readouterr()
    network = load_model(tmp_path / "m").network
    z = prepare_chips(x, card["normalisation"])
    by_hand = []
    for chip in z:
        views = [np.rot90(chip, k) for k in range(4)]
        views += [np.fliplr(v) for v in views]
        assert len({v.tobytes() for v in views}) == 8  # an asymmetric chip: 8 distinct views
        p = [float(np.asarray(network(v[None].copy(), training=False))[0, 0, 0, 1]) for v in views]
        assert max(p) - min(p) > 1e-4  # and the network tells them apart
        by_hand.append(np.mean(p))
    np.testing.assert_allclose(scores["d4"], by_hand, atol=1e-5)
    assert np.abs(scores["d4"] - scores["none"]).max() > 1e-5


def test_unlabelled_chips_only_scores(tiny_model, tmp_path, capsys):
    x = np.full((3, 48, 48, 3), 120, dtype=np.uint8)
    path = write_chips(tmp_path / "u.npz", x=x)
    out_csv = tmp_path / "u.csv"
    r = run_json(capsys, "evaluate-chips", "--model", str(tiny_model), "--chips", str(path), "--json",
                 "--out", str(out_csv))
    assert r["n"] == 3 and "auc" not in r and "sensitivity" not in r
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 3 and set(rows[0]) == {"index", "score", "flagged"}
    assert float(rows[0]["score"]) == pytest.approx(1 / (1 + math.exp(-W * 120 / 255 * 0.3)), abs=2e-6)


def test_threshold_helpers():
    y = np.array([0] * 100 + [1] * 4)
    p = np.concatenate([np.linspace(0, 0.5, 100), [0.3, 0.6, 0.7, 0.9]])
    t = threshold_at_specificity(y, p, 0.99)  # one false positive allowed: the top negative (0.5) may pass
    assert np.linspace(0, 0.5, 100)[98] < t <= 0.5
    m = binary_metrics(y, p, t)
    assert m["fp"] == 1 and m["tp"] == 3 and m["specificity"] == pytest.approx(0.99)
    assert m["sensitivity_at_specificity_0.99"] == pytest.approx(0.75)


# --- malformed input: one clear line naming the file and the array, exit 2, no traceback ---------------------

GOOD_X = np.zeros((4, 48, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("arrays, array_name", [
    ({"y": np.zeros(4, dtype=np.int8)}, "'x'"),                                   # no x
    ({"x": GOOD_X.astype(np.float32)}, "'x'"),                                    # wrong dtype
    ({"x": np.zeros((4, 32, 32, 3), dtype=np.uint8)}, "'x'"),                     # wrong chip size
    ({"x": np.zeros((4, 48, 48, 4), dtype=np.uint8)}, "'x'"),                     # wrong band count
    ({"x": np.zeros((48, 48, 3), dtype=np.uint8)}, "'x'"),                        # not a stack
    ({"x": GOOD_X, "y": np.zeros(3, dtype=np.int8)}, "'y'"),                      # length mismatch
    ({"x": GOOD_X, "y": np.array([0, 1, 2, 1])}, "'y'"),                          # not binary
    ({"x": GOOD_X, "y": np.array(["0", "1", "0", "1"])}, "'y'"),                  # not numeric
    ({"x": GOOD_X, "source": np.array(["a", "b"])}, "'source'"),                  # source length
])
def test_malformed_arrays_give_one_line_error(tmp_path, capsys, arrays, array_name):
    path = write_chips(tmp_path / "bad.npz", **arrays)
    code = main(["evaluate-chips", "--model", str(tmp_path / "no-model-needed"), "--chips", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert str(path) in err[0] and array_name in err[0]


def test_not_an_npz_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"not a zip")
    assert main(["evaluate-chips", "--model", "m", "--chips", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["evaluate-chips", "--model", "m", "--chips", str(tmp_path / "absent.npz")]) == 2
    assert "absent.npz" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, labelled, capsys):
    assert main(["evaluate-chips", "--model", str(tmp_path / "nope"), "--chips", str(labelled)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_error_from_a_real_process_has_no_traceback(tmp_path):
    path = write_chips(tmp_path / "bad.npz", x=GOOD_X, y=np.zeros(5, dtype=np.int8))
    proc = subprocess.run([sys.executable, "-m", "minescan.cli", "evaluate-chips", "--model", "m",
                           "--chips", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "'y'" in proc.stderr and str(path) in proc.stderr


def test_single_pass_scoring_uses_the_cards_single_pass_threshold(tiny_model, labelled, capsys, tmp_path):
    import shutil

    d = tmp_path / "tiny2"
    shutil.copytree(tiny_model, d)
    card = json.loads((d / "card.json").read_text())
    card["threshold_without_tta"] = 0.95
    (d / "card.json").write_text(json.dumps(card))
    a = run_json(capsys, "evaluate-chips", "--model", str(d), "--chips", str(labelled), "--json")
    b = run_json(capsys, "evaluate-chips", "--model", str(d), "--chips", str(labelled), "--json", "--tta", "none")
    c = run_json(capsys, "evaluate-chips", "--model", str(d), "--chips", str(labelled), "--json", "--tta", "none",
                 "--threshold", "0.5")
    assert a["threshold"] == THRESHOLD and b["threshold"] == 0.95 and c["threshold"] == 0.5
    # 0.95 <=> red >= ln(19)/20/0.3*255 = 125.1: reds 160, 200, 230, 255, 180 flagged
    assert b["n_flagged"] == 5 and c["n_flagged"] == 10
