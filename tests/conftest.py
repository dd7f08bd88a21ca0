"""Shared fixtures: tiny GeoTIFF scenes on the grid and real Keras models with hand-set weights.

The hand-set discovery FCN is the published architecture whose weights make it answer one question:
"is band B1 bright near the centre of this cell?". It turns a bright square painted into a scene into a
cluster of detected cells, so seam and integration tests know exactly what must be found.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from affine import Affine
from shapely.geometry import box

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from minescan import SENTINEL2_BANDS  # noqa: E402
from minescan.grid import GridSpec, Tile, TileId, _transformer, cell_centres_utm, to_crs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BACKGROUND_DN = 500  # reflectance 0.05
MINE_DN = 5000  # reflectance 0.5


def bright_square_fcn(n_bands: int = 12, window: int = 201):
    """Published FCN, weights set so P(mine) ~ 1 where band 0 reflectance > 0.25 near the cell centre."""
    from minescan.models.networks import build_discovery_fcn

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
    from minescan.models.networks import build_impact_cnn

    net = build_impact_cnn(n_bands)
    last = net.get_layer("softmax")
    w = last.get_weights()
    w[0][:] = 0
    w[1][:] = 0
    w[1][label] = 5.0
    last.set_weights(w)
    return net


def save_test_model(path: Path, kind: str, network, bands=SENTINEL2_BANDS, window=None, threshold=0.6):
    from minescan.models.store import save_model

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


def write_classified(tmp_path: Path, cells, probabilities, impacts, tile: Tile) -> Path:
    """A quadrant's classified.csv (quadrant NW of ``tile``): one row per (cell_x, cell_y) with its
    probability and impact ("high", "low" or "no_ore"; p of that class 0.8, of the others 0.1)."""
    e, n = cell_centres_utm(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]), 10.0)
    lon, lat = _transformer(tile.id.epsg, 4326).transform(e, n)
    df = pd.DataFrame({
        "cell_x": [c[0] for c in cells], "cell_y": [c[1] for c in cells], "zone": "21S", "tile": tile.name,
        "quadrant": "NW", "easting": e, "northing": n, "lon": np.round(lon, 7), "lat": np.round(lat, 7),
        "probability": probabilities, "p_high": [0.8 if i == "high" else 0.1 for i in impacts],
        "p_low": [0.8 if i == "low" else 0.1 for i in impacts],
        "p_no_ore": [0.8 if i == "no_ore" else 0.1 for i in impacts], "impact": impacts})
    d = tmp_path / f"{tile.name}_NW"
    d.mkdir(parents=True, exist_ok=True)
    df.to_csv(d / "classified.csv", index=False)
    return d / "classified.csv"


# ------------------------------------------------------------------------- the tiny scan of the DAG tests


def mine_squares(tiles: list[Tile]) -> list[tuple[int, int, int, int]]:
    """Two bright 50 px squares (global px) in the core of each tile."""
    squares = []
    for t in tiles:
        c0, r0, _, _ = t.core_px()
        squares += [(c0 + 150, r0 + 150, c0 + 200, r0 + 200), (c0 + 450, r0 + 420, c0 + 500, r0 + 470)]
    return squares


def write_tiny_scene(workdir: Path, tiles: list[Tile], squares) -> None:
    """imagery/composite_2026Q1.tif over the tiles with the bright squares, and region.geojson: the cores
    of the tiles (first to last), a little inside."""
    (workdir / "imagery").mkdir(parents=True)
    write_scene(workdir / "imagery" / "composite_2026Q1.tif", tiles, squares=squares)
    region = to_crs(box(*tiles[0].core_bounds[:2], *tiles[-1].core_bounds[2:]), tiles[0].id.epsg, 4326)
    gpd.GeoDataFrame({"name": ["tiny"]}, geometry=[region.buffer(-0.0005)], crs=4326).to_file(
        workdir / "region.geojson")


def write_tiny_config(workdir: Path, discovery, impact, imagery: str = "imagery/composite_{period}.tif",
                      **sections) -> Path:
    """config.yaml of the tiny scan: region "tiny" (region.geojson), period 2026Q1, the small grid, local
    imagery, the given models; ``sections`` are added as further top-level sections (merge=..., layers=...)."""
    cfg = {
        "region": {"name": "tiny", "file": "region.geojson"}, "periods": ["2026Q1"],
        "grid": {"tile_px": SMALL_GRID.tile_px, "halo_px": SMALL_GRID.halo_px, "resolution_m": 10},
        "source": {"kind": "local", "local": {"paths": [imagery]}},
        "models": {"discovery": str(discovery), "impact": str(impact)},
        "detect": {"block_cells": 7},
        **sections,
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return workdir / "config.yaml"


def run_snakemake(workdir: Path, *extra, snakefile: Path = ROOT / "Snakefile", check=True,
                  profile_args=("--cores", "2"), timeout=None) -> subprocess.CompletedProcess:
    """Snakemake on ``workdir`` with its config.yaml (from the Snakefile's folder); AssertionError on failure
    unless ``check`` is false."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *profile_args, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=snakefile.parent, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\n{r.stdout[-4000:]}{r.stderr[-6000:]}")
    return r
