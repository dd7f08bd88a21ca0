import numpy as np
import pytest
from shapely.geometry import box

from minescan.errors import InputDataError
from minescan.grid import (
    QUADRANTS,
    GridSpec,
    Tile,
    TileId,
    cells_in_core,
    quadrants_for_region,
    tile_of_point,
    tiles_for_region,
    to_crs,
)

GRID = GridSpec()  # the published 9216 px, 10 m grid


def test_tile_ids_are_stable_and_round_trip():
    t = tile_of_point(-56.0, -6.0, GRID)
    assert t.name == "21S-E006-N0101"
    assert TileId.parse(t.name) == t.id
    # any point inside the same core maps to the same id, whatever the scan
    x0, y0, x1, y1 = t.core_bounds
    lon, lat = to_crs(box(x0 + 10, y0 + 10, x0 + 20, y0 + 20), t.id.epsg, 4326).centroid.coords[0]
    assert tile_of_point(lon, lat, GRID).name == t.name
    with pytest.raises(InputDataError, match="not a tile id"):
        TileId.parse("21S_6_101")


def test_tile_transform_round_trips_core_corners():
    t = Tile(TileId(21, "S", 6, 101), GRID)
    h = GRID.halo_px
    x, y = t.transform @ (h, h)
    assert (x, y) == (t.core_bounds[0], t.core_bounds[3])
    x, y = t.transform @ (h + GRID.tile_px, h + GRID.tile_px)
    assert (x, y) == (t.core_bounds[2], t.core_bounds[1])
    col, row = ~t.transform @ (t.core_bounds[0], t.core_bounds[3])
    assert (round(col), round(row)) == (h, h)
    assert t.crs.to_epsg() == 32721


def test_region_to_tiles_single_zone_and_across_zone_boundary():
    small = box(-56.02, -6.02, -55.98, -5.98)
    names = [t.name for t in tiles_for_region(small, GRID)]
    assert names == ["21S-E006-N0101"]
    across = box(-54.2, -6.1, -53.8, -5.9)  # zone 21/22 boundary at -54
    tiles = tiles_for_region(across, GRID)
    assert {t.id.zone for t in tiles} == {21, 22}
    assert len({t.name for t in tiles}) == len(tiles)


def test_region_touching_only_part_of_a_tile_schedules_only_its_quadrants():
    t = Tile(TileId(21, "S", 6, 101), GRID)
    x0, y0, x1, y1 = t.core_bounds
    nw_corner = to_crs(box(x0 + 1000, y1 - 3000, x0 + 3000, y1 - 1000), t.id.epsg, 4326)
    assert quadrants_for_region(nw_corner, t) == ["NW"]


def test_quadrant_cells_partition_the_tile_cells():
    for grid in (GRID, GridSpec(432, 10, 160), GridSpec(1000, 10, 160)):
        t = Tile(TileId(21, "S", 7, 101), grid)
        right = Tile(TileId(21, "S", 8, 101), grid)
        cells = set()
        for q in QUADRANTS:
            kx, ky = cells_in_core(t.quadrant_core_px(q))
            qc = {(x, y) for x in kx for y in ky}
            assert not (qc & cells), "a cell belongs to two quadrants"
            cells |= qc
        kx, ky = cells_in_core(t.core_px())
        assert cells == {(x, y) for x in kx for y in ky}
        # and tiles partition too: the neighbour starts where this one ends
        assert cells_in_core(right.core_px())[0].start == kx.stop
        # every cell's centre lies inside its core
        c0, r0, c1, r1 = t.core_px()
        centres = np.array(list(kx)) * 27 + 13.5
        assert centres.min() >= c0 and centres.max() < c1


def test_region_outside_every_tile_is_an_error():
    with pytest.raises(InputDataError, match="empty"):
        tiles_for_region(box(0, 0, 1, 1).intersection(box(5, 5, 6, 6)), GRID)
