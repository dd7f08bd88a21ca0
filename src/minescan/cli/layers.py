"""CLI commands of the layers stage (``minescan.layers``):

    minescan layers        registry cross-check + overlays: sites_annotated, unregistered.*, areas.csv, layers.json
    minescan webmap        map.html, the self-contained interactive map of a scan
    minescan report-plots  the plots and summary table of ``snakemake --report``

The layer settings (config key ``layers``) come either as JSON (``--settings``, what the Snakemake rules
pass) or from a scan config file (``--config``); both are validated against the config schema.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger("minescan")


def _settings(args) -> dict:
    from minescan import config as cfgmod
    from minescan.errors import ConfigError

    if args.settings and args.config:
        raise ConfigError("give --settings or --config, not both")
    if args.config:
        return cfgmod.load(args.config)["layers"]
    try:
        raw = json.loads(args.settings) if args.settings else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--settings is not valid JSON ({exc})") from exc
    cfg = cfgmod.validate({"region": {"name": args.region_name or "x", "file": "-"}, "periods": ["2000"],
                           "layers": raw}, "--settings")
    return cfg["layers"]


def _settings_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("layer settings (config key 'layers')")
    g.add_argument("--settings", default=None, help="the 'layers' block as JSON")
    g.add_argument("--config", default=None, help="or: a scan config file whose 'layers' block is used")
    g.add_argument("--region-name", default="", help="replaces {region} in layer file names")
    g.add_argument("--period", default="", help="replaces {period} in layer file names")
    g.add_argument("--results-dir", default="results", help="replaces {results_dir} in layer file names")


def cmd_layers(args) -> int:
    from minescan.layers.overlays import run_layers
    from minescan.vector_io import read_region

    region = read_region(args.region, args.region_layer) if args.region else None
    s = run_layers(args.sites, args.outdir, _settings(args), region_name=args.region_name, period=args.period,
                   results_dir=args.results_dir, region_lonlat=region)
    r = s["registry"]
    if r["checked"]:
        print(f"{args.region_name} {args.period}: {s['sites']} sites, {r['registered_sites']} registered, "
              f"{r['unregistered_sites']} unregistered ({r['unregistered_area_ha']:.1f} ha, {s['area_basis']}); "
              f"{s['overlays']['sites_in_areas']} in overlay areas")
    return 0


def cmd_webmap(args) -> int:
    from minescan.layers.overlays import load_layers, placeholders
    from minescan.layers.webmap import load_detections, map_stats, write_map
    from minescan.vector_io import read_region, read_sites, read_vector

    settings = _settings(args)
    fmt = placeholders(args.results_dir, args.region_name, args.period)
    registry, overlays, admin = load_layers(settings, fmt)
    region = read_region(args.region, args.region_layer) if args.region else None
    sites = read_sites(args.sites, "sites layer")
    title = args.title or f"minescan {args.region_name} {args.period}".strip()
    html = write_map(args.out, sites, title=title, region_lonlat=region, tile_paths=args.tiles or [],
              prob_paths=args.probabilities or [], registry=registry, overlays=overlays, admin=admin,
              detections=load_detections(args.detections), scale=args.scale,
              max_px=args.max_px or settings["map_max_px"], thumbnails=args.thumbnails,
              extents=read_vector(args.extents, what="extents file") if args.extents else None)
    stats = map_stats(html)
    log.info("map %s: %d site markers, %.1f MB", args.out, stats["markers"], stats["bytes"] / 1e6)
    return 0


def cmd_report_plots(args) -> int:
    from minescan.layers.plots import make_plots

    cards = {"discovery": args.discovery_card, "impact": args.impact_card}
    make_plots(args.outdir, summary_path=args.summary, detections_path=args.detections,
               rejected_path=args.rejected, sites_path=args.sites, layers_path=args.layers,
               areas_path=args.areas, cards={k: v for k, v in cards.items() if v})
    return 0



def register(sub) -> None:
    p = sub.add_parser("layers", help="registry cross-check and protected-area/admin overlays of a scan's sites")
    p.add_argument("--sites", required=True, help="sites.gpkg of the scan (from merge)")
    p.add_argument("--outdir", required=True, help="where sites_annotated.*, unregistered.*, areas.csv, "
                                                   "layers.json go")
    p.add_argument("--region", default=None, help="region file (areas meeting it are listed even without sites)")
    p.add_argument("--region-layer", default=None)
    _settings_args(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("webmap", help="self-contained HTML map of a scan (Leaflet inlined, no network needed)")
    p.add_argument("--sites", required=True, help="sites_annotated.gpkg (or sites.gpkg)")
    p.add_argument("--out", required=True, help="output .html")
    p.add_argument("--extents", default=None, help="extents.gpkg of the scan (segment): a toggleable layer")
    p.add_argument("--region", default=None)
    p.add_argument("--region-layer", default=None)
    p.add_argument("--tiles", nargs="*", default=[], help="tile GeoTIFFs (RGB layer and site thumbnails)")
    p.add_argument("--probabilities", nargs="*", default=[], help="quadrant probability COGs")
    p.add_argument("--detections", default=None, help="detections.csv (impact probabilities in popups)")
    p.add_argument("--scale", type=float, default=1e-4, help="tile value to reflectance factor")
    p.add_argument("--max-px", type=int, default=None, help="largest raster layer side (default layers.map_max_px)")
    p.add_argument("--title", default=None)
    p.add_argument("--thumbnails", action=argparse.BooleanOptionalAction, default=True,
                   help="embed an RGB thumbnail of every site in its popup")
    _settings_args(p)
    p.set_defaults(func=cmd_webmap)

    p = sub.add_parser("report-plots", help="plots and summary table of a scan for snakemake --report")
    p.add_argument("--outdir", required=True)
    p.add_argument("--summary", required=True, help="summary.json")
    p.add_argument("--detections", required=True, help="detections.csv")
    p.add_argument("--rejected", required=True, help="rejected.csv")
    p.add_argument("--sites", default=None, help="sites_annotated.gpkg")
    p.add_argument("--layers", default=None, help="layers.json")
    p.add_argument("--areas", default=None, help="areas.csv")
    p.add_argument("--discovery-card", default=None, help="card.json of the discovery model")
    p.add_argument("--impact-card", default=None, help="card.json of the impact model")
    p.set_defaults(func=cmd_report_plots)
