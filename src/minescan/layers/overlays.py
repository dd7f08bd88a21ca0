"""Layers an analyst can act on, made from a scan's sites after merge.

- Registry cross-check: every site is compared with reference layers of known or authorised mining
  (official concessions, registered dams, known-mine maps; points, lines or polygons in any CRS). A site
  whose polygon lies within ``match_distance_m`` of a reference feature is *registered*; every site also
  gets the nearest feature (layer, id, name, distance) up to ``search_distance_m``. The others are listed,
  most probable and largest first, in unregistered.csv / .kml / .gpkg: the leads to follow up.
- Overlays: protected, indigenous or other land, and admin units. A site *falls in* an area when they
  share some area (a common edge alone does not count); the mined area per area is the area of the site
  polygons inside it, so a site straddling a boundary is split between the two sides.

Distances and areas are computed in the UTM zone of each site (its ``zone`` column), where they are true to
well under 0.1 %; reference and overlay features are reprojected from whatever CRS they come in.
Outputs (in the scan directory): sites_annotated.gpkg/.csv, unregistered.csv/.kml/.gpkg, areas.csv and
layers.json, all sorted and formatted deterministically (same inputs, same bytes).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box

from minescan.errors import ConfigError, InputDataError
from minescan.grid import site_epsgs
from minescan.io_utils import atomic_write_text, write_csv
from minescan.kml import kml_placemark, kml_polygon_geometry, kml_polygon_styles, write_kml_document
from minescan.scan.merge import KML_COLOURS
from minescan.vector_io import read_sites, read_vector, write_vector

log = logging.getLogger(__name__)

REGISTRY_COLUMNS = ["registered", "registry_layer", "registry_id", "registry_name", "registry_distance_m"]
OVERLAY_COLUMNS = ["areas", "in_protected_area", "admin"]
AREA_COLUMNS = ["kind", "layer", "name", "sites", "mined_area_ha", "unregistered_sites", "unregistered_area_ha",
                "high_impact_sites"]
_DIST_TOL_M = 1e-3  # reprojection round-off: a site 'exactly' at the match distance is registered
_AREA_TOL_HA = 1e-6  # 0.01 m2: slivers from reprojection round-off along a shared edge do not count


@dataclass
class RefLayer:
    """One reference / overlay / admin layer, in EPSG:4326, with columns ref_id, ref_name, geometry."""

    label: str
    kind: str  # 'registry', 'admin' or the overlay kind (indigenous, protected, ...)
    file: str
    features: gpd.GeoDataFrame


# --------------------------------------------------------------------------------------------- config


def resolve_path(template: str, *, results_dir: str = "results", region: str = "", period: str = "") -> str:
    """Fill the {results_dir}, {region} and {period} placeholders of a layer file name."""
    try:
        return template.format(results_dir=results_dir, region=region, period=period)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"layers: file '{template}': bad placeholder ({exc}); use {{results_dir}}, {{region}} "
                          "or {period}") from exc


def placeholders(results_dir: str, region: str, period: str) -> dict:
    """The values of a layer file name's placeholders (see :func:`resolve_path`)."""
    return {"results_dir": results_dir, "region": region, "period": period}


def layer_entries(settings: dict) -> list[tuple[str, dict]]:
    """(role, entry) of every configured layer: 'registry', 'overlay' or 'admin'."""
    out = [("registry", e) for e in settings.get("registry") or []]
    out += [("overlay", e) for e in settings.get("overlays") or []]
    if settings.get("admin"):
        out.append(("admin", settings["admin"]))
    return out


def reference_files(cfg: dict, region: str, period: str) -> list[str]:
    """Every layer file a scan's layers stage reads (Snakemake input function helper)."""
    fmt = placeholders(cfg.get("results_dir", "results"), region, period)
    return sorted({resolve_path(e["file"], **fmt) for _, e in layer_entries(cfg.get("layers") or {})})


def resolved_settings(cfg: dict, region: str, period: str) -> str:
    """The config's 'layers' block as JSON with the placeholders of every file name filled in (what the
    Snakemake rules pass to the CLI as --settings)."""
    fmt = placeholders(cfg.get("results_dir", "results"), region, period)
    settings = json.loads(json.dumps(cfg.get("layers") or {}))
    for _, entry in layer_entries(settings):
        entry["file"] = resolve_path(entry["file"], **fmt)
    return json.dumps(settings, sort_keys=True, ensure_ascii=False)


def load_layer(entry: dict, role: str, fmt: dict) -> RefLayer:
    path = resolve_path(entry["file"], **fmt)
    what = {"registry": "registry layer", "overlay": "overlay layer", "admin": "admin layer"}[role]
    gdf = read_vector(path, entry.get("layer"), what)
    label = entry.get("label") or Path(path).name
    for key in ("id_column", "name_column"):
        col = entry.get(key)
        if col and col not in gdf.columns:
            raise InputDataError(f"{path}: {what} has no column '{col}' (layers {role} {key}); columns: "
                                 f"{', '.join(c for c in gdf.columns if c != gdf.geometry.name)}")
    n = len(gdf)
    id_col, name_col = entry.get("id_column"), entry.get("name_column")
    ids = gdf[id_col].map(_text) if id_col else pd.Series([str(i) for i in range(1, n + 1)], index=gdf.index)
    if name_col:
        names = gdf[name_col].map(_text)
    elif role == "overlay":
        names = pd.Series([label] * n, index=gdf.index)
    elif role == "admin":
        names = ids
    else:
        names = pd.Series([""] * n, index=gdf.index)
    feats = gpd.GeoDataFrame({"ref_id": ids.to_numpy(), "ref_name": names.to_numpy()},
                             geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
    feats = feats[~(feats.geometry.isna() | feats.geometry.is_empty)].to_crs(4326)
    feats["geometry"] = shapely.make_valid(feats.geometry.to_numpy())
    if role != "registry":
        feats = feats[shapely.area(feats.geometry.to_numpy()) > 0]
        if feats.empty and n:
            raise InputDataError(f"{path}: {what} holds no polygon (only points or lines)")
    kind = "registry" if role == "registry" else "admin" if role == "admin" else entry.get("kind") or "protected"
    return RefLayer(label, kind, path, feats.reset_index(drop=True))


def load_layers(settings: dict, fmt: dict) -> tuple[list[RefLayer], list[RefLayer], RefLayer | None]:
    registry = [load_layer(e, "registry", fmt) for e in settings.get("registry") or []]
    overlays = [load_layer(e, "overlay", fmt) for e in settings.get("overlays") or []]
    admin = load_layer(settings["admin"], "admin", fmt) if settings.get("admin") else None
    return registry, overlays, admin


def _text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# --------------------------------------------------------------------------------------------- geometry


def site_epsg(sites: gpd.GeoDataFrame) -> pd.Series:
    """UTM EPSG code of every site: from its 'zone' column (e.g. '21S'), else from its centroid."""
    zones = sites["zone"] if "zone" in sites.columns else None
    return pd.Series(site_epsgs(sites.geometry, zones), index=sites.index)


def _window(part: gpd.GeoDataFrame, margin_m: float):
    """A lon/lat box around some sites, grown by margin_m (generously: it only preselects features)."""
    x0, y0, x1, y1 = part.total_bounds
    dlat = margin_m / 110_000.0 * 1.05
    coslat = max(math.cos(math.radians(max(abs(y0), abs(y1)) + dlat)), 0.01)
    dlon = margin_m / (111_320.0 * coslat) * 1.05
    return box(x0 - dlon, max(y0 - dlat, -90), x1 + dlon, min(y1 + dlat, 90))


def _near(features: gpd.GeoDataFrame, window) -> gpd.GeoDataFrame:
    if features.empty:
        return features
    idx = features.sindex.query(window, predicate="intersects")
    return features.iloc[np.sort(idx)]


# --------------------------------------------------------------------------------------------- registry


def cross_check(sites: gpd.GeoDataFrame, registry: list[RefLayer], match_distance_m: float,
                search_distance_m: float = 50_000.0) -> pd.DataFrame:
    """Registry columns for every site (index as ``sites``): registered yes/no (or 'unchecked' without a
    registry), and the nearest feature's layer, id, name and distance (m, 0 = touching or overlapping)."""
    out = pd.DataFrame({"registered": "unchecked" if not registry else "no", "registry_layer": "",
                        "registry_id": "", "registry_name": "", "registry_distance_m": np.nan},
                       index=sites.index)
    if not registry or sites.empty:
        return out
    frames = []
    for order, layer in enumerate(registry):
        f = layer.features[["ref_id", "ref_name", "geometry"]].copy()
        f["layer_order"], f["layer_label"] = order, layer.label
        frames.append(f)
    refs = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=4326)
    search = max(search_distance_m, match_distance_m)
    epsg = site_epsg(sites)
    for code, part in sites.groupby(epsg, sort=True):
        cand = _near(refs, _window(part, search))
        if cand.empty:
            continue
        s_utm = part[["geometry"]].to_crs(int(code))
        r_utm = cand.to_crs(int(code))
        hits = gpd.sjoin_nearest(s_utm, r_utm, how="inner", max_distance=search, distance_col="dist")
        hits = hits[hits["dist"] <= search + _DIST_TOL_M]
        if hits.empty:
            continue
        hits = hits.assign(site=hits.index).sort_values(["site", "dist", "layer_order", "ref_id"], kind="stable")
        best = hits.groupby("site", sort=False).head(1).set_index("site")
        out.loc[best.index, "registry_layer"] = best["layer_label"]
        out.loc[best.index, "registry_id"] = best["ref_id"]
        out.loc[best.index, "registry_name"] = best["ref_name"]
        dist = best["dist"].where(best["dist"] > _DIST_TOL_M, 0.0)
        out.loc[best.index, "registry_distance_m"] = dist.round(1)
        out.loc[best.index, "registered"] = np.where(best["dist"] <= match_distance_m + _DIST_TOL_M, "yes", "no")
    return out


# --------------------------------------------------------------------------------------------- overlays


def overlap_table(sites: gpd.GeoDataFrame, layer: RefLayer) -> pd.DataFrame:
    """(site index, area name, overlap in ha) for every site that shares area with a feature of a layer."""
    rows = []
    if sites.empty or layer.features.empty:
        return pd.DataFrame(columns=["site", "name", "ha"])
    epsg = site_epsg(sites)
    for code, part in sites.groupby(epsg, sort=True):
        cand = _near(layer.features, _window(part, 100.0))
        if cand.empty:
            continue
        s_utm = part.geometry.to_crs(int(code))
        f_utm = cand.geometry.to_crs(int(code))
        si, fi = f_utm.sindex.query(s_utm.to_numpy(), predicate="intersects")
        if len(si) == 0:
            continue
        inter = shapely.intersection(s_utm.to_numpy()[si], f_utm.to_numpy()[fi])
        ha = shapely.area(inter) / 1e4
        for s, f, a in zip(si, fi, ha, strict=True):
            if a > _AREA_TOL_HA:
                rows.append((part.index[s], cand["ref_name"].iloc[f], float(a)))
    t = pd.DataFrame(rows, columns=["site", "name", "ha"])
    return t.groupby(["site", "name"], as_index=False, sort=True)["ha"].sum()


def _names_by_site(table: pd.DataFrame, fmt=str) -> dict:
    """'; '-joined area names per site, largest overlap first."""
    out = {}
    for site, part in table.sort_values(["site", "ha", "name"], ascending=[True, False, True]).groupby("site"):
        out[site] = "; ".join(fmt(n) for n in part["name"])
    return out


def area_rows(sites: gpd.GeoDataFrame, layer: RefLayer, table: pd.DataFrame, region_lonlat=None) -> list[dict]:
    """Mined area per area of one layer. Areas meeting the scanned region appear even with no site."""
    names = set(table["name"])
    if region_lonlat is not None and not layer.features.empty:
        near = layer.features.iloc[np.sort(layer.features.sindex.query(region_lonlat, predicate="intersects"))]
        shared = shapely.area(shapely.intersection(near.geometry.to_numpy(), region_lonlat)) > 0
        names |= set(near.loc[shared, "ref_name"])
    rows = []
    unreg = sites["registered"] == "no" if "registered" in sites.columns else pd.Series(False, index=sites.index)
    for name in sorted(names):
        t = table[table["name"] == name]
        idx = t["site"].to_numpy()
        u = unreg.loc[idx].to_numpy() if len(idx) else np.zeros(0, dtype=bool)
        rows.append({
            "kind": layer.kind, "layer": layer.label, "name": name, "sites": int(len(t)),
            "mined_area_ha": round(float(t["ha"].sum()), 4),
            "unregistered_sites": int(u.sum()), "unregistered_area_ha": round(float(t["ha"].to_numpy()[u].sum()), 4),
            "high_impact_sites": int((sites.loc[idx, "impact"] == "high").sum()) if len(idx) else 0,
        })
    return sorted(rows, key=lambda r: (-r["mined_area_ha"], r["name"]))


# --------------------------------------------------------------------------------------------- outputs


def reported_extents(sites: gpd.GeoDataFrame, extents: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    """The geometry each site's mined area is measured on, with ``area_basis`` and ``area_ha_reported``.

    Without segmentation (``extents`` None) that is the site polygon (the union of its detected cells). With
    segmentation, a site's segmented extent (layer ``site_extents`` of sites.gpkg) where it has one, and its
    cell polygon where the segmenter found nothing disturbed there: a detection is never counted as 0 ha in
    an area (the cell area then stands, marked ``cells`` in ``area_basis``)."""
    out = sites.copy()
    out["area_basis"] = "cells"
    out["area_ha_reported"] = out["area_ha"].astype(float)
    if extents is None or extents.empty:
        return out
    by_id = dict(zip(extents["site_id"].astype(str), extents.to_crs(sites.crs).geometry, strict=True))
    area_by_id = dict(zip(extents["site_id"].astype(str), extents["area_ha_segmented"].astype(float), strict=True))
    ids = out["site_id"].astype(str)
    has = ids.map(lambda i: i in by_id and by_id[i] is not None and not by_id[i].is_empty
                  and area_by_id[i] > 0).to_numpy(dtype=bool)
    geom = out.geometry.to_numpy().copy()
    geom[has] = [by_id[i] for i in ids[has]]
    out = out.set_geometry(gpd.GeoSeries(geom, index=out.index, crs=sites.crs))
    out.loc[has, "area_basis"] = "segmented"
    out.loc[has, "area_ha_reported"] = [area_by_id[i] for i in ids[has]]
    return out


def annotate_sites(sites: gpd.GeoDataFrame, registry: list[RefLayer], overlays: list[RefLayer],
                   admin: RefLayer | None, match_distance_m: float, search_distance_m: float,
                   region_lonlat=None, extents: gpd.GeoDataFrame | None = None
                   ) -> tuple[gpd.GeoDataFrame, list[dict], list[dict]]:
    """Sites with registry and overlay columns, and the per-area and per-admin-unit rows. With ``extents``
    (a segmented scan), which areas a site falls in and the mined hectares per area are measured on its
    segmented extent (see :func:`reported_extents`); the registry cross-check uses the site polygons."""
    sites = sites.copy()
    reg = cross_check(sites, registry, match_distance_m, search_distance_m)
    for c in REGISTRY_COLUMNS:
        sites[c] = reg[c]
    measured = reported_extents(sites, extents)
    if extents is not None:
        sites["area_basis"] = measured["area_basis"]
        sites["area_ha_reported"] = measured["area_ha_reported"]
    area_names: dict = {}
    areas: list[dict] = []
    for layer in overlays:
        t = overlap_table(measured, layer)
        for site, text in _names_by_site(t, lambda n, k=layer.kind: f"{n} ({k})").items():
            area_names[site] = f"{area_names[site]}; {text}" if site in area_names else text
        areas += area_rows(sites, layer, t, region_lonlat)
    sites["areas"] = pd.Series(area_names, dtype=object).reindex(sites.index).fillna("")
    sites["in_protected_area"] = np.where(sites["areas"] != "", "yes", "no")
    admin_rows: list[dict] = []
    if admin is not None:
        t = overlap_table(measured, admin)
        sites["admin"] = pd.Series(_names_by_site(t), dtype=object).reindex(sites.index).fillna("")
        admin_rows = area_rows(sites, admin, t, region_lonlat)
    else:
        sites["admin"] = ""
    geom = sites.geometry.name
    cols = [c for c in sites.columns if c != geom] + [geom]
    return sites[cols], areas, admin_rows


def sort_unregistered(sites: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    u = sites[sites["registered"] == "no"]
    return u.sort_values(["max_probability", "area_ha", "site_id"], ascending=[False, False, True], kind="stable")


def write_polygon_kml(sites: gpd.GeoDataFrame, path, title: str, fields: list[str]) -> None:
    """Site polygons styled by impact, with a description table of ``fields`` per site."""
    placemarks = []
    for r in sites.itertuples(index=False):
        row = r._asdict()
        placemarks.append(kml_placemark(row["site_id"], row["impact"], [(k, _fmt_value(row.get(k))) for k in fields],
                                        kml_polygon_geometry(row[sites.geometry.name])))
    write_kml_document(path, title, kml_polygon_styles(KML_COLOURS), placemarks)


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    return str(v)


def run_layers(sites_path, outdir, settings: dict, *, region_name: str, period: str, results_dir: str = "results",
               region_lonlat=None) -> dict:
    """The layers stage for one scan: read sites.gpkg, write the annotated and unregistered layers,
    areas.csv and layers.json into ``outdir``; return the layers.json content."""
    outdir = Path(outdir)
    fmt = placeholders(results_dir, region_name, period)
    registry, overlays, admin = load_layers(settings, fmt)
    sites = read_sites(sites_path, "sites layer").to_crs(4326)
    sites = sites.sort_values("site_id", kind="stable").reset_index(drop=True)
    match_m = float(settings.get("match_distance_m", 500))
    search_m = float(settings.get("search_distance_m", 50_000))
    from minescan.segment.extents import read_site_extents

    extents = read_site_extents(sites_path)
    annotated, areas, admin_rows = annotate_sites(sites, registry, overlays, admin, match_m, search_m,
                                                  region_lonlat, extents)
    # the hectares this stage reports: segmented extents where the scan was segmented, else detected cells
    reported = annotated["area_ha_reported"] if extents is not None else annotated["area_ha"]
    unregistered = sort_unregistered(annotated)

    write_vector(annotated, outdir / "sites_annotated.gpkg", layer="sites")
    write_csv(annotated, outdir / "sites_annotated.csv")
    write_vector(unregistered, outdir / "unregistered.gpkg", layer="unregistered")
    write_csv(unregistered, outdir / "unregistered.csv")
    kml_fields = ["max_probability", "mean_probability", "area_ha", "impact", "registry_layer", "registry_id",
                  "registry_name", "registry_distance_m", "areas", "admin", "lon", "lat"]
    if extents is not None:
        kml_fields[3:3] = ["area_ha_segmented", "area_basis"]
    write_polygon_kml(unregistered, outdir / "unregistered.kml",
                      f"minescan unregistered sites {region_name} {period}", kml_fields)
    write_csv(pd.DataFrame(areas + admin_rows, columns=AREA_COLUMNS), outdir / "areas.csv")

    reg_yes = annotated["registered"] == "yes"
    reg_no = annotated["registered"] == "no"
    in_area = annotated["in_protected_area"] == "yes"
    summary = {
        "region": region_name, "period": period, "sites": len(annotated),
        "site_area_ha": round(float(annotated["area_ha"].sum()), 4) if len(annotated) else 0.0,
        "area_basis": "segmented" if extents is not None else "cells",
        "site_area_ha_reported": round(float(reported.sum()), 4) if len(annotated) else 0.0,
        "registry": {
            "checked": bool(registry), "match_distance_m": match_m, "search_distance_m": search_m,
            "layers": [{"label": r.label, "file": r.file, "features": len(r.features)} for r in registry],
            "registered_sites": int(reg_yes.sum()), "unregistered_sites": int(reg_no.sum()),
            "registered_area_ha": round(float(reported[reg_yes].sum()), 4),
            "unregistered_area_ha": round(float(reported[reg_no].sum()), 4),
            "unregistered_by_impact": {k: int(v) for k, v in
                                       sorted(Counter(annotated.loc[reg_no, "impact"]).items())},
        },
        "overlays": {
            "layers": [{"label": o.label, "kind": o.kind, "file": o.file, "features": len(o.features)}
                       for o in overlays],
            "sites_in_areas": int(in_area.sum()), "unregistered_sites_in_areas": int((in_area & reg_no).sum()),
        },
        "areas": areas,
        "admin": {"file": admin.file, "units": admin_rows} if admin is not None else None,
    }
    atomic_write_text(outdir / "layers.json", json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False)
                      + "\n")
    log.info("%s %s: %d sites, %d registered, %d unregistered, %d in overlay areas", region_name, period,
             len(annotated), int(reg_yes.sum()), int(reg_no.sum()), int(in_area.sum()))
    return summary
