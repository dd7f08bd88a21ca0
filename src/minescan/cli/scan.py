"""``minescan plan``, ``config-reference``, ``detect``, ``classify``, ``merge``: the scan path
(``minescan.scan``), one quadrant job or one scan at a time."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from minescan.cli.common import grid_args, tile_from_args
from minescan.errors import ConfigError

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
    from minescan.scan.timing import JobClock

    clock = JobClock()  # first: the process's start-up so far is counted from here
    from minescan.models.store import load_model, read_card
    from minescan.scan import device

    if len(args.tile) != len(args.tile_path):
        raise ConfigError(f"detect: {len(args.tile)} --tile but {len(args.tile_path)} --tile-path (one each per tile)")
    jobs = [(t, path, q) for t, path in zip(args.tile, args.tile_path, strict=True) for q in args.quadrant]
    if not len(jobs) == len(args.prob_out) == len(args.candidates_out):
        raise ConfigError(f"detect: {len(args.tile)} tile(s) x {len(args.quadrant)} quadrant(s) but "
                          f"{len(args.prob_out)} --prob-out and {len(args.candidates_out)} --candidates-out paths "
                          "(one each per quadrant of each tile, tile by tile)")
    device.keep_freed_memory()
    card = read_card(args.model)
    if card["kind"] == "pixel":  # a pixel classifier (minescan.pixel) as the detector
        from minescan.pixel.detect import cmd_detect_pixel

        return cmd_detect_pixel(args, jobs)
    from minescan.scan.detect import run_detect
    from minescan.scan.inference import (
        DEFAULT_MAX_BLOCK_MB,
        InferenceStats,
        compute_precision,
        import_keras_lean,
    )
    from minescan.scan.quality import QualityCheck
    from minescan.vector_io import read_region

    clock.add("imports", clock.elapsed())  # minescan's scan modules: numpy, pandas, rasterio, shapely
    runtime = device.detect_runtime(args.runtime, precision=args.precision, require_gpu=args.require_gpu,
                                    pyramid=bool(args.pyramid), patch_model=isinstance(card.get("patch"), dict))
    model = impact = None
    if runtime != "tensorflow":  # no TensorFlow in this process (minescan.models.onnx_net)
        from minescan.models.onnx_net import Unsupported

        with clock.phase("models"):
            try:
                model = load_model(args.model, expect_kind="discovery", runtime=runtime)
                impact = load_model(args.impact_model, expect_kind="impact", runtime=runtime) if args.impact_model else None
            except Unsupported as exc:
                if args.runtime == runtime:
                    raise ConfigError(f"detect.runtime {runtime}: {exc}") from exc
                log.info("running on TensorFlow: %s", exc)
                runtime, model, impact = "tensorflow", None, None
    if runtime != "tensorflow":
        dev = device.cpu_device(runtime)
    else:
        with clock.phase("tensorflow_import"):
            import_keras_lean()
        with clock.phase("device"):
            dev = device.setup(require_gpu=args.require_gpu)  # before the models: GPU memory growth, device line
    max_block_mb = args.max_block_mb or device.block_budget_mb(dev, DEFAULT_MAX_BLOCK_MB,
                                                               device.host_limit_mb())
    if not args.max_block_mb and dev.kind == "GPU":
        log.info("strip budget %.0f MB from the GPU's free memory (detect.max_block_mb unset)", max_block_mb)
    with clock.phase("models"):
        if model is None:
            model = load_model(args.model, expect_kind="discovery")
            impact = load_model(args.impact_model, expect_kind="impact") if args.impact_model else None
        region = read_region(args.region, args.region_layer)
    quality = QualityCheck(args.cloud_check, args.cloud_min_reflectance, args.cloud_max_fraction,
                           args.band_order_check)
    pyramid = None
    if args.pyramid:  # detect.pyramid as JSON (rules/detect.smk)
        from minescan.scan.pyramid import Pyramid

        try:
            section = json.loads(args.pyramid)
        except ValueError as exc:
            raise ConfigError(f"--pyramid: not JSON ({exc})") from exc
        pyramid = Pyramid.from_dict(section, lambda p: load_model(p, expect_kind="discovery"))
    # several quadrants (detect.quadrants_per_job: tile) or tiles (detect.tiles_per_job): one start-up and
    # model load for all, the quadrants one after the other, each exactly as in a job of its own
    for (name, tile_path, quadrant), prob_out, cands_out in zip(jobs, args.prob_out, args.candidates_out, strict=True):
        with compute_precision(args.precision):
            run_detect(tile_path, tile_from_args(args, name), quadrant, model, region, args.scale,
                       args.threshold, args.block_cells, prob_out, cands_out, args.on_empty,
                       max_block_mb=max_block_mb, method=args.inference, impact=impact,
                       impact_batch_size=args.impact_batch_size, quality=quality, tags={"DEVICE": dev.label, "RUNTIME": runtime},
                       patch_stride=args.patch_stride, patch_method=args.patch_inference, pyramid=pyramid,
                       stats=InferenceStats(), clock=clock)
    clock.log()
    return 0


def cmd_classify(args) -> int:
    if len(args.candidates) != len(args.out):
        raise ConfigError(f"classify: {len(args.candidates)} --candidates but {len(args.out)} --out paths "
                          "(one each per quadrant)")
    if len(args.tile) != len(args.tile_path):
        raise ConfigError(f"classify: {len(args.tile)} --tile but {len(args.tile_path)} --tile-path (one each per tile)")
    if len(args.candidates) % len(args.tile):
        raise ConfigError(f"classify: {len(args.candidates)} --candidates for {len(args.tile)} tiles (as many "
                          "quadrants for each tile, tile by tile)")
    per_tile = len(args.candidates) // len(args.tile)
    model = None
    # several quadrants (detect.quadrants_per_job: tile) or tiles (detect.tiles_per_job): one process
    for i, (candidates, out) in enumerate(zip(args.candidates, args.out, strict=True)):
        name, tile_path = args.tile[i // per_tile], args.tile_path[i // per_tile]
        if args.model not in ("none", ""):
            from minescan.scan.classify_copy import copy_rated

            # all rated by this very model in the detect job: copied without importing pandas or rasterio
            if copy_rated(candidates, out, args.model, name) is not None:
                continue
        from minescan.scan.detect import lazy_model, run_classify

        # the network (and TensorFlow) is only loaded if some candidate is not yet rated by this model
        if model is None and args.model not in ("none", ""):
            model = lazy_model(args.model, "impact")
        run_classify(tile_path, tile_from_args(args, name), model, args.scale, candidates, out, args.batch_size)
    return 0


def cmd_merge(args) -> int:
    from minescan.models.store import model_fingerprint, read_card, scan_threshold
    from minescan.scan.device import count_jobs
    from minescan.scan.merge import merge_scan
    from minescan.vector_io import read_region

    models = {}
    for kind, path in (("discovery", args.discovery_model), ("impact", args.impact_model)):
        if path and path != "none":
            card = read_card(path)
            models[kind] = {"path": path, "name": card.get("name"), "version": model_fingerprint(Path(path))}
    if args.segment_model:  # its pixel metrics on held-out tiles, as the card gives them
        seg_card = read_card(args.segment_model)
        models["segmentation"] = {"path": args.segment_model, "name": seg_card.get("name"),
                                  "version": model_fingerprint(Path(args.segment_model)),
                                  "test_metrics": seg_card.get("metrics", {}).get("test")}
    card = read_card(args.discovery_model)
    threshold = args.threshold if args.threshold is not None else scan_threshold(card)
    cell_px, prior = _cells_and_prior(card, args)
    names = [Path(p).parent.name for p in args.classified]
    # detect jobs per device: the DEVICE tag of each quadrant's probability raster (beside classified.csv)
    devices = count_jobs(Path(p).parent / "probability.tif" for p in args.classified)
    summary = merge_scan(
        args.classified, args.outdir, region_name=args.region_name, period=args.period,
        region_lonlat=read_region(args.region, args.region_layer),
        tiles=sorted({n.rsplit("_", 1)[0] for n in names}), quadrants=names, models=models,
        thresholds={"discovery": threshold, "drop_no_ore": args.drop_no_ore}, resolution_m=args.resolution_m,
        drop_no_ore=args.drop_no_ore, connectivity=args.connectivity, truth_path=args.truth,
        prior=prior, cell_px=cell_px, devices=devices, extents_path=args.extents)
    ev = summary.get("evaluation")
    if ev:
        print(f"{args.region_name} {args.period}: {summary['sites']} sites detected; site-level recall "
              f"{ev['recall']} ({ev['found_mines']}/{ev['truth_mines']} true mines), precision {ev['precision']} "
              f"({ev['correct_sites']}/{ev['detected_sites']} sites)")
    return 0


def _cells_and_prior(card: dict, args):
    """The cell size of the discovery model's scan (27 px FCN cells; a patch model's stride, from
    --patch-stride or its card) and the spatial prior: the options', else the card's dual threshold."""
    from minescan.models.imported import is_patch_model
    from minescan.models.networks import STRIDE
    from minescan.scan.spatial_prior import SpatialPrior

    cell_px = STRIDE
    if is_patch_model(card):
        cell_px = int(args.patch_stride or card.get("stride") or card["window"] // 2)
    card_prior = card.get("spatial_prior")
    if args.isolated_threshold is None and card_prior:
        log.info("spatial prior from the model card: %s", card_prior)
        return cell_px, SpatialPrior(card_prior["isolated_threshold"], int(card_prior["isolation_k"]),
                                     float(card_prior["isolation_km"]))
    return cell_px, SpatialPrior(args.isolated_threshold, args.isolation_k, args.isolation_km)


def register(sub) -> None:
    p = sub.add_parser("plan", help="list the tiles and quadrant jobs of a scan config (no network, no data)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("config-reference", help="print every config key (type, default, description) as Markdown")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("detect", help="discovery FCN on one quadrant (or several of a tile, or of several tiles, "
                       "one after the other, in one process): probability COG + candidates CSV each")
    p.add_argument("--tile", required=True, nargs="+", help="tile id; several: the --quadrant of each, in one process")
    p.add_argument("--quadrant", required=True, choices=["NW", "NE", "SW", "SE"], nargs="+")
    p.add_argument("--tile-path", required=True, nargs="+", help="the tile's GeoTIFF; one per --tile, in the same order")
    p.add_argument("--model", required=True, help="discovery model directory")
    p.add_argument("--region", required=True, help="region file (candidates outside are dropped)")
    p.add_argument("--region-layer", default=None)
    p.add_argument("--scale", type=float, default=1e-4, help="tile value to reflectance factor")
    p.add_argument("--threshold", type=float, default=None, help="default: the model card's")
    p.add_argument("--max-block-mb", type=float, default=None,
                   help="working memory of one inference strip in MB (detect.max_block_mb; default: 384 "
                   "(minescan.scan.inference.DEFAULT_MAX_BLOCK_MB) on a CPU, from the free memory on a GPU)")
    p.add_argument("--block-cells", type=int, default=None,
                   help="output-cell rows per strip (cells per block side for --inference blocks); "
                   "overrides --max-block-mb (detect.block_cells)")
    p.add_argument("--inference", choices=["auto", "stream", "blocks"], default="auto",
                   help="stream: stage-wise row strips, nothing recomputed; blocks: square blocks with margins")
    p.add_argument("--patch-stride", type=int, default=None,
                   help="imported patch models: px between scored patches, also the cell size (detect.patch_stride; "
                   "default: the card's stride, half a patch)")
    p.add_argument("--patch-inference", choices=["auto", "fcn", "patches", "single"], default="auto",
                   help="imported patch models: fcn (shared convolutions, when the network allows), patches "
                   "(batched patch evaluation), single (one patch at a time), auto (detect.patch_inference)")
    p.add_argument("--on-empty", choices=["error", "warn"], default="error")
    p.add_argument("--cloud-check", choices=["warn", "error", "off"], default="warn",
                   help="a quadrant mostly bright in B2, B3 and B4 (like cloud): warn, fail or do not check "
                   "(detect.cloud_check.action)")
    p.add_argument("--cloud-min-reflectance", type=float, default=0.3,
                   help="detect.cloud_check.min_reflectance")
    p.add_argument("--cloud-max-fraction", type=float, default=0.5, help="detect.cloud_check.max_fraction")
    p.add_argument("--band-order-check", action=argparse.BooleanOptionalAction, default=True,
                   help="warn when NIR (B8) is darker than blue (B2) or red (B4) over most land "
                   "(detect.band_order_check)")
    p.add_argument("--require-gpu", action="store_true",
                   help="fail (exit 2) when the job has no usable GPU instead of running on the CPU "
                   "(detect.require_gpu)")
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="compute precision of the streamed FCN (detect.precision; tolerance in docs/gpu.md)")
    p.add_argument("--runtime", choices=["auto", "tensorflow", "onnxruntime", "openvino"], default="auto",
                   help="what runs the networks (detect.runtime): onnxruntime (CPU, float32, no TensorFlow start), "
                   "openvino (CPU, float32 or bfloat16, no TensorFlow start), tensorflow (GPUs, float16, every "
                   "model), auto (onnxruntime for float32 and openvino for bfloat16 on CPUs with bfloat16 units, "
                   "where they can run)")
    p.add_argument("--impact-model", default=None,
                   help="impact model directory: rate the candidates here too (saves classify a TensorFlow start)")
    p.add_argument("--impact-batch-size", type=int, default=512, help="patches per impact-CNN batch")
    p.add_argument("--pyramid", default=None,
                   help="pyramid scan: the detect.pyramid config section as JSON (coarse screen, then the FCN "
                   "on the kept blocks only; docs/pyramid.md)")
    p.add_argument("--period", default=None, help="the tile's period (pixel models with the month feature)")
    p.add_argument("--water", default=None, help="water polygons (pixel models with the water distance; "
                   "default: the MNDWI water mask)")
    p.add_argument("--prob-out", required=True, nargs="+",
                   help="one per --quadrant of each --tile, in the same order (the first tile's quadrants first)")
    p.add_argument("--candidates-out", required=True, nargs="+",
                   help="one per --quadrant of each --tile, in the same order")
    grid_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("classify", help="impact CNN on the candidates of a tile's quadrants (one or several), or "
                       "of several tiles' quadrants")
    p.add_argument("--tile", required=True, nargs="+", help="tile id; several: as many --candidates for each")
    p.add_argument("--tile-path", required=True, nargs="+", help="the tile's GeoTIFF; one per --tile, in the same order")
    p.add_argument("--model", required=True, help="impact model directory, or 'none'")
    p.add_argument("--candidates", required=True, nargs="+",
                   help="a quadrant's candidates.csv, one or several (the first tile's first, tile by tile)")
    p.add_argument("--scale", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--out", required=True, nargs="+", help="classified.csv, one per --candidates, in the same order")
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
    p.add_argument("--patch-stride", type=int, default=None,
                   help="the scan's patch stride for an imported patch model (its cells); default: the card's")
    p.set_defaults(func=cmd_merge)
