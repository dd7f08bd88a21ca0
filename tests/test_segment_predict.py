"""Windowed prediction with overlap and trimmed merging: independent of the window size."""

import numpy as np
import pytest

from minescan.errors import ConfigError
from minescan.segment.predict import (
    array_reader,
    check_window,
    cores_near,
    predict_one_pass,
    predict_windows,
    window_cores,
)


def local_network(n_bands: int):
    """Convolutions only, receptive field 7 px (radius 3): windowed with overlap >= 3 must equal one pass."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, n_bands))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(1, 3, padding="same")(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 260, 4)).astype(np.float32)
    z[100:180, 60:200, 0] += 3.0
    return z


def test_windowed_equals_one_pass_for_a_local_network(scene):
    net = local_network(4)
    read = array_reader(scene)
    rect = (20, 10, 250, 290)  # not a multiple of any step: partial cores at the right and bottom
    ref = predict_one_pass(net, read, rect, 32)
    for window, overlap, batch in ((96, 32, 1), (128, 32, 3), (320, 32, 2)):
        got = predict_windows(net, read, rect, window, overlap, batch_size=batch)
        assert got.shape == (280, 230)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_only_cores_near_detections(scene):
    net = local_network(4)
    rect = (0, 0, 256, 256)
    cores = window_cores(rect, 64)
    assert len(cores) == 16
    near = cores_near(cores, 64, np.array([[70, 70, 90, 90]]), margin_px=0)
    assert near == [(64, 64)]
    assert len(cores_near(cores, 64, np.array([[70, 70, 90, 90]]), margin_px=10)) == 4
    got = predict_windows(net, array_reader(scene), rect, 128, 32, cores=near)
    assert np.isfinite(got[64:128, 64:128]).all()
    assert np.isnan(got).sum() == 256 * 256 - 64 * 64


def test_window_must_fit_the_encoder_stride():
    assert check_window(512, 64) == 384
    for window, overlap in ((500, 64), (512, 40), (128, 64)):
        with pytest.raises(ConfigError, match="segment.window_px"):
            check_window(window, overlap)
