"""``minescan plan``, ``config-reference``, ``detect``, ``classify``, ``merge``: the scan path
(``minescan.scan``), one quadrant job or one scan at a time."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from minescan.cli.common import grid_args, tile_from_args

log = logging.getLogger("minescan")


def cmd_plan(args) -> int:
    from minescan import config as cfgmod
    from minescan.periods import scan_periods
    from minescan.scan.plan import scan_plan

    cfg = cfgmod.load(args.config)
    scan_periods(cfg)  # at least one period
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
    from minescan.config import reference_markdown

    print(reference_markdown(), end="")
    return 0


def cmd_detect(args) -> int:
    from minescan.models.store import load_model
    from minescan.scan.detect import run_detect
    from minescan.scan.inference import DEFAULT_MAX_BLOCK_MB, import_keras_lean
    from minescan.vector_io import read_region

    import_keras_lean()
    model = load_model(args.model, expect_kind="discovery")
    impact = load_model(args.impact_model, expect_kind="impact") if args.impact_model else None
    region = read_region(args.region, args.region_layer)
    run_detect(args.tile_path, tile_from_args(args), args.quadrant, model, region, args.scale, args.threshold,
               args.block_cells, args.prob_out, args.candidates_out, args.on_empty,
               max_block_mb=args.max_block_mb or DEFAULT_MAX_BLOCK_MB, method=args.inference,
               impact=impact, impact_batch_size=args.impact_batch_size)
    return 0


def cmd_classify(args) -> int:
    from minescan.scan.detect import lazy_model, run_classify

    # the network (and TensorFlow) is only loaded if some candidate is not yet rated by this model
    model = None if args.model in ("none", "") else lazy_model(args.model, "impact")
    run_classify(args.tile_path, tile_from_args(args), model, args.scale, args.candidates, args.out, args.batch_size)
    return 0


def cmd_merge(args) -> int:
    from minescan.models.store import model_fingerprint, read_card, scan_threshold
    from minescan.scan.merge import merge_scan
    from minescan.scan.spatial_prior import SpatialPrior
    from minescan.vector_io import read_region

    models = {}
    for kind, path in (("discovery", args.discovery_model), ("impact", args.impact_model)):
        if path and path != "none":
            card = read_card(path)
            models[kind] = {"path": path, "name": card.get("name"), "version": model_fingerprint(Path(path))}
    if args.segment_model:  # its pixel metrics on held-out tiles, as the card gives them
        card = read_card(args.segment_model)
        models["segmentation"] = {"path": args.segment_model, "name": card.get("name"),
                                  "version": model_fingerprint(Path(args.segment_model)),
                                  "test_metrics": card.get("metrics", {}).get("test")}
    threshold = args.threshold if args.threshold is not None else scan_threshold(read_card(args.discovery_model))
    names = [Path(p).parent.name for p in args.classified]
    summary = merge_scan(
        args.classified, args.outdir, region_name=args.region_name, period=args.period,
        region_lonlat=read_region(args.region, args.region_layer),
        tiles=sorted({n.rsplit("_", 1)[0] for n in names}), quadrants=names, models=models,
        thresholds={"discovery": threshold, "drop_no_ore": args.drop_no_ore}, resolution_m=args.resolution_m,
        drop_no_ore=args.drop_no_ore, connectivity=args.connectivity, truth_path=args.truth,
        prior=SpatialPrior(args.isolated_threshold, args.isolation_k, args.isolation_km),
        extents_path=args.extents)
    ev = summary.get("evaluation")
    if ev:
        print(f"{args.region_name} {args.period}: {summary['sites']} sites detected; site-level recall "
              f"{ev['recall']} ({ev['found_mines']}/{ev['truth_mines']} true mines), precision {ev['precision']} "
              f"({ev['correct_sites']}/{ev['detected_sites']} sites)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plan", help="list the tiles and quadrant jobs of a scan config (no network, no data)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("config-reference", help="print every config key (type, default, description) as Markdown")
    p.set_defaults(func=cmd_config_reference)

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
                   "minescan.scan.inference.DEFAULT_MAX_BLOCK_MB)")
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
    grid_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("classify", help="impact CNN on one quadrant's candidates")
    p.add_argument("--tile", required=True)
    p.add_argument("--tile-path", required=True)
    p.add_argument("--model", required=True, help="impact model directory, or 'none'")
    p.add_argument("--candidates", required=True)
    p.add_argument("--scale", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--out", required=True)
    grid_args(p)
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
    p.add_argument("--extents", default=None,
                   help="the scan's extents.gpkg (segment): sites get area_ha_segmented and layer site_extents")
    p.add_argument("--segment-model", default=None, help="segmentation model directory (recorded in summary.json)")
    p.add_argument("--isolated-threshold", type=float, default=None,
                   help="stricter cut-off for isolated candidates (merge.isolated_threshold); default: off")
    p.add_argument("--isolation-k", type=int, default=2, help="k of the k-th nearest other candidate")
    p.add_argument("--isolation-km", type=float, default=1.0, help="isolated beyond this distance (km)")
    p.set_defaults(func=cmd_merge)
