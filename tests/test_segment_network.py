"""The SegFormer network: shapes, band count, variants, saving and loading."""

import numpy as np
import pytest

from minescan.errors import ConfigError
from minescan.segment.network import build_segformer, load_segmenter_network, variant_config


def blocks(net, stage: int) -> int:
    return sum(1 for layer in net.layers if layer.name.startswith(f"stage{stage}_block"))


def test_logit_per_pixel_for_any_band_count_and_window(tmp_path):
    net = build_segformer(5, variant_config("small"))
    x = np.random.default_rng(0).normal(size=(2, 64, 96, 5)).astype("float32")
    y = net.predict_on_batch(x)
    assert y.shape == (2, 64, 96, 1)
    net.save(tmp_path / "m.keras")
    again = load_segmenter_network(tmp_path / "m.keras")
    np.testing.assert_array_equal(again.predict_on_batch(x), y)
    assert build_segformer(12, variant_config("small")).input_shape == (None, None, None, 12)


def test_variants_and_stage2_depth():
    assert variant_config("b3")["depths"] == [3, 4, 18, 3]
    assert variant_config("b3", stage2_depth=3)["depths"] == [3, 3, 18, 3]
    assert variant_config("small")["depths"] == [1, 1, 1, 1]
    net = build_segformer(3, variant_config("small", stage2_depth=4))
    assert [blocks(net, s) for s in (1, 2, 3, 4)] == [1, 4, 1, 1]
    with pytest.raises(ConfigError, match="variant"):
        variant_config("b9")
