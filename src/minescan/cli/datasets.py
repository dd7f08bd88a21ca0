"""``minescan datasets grid | chips | yolo``: training sets from mine polygons (``minescan.datasets``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger("minescan")


def cmd_grid(args) -> int:
    from minescan.datasets.grid import build_grid, cell_size, read_polygons, select_polygons, write_grid
    from minescan.vector_io import read_region

    t0 = time.perf_counter()
    polys = select_polygons(read_polygons(args.polygons, args.layer), args.select, args.polygons)
    region = read_region(args.region, args.region_layer) if args.region else None
    if region is not None:
        polys = polys[polys.intersects(region)].reset_index(drop=True)
    gdf = build_grid(polys, args.zoom, args.cell_m, min_overlap=args.min_overlap, region_lonlat=region)
    gpkg, csv = write_grid(gdf, args.out)
    n_pos = int((gdf["label"] == "positive").sum())
    print(f"{args.polygons}: {len(polys)} polygons -> {n_pos} positive and {len(gdf) - n_pos} negative cells "
          f"of {cell_size(args.zoom, args.cell_m):g} m (zoom {args.zoom}) in "
          f"{time.perf_counter() - t0:.1f} s: {gpkg}, {csv}")
    return 0


def cmd_chips(args) -> int:
    from minescan.datasets.chips import write_chips
    from minescan.datasets.grid import read_grid, read_polygons, select_polygons
    from minescan.sources.local import expand_sources

    cells = read_grid(args.grid)
    if args.limit:
        cells = cells.iloc[: args.limit]
    polys = select_polygons(read_polygons(args.polygons, args.layer), args.select, args.polygons)
    if args.gee_config:  # each cell's composite from Earth Engine instead of local images
        images = _gee_cell_chips(cells, args)
    else:
        images = expand_sources(args.images)
    n = write_chips(cells, polys, images, args.out, resolution_m=args.resolution_m, bands=args.bands,
                    scale=args.scale, table=args.table, preview=args.preview, rgb=args.rgb,
                    stretch=args.stretch, alpha=args.alpha)
    print(f"{n} chips in {args.out}")
    return 0


def _gee_cell_chips(cells, args) -> list:
    """Fetch the cells' composites through the gee chip code (minescan.datasets.gee) into OUT/gee/."""
    from minescan import config as cfgmod
    from minescan.cli.gee import _initialize
    from minescan.datasets.gee import fetch_cell_chips
    from minescan.errors import ConfigError
    from minescan.periods import period_dates
    from minescan.sources.gee.settings import GeeSettings

    cfg = cfgmod.load(args.gee_config)
    settings = GeeSettings.from_config(cfg)
    period = args.period or (cfg.get("periods") or [None])[-1]
    if not period:
        raise ConfigError(f"{args.gee_config}: give --period (e.g. 2024 or 2024Q3)")
    period_dates(period)
    _initialize(settings)
    return fetch_cell_chips(cells, period, settings, Path(args.out) / "gee", resolution_m=args.resolution_m)


def cmd_yolo(args) -> int:
    from minescan.datasets.grid import read_grid, read_polygons, select_polygons
    from minescan.datasets.yolo import export_yolo

    cells = read_grid(args.grid)
    polys = select_polygons(read_polygons(args.polygons, args.layer), args.select, args.polygons)
    counts = export_yolo(cells, polys, args.chips, args.out, image_format=args.image_format,
                         group_by=args.group_by, block_m=args.block_m, fractions=tuple(args.split),
                         folds=args.folds, seed=args.seed, min_box_px=args.min_box_px,
                         draw=args.draw_boxes, rgb=args.rgb, stretch=args.stretch)
    print(f"YOLO set in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def register(sub) -> None:
    top = sub.add_parser("datasets", help="training sets from mine polygons: grid cells, chips, YOLO export")
    dsub = top.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")

    p = dsub.add_parser("grid", help="cells over mine polygons: positives (overlap), nearest negatives, names")
    p.add_argument("--polygons", required=True, help="mine polygons (any vector format GeoPandas reads)")
    p.add_argument("--layer", default=None, help="layer of a multi-layer polygon file ('' = the first)")
    p.add_argument("--select", default=None, metavar="COLUMN=VALUE",
                   help="only the polygons whose COLUMN equals VALUE (e.g. class=mine)")
    p.add_argument("--zoom", type=int, required=True, choices=[14, 15, 16],
                   help="14, 15, 16: cells of 5500, 2750, 1375 m (the name's ZoomLevel)")
    p.add_argument("--cell-m", type=float, default=None, help="cell size in m (overrides the zoom's)")
    p.add_argument("--min-overlap", type=float, default=0.001,
                   help="positives overlap the polygons by at least this fraction of the cell")
    p.add_argument("--region", default=None, help="only cells whose centre lies in this region file")
    p.add_argument("--region-layer", default=None)
    p.add_argument("--out", required=True, help="OUT.gpkg (OUT.csv is written beside it)")
    p.set_defaults(func=cmd_grid)

    p = dsub.add_parser("chips", help="per cell: GeoTIFF (bands + _mine), preview, per-pixel table")
    p.add_argument("--grid", required=True, help="the grid's .gpkg or .csv")
    p.add_argument("--polygons", required=True)
    p.add_argument("--layer", default=None)
    p.add_argument("--select", default=None, metavar="COLUMN=VALUE", help="as for 'datasets grid'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+",
                     help="GeoTIFFs (e.g. the scan's tiles) or folders of them, any CRS, with band descriptions")
    src.add_argument("--gee-config", default=None, metavar="CONFIG",
                     help="instead of --images: fetch each cell's composite from Earth Engine (the scan config's "
                     "source.gee composite and bands; chips kept in OUT/gee/, reruns fetch only missing ones)")
    p.add_argument("--period", default=None, help="composite period with --gee-config (default: the config's last)")
    p.add_argument("--bands", nargs="+", default=None, help="bands to keep (default: all of the first image)")
    p.add_argument("--resolution-m", type=float, default=10.0)
    p.add_argument("--scale", type=float, default=1e-4, help="image value to reflectance factor")
    p.add_argument("--table", choices=["parquet", "csv", "none"], default="parquet",
                   help="per-pixel table format (CSV is large: one row per pixel)")
    p.add_argument("--preview", choices=["png", "jpg", "none"], default="png")
    p.add_argument("--rgb", nargs=3, default=["B4", "B3", "B2"], help="bands of the preview")
    p.add_argument("--stretch", type=float, default=0.3, help="reflectance shown as white in previews")
    p.add_argument("--alpha", type=float, default=0.4, help="opacity of the red polygon fill")
    p.add_argument("--limit", type=int, default=None, help="only the first N cells")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_chips)

    p = dsub.add_parser("yolo", help="YOLO detection set: images, labels, data.yaml, grouped splits")
    p.add_argument("--grid", required=True)
    p.add_argument("--polygons", required=True)
    p.add_argument("--layer", default=None)
    p.add_argument("--select", default=None, metavar="COLUMN=VALUE", help="as for 'datasets grid'")
    p.add_argument("--chips", required=True, help="folder written by 'minescan datasets chips'")
    p.add_argument("--image-format", choices=["png", "jpg", "tif"], default="png",
                   help="png/jpg: 3-band previews without overlay; tif: the multi-band chip")
    p.add_argument("--group-by", default=None,
                   help="metadata column whose values never span two splits (default: spatial blocks)")
    p.add_argument("--block-m", type=float, default=50000.0,
                   help="without --group-by: spatial blocks of this size (m) that never span two splits")
    p.add_argument("--split", nargs=3, type=float, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--folds", type=int, default=0, help="also K grouped cross-validation folds (splits.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-box-px", type=float, default=3.0,
                   help="drop boxes narrower or shorter than this many image pixels (slivers)")
    p.add_argument("--rgb", nargs=3, default=["B4", "B3", "B2"])
    p.add_argument("--stretch", type=float, default=0.3)
    p.add_argument("--draw-boxes", action="store_true",
                   help="check/: previews with the boxes read back from the label files")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_yolo)
