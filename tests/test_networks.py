import numpy as np
import pytest

from minescan.models.networks import STRIDE, FcnGeometry, build_discovery_fcn, build_impact_cnn


def test_published_parameter_counts_for_12_bands():
    assert build_discovery_fcn(12, 201).count_params() == 259_810
    assert build_impact_cnn(12, 21).count_params() == 2_373_219


@pytest.mark.parametrize("window,kernel", [(201, 7), (48, 1), (93, 3)])
def test_fcn_is_generic_in_window_and_bands(window, kernel):
    net = build_discovery_fcn(3, window)
    assert net.get_layer("conv4").kernel_size == (kernel, kernel)
    out = net.predict(np.zeros((1, window, window, 3), np.float32), verbose=0)
    assert out.shape == (1, 1, 1, 2)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_fcn_output_stride_is_27_px():
    net = build_discovery_fcn(12, 201)
    n_cells = 5
    side = 201 + STRIDE * (n_cells - 1)
    out = net.predict(np.zeros((1, side, side, 12), np.float32), verbose=0)
    assert out.shape[1:3] == (n_cells, n_cells)


def test_geometry_spans_and_halo():
    g = FcnGeometry(201)
    assert (g.offset, g.valid_kernel) == (87, 7)
    start, stop = g.input_span(10, 4)
    assert (stop - start) % STRIDE == 0 and (stop - start) // STRIDE == 4 + 1 + 7
    assert g.halo_px == 127
    with pytest.raises(ValueError):
        FcnGeometry(20)
