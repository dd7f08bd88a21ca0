"""Merge the per-quadrant results of one scan into its national layers.

Outputs in ``results/{region}/{period}/``: detections.csv, detections.kml, rejected.csv (the candidates
dropped, with their scores and the reason: 'no_ore' from the impact CNN, 'isolated' from the optional
spatial prior, see spatial_prior.py), sites.gpkg (adjacent detected cells dissolved into site polygons)
and summary.json. Every output is sorted and formatted deterministically: same inputs, same bytes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.ops import unary_union

from minescan.grid import cell_polygon, geodesic_area_m2, zone_label_epsg
from minescan.io_utils import atomic_write_text, write_csv
from minescan.kml import kml_placemark, write_kml_document
from minescan.models.networks import STRIDE
from minescan.scan.spatial_prior import SpatialPrior, isolated_removals
from minescan.vector_io import read_vector, write_vector

log = logging.getLogger(__name__)

IMPACT_ORDER = ("high", "low", "unrated", "no_ore")
KML_COLOURS = {"high": "ff0000ff", "low": "ff00ffff", "unrated": "ffffffff", "no_ore": "ff888888"}
DETECTION_COLUMNS = ["site_id", "lon", "lat", "probability", "impact", "p_high", "p_low", "p_no_ore", "tile",
                     "quadrant", "zone", "cell_x", "cell_y", "easting", "northing"]


def read_classified(paths: list[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={"zone": str, "tile": str, "quadrant": str, "impact": str}) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        cols = ["cell_x", "cell_y", "zone", "tile", "quadrant", "easting", "northing", "lon", "lat",
                "probability", "p_high", "p_low", "p_no_ore", "impact"]
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(["zone", "cell_x", "cell_y"])
    if dup.any():  # cannot happen with the grid's ownership rule; guard against mixed inputs
        raise ValueError(f"{int(dup.sum())} cells reported by more than one quadrant")
    return df.sort_values(["zone", "cell_y", "cell_x"]).reset_index(drop=True)


def cloudy_quadrants(classified: list[str | Path]) -> list[dict]:
    """Quadrants the detect job flagged as cloudy (minescan.scan.quality): the CLOUDY tag of the probability
    raster beside each classified.csv (written by the same detect job), with its cloud fraction."""
    out = []
    for path in classified:
        prob = Path(path).parent / "probability.tif"
        if not prob.is_file():
            continue
        import rasterio

        with rasterio.open(prob) as src:
            tags = src.tags()
        if tags.get("CLOUDY") == "yes":
            out.append({"quadrant": Path(path).parent.name, "cloud_fraction": float(tags["CLOUD_FRACTION"])})
    return sorted(out, key=lambda q: q["quadrant"])


def label_sites(df: pd.DataFrame, connectivity: int = 8) -> pd.Series:
    """Connected components of detected cells (per UTM zone), named after their north-west-most cell."""
    ids = pd.Series(index=df.index, dtype=object)
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    for zone, part in df.groupby("zone", sort=True):
        where = {(int(x), int(y)): i for i, x, y in zip(part.index, part["cell_x"], part["cell_y"], strict=True)}
        seen: set = set()
        for key in where:
            if key in seen:
                continue
            members, stack = [], [key]
            seen.add(key)
            while stack:
                cx, cy = stack.pop()
                members.append((cx, cy))
                for dx, dy in offsets:
                    nb = (cx + dx, cy + dy)
                    if nb in where and nb not in seen:
                        seen.add(nb)
                        stack.append(nb)
            first = min(members, key=lambda c: (c[1], c[0]))
            sid = f"{zone}-E{first[0]}-N{-first[1]}"  # cell rows count southwards: -ky grows northwards
            for m in members:
                ids[where[m]] = sid
    return ids


def _dominant(impacts: pd.Series) -> str:
    counts = Counter(impacts)
    return max(counts, key=lambda k: (counts[k], -IMPACT_ORDER.index(k) if k in IMPACT_ORDER else -99))


def build_sites(det: pd.DataFrame, resolution_m: float, cell_px: int = STRIDE) -> gpd.GeoDataFrame:
    """Dissolve each site's cells (``cell_px`` px squares) into a polygon (EPSG:4326) with its area in ha
    (computed in UTM)."""
    rows = []
    for sid, part in det.groupby("site_id", sort=True):
        zone = part["zone"].iloc[0]
        epsg = zone_label_epsg(zone)
        poly = unary_union([cell_polygon(int(x), int(y), resolution_m, cell_px)
                            for x, y in zip(part["cell_x"], part["cell_y"], strict=True)])
        geo = gpd.GeoSeries([poly], crs=epsg).to_crs(4326).iloc[0]
        rows.append({
            "site_id": sid, "n_cells": len(part), "area_ha": round(poly.area / 1e4, 4),
            "max_probability": round(float(part["probability"].max()), 6),
            "mean_probability": round(float(part["probability"].mean()), 6),
            "impact": _dominant(part["impact"]), "zone": zone,
            "lon": round(float(part["lon"].mean()), 7), "lat": round(float(part["lat"].mean()), 7),
            "tiles": ",".join(sorted(set(part["tile"]))), "geometry": geo,
        })
    cols = ["site_id", "n_cells", "area_ha", "max_probability", "mean_probability", "impact", "zone", "lon",
            "lat", "tiles", "geometry"]
    return gpd.GeoDataFrame(rows or None, columns=cols, geometry="geometry", crs=4326)


def write_kml(det: pd.DataFrame, path, title: str) -> None:
    """Points styled by impact (red high, yellow low), with a description balloon per detection."""
    styles = [f'<Style id="{impact}"><IconStyle><color>{colour}</color><scale>0.9</scale>'
              "<Icon><href>http://maps.google.com/mapfiles/kml/shapes/placemark_circle.png</href></Icon>"
              "</IconStyle></Style>" for impact, colour in KML_COLOURS.items()]
    placemarks = [
        kml_placemark(r.site_id, r.impact, (
            ("site", r.site_id), ("probability", f"{r.probability:.3f}"), ("impact", r.impact),
            ("p(high)", _fmt(r.p_high)), ("p(low)", _fmt(r.p_low)), ("p(no ore)", _fmt(r.p_no_ore)),
            ("tile", r.tile), ("quadrant", r.quadrant), ("lon, lat", f"{r.lon:.6f}, {r.lat:.6f}")),
            f"<Point><coordinates>{r.lon:.7f},{r.lat:.7f},0</coordinates></Point>")
        for r in det.itertuples(index=False)]
    write_kml_document(path, title, styles, placemarks)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def evaluate_sites(sites: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, region_lonlat) -> dict:
    """Site-level recall/precision: a true mine is found if a detected site touches it, a site is right if
    it touches a true mine. Confusers (class != 'mine') count against precision when hit."""
    truth = truth.to_crs(4326)
    truth = truth[truth.intersects(region_lonlat)]
    mines = truth[truth["class"] == "mine"]
    found = [bool(sites.intersects(g).any()) for g in mines.geometry] if len(sites) else [False] * len(mines)
    correct = [bool(mines.intersects(g).any()) for g in sites.geometry] if len(mines) else [False] * len(sites)
    by_impact = {}
    for impact in sorted(set(mines["impact"])):
        sel = (mines["impact"] == impact).to_numpy()
        by_impact[impact] = {"truth": int(sel.sum()), "found": int(np.asarray(found)[sel].sum())}
    return {
        "truth_mines": len(mines), "found_mines": int(sum(found)),
        "recall": round(sum(found) / len(mines), 4) if len(mines) else None,
        "detected_sites": len(sites), "correct_sites": int(sum(correct)),
        "precision": round(sum(correct) / len(sites), 4) if len(sites) else None,
        "confusers_hit": int(sum(bool(sites.intersects(g).any()) for g in truth[truth["class"] != "mine"].geometry))
        if len(sites) else 0,
        "recall_by_impact": by_impact,
    }


def merge_scan(classified: list[str | Path], outdir, *, region_name: str, period: str, region_lonlat,
               tiles: list[str], quadrants: list[str], models: dict, thresholds: dict, resolution_m: float,
               drop_no_ore: bool = True, connectivity: int = 8, truth_path=None,
               prior: SpatialPrior | None = None, devices: dict | None = None, cell_px: int = STRIDE,
               extents_path=None) -> dict:
    outdir = Path(outdir)
    prior = prior or SpatialPrior()
    df = read_classified(classified)
    isolated = isolated_removals(df, prior)  # judged among all candidates, before the impact CNN's verdict
    no_ore = (df["impact"] == "no_ore") if drop_no_ore else pd.Series(False, index=df.index)
    rejected_mask = isolated | no_ore
    det = df[~rejected_mask].copy()
    rej = df[rejected_mask].copy()
    rej["reason"] = np.where(isolated[rejected_mask], "isolated", "no_ore")
    det["site_id"] = label_sites(det, connectivity) if len(det) else pd.Series(dtype=object)
    det = det[DETECTION_COLUMNS]
    sites = build_sites(det, resolution_m, cell_px)
    site_extents = None
    if extents_path:  # segmented extents (minescan.segment): area_ha_segmented + layer site_extents
        from minescan.segment.extents import segmented_extents

        sites, site_extents = segmented_extents(sites, read_vector(extents_path, what="extents file"))
    write_csv(det, outdir / "detections.csv")
    write_csv(rej[[c for c in DETECTION_COLUMNS if c != "site_id"] + ["reason"]], outdir / "rejected.csv")
    write_kml(det, outdir / "detections.kml", f"minescan detections {region_name} {period}")
    write_vector(sites, outdir / "sites.gpkg", layer="sites",
                 more_layers={"site_extents": site_extents} if site_extents is not None else None)
    summary = {
        "region": region_name, "period": period,
        "area_scanned_km2": round(geodesic_area_m2(region_lonlat) / 1e6, 3),
        "tiles": len(tiles), "quadrants": len(quadrants), "tile_ids": sorted(tiles),
        "candidates": len(df), "detections": len(det), "rejected_no_ore": int((~isolated & no_ore).sum()),
        "spatial_prior": {**prior.as_dict(), "candidates_removed": int(isolated.sum()),
                          "detections_removed": int((isolated & ~no_ore).sum()),
                          "removed_by_impact": {k: int(v) for k, v in
                                                sorted(Counter(df.loc[isolated, "impact"]).items())}},
        "detections_by_impact": {k: int(v) for k, v in sorted(Counter(det["impact"]).items())},
        "sites": len(sites),
        "sites_by_impact": {k: int(v) for k, v in sorted(Counter(sites["impact"]).items())},
        "site_area_ha": round(float(sites["area_ha"].sum()), 4) if len(sites) else 0.0,
        "models": models, "thresholds": thresholds,
    }
    cloudy = cloudy_quadrants(classified)
    if cloudy:  # only when there is one, so that the summary of a clear scan is unchanged
        summary["cloudy_quadrants"] = cloudy
        log.warning("%d quadrant(s) look mostly cloudy, their detections are suspect: %s", len(cloudy),
                    ", ".join(q["quadrant"] for q in cloudy))
    if devices is not None:  # detect jobs per device (minescan.scan.device.count_jobs)
        summary["jobs_per_device"] = {"detect": devices}
    if site_extents is not None:
        summary["site_area_ha_segmented"] = round(float(sites["area_ha_segmented"].sum()), 4)
    if truth_path:
        truth = read_vector(truth_path, what="truth file")
        summary["evaluation"] = evaluate_sites(sites, truth, region_lonlat)
        if site_extents is not None:
            from minescan.segment.extents import area_errors

            summary["evaluation"]["site_area"] = area_errors(sites, truth)
    atomic_write_text(outdir / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("merged %d quadrants: %d detections in %d sites, %d rejected as no ore, %d removed as isolated",
             len(classified), len(det), len(sites), summary["rejected_no_ore"], int(isolated.sum()))
    return summary
