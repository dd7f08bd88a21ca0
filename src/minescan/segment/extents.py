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
