"""What a gee scan would fetch, without network or credentials: tiles x periods, pixels, requests, bytes."""

from __future__ import annotations

from minescan.periods import period_dates
from minescan.scan.plan import scan_plan
from minescan.sources.gee.composite import qa60_gap_warning
from minescan.sources.gee.compute_pixels import plan_blocks
from minescan.sources.gee.settings import GeeSettings
from minescan.sources.gee.tiles import cache_paths, is_valid_tile


def gee_plan(cfg: dict, settings: GeeSettings | None = None, check_cache: bool = True) -> dict:
    settings = settings or GeeSettings.from_config(cfg)
    plan = scan_plan(cfg)
    bands = list(settings.bands)
    periods = []
    tot = {"jobs": 0, "cached": 0, "pixels": 0, "requests": 0, "bytes": 0}
    for period in cfg["periods"]:
        start, end = period_dates(period)
        tiles = []
        for name in plan.tiles:
            tile = plan.tile(name)
            size = tile.size_px
            key, cached_path, _ = cache_paths(settings, tile, period)
            cached = check_cache and is_valid_tile(cached_path, tile, bands, key)
            if settings.route == "compute_pixels":
                requests = len(plan_blocks(size, size, len(bands), settings.request_limit_bytes))
            else:
                requests = 1
            raw = size * size * len(bands) * 2
            tiles.append({"tile": name, "width": size, "height": size, "pixels": size * size,
                          "requests": 0 if cached else requests, "bytes": 0 if cached else raw,
                          "cached": cached, "cache": str(cached_path), "epsg": tile.id.epsg,
                          "crs_transform": list(tile.transform)[:6]})
            tot["jobs"] += 1
            tot["cached"] += int(cached)
            tot["pixels"] += 0 if cached else size * size
            tot["requests"] += 0 if cached else requests
            tot["bytes"] += 0 if cached else raw
        warnings = []
        if settings.cloud_mask == "qa60":
            w = qa60_gap_warning(period)
            if w:
                warnings.append(w)
        periods.append({"period": period, "start": start, "end_exclusive": end,
                        "key": settings.composite_key(period, plan.grid), "tiles": tiles, "warnings": warnings})
    return {"region": plan.region_name, "area_km2": round(plan.region_area_km2, 1), "route": settings.route,
            "request_kind": "computePixels" if settings.route == "compute_pixels" else
            f"export task to {'Cloud Storage' if settings.export.destination == 'gcs' else 'Drive'}",
            "composite": settings.composite_definition(cfg["periods"][0]) | {"start": None, "end": None},
            "bands": bands, "grid": {"tile_px": plan.grid.tile_px, "halo_px": plan.grid.halo_px,
                                     "resolution_m": plan.grid.resolution_m},
            "periods": periods, "totals": tot}


def chips_plan(points, settings: GeeSettings) -> dict:
    sizes = sorted({int(s) for s in settings.chip_sizes}, reverse=True)
    big = sizes[0]
    return {"points": len(points), "sizes": sizes, "requests": len(points),
            "bytes": len(points) * big * big * len(settings.bands) * 2,
            "schemes": sorted(set(points["scheme"]))}


def format_plan(p: dict, show_tiles: bool = True) -> str:
    lines = []
    c = p["composite"]
    mask = c["cloud_mask"]
    if mask == "cloud_score_plus":
        mask = f"Cloud Score+ {c['cs_band']} >= {c['cs_threshold']}"
    elif mask == "qa60":
        mask = "QA60 bits 10, 11"
    scene = (f", scenes with CLOUDY_PIXEL_PERCENTAGE <= {c['max_cloudy_pixel_percentage']}"
             if c["max_cloudy_pixel_percentage"] is not None else "")
    lines.append(f"region {p['region']} ({p['area_km2']} km2): {c['collection']}, mask {mask}{scene}, median, "
                 f"{len(p['bands'])} bands ({' '.join(p['bands'])}), uint16, nodata 0")
    g = p["grid"]
    lines.append(f"grid: {g['tile_px']} px tiles + {g['halo_px']} px halo at {g['resolution_m']:g} m; "
                 f"route {p['route']} ({p['request_kind']})")
    for per in p["periods"]:
        n_cached = sum(t["cached"] for t in per["tiles"])
        lines.append(f"period {per['period']} ({per['start']} .. {per['end_exclusive']}, end exclusive), "
                     f"composite {per['key']}: {len(per['tiles'])} tiles, {n_cached} cached")
        for w in per["warnings"]:
            lines.append(f"  WARNING: {w}")
        if show_tiles:
            for t in per["tiles"]:
                state = "cached" if t["cached"] else f"{t['requests']} request(s), {t['bytes'] / 1e9:.2f} GB"
                lines.append(f"  {t['tile']}  EPSG:{t['epsg']}  {t['width']}x{t['height']} px  "
                             f"({t['pixels'] / 1e6:.1f} Mpx)  {state}")
    tot = p["totals"]
    lines.append(f"total: {tot['jobs']} tile jobs ({tot['cached']} cached), {tot['pixels'] / 1e6:.1f} Mpx, "
                 f"{tot['requests']} requests, {tot['bytes'] / 1e9:.1f} GB uncompressed to fetch")
    return "\n".join(lines)
