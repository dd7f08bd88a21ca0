"""The ``minescan`` command line. Snakemake rules call these commands; each does one stage's work.

Errors a user can fix (bad config, missing band, corrupt file, ...) print one line naming the culprit and
exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import MinescanError

log = logging.getLogger("minescan")


def _grid_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tile grid (must match the scan config)")
    g.add_argument("--tile-px", type=int, default=9216, help="tile core size in px (grid.tile_px)")
    g.add_argument("--halo-px", type=int, default=160, help="halo around tiles in px (grid.halo_px)")
    g.add_argument("--resolution-m", type=float, default=10.0, help="pixel size in m (grid.resolution_m)")


def _grid(args):
    from .grid import GridSpec

    return GridSpec(args.tile_px, args.resolution_m, args.halo_px)


def _tile(args):
    from .grid import Tile, TileId

    return Tile(TileId.parse(args.tile), _grid(args))


def cmd_plan(args) -> int:
    from . import config as cfgmod
    from .change import scan_periods
    from .plan import scan_plan

    cfg = cfgmod.load(args.config)
    cfg["periods"] = scan_periods(cfg)
    plan = scan_plan(cfg)
    if args.json:
        print(json.dumps(plan.as_dict(), indent=2, sort_keys=True))
        return 0
    print(f"region {plan.region_name}: {plan.region_area_km2:.1f} km2, periods {', '.join(cfg['periods'])}")
    print(f"{len(plan.tiles)} tiles, {len(plan.quadrants)} quadrant jobs per period")
    for tile in plan.tiles:
        qs = [q for t, q in plan.quadrants if t == tile]
        print(f"  {tile}: {' '.join(qs)}")
    return 0


def cmd_config_reference(args) -> int:
    from .config import reference_markdown

    print(reference_markdown(), end="")
    return 0


def cmd_demo_scene(args) -> int:
    from .demo import scene_bounds_for_tiles, simulate_scene, training_points, write_scene
    from .grid import quadrants_for_region, tiles_for_region
    from .vector_io import read_region

    grid = _grid(args)
    region = read_region(args.region, args.region_layer)
    tiles = [t for t in tiles_for_region(region, grid, args.region) if quadrants_for_region(region, t)]
    bounds, epsg = scene_bounds_for_tiles(tiles, margin_px=64)
    seed = args.seed + (1000 if args.training else 0)
    density = args.sites_per_tile / (grid.tile_m / 1000) ** 2
    scene = simulate_scene(bounds, epsg, grid.resolution_m, seed, density, args.period or "")
    write_scene(scene, args.scene, args.truth)
    if args.points:
        from .io_utils import atomic_output

        pts = training_points(scene.truth, region, n_background=args.background or 2 * len(scene.truth), seed=seed)
        with atomic_output(args.points) as tmp:
            pts.to_csv(tmp, index=False)
    log.info("demo scene %s: %dx%d px, %d sites (%s)", args.scene, scene.data.shape[2], scene.data.shape[1],
             len(scene.truth), scene.truth["kind"].value_counts().to_dict() if len(scene.truth) else {})
    return 0


def cmd_make_tile(args) -> int:
    from .tiles import expand_sources, make_tile

    info = make_tile(_tile(args), expand_sources(args.sources, args.period), args.bands, args.out,
                     band_names=args.band_names, resampling=args.resampling, nodata=args.nodata)
    log.info("tile %s written to %s (%.1f %% valid)", info["tile"], args.out, 100 * info["valid_fraction"])
    return 0


def cmd_detect(args) -> int:
    from .detect import run_detect
    from .inference import DEFAULT_MAX_BLOCK_MB, import_keras_lean
    from .model_io import load_model
    from .vector_io import read_region

    import_keras_lean()
    model = load_model(args.model, expect_kind="discovery")
    impact = load_model(args.impact_model, expect_kind="impact") if args.impact_model else None
    region = read_region(args.region, args.region_layer)
    run_detect(args.tile_path, _tile(args), args.quadrant, model, region, args.scale, args.threshold,
               args.block_cells, args.prob_out, args.candidates_out, args.on_empty,
               max_block_mb=args.max_block_mb or DEFAULT_MAX_BLOCK_MB, method=args.inference,
               impact=impact, impact_batch_size=args.impact_batch_size)
    return 0


def cmd_classify(args) -> int:
    from .detect import lazy_model, run_classify

    # the network (and TensorFlow) is only loaded if some candidate is not yet rated by this model
    model = None if args.model in ("none", "") else lazy_model(args.model, "impact")
    run_classify(args.tile_path, _tile(args), model, args.scale, args.candidates, args.out, args.batch_size)
    return 0


def cmd_merge(args) -> int:
    from .merge import merge_scan
    from .model_io import model_fingerprint, read_card, scan_threshold
    from .spatial_prior import SpatialPrior
    from .vector_io import read_region

    models = {}
    for kind, path in (("discovery", args.discovery_model), ("impact", args.impact_model)):
        if path and path != "none":
            card = read_card(path)
            models[kind] = {"path": path, "name": card.get("name"), "version": model_fingerprint(Path(path))}
    threshold = args.threshold if args.threshold is not None else scan_threshold(read_card(args.discovery_model))
    names = [Path(p).parent.name for p in args.classified]
    summary = merge_scan(
        args.classified, args.outdir, region_name=args.region_name, period=args.period,
        region_lonlat=read_region(args.region, args.region_layer),
        tiles=sorted({n.rsplit("_", 1)[0] for n in names}), quadrants=names, models=models,
        thresholds={"discovery": threshold, "drop_no_ore": args.drop_no_ore}, resolution_m=args.resolution_m,
        drop_no_ore=args.drop_no_ore, connectivity=args.connectivity, truth_path=args.truth,
        prior=SpatialPrior(args.isolated_threshold, args.isolation_k, args.isolation_km))
    ev = summary.get("evaluation")
    if ev:
        print(f"{args.region_name} {args.period}: {summary['sites']} sites detected; site-level recall "
              f"{ev['recall']} ({ev['found_mines']}/{ev['truth_mines']} true mines), precision {ev['precision']} "
              f"({ev['correct_sites']}/{ev['detected_sites']} sites)")
    return 0


def cmd_train(args) -> int:
    from .training import train

    card = train(args.kind, args.points, args.images, args.out, bands=args.bands, scale=args.scale,
                 window=args.window, folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                 learning_rate=args.learning_rate, seed=args.seed, threshold=args.threshold, name=args.name)
    m = card["metrics"]
    if m.get("folds"):
        print(f"{args.kind}: {len(m['folds'])}-fold CV accuracy {m['mean_accuracy']:.3f} F1 {m['mean_f1']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import SENTINEL2_BANDS

    parser = argparse.ArgumentParser(prog="minescan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minescan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="list the tiles and quadrant jobs of a scan config (no network, no data)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("config-reference", help="print every config key (type, default, description) as Markdown")
    p.set_defaults(func=cmd_config_reference)

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
    _grid_args(p)
    p.set_defaults(func=cmd_demo_scene)

    p = sub.add_parser("make-tile", help="warp/cut local GeoTIFFs (any CRS) into one grid tile")
    p.add_argument("--tile", required=True, help="tile id, e.g. 21S-E045-N0951")
    p.add_argument("--sources", nargs="+", required=True, help="GeoTIFF files or folders")
    p.add_argument("--period", default=None, help="replaces {period} in source paths")
    p.add_argument("--bands", nargs="+", default=list(SENTINEL2_BANDS))
    p.add_argument("--band-names", nargs="+", default=None, help="band names of the sources if undescribed")
    p.add_argument("--resampling", default="nearest", choices=["nearest", "bilinear", "cubic", "average"])
    p.add_argument("--nodata", type=int, default=0)
    p.add_argument("--out", required=True)
    _grid_args(p)
    p.set_defaults(func=cmd_make_tile)

    p = sub.add_parser("detect", help="discovery FCN on one quadrant: probability COG + candidates CSV")
    p.add_argument("--tile", required=True)
    p.add_argument("--quadrant", required=True, choices=["NW", "NE", "SW", "SE"])
    p.add_argument("--tile-path", required=True)
    p.add_argument("--model", required=True, help="discovery model directory")
    p.add_argument("--region", required=True, help="region file (candidates outside are dropped)")
    p.add_argument("--region-layer", default=None)
    p.add_argument("--scale", type=float, default=1e-4, help="tile value to reflectance factor")
    p.add_argument("--threshold", type=float, default=None, help="default: the model card's")
    p.add_argument("--max-block-mb", type=float, default=None,
                   help="working memory of one inference strip in MB (detect.max_block_mb; default 384, "
                   "minescan.inference.DEFAULT_MAX_BLOCK_MB)")
    p.add_argument("--block-cells", type=int, default=None,
                   help="output-cell rows per strip (cells per block side for --inference blocks); "
                   "overrides --max-block-mb (detect.block_cells)")
    p.add_argument("--inference", choices=["auto", "stream", "blocks"], default="auto",
                   help="stream: stage-wise row strips, nothing recomputed; blocks: square blocks with margins")
    p.add_argument("--on-empty", choices=["error", "warn"], default="error")
    p.add_argument("--impact-model", default=None,
                   help="impact model directory: rate the candidates here too (saves classify a TensorFlow start)")
    p.add_argument("--impact-batch-size", type=int, default=512, help="patches per impact-CNN batch")
    p.add_argument("--prob-out", required=True)
    p.add_argument("--candidates-out", required=True)
    _grid_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("classify", help="impact CNN on one quadrant's candidates")
    p.add_argument("--tile", required=True)
    p.add_argument("--tile-path", required=True)
    p.add_argument("--model", required=True, help="impact model directory, or 'none'")
    p.add_argument("--candidates", required=True)
    p.add_argument("--scale", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--out", required=True)
    _grid_args(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("merge", help="merge quadrant results into a scan's layers (CSV, KML, GPKG, summary)")
    p.add_argument("--classified", nargs="+", required=True, help=".../quadrants/{tile}_{quadrant}/classified.csv")
    p.add_argument("--outdir", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--region-layer", default=None)
    p.add_argument("--region-name", required=True)
    p.add_argument("--period", required=True)
    p.add_argument("--discovery-model", required=True)
    p.add_argument("--impact-model", default="none")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--drop-no-ore", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--connectivity", type=int, choices=[4, 8], default=8)
    p.add_argument("--truth", default=None, help="true site polygons for recall/precision")
    p.add_argument("--resolution-m", type=float, default=10.0)
    p.add_argument("--isolated-threshold", type=float, default=None,
                   help="stricter cut-off for isolated candidates (merge.isolated_threshold); default: off")
    p.add_argument("--isolation-k", type=int, default=2, help="k of the k-th nearest other candidate")
    p.add_argument("--isolation-km", type=float, default=1.0, help="isolated beyond this distance (km)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("train", help="train the discovery FCN or impact CNN from labelled points + images")
    p.add_argument("kind", choices=["discovery", "impact"])
    p.add_argument("--points", required=True, help="CSV lon,lat,class[,impact] or a vector file")
    p.add_argument("--images", nargs="+", required=True, help="GeoTIFFs the points fall in")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--bands", nargs="+", default=list(SENTINEL2_BANDS))
    p.add_argument("--scale", type=float, default=1e-4)
    p.add_argument("--window", type=int, default=None, help="chip size (default 201 discovery, 21 impact)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_train)

    for module in _plugin_modules():
        module.register(sub)
    return parser


def _plugin_modules():
    import importlib

    mods = []
    for name in ("minescan.cli_chips", "minescan.cli_gee", "minescan.cli_layers", "minescan.cli_change"):
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return mods


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code = args.func(args)
    except MinescanError as exc:
        print(f"minescan: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
