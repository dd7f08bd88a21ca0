"""Segmentation losses against values computed by hand."""

import math

import numpy as np
import pytest

from minescan.errors import ConfigError
from minescan.segment import losses as L

# p = sigmoid(logit) = 0.8, 0.2, 0.6, 0.1 for labels 1, 0, 1, 1
P = np.array([0.8, 0.2, 0.6, 0.1])
Y = np.array([1.0, 0.0, 1.0, 1.0]).reshape(1, 2, 2, 1)
Z = np.log(P / (1 - P)).reshape(1, 2, 2, 1)
# tp = 0.8 + 0.6 + 0.1 = 1.5, fp = 0.2, fn = 0.2 + 0.4 + 0.9 = 1.5, sum(y) = 3, sum(p) = 1.7


def value(x) -> float:
    return float(np.asarray(x))


def test_tversky_by_hand():
    assert value(L.tversky_loss(Y, Z, 0.3, 0.7, 1.0)) == pytest.approx(1 - 1.5 / (1.5 + 0.3 * 0.2 + 0.7 * 1.5 + 1),
                                                                       abs=1e-6)
    assert value(L.tversky_loss(Y, Z, 0.3, 0.7, 1.0)) == pytest.approx(0.584488, abs=1e-6)


def test_tversky_half_half_is_dice_and_one_one_is_jaccard():
    assert value(L.dice_loss(Y, Z, 0.0)) == pytest.approx(1 - 3 / 4.7, abs=1e-6)
    for delta in (0.0, 1.0, 2.5):
        assert value(L.tversky_loss(Y, Z, 0.5, 0.5, delta)) == pytest.approx(value(L.dice_loss(Y, Z, delta)),
                                                                             abs=1e-6)
    assert value(L.tversky_loss(Y, Z, 1.0, 1.0, 0.0)) == pytest.approx(1 - 1.5 / 3.2, abs=1e-6)


def test_cross_entropy_by_hand():
    expected = -(math.log(0.8) + math.log(0.8) + math.log(0.6) + math.log(0.1)) / 4
    assert value(L.cross_entropy_loss(Y, Z)) == pytest.approx(expected, abs=1e-5)


def test_lovasz_hinge_by_hand():
    # logits 2, -1, 0.5 for labels 1, 0, 0: hinge errors -1, 0, 1.5; sorted 1.5 (y 0), 0 (y 0), -1 (y 1);
    # Jaccard losses of the prefixes 1/2, 2/3, 1 -> gradient 1/2, 1/6, 1/3; loss = 1.5 * 1/2 = 0.75
    y = np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1)
    z = np.array([2.0, -1.0, 0.5]).reshape(1, 1, 3, 1)
    assert value(L.lovasz_hinge_loss(y, z)) == pytest.approx(0.75, abs=1e-6)
    # every pixel right by a margin of at least 1: no loss
    assert value(L.lovasz_hinge_loss(y, np.array([3.0, -2.0, -1.0]).reshape(1, 1, 3, 1))) == pytest.approx(0.0)


def test_make_loss_by_name():
    assert value(L.make_loss("tversky", 0.3, 0.7, 1.0)(Y, Z)) == pytest.approx(0.584488, abs=1e-6)
    assert value(L.make_loss("dice", delta=0.0)(Y, Z)) == pytest.approx(1 - 3 / 4.7, abs=1e-6)
    assert L.make_loss("lovasz_hinge") is L.lovasz_hinge_loss
    with pytest.raises(ConfigError, match="segment.train.loss"):
        L.make_loss("focal")
