"""Sites' segmented extents: the scan's extent polygons (``extents.gpkg``) attached to the merged sites.

A site's segmented extent is the union of the extent polygons that meet its cell polygon (the union of its
detected 270 m cells), clipped to that polygon grown by ``buffer_m`` (one cell by default), so a large
neighbouring disturbed area is not counted in full against a small detection. ``area_ha_segmented`` is its
area in the site's UTM zone; 0 when nothing was segmented as disturbed there.
"""

from __future__ import annotations

import geopandas as gpd
from shapely.ops import unary_union

from minescan.grid import utm_epsg

DEFAULT_BUFFER_M = 270.0


def segmented_extents(sites: gpd.GeoDataFrame, extents: gpd.GeoDataFrame, buffer_m: float = DEFAULT_BUFFER_M):
    """(sites with ``area_ha_segmented``, GeoDataFrame site_id + segmented extent geometry, EPSG:4326)."""
    sites = sites.copy()
    areas, rows = [], []
    for _, site in sites.iterrows():
        zone = site["zone"]
        epsg = utm_epsg(int(zone[:2]), zone[2])
        poly = gpd.GeoSeries([site.geometry], crs=sites.crs).to_crs(epsg).iloc[0]
        ext = extents[extents["zone"] == zone].to_crs(epsg) if len(extents) else extents
        hits = [g for g in (ext.geometry if len(ext) else []) if g.intersects(poly)]
        seg = unary_union(hits).intersection(poly.buffer(buffer_m)) if hits else None
        areas.append(round(seg.area / 1e4, 4) if seg is not None else 0.0)
        if seg is not None and not seg.is_empty:
            rows.append({"site_id": site["site_id"], "area_ha_segmented": areas[-1],
                         "geometry": gpd.GeoSeries([seg], crs=epsg).to_crs(4326).iloc[0]})
    at = list(sites.columns).index("area_ha") + 1 if "area_ha" in sites.columns else len(sites.columns) - 1
    sites.insert(at, "area_ha_segmented", areas)
    out = gpd.GeoDataFrame(rows or None, columns=["site_id", "area_ha_segmented", "geometry"],
                           geometry="geometry", crs=4326)
    return sites, out


def read_site_extents(sites_path) -> gpd.GeoDataFrame | None:
    """The ``site_extents`` layer of a sites.gpkg, or None when the scan was not segmented."""
    import pyogrio

    from minescan.vector_io import read_vector

    if "site_extents" not in {name for name, _ in pyogrio.list_layers(sites_path)}:
        return None
    return read_vector(sites_path, "site_extents", "sites file")


def extent_change(change: gpd.GeoDataFrame, previous: gpd.GeoDataFrame, current: gpd.GeoDataFrame):
    """``change`` (one row per matched group, site ids comma-joined in ``site_id`` / ``previous_site_id``)
    with ``expansion_ha`` (segmented now, not before) and ``contraction_ha`` (before, not now), measured in
    the UTM zone of each row. A site without a segmented extent counts as an empty one."""
    from minescan.grid import zone_of

    prev = dict(zip(previous["site_id"].astype(str), previous.geometry, strict=True))
    curr = dict(zip(current["site_id"].astype(str), current.geometry, strict=True))
    expansion, contraction = [], []
    for _, row in change.iterrows():
        now = unary_union([curr[s] for s in str(row["site_id"] or "").split(",") if s in curr])
        before = unary_union([prev[s] for s in str(row["previous_site_id"] or "").split(",") if s in prev])
        if now.is_empty and before.is_empty:
            expansion.append(0.0), contraction.append(0.0)
            continue
        c = (now if not now.is_empty else before).representative_point()
        epsg = utm_epsg(*zone_of(c.x, c.y))
        a, b = (gpd.GeoSeries([g], crs=4326).to_crs(epsg).iloc[0] for g in (now, before))
        expansion.append(round(a.difference(b).area / 1e4, 4))
        contraction.append(round(b.difference(a).area / 1e4, 4))
    change = change.copy()
    at = list(change.columns).index("area_change_pct") + 1
    change.insert(at, "expansion_ha", expansion)
    change.insert(at + 1, "contraction_ha", contraction)
    return change


def area_errors(sites: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> dict:
    """Median relative error of site areas against the true mine polygons they touch, cell-based
    (``area_ha``) and segmented (``area_ha_segmented``): per site that touches a true mine,
    ``|area - truth area| / truth area`` with the truth area the union of the mines it touches (in UTM)."""
    import numpy as np

    truth = truth.to_crs(4326)
    mines = truth[truth["class"] == "mine"] if "class" in truth else truth
    cells, segmented = [], []
    for _, site in sites.iterrows():
        hit = [g for g in mines.geometry if g.intersects(site.geometry)]
        if not hit:
            continue
        zone = site["zone"]
        epsg = utm_epsg(int(zone[:2]), zone[2])
        true_ha = gpd.GeoSeries([unary_union(hit)], crs=4326).to_crs(epsg).iloc[0].area / 1e4
        if true_ha <= 0:
            continue
        cells.append(abs(site["area_ha"] - true_ha) / true_ha)
        segmented.append(abs(site["area_ha_segmented"] - true_ha) / true_ha)

    def med(values):
        return round(float(np.median(values)), 4) if values else None

    return {"sites_on_true_mines": len(cells), "median_relative_error_cells": med(cells),
            "median_relative_error_segmented": med(segmented)}
