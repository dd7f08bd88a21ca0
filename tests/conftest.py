"""Shared fixtures: tiny GeoTIFF scenes on the grid and real Keras models with hand-set weights.

The hand-set discovery FCN is the published architecture whose weights make it answer one question:
"is band B1 bright near the centre of this cell?". It turns a bright square painted into a scene into a
cluster of detected cells, so seam and integration tests know exactly what must be found.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from minescan import SENTINEL2_BANDS  # noqa: E402
from minescan.grid import GridSpec, Tile, TileId  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BACKGROUND_DN = 500  # reflectance 0.05
MINE_DN = 5000  # reflectance 0.5


def bright_square_fcn(n_bands: int = 12, window: int = 201):
    """Published FCN, weights set so P(mine) ~ 1 where band 0 reflectance > 0.25 near the cell centre."""
    from minescan.networks import build_discovery_fcn

    net = build_discovery_fcn(n_bands, window)
    for layer in net.layers:
        w = layer.get_weights()
        if not w:
            continue
        kernel, bias = np.zeros_like(w[0]), np.zeros_like(w[1])
        k = kernel.shape[0] // 2
        if layer.name == "softmax":
            kernel[0, 0, 0, 1] = 40.0  # mine logit = 40 * (v - 0.25), background logit = 0
            bias[1] = -10.0
        else:
            kernel[k, k, 0, 0] = 1.0  # carry channel 0 through (ReLU, max-pools)
        layer.set_weights([kernel, bias])
    return net


def constant_impact_cnn(n_bands: int = 12, label: int = 0):
    """Published impact CNN that always answers ``label`` (0 high, 1 low, 2 no ore)."""
    from minescan.networks import build_impact_cnn

    net = build_impact_cnn(n_bands)
    last = net.get_layer("softmax")
    w = last.get_weights()
    w[0][:] = 0
    w[1][:] = 0
    w[1][label] = 5.0
    last.set_weights(w)
    return net


def save_test_model(path: Path, kind: str, network, bands=SENTINEL2_BANDS, window=None, threshold=0.6):
    from minescan.model_io import save_model

    card = {
        "kind": kind, "name": path.name, "bands": list(bands),
        "window": window or (201 if kind == "discovery" else 21),
        "classes": ["background", "mine"] if kind == "discovery" else ["high", "low", "no_ore"],
        "normalisation": {"clip_max": None, "mean": [0.0] * len(bands), "std": [1.0] * len(bands)},
        "metrics": {}, "training_data": {"note": "hand-set weights for tests"},
    }
    if kind == "discovery":
        card.update({"stride": 27, "threshold": threshold, "positive_class": "mine"})
    return save_model(path, network, card)


@pytest.fixture(scope="session")
def bright_model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("models") / "bright", "discovery", bright_square_fcn())


@pytest.fixture(scope="session")
def impact_model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("models") / "impact-high", "impact", constant_impact_cnn())


SMALL_GRID = GridSpec(tile_px=648, resolution_m=10.0, halo_px=160)


def grid_tile(col=93, row=1440, grid=SMALL_GRID, zone=21, hemi="S") -> Tile:
    return Tile(TileId(zone, hemi, col, row), grid)


def write_scene(path: Path, tiles: list[Tile], squares=(), bands=SENTINEL2_BANDS, noise_seed=None,
                margin_px: int = 200):
    """A GeoTIFF covering the tiles (+halo+margin): uniform background, bright squares (global px)."""
    g = tiles[0].grid
    c0 = min(t.origin_px[0] for t in tiles) - margin_px
    r0 = min(t.origin_px[1] for t in tiles) - margin_px
    c1 = max(t.origin_px[0] + t.size_px for t in tiles) + margin_px
    r1 = max(t.origin_px[1] + t.size_px for t in tiles) + margin_px
    data = np.full((len(bands), r1 - r0, c1 - c0), BACKGROUND_DN, dtype=np.uint16)
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        data = (data + rng.integers(0, 3000, data.shape)).astype(np.uint16)
    for (sc0, sr0, sc1, sr1) in squares:
        data[0, sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = MINE_DN
    transform = Affine(g.resolution_m, 0, c0 * g.resolution_m, 0, -g.resolution_m, -r0 * g.resolution_m)
    with rasterio.open(path, "w", driver="GTiff", dtype="uint16", count=len(bands), width=c1 - c0,
                       height=r1 - r0, crs=tiles[0].crs, transform=transform, nodata=0, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(data)
        dst.descriptions = tuple(bands)
    return path
