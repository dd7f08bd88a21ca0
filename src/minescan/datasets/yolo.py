"""YOLO object-detection sets from a cell grid, its chips and the mine polygons.

Layout (the Ultralytics/YOLO convention)::

    OUT/data.yaml                    path, train/val/test image folders, nc: 1, names: {0: mine}
    OUT/images/{train,val,test}/NAME.png|jpg|tif
    OUT/labels/{train,val,test}/NAME.txt   one line per box: "0 cx cy w h", normalised to [0, 1]
    OUT/splits.csv                   name, label, split, group, pair_id, fold, boxes
    OUT/check/NAME.png               (--draw-boxes) the image with the boxes read back from the label file

Images: png/jpg are the chip's visible bands (no polygon overlay); tif is the chip's image bands (its
``_mine`` band dropped). Negative cells get an empty label file (background images).

Boxes: one per polygon part clipped to the cell; a part that the cell edge cuts into several pieces gives
one box per piece (each is a separate visible object). Sliver rule: a box narrower or shorter than
``min_box_px`` image pixels (3 px = 30 m at 10 m by default) is dropped; it is mostly outside the image.
Box coordinates: x from the cell's west edge, y from its north edge, both over the cell size.

Splits never separate what belongs together: every cell belongs to the group of its pair's positive
(``pair_id``), either the value of a metadata column (``group_by``, e.g. ``COUNTRY_NAME``) or a spatial
block of ``block_m`` metres of its UTM zone. Groups are shuffled (``seed``) and each is put in the split
that is furthest below its share of cells, so a cell, its pair and its group are on one side only.
``folds`` > 1 adds grouped cross-validation folds (scikit-learn's ``GroupKFold``) in ``splits.csv``.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
from shapely.geometry import box

from minescan.datasets.chips import MINE_BAND, PolygonIndex, rgb_image, save_image
from minescan.errors import ConfigError, InputDataError
from minescan.io_utils import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CLASS_ID = 0


def yolo_boxes(geoms, cell_bounds, size_px: int, min_box_px: float = 3.0) -> list[tuple[float, ...]]:
    """Normalised (cx, cy, w, h) boxes of the polygons' parts clipped to the cell (see module docstring)."""
    x0, y0, x1, y1 = cell_bounds
    side_x, side_y = x1 - x0, y1 - y0
    cell = box(*cell_bounds)
    out = []
    for geom in geoms:
        for part in shapely.get_parts(geom):
            clipped = part.intersection(cell)
            for piece in shapely.get_parts(clipped):
                if piece.geom_type != "Polygon" or piece.area <= 0:
                    continue
                bx0, by0, bx1, by1 = piece.bounds
                w, h = (bx1 - bx0) / side_x, (by1 - by0) / side_y
                if w * size_px < min_box_px or h * size_px < min_box_px:
                    continue
                box_ = (((bx0 + bx1) / 2 - x0) / side_x, (y1 - (by0 + by1) / 2) / side_y, w, h)
                rounded = tuple(round(v, 6) for v in box_)
                if rounded not in out:
                    out.append(rounded)
    return sorted(out)


def label_text(boxes) -> str:
    return "".join(f"{CLASS_ID} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cx, cy, w, h in boxes)


def read_labels(path) -> list[tuple[int, float, float, float, float]]:
    """A YOLO label file back as (class, cx, cy, w, h) rows."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise InputDataError(f"{path}: line {i} is not 'class cx cy w h'")
        rows.append((int(parts[0]), *map(float, parts[1:])))
    return rows


def draw_boxes(img: np.ndarray, labels, path) -> None:
    """The image with the boxes of ``labels`` (YOLO rows) drawn in yellow, to check them by eye."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    for _, cx, cy, bw, bh in labels:
        draw.rectangle([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w - 1, (cy + bh / 2) * h - 1],
                       outline=(255, 255, 0))
    save_image(np.asarray(im), path)


def split_groups(cells: pd.DataFrame, group_by: str | None, block_m: float) -> pd.Series:
    """The group of every cell: its pair's positive's ``group_by`` value, or its spatial block."""
    pos = cells[cells["label"] == "positive"].set_index("pair_id")
    if group_by:
        if group_by not in cells.columns:
            raise InputDataError(f"grid has no column '{group_by}' to group the splits by "
                                 f"(it has {', '.join(c for c in cells.columns if c != 'geometry')})")
        value = pos[group_by].astype(object).where(pos[group_by].notna(), "(missing)").astype(str)
    else:
        if not block_m > 0:
            raise ConfigError(f"--block-m must be > 0 (got {block_m})")
        cx = (pos["x_min"] + pos["x_max"]) / 2
        cy = (pos["y_min"] + pos["y_max"]) / 2
        value = pos["zone"].astype(str) + "_" + np.floor(cx / block_m).astype(int).astype(str) + "_" + \
            np.floor(cy / block_m).astype(int).astype(str)
    groups = cells["pair_id"].map(value)
    return groups.fillna("(unpaired)").astype(str)


def assign_splits(groups: pd.Series, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> pd.Series:
    """train/val/test per cell, whole groups at a time (see module docstring)."""
    fr = np.asarray(fractions, dtype=float)
    if len(fr) != 3 or (fr < 0).any() or fr.sum() <= 0:
        raise ConfigError(f"--split needs three non-negative fractions (got {list(fractions)})")
    fr = fr / fr.sum()
    sizes = groups.value_counts().sort_index()
    order = np.random.default_rng(seed).permutation(len(sizes))
    total = float(len(groups))
    counts = np.zeros(3)
    of_group = {}
    for i in order:
        g, n = sizes.index[i], sizes.iloc[i]
        deficit = fr * total - counts
        deficit[fr == 0] = -math.inf
        k = int(np.argmax(deficit))
        of_group[g] = SPLITS[k]
        counts[k] += n
    return groups.map(of_group)


def assign_folds(groups: pd.Series, folds: int) -> pd.Series:
    from sklearn.model_selection import GroupKFold

    n_groups = groups.nunique()
    if folds > n_groups:
        raise ConfigError(f"--folds {folds}: only {n_groups} groups to spread over the folds")
    fold = np.zeros(len(groups), dtype=int)
    for k, (_, test) in enumerate(GroupKFold(n_splits=folds).split(np.zeros(len(groups)), groups=groups)):
        fold[test] = k
    return pd.Series(fold, index=groups.index)


def _chip_image(tif: Path, image_format: str, rgb, scale: float, stretch: float):
    with rasterio.open(tif) as ds:
        names = list(ds.descriptions)
        keep = [i for i, n in enumerate(names) if n != MINE_BAND]
        data = ds.read([i + 1 for i in keep])
        profile = ds.profile
        nodata = int(ds.tags().get("IMAGE_NODATA", 0))
    bands = [names[i] for i in keep]
    return data, bands, profile, rgb_image(data, bands, list(rgb), scale, stretch, nodata)


def export_yolo(cells, polys, chips_dir, out_dir, *, image_format: str = "png", group_by: str | None = None,
                block_m: float = 50000.0, fractions=(0.7, 0.15, 0.15), folds: int = 0, seed: int = 0,
                min_box_px: float = 3.0, draw: bool = False, rgb=("B4", "B3", "B2"), scale: float = 1e-4,
                stretch: float = 0.3) -> dict:
    """Write the YOLO set of the cells that have a chip (see the module docstring); returns counts."""
    chips_dir, out_dir = Path(chips_dir), Path(out_dir)
    index_path = chips_dir / "chips.csv"
    if not index_path.exists():
        raise InputDataError(f"{index_path}: not found (run 'minescan datasets chips' first)")
    index = pd.read_csv(index_path, dtype={"name": str}, keep_default_na=False)
    have = index[index["image"] != ""].set_index("name")["image"]
    cells = pd.DataFrame(cells.drop(columns="geometry", errors="ignore"))
    cells["group"] = split_groups(cells, group_by, block_m)
    cells = cells[cells["name"].isin(have.index)].reset_index(drop=True)
    if cells.empty:
        raise InputDataError(f"{index_path}: no chip of the grid's cells was written")
    cells["split"] = assign_splits(cells["group"], fractions, seed)
    cells["fold"] = assign_folds(cells["group"], folds) if folds and folds > 1 else -1
    for sub in ("images", "labels", "check"):  # a previous export's files would mix with this one's
        if (out_dir / "data.yaml").exists() and (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)
    pindex = PolygonIndex(polys)
    n_boxes = []
    for cell in cells.itertuples():
        tif = chips_dir / have[cell.name]
        data, bands, profile, img = _chip_image(tif, image_format, rgb, scale, stretch)
        size = data.shape[1]
        bounds = (float(cell.x_min), float(cell.y_min), float(cell.x_max), float(cell.y_max))
        geoms = pindex.near(int(cell.epsg), box(*bounds))
        boxes = yolo_boxes(geoms, bounds, size, min_box_px)
        n_boxes.append(len(boxes))
        image_path = out_dir / "images" / cell.split / f"{cell.name}.{image_format}"
        if image_format == "tif":
            profile.update(count=len(bands))
            with atomic_output(image_path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = tuple(bands)
        else:
            save_image(img, image_path)
        label_path = out_dir / "labels" / cell.split / f"{cell.name}.txt"
        atomic_write_text(label_path, label_text(boxes))
        if draw and boxes:
            draw_boxes(img, read_labels(label_path), out_dir / "check" / f"{cell.name}.png")
    cells["boxes"] = n_boxes
    with atomic_output(out_dir / "splits.csv") as tmp:
        cells[["name", "label", "split", "group", "pair_id", "fold", "boxes"]].to_csv(tmp, index=False)
    yaml_text = (f"# minescan datasets yolo: {len(cells)} images, class 0 = mine\n"
                 f"path: {out_dir.resolve()}\ntrain: images/train\nval: images/val\ntest: images/test\n"
                 "nc: 1\nnames:\n  0: mine\n")
    atomic_write_text(out_dir / "data.yaml", yaml_text)
    counts = {s: int((cells["split"] == s).sum()) for s in SPLITS}
    counts["boxes"] = int(sum(n_boxes))
    counts["groups"] = int(cells["group"].nunique())
    log.info("YOLO set %s: %s", out_dir, counts)
    return counts
