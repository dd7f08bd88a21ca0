"""``minescan segment train`` on a synthetic scene, the trained model's windowed prediction, and the
per-quadrant segment job with its extents."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from conftest import SMALL_GRID, grid_tile
from rasterio.features import rasterize
from shapely.geometry import Point, box

from minescan.cli import run
from minescan.models.networks import STRIDE
from minescan.segment.predict import (
    array_reader,
    load_segmenter,
    merge_extents,
    predict_one_pass,
    predict_windows,
    run_segment,
)

pytestmark = pytest.mark.slow
BANDS = ("B2", "B3", "B4")
EPSG = 32721
# SegFormer attention sees its whole window: windowed vs one pass differ a little (docs/segmentation.md)
MEAN_ABS_TOLERANCE = 0.03
FLIPPED_TOLERANCE = 0.03
TRAIN = {"tile_px": 128, "patch_px": 64, "batch_size": 4, "epochs": 8, "steps_per_epoch": 4, "window_px": 128,
         "overlap_px": 32, "learning_rate": 0.002}


def paint(shape, transform, geoms, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(800, 80, (len(BANDS), *shape))
    m = rasterize([(g, 1) for g in geoms], out_shape=shape, transform=transform) if geoms else np.zeros(shape)
    data[0][m == 1] += 1200
    data[1][m == 1] += 600
    return np.clip(data, 1, 65535).astype(np.uint16)


def write_tif(path, data, transform):
    with rasterio.open(path, "w", driver="GTiff", dtype="uint16", count=len(BANDS), width=data.shape[2],
                       height=data.shape[1], crs=f"EPSG:{EPSG}", transform=transform, nodata=0) as dst:
        dst.write(data)
        dst.descriptions = BANDS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("segtrain")
    rng = np.random.default_rng(0)
    transform = Affine(10, 0, 500_000, 0, -10, 8_000_000)
    geoms = []
    for i in range(14):
        cx, cy = rng.uniform(40, 472, 2)
        r = rng.uniform(8, 30)
        x, y = 500_000 + cx * 10, 8_000_000 - cy * 10
        geoms.append(Point(x, y).buffer(r * 10) if i % 2 else box(x - r * 10, y - r * 10, x + r * 10, y + r * 10))
    write_tif(d / "img.tif", paint((512, 512), transform, geoms, 0), transform)
    gpd.GeoDataFrame(geometry=geoms, crs=EPSG).to_crs(4326).to_file(d / "polys.geojson")  # another CRS
    code = run(["segment", "train", "--images", str(d / "img.tif"), "--polygons", str(d / "polys.geojson"),
                "--out", str(d / "model"), "--bands", *BANDS, "--config", json.dumps(TRAIN)])
    assert code == 0
    return d


def test_model_directory_and_card(trained):
    card = json.loads((trained / "model" / "card.json").read_text())
    assert card["kind"] == "segmentation" and card["bands"] == list(BANDS)
    assert card["loss"] == {"name": "tversky", "alpha": 0.5, "beta": 0.5, "delta": 1.0}
    assert card["patch_px"] == 64 and card["input_scaling"]["reflectance_scale"] == 1e-4
    assert card["training_data"]["tiles"] == {"train": 12, "validation": 2, "test": 2}
    assert card["training_data"]["polygons"]["features"] == 14
    for side in ("train", "validation", "test"):
        assert set(card["metrics"][side]) == {"images", "images_empty", "f1", "precision", "recall", "iou_pooled"}
    assert card["metrics"]["train"]["f1"] > 0.5  # it learned the bright disturbed ground
    assert len(card["metrics"]["loss_per_epoch"]) == 8


def test_trained_segformer_windowed_within_tolerance_of_one_pass(trained):
    from minescan.models.store import normalise
    from minescan.segment.masks import read_image, read_polygons

    model = load_segmenter(trained / "model")
    im = read_image(trained / "img.tif", list(BANDS), 1e-4, read_polygons(trained / "polys.geojson"))
    read = array_reader(normalise(im.reflectance, model.card["normalisation"], im.valid))
    rect = (32, 32, 480, 480)
    ref = predict_one_pass(model.network, read, rect, 32)
    for window in (128, 256):
        got = predict_windows(model.network, read, rect, window, 32, batch_size=2)
        assert np.abs(got - ref).mean() <= MEAN_ABS_TOLERANCE
        assert ((got >= 0.5) != (ref >= 0.5)).mean() <= FLIPPED_TOLERANCE


def test_segment_job_mask_and_extents(trained, tmp_path):
    tile = grid_tile()  # 648 px core, halo 160; quadrant NW core is 324 px
    c0, r0, c1, r1 = tile.quadrant_core_px("NW")
    res = SMALL_GRID.resolution_m
    # one 200 m x 200 m (4 ha) square of disturbed ground, whose cells were detected
    sq = box((c0 + 100) * res, -(r0 + 120) * res, (c0 + 120) * res, -(r0 + 100) * res)
    size = tile.size_px
    write_tif(tmp_path / "tile.tif", paint((size, size), tile.transform, [sq], 5), tile.transform)
    cells = sorted({((c0 + 100 + dx) // STRIDE, (r0 + 100 + dy) // STRIDE) for dx in (0, 19) for dy in (0, 19)})
    pd.DataFrame({"cell_x": [c[0] for c in cells], "cell_y": [c[1] for c in cells]}).to_csv(
        tmp_path / "candidates.csv", index=False)
    model = load_segmenter(trained / "model")
    out = run_segment(tmp_path / "tile.tif", tile, "NW", model, 1e-4, tmp_path / "candidates.csv",
                      tmp_path / "segment.tif", tmp_path / "extents.gpkg", margin_px=0)
    # its cells cover core px [81, 135) in both directions: the 64 px cores at 64 and 128, 2 x 2 windows
    assert out["windows"] == 4
    with rasterio.open(tmp_path / "segment.tif") as ds:
        mask = ds.read(1)
        assert mask.shape == (324, 324) and ds.nodata == 255 and ds.crs.to_epsg() == tile.id.epsg
        assert ds.transform * (0, 0) == (c0 * res, -r0 * res)
    assert (mask != 255).sum() == 4 * 64 * 64 and (mask[64:192, 64:192] != 255).all()
    ext = gpd.read_file(tmp_path / "extents.gpkg")
    assert len(ext) >= 1
    assert ext["area_ha"].sum() == pytest.approx(4.0, rel=0.3)
    merge_extents([tmp_path / "extents.gpkg", tmp_path / "extents.gpkg"], tmp_path / "all.gpkg")
    merged = gpd.read_file(tmp_path / "all.gpkg")
    assert merged["area_ha"].sum() == pytest.approx(ext["area_ha"].sum(), rel=1e-6)  # the same ground once
    # everywhere: every core of the quadrant
    run_segment(tmp_path / "tile.tif", tile, "NW", model, 1e-4, tmp_path / "candidates.csv",
                tmp_path / "all.tif", tmp_path / "all_ext.gpkg", where="everywhere")
    with rasterio.open(tmp_path / "all.tif") as ds:
        assert (ds.read(1) != 255).all()


def test_per_image_metrics_by_hand():
    from minescan.segment.train import per_image_metrics

    t1 = np.array([[1, 1, 0, 0]])
    p1 = np.array([[1, 0, 1, 0]])  # tp 1, fp 1, fn 1: P = R = F1 = 0.5
    t2 = np.array([[1, 1, 1, 1]])
    p2 = np.array([[1, 1, 1, 1]])  # perfect
    empty = np.zeros((1, 4), int)  # nothing, nothing predicted: left out of the averages
    m = per_image_metrics([t1, t2, empty], [p1, p2, empty])
    assert m == {"images": 3, "images_empty": 1, "f1": 0.75, "precision": 0.75, "recall": 0.75,
                 "iou_pooled": round(5 / 7, 4)}


def test_a_detection_model_is_refused(trained, tmp_path, bright_model_dir, capsys):
    code = run(["segment", "predict", "--tile", grid_tile().name, "--quadrant", "NW", "--tile-path",
                str(tmp_path / "none.tif"), "--model", str(bright_model_dir), "--candidates", "c.csv",
                "--mask-out", str(tmp_path / "m.tif"), "--extents-out", str(tmp_path / "e.gpkg")])
    assert code == 2
    assert "is a 'discovery' model, expected 'segmentation'" in capsys.readouterr().err
