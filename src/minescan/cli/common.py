"""Argument helpers shared by the command groups."""

from __future__ import annotations

import argparse


def grid_args(p: argparse.ArgumentParser) -> None:
    """--tile-px, --halo-px, --resolution-m: the scan's tile grid."""
    g = p.add_argument_group("tile grid (must match the scan config)")
    g.add_argument("--tile-px", type=int, default=9216, help="tile core size in px (grid.tile_px)")
    g.add_argument("--halo-px", type=int, default=160, help="halo around tiles in px (grid.halo_px)")
    g.add_argument("--resolution-m", type=float, default=10.0, help="pixel size in m (grid.resolution_m)")


def grid_from_args(args):
    from minescan.grid import GridSpec

    return GridSpec(args.tile_px, args.resolution_m, args.halo_px)


def tile_from_args(args, name: str | None = None):
    """The tile ``--tile`` names (or ``name``, one of several ``--tile``) on the grid the arguments give."""
    from minescan.grid import Tile, TileId

    return Tile(TileId.parse(args.tile if name is None else name), grid_from_args(args))
