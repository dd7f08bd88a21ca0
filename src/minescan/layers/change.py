"""Periodic scans: the periods of a schedule, and what changed between the scans of one region.

A scan is (region, period); a period is a year (``2025``) or a quarter (``2026Q1``). ``periods`` in the
config lists them, ``schedule`` generates them (``{every: quarter, from: 2026Q1, to: 2026Q4}``, or with
``to: null`` every period finished by today, so a quarterly cron job picks up each new quarter by itself).

Sites (dissolved detected cells, ``sites.gpkg`` of :mod:`minescan.scan.merge`) keep no identity across scans:
their ids name their north-west-most cell, which moves when a site grows. Sites are therefore matched by
geometry: a site of one period and a site of another are the same mine when their polygons overlap by at
least ``min_overlap`` of the smaller one's area. Matches form groups (connected components), so two mines
that grew together, or one that was split, are one group. Per scan, against the previous period of the
same region, every group is

- ``new``: only in this period;
- ``vanished``: only in the previous period;
- ``grown`` / ``shrunk``: in both, its area changed by at least ``min_growth`` (a fraction) of the
  previous area; ``unchanged`` otherwise.

The cumulative layer follows every group ("track") over all periods from the first up to this one: its
footprint (union of its polygons), when it was first and last seen, and its status against the first
period (``new`` since then, ``grown``, ``shrunk``, ``unchanged``, or ``vanished`` when not detected now).

Outputs in ``results/{region}/{period}/change/``: change.gpkg/.csv/.kml, cumulative.gpkg/.csv/.kml and
change.json (counts and areas). Written deterministically: same inputs, same bytes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.ops import unary_union

from minescan.errors import InputDataError
from minescan.grid import geodesic_area_m2, site_epsgs, to_crs
from minescan.io_utils import atomic_write_text, write_csv
from minescan.kml import kml_placemark, kml_polygon_geometry, kml_polygon_styles, write_kml_document
from minescan.periods import sort_periods
from minescan.vector_io import read_sites, write_vector

log = logging.getLogger(__name__)

STATUSES = ("new", "grown", "shrunk", "unchanged", "vanished")
# KML colours (aabbggrr)
STATUS_COLOURS = {"new": "ff0000ff", "grown": "ff0080ff", "shrunk": "ffff8000", "unchanged": "ffffffff",
                  "vanished": "ff888888"}
CHANGE_COLUMNS = ["status", "site_id", "previous_site_id", "area_ha", "previous_area_ha", "area_change_ha",
                  "area_change_pct", "impact", "previous_impact", "n_sites", "n_previous_sites", "lon", "lat"]
CUMULATIVE_COLUMNS = ["track_id", "status", "first_seen", "last_seen", "n_periods", "periods", "site_id",
                      "area_ha", "first_area_ha", "base_area_ha", "area_change_ha", "max_area_ha", "footprint_ha",
                      "impact", "lon", "lat"]


# ------------------------------------------------------------------------------------------- matching



def prepare_sites(sites: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Sites in EPSG:4326 with site_id, area_ha, impact, zone and a UTM EPSG per site (``_epsg``), sorted by
    site_id. Sites prepared already are returned as they are."""
    if "_epsg" in sites.columns:
        return sites
    s = sites.to_crs(4326) if sites.crs is not None else sites.set_crs(4326)
    s = s[s.geometry.notna() & ~s.geometry.is_empty].copy()
    if "site_id" not in s:
        s["site_id"] = [f"site-{i}" for i in range(len(s))]
    s["site_id"] = s["site_id"].astype(str)
    if "area_ha" not in s:
        s["area_ha"] = [geodesic_area_m2(g) / 1e4 for g in s.geometry]
    if "impact" not in s:
        s["impact"] = "unrated"
    s["_epsg"] = site_epsgs(s.geometry, s["zone"] if "zone" in s else None)
    return s.sort_values("site_id").reset_index(drop=True)


def _overlap_fraction(a, a_epsg: int, b) -> float:
    """Intersection area / smaller area, both measured in ``a``'s UTM zone."""
    pa, pb = to_crs(a, 4326, a_epsg), to_crs(b, 4326, a_epsg)
    inter = pa.intersection(pb).area
    smaller = min(pa.area, pb.area)
    return inter / smaller if smaller > 0 else 0.0


def _groups(frames: list[gpd.GeoDataFrame], min_overlap: float) -> list[list[tuple[int, int]]]:
    """Connected components of sites overlapping across frames: lists of (frame index, row index)."""
    nodes = [(f, i) for f, fr in enumerate(frames) for i in range(len(fr))]
    parent = {n: n for n in nodes}

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for fa in range(len(frames)):
        for fb in range(fa + 1, len(frames)):
            a, b = frames[fa], frames[fb]
            if not len(a) or not len(b):
                continue
            ia, ib = b.sindex.query(a.geometry, predicate="intersects")
            for i, j in zip(ia, ib, strict=True):
                ga, gb = a.geometry.iloc[i], b.geometry.iloc[j]
                frac = _overlap_fraction(ga, int(a["_epsg"].iloc[i]), gb)
                if frac > 0 and frac >= min_overlap:
                    ra, rb = find((fa, i)), find((fb, j))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    comps = defaultdict(list)
    for n in nodes:
        comps[find(n)].append(n)
    return [sorted(c) for c in comps.values()]


def _status(area: float, base: float, min_growth: float) -> str:
    if base <= 0:
        return "new"
    if area <= 0:
        return "vanished"
    rel = (area - base) / base
    if rel >= min_growth:
        return "grown"
    if rel <= -min_growth:
        return "shrunk"
    return "unchanged"


def _dominant(values) -> str:
    counts = Counter(values)
    return max(sorted(counts), key=lambda k: counts[k]) if counts else ""


def _centroid(geom) -> tuple[float, float]:
    c = geom.centroid if not geom.is_empty else None
    return (round(float(c.x), 7), round(float(c.y), 7)) if c is not None else (np.nan, np.nan)


def _union(geoms):
    return shapely.normalize(unary_union(list(geoms)))


def compare_sites(previous: gpd.GeoDataFrame, current: gpd.GeoDataFrame, *, min_overlap: float = 0.1,
                  min_growth: float = 0.1) -> gpd.GeoDataFrame:
    """The change layer: one row per group of matching sites (see the module doc), EPSG:4326.

    Geometry: the current sites of the group (the previous ones for 'vanished'). Areas in ha, from the
    sites' ``area_ha`` (computed in UTM by the merge) where present.
    """
    prev, curr = prepare_sites(previous), prepare_sites(current)
    rows = []
    for comp in _groups([prev, curr], min_overlap):
        p_idx = [i for f, i in comp if f == 0]
        c_idx = [i for f, i in comp if f == 1]
        p, c = prev.iloc[p_idx], curr.iloc[c_idx]
        area, base = float(c["area_ha"].sum()), float(p["area_ha"].sum())
        status = _status(area, base, min_growth)
        geom = _union(c.geometry if len(c) else p.geometry)
        lon, lat = _centroid(geom)
        rows.append({
            "status": status,
            "site_id": ",".join(c["site_id"]), "previous_site_id": ",".join(p["site_id"]),
            "area_ha": round(area, 4), "previous_area_ha": round(base, 4),
            "area_change_ha": round(area - base, 4),
            "area_change_pct": round(100 * (area - base) / base, 2) if base > 0 else np.nan,
            "impact": _dominant(c["impact"]), "previous_impact": _dominant(p["impact"]),
            "n_sites": len(c), "n_previous_sites": len(p), "lon": lon, "lat": lat, "geometry": geom,
        })
    rows.sort(key=lambda r: (STATUSES.index(r["status"]), r["site_id"] or r["previous_site_id"]))
    return gpd.GeoDataFrame(rows or None, columns=CHANGE_COLUMNS + ["geometry"], geometry="geometry", crs=4326)


def cumulative_sites(history: list[tuple[str, gpd.GeoDataFrame]], *, min_overlap: float = 0.1,
                     min_growth: float = 0.1) -> gpd.GeoDataFrame:
    """The cumulative layer over ``history`` = [(period, sites), ...] oldest first; the last is 'now'.

    One row per track (sites matching across any two periods): its footprint over all periods, first and
    last period seen, areas now / when first seen / in the first period / at most, and its status now
    against the first period.
    """
    if not history:
        raise InputDataError("cumulative layer: no period given")
    periods = [p for p, _ in history]
    frames = [prepare_sites(s) for _, s in history]
    first, now = 0, len(frames) - 1
    rows = []
    for comp in _groups(frames, min_overlap):
        by_period = defaultdict(list)
        for f, i in comp:
            by_period[f].append(i)
        areas = {f: float(frames[f].iloc[ix]["area_ha"].sum()) for f, ix in by_period.items()}
        seen = sorted(by_period)
        area_now, base = areas.get(now, 0.0), areas.get(first, 0.0)
        status = _status(area_now, base, min_growth) if (area_now > 0 or base > 0) else "vanished"
        geoms = [g for f, ix in by_period.items() for g in frames[f].iloc[ix].geometry]
        footprint = _union(geoms)
        first_ids = ",".join(frames[seen[0]].iloc[by_period[seen[0]]]["site_id"])
        latest = seen[-1]
        lon, lat = _centroid(footprint)
        rows.append({
            "track_id": f"{periods[seen[0]]}:{first_ids}", "status": status,
            "first_seen": periods[seen[0]], "last_seen": periods[latest], "n_periods": len(seen),
            "periods": ",".join(periods[f] for f in seen),
            "site_id": ",".join(frames[now].iloc[by_period[now]]["site_id"]) if now in by_period else "",
            "area_ha": round(area_now, 4), "first_area_ha": round(areas[seen[0]], 4),
            "base_area_ha": round(base, 4), "area_change_ha": round(area_now - base, 4),
            "max_area_ha": round(max(areas.values()), 4),
            "footprint_ha": round(geodesic_area_m2(footprint) / 1e4, 4),
            "impact": _dominant(frames[latest].iloc[by_period[latest]]["impact"]),
            "lon": lon, "lat": lat, "geometry": footprint,
        })
    rows.sort(key=lambda r: (STATUSES.index(r["status"]), r["track_id"]))
    return gpd.GeoDataFrame(rows or None, columns=CUMULATIVE_COLUMNS + ["geometry"], geometry="geometry",
                            crs=4326)


# -------------------------------------------------------------------------------------------- writing

def write_change_kml(layer: gpd.GeoDataFrame, path, title: str, name_column: str) -> None:
    """Polygons coloured by status (red new, orange grown, blue shrunk, white unchanged, grey vanished)."""
    cols = [c for c in layer.columns if c != "geometry"]
    placemarks = []
    for r in layer.itertuples(index=False):
        d = r._asdict()
        name = d[name_column] or d.get("previous_site_id") or d["status"]
        placemarks.append(kml_placemark(name, d["status"], [(k, "" if d[k] is None else d[k]) for k in cols],
                                        kml_polygon_geometry(r.geometry)))
    write_kml_document(path, title, kml_polygon_styles(STATUS_COLOURS), placemarks)


def _write_layer(layer: gpd.GeoDataFrame, outdir: Path, name: str, title: str, name_column: str) -> None:
    write_vector(layer, outdir / f"{name}.gpkg", layer=name)
    write_csv(layer, outdir / f"{name}.csv")
    write_change_kml(layer, outdir / f"{name}.kml", title, name_column)


def _status_summary(layer: gpd.GeoDataFrame, extra: list[str]) -> dict:
    out = {}
    for status in STATUSES:
        part = layer[layer["status"] == status]
        out[status] = {"count": len(part), "area_ha": round(float(part["area_ha"].sum()), 4),
                       "area_change_ha": round(float(part["area_change_ha"].sum()), 4)}
        for col in extra:
            out[status][col] = round(float(part[col].sum()), 4)
    return out


def load_sites(path) -> gpd.GeoDataFrame:
    return read_sites(path)


def _segmented_extents(previous_path, current_path):
    """Both scans' site_extents layers (segmentation), or None unless both have one."""
    from minescan.segment.extents import read_site_extents

    pair = [read_site_extents(p) for p in (previous_path, current_path)]
    return pair if all(x is not None for x in pair) else None


def run_change(*, region_name: str, periods: list[str], history: list[str | Path], outdir,
               min_overlap: float = 0.1, min_growth: float = 0.1) -> dict:
    """Write the change layer (last period against the one before) and the cumulative layer of a scan.

    ``periods`` and ``history`` (their sites.gpkg) are oldest first; the last is the scan's own period.
    """
    if len(periods) != len(history):
        raise InputDataError("change: --periods and --sites must list as many items, in the same order")
    if len(periods) < 2:
        raise InputDataError("change: give at least two periods, each with its sites file, oldest first")
    if periods != sort_periods(periods):
        raise InputDataError(f"change: periods must be distinct and oldest first, got {', '.join(periods)}")
    outdir = Path(outdir)
    frames = [prepare_sites(load_sites(p)) for p in history]  # once, for both layers
    period, prev_period = periods[-1], periods[-2]
    change = compare_sites(frames[-2], frames[-1], min_overlap=min_overlap, min_growth=min_growth)
    extents = _segmented_extents(history[-2], history[-1])
    if extents:  # both scans segmented (minescan.segment): expansion / contraction of the extents
        from minescan.segment.extents import extent_change

        change = extent_change(change, *extents)
    cumulative = cumulative_sites(list(zip(periods, frames, strict=True)), min_overlap=min_overlap,
                                  min_growth=min_growth)
    _write_layer(change, outdir, "change", f"minescan changes {region_name} {prev_period} -> {period}", "site_id")
    _write_layer(cumulative, outdir, "cumulative", f"minescan sites {region_name} {periods[0]} - {period}",
                 "track_id")
    summary = {
        "region": region_name, "period": period, "previous_period": prev_period, "first_period": periods[0],
        "periods": periods, "min_overlap": min_overlap, "min_growth": min_growth,
        "sites": len(frames[-1]), "previous_sites": len(frames[-2]),
        "change": _status_summary(change, ["previous_area_ha"]),
        "cumulative": {"tracks": len(cumulative),
                       "footprint_ha": round(float(cumulative["footprint_ha"].sum()), 4),
                       "by_status": _status_summary(cumulative, ["base_area_ha", "footprint_ha"])},
    }
    if extents:
        summary["segmented"] = {k: round(float(change[k].sum()), 4) for k in ("expansion_ha", "contraction_ha")}
    atomic_write_text(outdir / "change.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    c = summary["change"]
    log.info("%s %s vs %s: %d new, %d grown, %d shrunk, %d unchanged, %d vanished", region_name, period,
             prev_period, *(c[s]["count"] for s in STATUSES))
    return summary
