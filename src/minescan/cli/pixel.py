"""``minescan pixel study`` and ``minescan pixel train``: pixel classifiers (``minescan.pixel``)."""

from __future__ import annotations

import json
import logging

from minescan import SENTINEL2_BANDS

log = logging.getLogger("minescan")


def _samples(args, set_names: list[str]):
    """{feature set name: PixelSamples} from --chips or from --images + --polygons (same pixels per set)."""
    from minescan.errors import InputDataError
    from minescan.pixel.features import FeatureSet
    from minescan.pixel.samples import CHIP_BANDS, PixelSamples, chip_samples, image_samples

    out = {}
    if args.chips:
        bands = tuple(args.bands or CHIP_BANDS)
        for name in set_names:
            out[name], _ = chip_samples(args.chips, FeatureSet(name, bands), args.pixels_per_chip, args.seed)
        return out
    if not args.images or not args.polygons:
        raise InputDataError("give --chips, or --images and --polygons")
    periods = args.periods or [None] * len(args.images)
    if len(periods) != len(args.images):
        raise InputDataError(f"--periods lists {len(periods)} periods for {len(args.images)} --images")
    bands = tuple(args.bands or SENTINEL2_BANDS)
    for name in set_names:
        fs = FeatureSet(name, bands, args.water_cap_m)
        out[name] = PixelSamples.concat(
            [
                image_samples(
                    path,
                    fs,
                    args.polygons,
                    period,
                    max_pixels=args.max_pixels_per_image,
                    seed=args.seed,
                    exclude_m=args.exclude_m,
                    scale=args.scale,
                    water_polygons=args.water,
                    group=f"{path}",
                )
                for path, period in zip(args.images, periods, strict=True)
            ]
        )
    return out


def cmd_study(args) -> int:
    from minescan.pixel.study import lambda_grid, run_study

    samples = _samples(args, args.feature_sets)
    lambdas = lambda_grid(args.n_lambdas, args.lambda_min, args.lambda_max)
    summary = run_study(
        samples, args.out, lambdas, val_fraction=args.val_fraction, split_year=args.split_year, seed=args.seed
    )
    for name, entry in summary["sets"].items():
        for model, m in entry["models"].items():
            score = {k: v for k, v in m.items() if k.startswith("best_val")}
            print(
                f"{name} {model}: {score} at lambda {m['best_lambda']:.3g} ({m['nonzero_at_best']} weights); "
                f"last to leave: {', '.join(m['last_to_leave'][:5])}"
            )
    return 0


def cmd_train(args) -> int:
    from minescan.pixel.features import FeatureSet
    from minescan.pixel.train import train_pixel_model

    samples = _samples(args, [args.feature_set])[args.feature_set]
    bands = tuple(args.bands or (("B4", "B3", "B2") if args.chips else SENTINEL2_BANDS))
    fs = FeatureSet(args.feature_set, bands, args.water_cap_m)
    card = train_pixel_model(
        samples,
        fs,
        args.out,
        model=args.model,
        precision_floor=args.precision_floor,
        folds=args.folds,
        group_by=args.group_by,
        seed=args.seed,
        provenance={
            "images": args.images,
            "polygons": args.polygons,
            "chips": args.chips,
            "periods": args.periods,
            "water": args.water,
        },
    )
    print(
        json.dumps(
            {"model": str(args.out), "threshold": card["threshold"], "cv": card["metrics"]["cv"]}, indent=1
        )
    )
    return 0


def cmd_temporal(args) -> int:
    from minescan.pixel.temporal import card_threshold, temporal_median, temporal_sites

    if args.threshold is None:
        args.threshold = card_threshold(args.model) if args.model else 0.5
    stats = temporal_median(args.rasters, args.out, args.last)
    line = f"median of the last {stats['periods']} rasters -> {args.out}"
    if args.sites_out:
        sites = temporal_sites(args.out, args.threshold, args.sites_out, args.min_area_ha)
        line += f"; {len(sites)} sites >= {args.threshold} -> {args.sites_out}"
    print(line)
    return 0


def cmd_temporal_merge(args) -> int:
    from minescan.io_utils import atomic_write_text
    from minescan.pixel.temporal import merge_sites

    sites = merge_sites(args.sites, args.out)
    if args.summary_out:
        summary = {
            "periods": args.periods,
            "quadrants": len(args.sites),
            "sites": len(sites),
            "area_ha": round(float(sites["area_ha"].sum()), 4) if len(sites) else 0.0,
            "raster": args.raster,
        }
        atomic_write_text(args.summary_out, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"{len(sites)} temporal sites from {len(args.sites)} quadrants -> {args.out}")
    return 0


def cmd_demo_eval(args) -> int:
    from minescan.pixel.demo_eval import evaluate_demo, summary_lines

    report = evaluate_demo(
        args.training_scene,
        args.training_truth,
        args.scenes,
        args.truths,
        args.periods,
        args.out,
        fcn_sites=args.fcn_sites,
        fcn_summary=args.fcn_summary,
        models=args.models,
        crop_px=args.crop_px,
        max_pixels=args.max_pixels,
        precision_floor=args.precision_floor,
        min_site_pixels=args.min_site_pixels,
        seed=args.seed,
    )
    print("\n".join(summary_lines(report)))
    return 0


def cmd_evaluate_chips(args) -> int:
    from minescan.pixel.evaluate import evaluate_chips

    res = evaluate_chips(
        args.chips,
        args.out,
        test_year=args.test_year,
        models=args.models,
        feature_sets=args.feature_sets,
        pixels_per_chip=args.pixels_per_chip,
        score_pixels=args.score_pixels,
        folds=args.folds,
        seed=args.seed,
    )
    for key, e in res["models"].items():
        print(
            f"{key}: chip AUC {e['chip_mean']['auc']} (mean score) / {e['chip_p90']['auc']} (p90); "
            "sensitivity "
            f"at specificity 0.99 {e['chip_mean']['sensitivity_at_spec_0.99']} / "
            f"{e['chip_p90']['sensitivity_at_spec_0.99']}"
        )
    return 0


def _data_args(p) -> None:
    p.add_argument("--images", nargs="+", default=None, help="GeoTIFFs (band descriptions = band names)")
    p.add_argument(
        "--periods", nargs="+", default=None, help="period of each image (2024, 2026Q1): month feature, year"
    )
    p.add_argument("--polygons", default=None, help="mine polygons, any vector format, any CRS")
    p.add_argument(
        "--water", default=None, help="water polygons for the distance-to-water feature (else MNDWI)"
    )
    p.add_argument("--chips", default=None, help="labelled RGB chip archive (.npz) instead of images")
    p.add_argument(
        "--bands",
        nargs="+",
        default=None,
        help="input bands (default: the 12 Sentinel-2 bands; RGB for chips)",
    )
    p.add_argument("--scale", type=float, default=1e-4, help="tile value to reflectance factor")
    p.add_argument(
        "--water-cap-m", type=float, default=1000.0, help="distance to water is capped here (its halo)"
    )
    p.add_argument("--max-pixels-per-image", type=int, default=20000)
    p.add_argument("--pixels-per-chip", type=int, default=16)
    p.add_argument(
        "--exclude-m", type=float, default=0.0, help="drop pixels within this distance of a mine edge"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)


def register(sub) -> None:
    p = sub.add_parser("pixel", help="pixel classifiers: the band/index study (LASSO path) and training")
    psub = p.add_subparsers(dest="pixel_command", required=True, metavar="SUBCOMMAND")

    s = psub.add_parser(
        "study", help="LASSO and L1-logistic paths over a lambda grid: path table, feature order, plots"
    )
    _data_args(s)
    s.add_argument(
        "--feature-sets",
        nargs="+",
        default=["bands", "indices"],
        choices=["bands", "indices", "full", "bands+water+month"],
    )
    s.add_argument("--n-lambdas", type=int, default=30)
    s.add_argument("--lambda-min", type=float, default=1e-4)
    s.add_argument("--lambda-max", type=float, default=1.0)
    s.add_argument("--val-fraction", type=float, default=0.25, help="share of the images held out")
    s.add_argument("--split-year", type=int, default=None, help="validate on years after this one instead")
    s.set_defaults(func=cmd_study)

    t = psub.add_parser(
        "train",
        help="random forest or sparse logistic pixel model, grouped CV, grid search "
        "for recall at a precision floor; writes a model directory (model.skops + card.json)",
    )
    _data_args(t)
    t.add_argument(
        "--feature-set", default="indices", choices=["bands", "indices", "full", "bands+water+month"]
    )
    t.add_argument("--model", default="forest", choices=["forest", "logistic"])
    t.add_argument("--precision-floor", type=float, default=0.5)
    t.add_argument("--folds", type=int, default=3)
    t.add_argument(
        "--group-by",
        default="image",
        choices=["image", "year"],
        help="cross-validation groups: the image (site) or the year of each pixel",
    )
    t.set_defaults(func=cmd_train)

    m = psub.add_parser(
        "temporal",
        help="per-pixel median of the probability rasters of the last N periods "
        "(pixel model 10 m COGs or FCN cell rasters), and sites from it",
    )
    m.add_argument(
        "--rasters", nargs="+", required=True, help="one place's probability rasters, oldest first"
    )
    m.add_argument(
        "--last", type=int, default=3, help="median over the last N periods (pixel.temporal_periods)"
    )
    m.add_argument("--out", required=True, help="median COG")
    m.add_argument(
        "--sites-out", default=None, help="sites (connected pixels >= threshold), .gpkg or .geojson"
    )
    m.add_argument(
        "--threshold", type=float, default=None, help="site threshold (default: the --model card's, else 0.5)"
    )
    m.add_argument("--model", default=None, help="detector model directory whose card gives the threshold")
    m.add_argument("--min-area-ha", type=float, default=0.0, help="drop smaller sites")
    m.set_defaults(func=cmd_temporal)

    tm = psub.add_parser(
        "temporal-merge",
        help="the temporal sites of a scan's quadrants as one layer (EPSG:4326), sites touching "
        "across a quadrant seam joined",
    )
    tm.add_argument("--sites", nargs="+", required=True, help="per-quadrant sites of minescan pixel temporal")
    tm.add_argument("--out", required=True, help="merged sites, .gpkg or .geojson")
    tm.add_argument("--summary-out", default=None, help="JSON: periods, quadrants, sites, area")
    tm.add_argument("--periods", nargs="*", default=[], help="the periods of the median (for the summary)")
    tm.add_argument("--raster", default=None, help="which raster the median is of (for the summary)")
    tm.set_defaults(func=cmd_temporal_merge)

    de = psub.add_parser(
        "demo-eval",
        help="pixel models on the SIMULATED demo scene: pixel and site precision/recall per period and "
        "for the temporal median, next to the FCN's sites",
    )
    de.add_argument("--training-scene", required=True, help="the demo training scene (GeoTIFF)")
    de.add_argument("--training-truth", required=True, help="its truth layer (class column)")
    de.add_argument("--scenes", nargs="+", required=True, help="demo scene of each period, oldest first")
    de.add_argument("--truths", nargs="+", required=True, help="truth layer of each period")
    de.add_argument("--periods", nargs="+", required=True)
    de.add_argument("--fcn-sites", default=None, help="the FCN scan's sites.gpkg of the first period")
    de.add_argument("--fcn-summary", default=None, help="the FCN scan's summary.json of the first period")
    de.add_argument("--models", nargs="+", default=["logistic"], choices=["logistic", "forest"])
    de.add_argument("--crop-px", type=int, default=1536, help="central square scored and evaluated")
    de.add_argument("--max-pixels", type=int, default=20000, help="training pixels")
    de.add_argument("--precision-floor", type=float, default=0.8)
    de.add_argument("--min-site-pixels", type=int, default=9)
    de.add_argument("--seed", type=int, default=0)
    de.add_argument("--out", required=True, help="evaluation JSON; the models go beside it (model-NAME/)")
    de.set_defaults(func=cmd_demo_eval)

    e = psub.add_parser(
        "evaluate-chips",
        help="train pixel models on the chips of other years, report chip-level "
        "AUC and sensitivity at specificity 0.99 on the test year",
    )
    e.add_argument("--chips", required=True, help="labelled RGB chip archive (.npz with x, y, period)")
    e.add_argument("--test-year", type=int, default=2024)
    e.add_argument("--models", nargs="+", default=["logistic", "forest"], choices=["logistic", "forest"])
    e.add_argument("--feature-sets", nargs="+", default=["bands", "indices"], choices=["bands", "indices"])
    e.add_argument("--pixels-per-chip", type=int, default=8, help="training pixels drawn per chip")
    e.add_argument("--score-pixels", type=int, default=256, help="pixels scored per test chip")
    e.add_argument("--folds", type=int, default=3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True, help="model directories and chips_eval.json")
    e.set_defaults(func=cmd_evaluate_chips)
