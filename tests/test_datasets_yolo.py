"""minescan datasets yolo: boxes against known polygons, grouped splits, the export read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml
from shapely.geometry import MultiPolygon, Polygon, box
from test_datasets_chips import EPSG, X0, Y0, S, polys_utm, scene

from minescan.cli import run
from minescan.datasets.grid import build_grid, write_grid
from minescan.datasets.yolo import assign_splits, read_labels, split_groups, yolo_boxes

CELL = (0.0, 0.0, 500.0, 500.0)


def test_boxes_of_known_polygons_including_one_across_the_edge():
    inside = box(100, 100, 200, 300)
    across = box(450, 200, 700, 260)  # crosses the east edge: clipped at x = 500
    sliver = box(495, 0, 600, 100)  # 5 m = 0.5 px inside: dropped
    got = yolo_boxes([inside, across, sliver], CELL, 50, min_box_px=3)
    assert got == sorted([(0.3, 0.6, 0.2, 0.4), (0.95, 0.54, 0.1, 0.12)])
    assert yolo_boxes([sliver], CELL, 50, min_box_px=0.4) == [(0.995, 0.9, 0.01, 0.2)]  # kept if allowed
    # a U crossing the north edge: the cell keeps two separate arms, one box each
    u = Polygon([(100, 400), (300, 400), (300, 600), (250, 600), (250, 450), (150, 450), (150, 600), (100, 600)])
    arms = yolo_boxes([u], CELL, 50)
    assert len(arms) == 1  # the U's base is inside: one piece
    u_top = Polygon([(100, 550), (300, 550), (300, 450), (250, 450), (250, 500 + 30), (150, 530), (150, 450),
                     (100, 450)])
    assert len(yolo_boxes([u_top], CELL, 50)) == 2
    # each part of a multipolygon is its own box; a polygon outside gives nothing
    mp = MultiPolygon([box(0, 0, 50, 50), box(400, 400, 500, 500)])
    assert yolo_boxes([mp, box(600, 600, 700, 700)], CELL, 50) == [(0.05, 0.95, 0.1, 0.1), (0.9, 0.1, 0.2, 0.2)]


def test_splits_never_separate_a_cell_pair_or_group():
    rng = np.random.default_rng(1)
    squares, country = [], []
    for i in range(40):
        x, y = X0 + rng.uniform(0, 300_000), Y0 + rng.uniform(0, 300_000)
        squares.append(box(x, y, x + 800, y + 600))
        country.append("ABCDE"[i % 5])
    polys = polys_utm(squares)
    polys["country"] = country
    cells = build_grid(polys, 15)
    for group_by, block_m in ((None, 50_000.0), ("country", 0.0)):
        groups = split_groups(cells, group_by, block_m)
        split = assign_splits(groups, (0.6, 0.2, 0.2), seed=3)
        df = pd.DataFrame({"pair": cells.pair_id, "group": groups, "split": split, "name": cells.name})
        assert (df.groupby("pair").split.nunique() == 1).all()
        assert (df.groupby("group").split.nunique() == 1).all()
        assert set(split) == {"train", "val", "test"}
        assert (df.groupby("pair").size() == 2).all()  # each positive with its negative
    # the spatial groups: cells of one pair share the positive's block even across a block edge
    groups = split_groups(cells, None, 50_000.0)
    pos = cells[cells.label == "positive"].set_index("pair_id")
    assert (groups.to_numpy() == cells.pair_id.map(groups[cells.label == "positive"].set_axis(pos.index))).all()


def test_yolo_export_read_back(tmp_path):
    mine = box(X0 + 100, Y0 + 100, X0 + 200, Y0 + 300)
    edge = box(X0 + 450, Y0 + 200, X0 + 700, Y0 + 260)
    polys = polys_utm([mine, edge])
    polys["country"] = ["A", "A"]
    polys.drop(columns="polygon_index").to_file(tmp_path / "p.gpkg")
    write_grid(build_grid(polys, 16, S), tmp_path / "g.gpkg")
    img = scene(tmp_path / "scene.tif", (X0 - 2000, Y0 - 2000, X0 + 2500, Y0 + 2500))
    assert run(["datasets", "chips", "--grid", str(tmp_path / "g.gpkg"), "--polygons", str(tmp_path / "p.gpkg"),
                "--images", str(img), "--out", str(tmp_path / "chips"), "--table", "none"]) == 0
    assert run(["datasets", "yolo", "--grid", str(tmp_path / "g.gpkg"), "--polygons", str(tmp_path / "p.gpkg"),
                "--chips", str(tmp_path / "chips"), "--out", str(tmp_path / "yolo"), "--draw-boxes",
                "--group-by", "country", "--split", "1", "0", "0"]) == 0
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "mine"} and data["train"] == "images/train" and data["nc"] == 1
    splits = pd.read_csv(tmp_path / "yolo" / "splits.csv")
    assert (splits.split == "train").all()
    grid = pd.read_csv(tmp_path / "g.csv", dtype={"name": str}).set_index("cell_id")
    name = grid.loc["21S_800_15000", "name"]
    labels = read_labels(tmp_path / "yolo" / "labels" / "train" / f"{name}.txt")
    assert [lab[0] for lab in labels] == [0, 0]
    assert np.allclose([lab[1:] for lab in labels], [(0.3, 0.6, 0.2, 0.4), (0.95, 0.54, 0.1, 0.12)])
    # the neighbour east holds the rest of the edge-crossing polygon: x 0..200 m of its 500 m
    east = read_labels(tmp_path / "yolo" / "labels" / "train" / f"{grid.loc['21S_801_15000', 'name']}.txt")
    assert np.allclose([lab[1:] for lab in east], [(0.2, 0.54, 0.4, 0.12)])
    assert (tmp_path / "yolo" / "images" / "train" / f"{name}.png").exists()
    for neg in splits[splits.label == "negative"].name:
        assert (tmp_path / "yolo" / "labels" / "train" / f"{neg}.txt").read_text() == ""
    from PIL import Image

    check = np.asarray(Image.open(tmp_path / "yolo" / "check" / f"{name}.png"))
    # the box of the mine (px 10..19 x 20..39 from the top-left) is drawn in yellow
    assert tuple(check[20, 10]) == (255, 255, 0) and tuple(check[39, 19]) == (255, 255, 0)
    assert tuple(check[30, 15]) != (255, 255, 0)
    # bad group column: one line, exit 2
    assert run(["datasets", "yolo", "--grid", str(tmp_path / "g.gpkg"), "--polygons", str(tmp_path / "p.gpkg"),
                "--chips", str(tmp_path / "chips"), "--out", str(tmp_path / "y2"), "--group-by", "nope"]) == 2
    # multi-band TIFF images
    assert run(["datasets", "yolo", "--grid", str(tmp_path / "g.gpkg"), "--polygons", str(tmp_path / "p.gpkg"),
                "--chips", str(tmp_path / "chips"), "--out", str(tmp_path / "y3"), "--image-format", "tif"]) == 0
    import rasterio

    tifs = sorted((tmp_path / "y3" / "images").rglob("*.tif"))
    with rasterio.open(tifs[0]) as ds:
        assert ds.count == 12 and "_mine" not in ds.descriptions and ds.crs.to_epsg() == EPSG
