"""``minescan demo-scene``, ``make-tile`` and ``demo-layers``: where tile imagery (and the demo's
reference layers) come from (``minescan.sources``). Earth Engine has its own group, ``minescan gee``."""

from __future__ import annotations

import logging

from minescan import SENTINEL2_BANDS
from minescan.cli.common import grid_args, grid_from_args, tile_from_args

log = logging.getLogger("minescan")


def cmd_demo_scene(args) -> int:
    from minescan.grid import quadrants_for_region, tiles_for_region
    from minescan.sources.demo import scene_bounds_for_tiles, simulate_scene, training_points, write_scene
    from minescan.vector_io import read_region

    grid = grid_from_args(args)
    region = read_region(args.region, args.region_layer)
    tiles = [t for t in tiles_for_region(region, grid, args.region) if quadrants_for_region(region, t)]
    bounds, epsg = scene_bounds_for_tiles(tiles, margin_px=64)
    seed = args.seed + (1000 if args.training else 0)
    density = args.sites_per_tile / (grid.tile_m / 1000) ** 2
    scene = simulate_scene(bounds, epsg, grid.resolution_m, seed, density, args.period or "")
    write_scene(scene, args.scene, args.truth)
    if args.points:
        from minescan.io_utils import atomic_output

        pts = training_points(scene.truth, region, n_background=args.background or 2 * len(scene.truth), seed=seed)
        with atomic_output(args.points) as tmp:
            pts.to_csv(tmp, index=False)
    log.info("demo scene %s: %dx%d px, %d sites (%s)", args.scene, scene.data.shape[2], scene.data.shape[1],
             len(scene.truth), scene.truth["kind"].value_counts().to_dict() if len(scene.truth) else {})
    return 0


def cmd_make_tile(args) -> int:
    from minescan.sources.local import expand_sources, make_tile

    info = make_tile(tile_from_args(args), expand_sources(args.sources, args.period), args.bands, args.out,
                     band_names=args.band_names, resampling=args.resampling, nodata=args.nodata,
                     compression=args.compression)
    log.info("tile %s written to %s (%.1f %% valid)", info["tile"], args.out, 100 * info["valid_fraction"])
    return 0


def cmd_demo_layers(args) -> int:
    from minescan.sources.demo_layers import write_demo_layers

    outputs = {k: getattr(args, k) for k in ("concessions", "dams", "indigenous", "conservation", "admin")}
    write_demo_layers(args.truth, args.region, outputs, args.region_layer, args.seed)
    log.info("SIMULATED demo reference layers written: %s", ", ".join(outputs.values()))
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo-scene", help="write a SIMULATED Sentinel-2 scene and its ground truth over a region's tiles")
    p.add_argument("--region", required=True, help="region file")
    p.add_argument("--region-layer", default=None)
    p.add_argument("--period", default=None)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--sites-per-tile", type=float, default=10)
    p.add_argument("--scene", required=True, help="output GeoTIFF")
    p.add_argument("--truth", required=True, help="output GeoPackage of true sites")
    p.add_argument("--points", help="also write training points (CSV lon,lat,class,impact)")
    p.add_argument("--background", type=int, default=None, help="random background points (default 2 per site)")
    p.add_argument("--training", action="store_true", help="an independent scene (other seed) for training")
    grid_args(p)
    p.set_defaults(func=cmd_demo_scene)

    p = sub.add_parser("make-tile", help="warp/cut local GeoTIFFs (any CRS) into one grid tile")
    p.add_argument("--tile", required=True, help="tile id, e.g. 21S-E045-N0951")
    p.add_argument("--sources", nargs="+", required=True, help="GeoTIFF files or folders")
    p.add_argument("--period", default=None, help="replaces {period} in source paths")
    p.add_argument("--bands", nargs="+", default=list(SENTINEL2_BANDS))
    p.add_argument("--band-names", nargs="+", default=None, help="band names of the sources if undescribed")
    p.add_argument("--resampling", default="nearest", choices=["nearest", "bilinear", "cubic", "average"])
    p.add_argument("--nodata", type=int, default=0)
    p.add_argument("--compression", default="zstd", choices=["zstd", "none"],
                   help="how the tile is stored (source.tile_compression): ZSTD level 1 + predictor, or uncompressed "
                        "(1.6 x the size, read in a quarter of the CPU time)")
    p.add_argument("--out", required=True)
    grid_args(p)
    p.set_defaults(func=cmd_make_tile)

    p = sub.add_parser("demo-layers", help="SIMULATED concession/dam registries, protected areas and "
                                           "municipalities for the demo scene")
    p.add_argument("--truth", required=True, help="demo_truth.gpkg")
    p.add_argument("--region", required=True)
    p.add_argument("--region-layer", default=None)
    p.add_argument("--seed", type=int, default=7)
    for name in ("concessions", "dams", "indigenous", "conservation", "admin"):
        p.add_argument(f"--{name}", required=True, help=f"output {name} layer (.gpkg)")
    p.set_defaults(func=cmd_demo_layers)
