"""``minescan gee ...``: Sentinel-2 composites from Google Earth Engine.

    minescan gee plan   --config FILE [--json] [--show-expression] [--points FILE]   (no network)
    minescan gee check  --config FILE [--offline]
    minescan gee tile   --tile ID --period P (--config FILE | --spec JSON) --out FILE.tif
    minescan gee chips  --config FILE --points FILE [--period P] --out-dir DIR [--sizes 201 21]
    minescan gee pixel-map --config FILE --model DIR [--period P] [--scale-m 100] [--show-expression]

``register(subparsers)`` adds ``gee`` to the main CLI. User errors raise MinescanError subclasses (one line,
exit 2); no message or log line carries a credential.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger("minescan.sources.gee")


def _grid_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tile grid (default: the config's; must match the scan)")
    g.add_argument("--tile-px", type=int, default=None, help="tile core size in px (grid.tile_px)")
    g.add_argument("--halo-px", type=int, default=None, help="halo around tiles in px (grid.halo_px)")
    g.add_argument("--resolution-m", type=float, default=None, help="pixel size in m (grid.resolution_m)")


def _settings(args):
    """(GeeSettings, config or None) from --config or --spec."""
    from minescan import config as cfgmod
    from minescan.errors import ConfigError
    from minescan.sources.gee.settings import GeeSettings

    if getattr(args, "spec", None):
        return GeeSettings.from_json(args.spec), None
    if not getattr(args, "config", None):
        raise ConfigError("give --config FILE (or --spec JSON)")
    cfg = cfgmod.load(args.config)
    if cfg["source"]["kind"] != "gee":
        log.info("%s: source.kind is '%s'; using its source.gee settings anyway", args.config, cfg["source"]["kind"])
    return GeeSettings.from_config(cfg), cfg


def _grid(args, cfg):
    from minescan.errors import ConfigError
    from minescan.grid import GridSpec

    base = GridSpec.from_config(cfg) if cfg else GridSpec()
    if cfg is None and None in (args.tile_px, args.halo_px, args.resolution_m):
        raise ConfigError("with --spec give --tile-px, --halo-px and --resolution-m (the scan's grid)")
    grid = GridSpec(args.tile_px if args.tile_px is not None else base.tile_px,
                    args.resolution_m if args.resolution_m is not None else base.resolution_m,
                    args.halo_px if args.halo_px is not None else base.halo_px)
    if grid.tile_px % 2:
        raise ConfigError("--tile-px must be even")
    return grid


def _initialize(settings):
    from minescan.sources.gee.auth import initialize, resolve_auth
    from minescan.sources.gee.tiles import remember_credentials

    auth = resolve_auth(settings)
    remember_credentials(initialize(auth))
    return auth


def cmd_plan(args) -> int:
    from minescan import config as cfgmod
    from minescan.sources.gee.plan import chips_plan, format_plan, gee_plan
    from minescan.sources.gee.settings import GeeSettings

    cfg = cfgmod.load(args.config)
    settings = GeeSettings.from_config(cfg)
    plan = gee_plan(cfg, settings, check_cache=not args.no_cache_check)
    if args.points:
        from minescan.sources.gee.chips import read_chip_points

        plan["chips"] = chips_plan(read_chip_points(args.points), settings)
    if args.show_expression:
        from minescan.scan.plan import scan_plan
        from minescan.sources.gee.composite import build_composite, rectangle
        from minescan.sources.gee.recorder import RecordingEE

        sp = scan_plan(cfg)
        tile = sp.tile(sp.tiles[0])
        ee = RecordingEE()
        plan["expression"] = {"tile": tile.name, "period": cfg["periods"][0],
                              "image": repr(build_composite(ee, settings, cfg["periods"][0],
                                                            rectangle(ee, tile.bounds, tile.id.epsg),
                                                            warn=False))}
    if args.json:
        print(json.dumps(plan, indent=2, sort_keys=True, default=str))
        return 0
    print(format_plan(plan, show_tiles=not args.summary))
    if "chips" in plan:
        c = plan["chips"]
        print(f"chips: {c['points']} points ({'/'.join(c['schemes'])} scheme), sizes {', '.join(map(str, c['sizes']))} px, "
              f"{c['requests']} computePixels requests, {c['bytes'] / 1e6:.0f} MB per period")
    if "expression" in plan:
        e = plan["expression"]
        print(f"expression for tile {e['tile']} {e['period']}:\n  {e['image']}")
    return 0


def cmd_check(args) -> int:
    from minescan.sources.gee.auth import resolve_auth

    settings, _ = _settings(args)
    auth = resolve_auth(settings)
    print(f"credentials: {auth.describe()}")
    print(f"project: {auth.project}{' (high-volume endpoint)' if auth.high_volume else ''}")
    if args.offline:
        print("ok (offline check: files and settings only; run without --offline to contact Earth Engine)")
        return 0
    from minescan.errors import InputDataError
    from minescan.sources.gee import get_ee
    from minescan.sources.gee.auth import redact
    from minescan.sources.gee.retry import Retrier
    from minescan.sources.gee.settings import CLOUD_SCORE_PLUS

    _initialize(settings)
    ee = get_ee()
    retrier = Retrier.from_settings(settings)
    try:
        n = retrier.call(ee.ImageCollection(settings.collection).filterDate("2024-06-01", "2024-06-02").size()
                         .getInfo, what="test request")
        print(f"Earth Engine answers: {settings.collection} has {n} scenes on 2024-06-01")
        if settings.cloud_mask == "cloud_score_plus":
            retrier.call(ee.ImageCollection(CLOUD_SCORE_PLUS).limit(1).size().getInfo, what="Cloud Score+ check")
            print(f"Cloud Score+ ({CLOUD_SCORE_PLUS}) readable")
    except Exception as exc:
        raise InputDataError(f"Earth Engine test request failed: {redact(str(exc))[:300]}") from None
    if settings.route == "export":
        from minescan.sources.gee.export import make_store
        from minescan.sources.gee.tiles import _credentials

        store = make_store(settings, _credentials(), ee)
        try:
            store.list(f"{settings.export.prefix}/", retrier)
        except Exception as exc:
            raise InputDataError(f"cannot list {store.where(settings.export.prefix)}: {redact(str(exc))[:300]}") from None
        print(f"export destination readable: {store.where(settings.export.prefix)}")
    print("ok")
    return 0


def cmd_tile(args) -> int:
    from minescan.grid import Tile, TileId
    from minescan.sources.gee.tiles import acquire_tile

    settings, cfg = _settings(args)
    tile = Tile(TileId.parse(args.tile), _grid(args, cfg))
    info = acquire_tile(tile, args.period, settings, args.out, before_fetch=lambda: _initialize(settings))
    log.info("tile %s %s: %s (%s)", tile.name, args.period, args.out, info["source"])
    return 0


def cmd_chips(args) -> int:
    from dataclasses import replace

    from minescan.sources.gee.chips import fetch_chips, read_chip_points

    settings, cfg = _settings(args)
    if args.sizes:
        settings = replace(settings, chip_sizes=tuple(args.sizes))
    period = args.period or (cfg["periods"][0] if cfg else None)
    if not period:
        from minescan.errors import ConfigError

        raise ConfigError("give --period (e.g. 2020 or 2020Q3)")
    from minescan.periods import period_dates

    period_dates(period)
    points = read_chip_points(args.points)
    resolution = cfg["grid"]["resolution_m"] if cfg else 10.0
    _initialize(settings)
    info = fetch_chips(points, period, settings, args.out_dir, resolution_m=resolution)
    sizes = info["sizes"]
    print(f"{info['points']} points: {info['fetched']} fetched, {info['skipped']} already there; "
          f"points in {info['points_csv']}")
    print(f"train with: minescan train discovery --points {info['points_csv']} --images {args.out_dir}/{sizes[0]}px/*.tif"
          + (f"  |  minescan train impact --points {info['points_csv']} --images {args.out_dir}/{sizes[-1]}px/*.tif"
             if len(sizes) > 1 else ""))
    return 0


def _with_redaction(func):
    """Redact every log line; turn errors from Earth Engine / Google libraries (after their retries) into one
    clear line (exit 2) whose text has passed through the redaction filter."""

    def run(args) -> int:
        from minescan.errors import InputDataError, MinescanError
        from minescan.sources.gee.auth import install_log_redaction, redact
        from minescan.sources.gee.retry import TransientHTTPError

        install_log_redaction()
        try:
            return func(args)
        except MinescanError:
            raise
        except Exception as exc:
            mod = type(exc).__module__ or ""
            if not (mod.split(".")[0] in ("ee", "googleapiclient", "google", "requests", "urllib3", "httplib2")
                    or isinstance(exc, ConnectionError | TimeoutError | TransientHTTPError)):
                raise
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputDataError(f"Earth Engine request failed ({type(exc).__name__}): {redact(text)[:400]}; "
                                 "work done so far is kept and a rerun resumes it") from None

    return run


def cmd_pixel_map(args) -> int:
    """A linear pixel model's probability map of the config's region, computed and exported by EE."""
    from shapely.geometry import mapping

    from minescan.pixel.train import load_pixel_model
    from minescan.sources.gee.export import start_export
    from minescan.sources.gee.pixel_map import pixel_map_export_params, pixel_map_image
    from minescan.vector_io import read_region

    settings, cfg = _settings(args)
    period = args.period or cfg["periods"][-1]
    model = load_pixel_model(args.model)
    region = read_region(cfg["region"]["file"], cfg["region"]["layer"])
    scale = cfg["source"]["reflectance_scale"]
    if args.show_expression:
        from minescan.sources.gee.recorder import RecordingEE

        ee = RecordingEE()
        image = pixel_map_image(ee, settings, model, period, ee.Geometry(mapping(region)), scale)
        print(repr(image))
        return 0
    from minescan.sources.gee import get_ee

    if settings.export.destination == "gcs" and not settings.export.bucket:
        from minescan.errors import ConfigError

        raise ConfigError("key 'source.gee.export.bucket' is needed to export the map to Cloud Storage "
                          "(or set source.gee.export.destination: drive)")
    _initialize(settings)
    ee = get_ee()
    geom = mapping(region)
    image = pixel_map_image(ee, settings, model, period, ee.Geometry(geom), scale)
    params = pixel_map_export_params(image, geom, cfg["region"]["name"], period, args.scale_m, settings, ee)
    name = start_export(ee, params, settings.export.destination)
    print(f"export {params['description']} started: {name} ({settings.export.destination})")
    return 0


def register(subparsers) -> None:
    gee = subparsers.add_parser(
        "gee", help="Google Earth Engine: composites for scan tiles and training chips",
        description="Cloud-masked Sentinel-2 median composites from Google Earth Engine (source.kind: gee). "
                    "See docs/earth-engine.md.")
    sub = gee.add_subparsers(dest="gee_command", required=True, metavar="GEE_COMMAND")

    p = sub.add_parser("plan", help="tiles x periods, pixels and requests a config would fetch (no network)")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--summary", action="store_true", help="totals per period only, no line per tile")
    p.add_argument("--show-expression", action="store_true",
                   help="also print the Earth Engine expression of the first tile's composite")
    p.add_argument("--points", help="also plan training chips for this points file")
    p.add_argument("--no-cache-check", action="store_true", help="do not look for tiles already in the cache")
    p.set_defaults(func=_with_redaction(cmd_plan))

    p = sub.add_parser("check", help="check credentials and project (and, unless --offline, reach Earth Engine)")
    p.add_argument("--config")
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--offline", action="store_true", help="only check settings and credential files")
    p.set_defaults(func=_with_redaction(cmd_check))

    p = sub.add_parser("tile", help="fetch one grid tile's composite (core + halo) as a cloud-optimised GeoTIFF")
    p.add_argument("--tile", required=True, help="tile id, e.g. 21S-E045-N0951")
    p.add_argument("--period", required=True, help="year (2025) or quarter (2026Q1)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="scan config (source.gee settings, bands, grid)")
    src.add_argument("--spec", help="the settings as JSON (what the Snakemake rule passes)")
    p.add_argument("--out", required=True, help="output GeoTIFF")
    _grid_args(p)
    p.set_defaults(func=_with_redaction(cmd_tile))

    p = sub.add_parser("chips", help="training chips (201 and 21 px) around labelled points")
    p.add_argument("--config", required=True, help="scan config (the composite definition and bands)")
    p.add_argument("--points", required=True,
                   help="CSV/vector: lon,lat,class[,impact][,side_m] or ll_lon,ll_lat,ur_lon,ur_lat,class[,impact]")
    p.add_argument("--period", help="composite period (default: the config's first)")
    p.add_argument("--out-dir", required=True, help="writes {size}px/{id}.tif and points.csv here")
    p.add_argument("--sizes", nargs="+", type=int, help="chip sizes in px (default source.gee.chip_sizes)")
    p.set_defaults(func=_with_redaction(cmd_chips))

    p = sub.add_parser("pixel-map", help="a linear pixel model's probability map of the region, computed and "
                       "exported by Earth Engine (no tile download)")
    p.add_argument("--config", required=True, help="scan config (region, source.gee composite and export)")
    p.add_argument("--model", required=True,
                   help="pixel model directory (minescan pixel train --model logistic)")
    p.add_argument("--period", help="composite period (default: the config's last)")
    p.add_argument("--scale-m", type=float, default=100.0, help="pixel size of the exported map in metres")
    p.add_argument("--show-expression", action="store_true",
                   help="print the Earth Engine expression and exit (no credentials, no network)")
    p.set_defaults(func=_with_redaction(cmd_pixel_map))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: minescan gee ...")
