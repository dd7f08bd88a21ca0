"""Cell composites fetched from Earth Engine for ``minescan datasets chips --gee-config``.

Instead of reading the cells from local tiles, each cell of a grid (:mod:`minescan.datasets.grid`) is
fetched as one chip through the Earth Engine chip code of the scan (:func:`minescan.sources.gee.chips.fetch_chips`:
the same composite definition, one ``computePixels`` request per cell, retries, reruns fetch only what is
missing). A chip is a square on the 10 m scan grid of the cell centre's UTM zone, ``margin_px`` wider than
the cell on every side, so it covers the cell whatever the two grids' offset; the chips then stand in for
the local images and :func:`minescan.datasets.chips.write_chips` cuts, masks and tables every cell exactly
as from tiles.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd

from minescan.errors import InputDataError
from minescan.grid import _transformer


def chip_size_px(cells, resolution_m: float, margin_px: int = 2) -> int:
    """One chip size for the whole grid: the widest cell in pixels plus ``margin_px`` on each side."""
    side = float((cells["x_max"].astype(float) - cells["x_min"].astype(float)).max())
    return int(math.ceil(side / resolution_m)) + 2 * margin_px


def cells_as_points(cells) -> pd.DataFrame:
    """The grid's cells as chip points (``read_chip_points`` format): id = cell name, lon/lat = centre of the
    cell's UTM square, class = 1 for positives, side_m = cell side."""
    from minescan.sources.gee.chips import chip_id

    rows = []
    for c in cells.itertuples():
        epsg = int(c.epsg)
        x, y = (float(c.x_min) + float(c.x_max)) / 2, (float(c.y_min) + float(c.y_max)) / 2
        lon, lat = _transformer(epsg, 4326).transform(x, y)
        rows.append({"id": chip_id(c.name), "lon": lon, "lat": lat,
                     "class": 1 if c.label == "positive" else 0,
                     "side_m": float(c.x_max) - float(c.x_min), "scheme": "centre"})
    points = pd.DataFrame(rows, columns=["id", "lon", "lat", "class", "side_m", "scheme"])
    dup = points["id"][points["id"].duplicated()].unique()
    if len(dup):
        raise InputDataError(f"grid: cell name(s) {', '.join(dup[:3])} repeat")
    return points


def fetch_cell_chips(cells, period: str, settings, out_dir, *, resolution_m: float = 10.0, margin_px: int = 2,
                     ee=None, retrier=None) -> list[Path]:
    """Fetch every cell's composite chip (those already fetched are kept) into ``out_dir``; return the chip
    paths, one per cell, in the grid's order."""
    from minescan.sources.gee.chips import chip_paths, fetch_chips

    if len(cells) == 0:
        raise InputDataError("grid: no cell to fetch")
    size = chip_size_px(cells, resolution_m, margin_px)
    points = cells_as_points(cells)
    fetch_chips(points, period, replace(settings, chip_sizes=(size,)), out_dir, resolution_m=resolution_m,
                ee=ee, retrier=retrier)
    return [chip_paths(Path(out_dir), (size,), pid)[size] for pid in points["id"]]
