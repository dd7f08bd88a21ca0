"""Vector reading and writing shared by every stage.

GeoPackages normally record the time they were written, which would make two runs on the same inputs
differ; we pin that timestamp (GDAL's OGR_CURRENT_DATE) so identical data gives identical bytes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from shapely.ops import unary_union
from shapely.validation import explain_validity, make_valid

from minescan.errors import InputDataError
from minescan.io_utils import atomic_output

if TYPE_CHECKING:  # imported where used: a detect job reads its region without pandas
    import geopandas as gpd

log = logging.getLogger(__name__)
FIXED_DATE = "2000-01-01T00:00:00.000Z"
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile"}


def write_vector(gdf: gpd.GeoDataFrame, path, layer: str | None = None,
                 more_layers: dict[str, gpd.GeoDataFrame] | None = None) -> None:
    """Write ``gdf`` (and, for a GeoPackage, ``more_layers`` {name: frame} after it) atomically."""
    import pyogrio

    path = Path(path)
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise InputDataError(f"{path}: unsupported vector format (use .gpkg or .geojson)")
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    try:
        with atomic_output(path) as tmp:
            gdf.to_file(tmp, driver=driver, layer=layer or path.stem, engine="pyogrio")
            for name, more in (more_layers or {}).items():
                more.to_file(tmp, driver=driver, layer=name, engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def read_vector(path, layer: str | None = None, what: str = "vector file") -> gpd.GeoDataFrame:
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: {what} not found")
    try:
        gdf = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as exc:
        raise InputDataError(f"{path}: cannot be read as a {what} ({exc})") from exc
    if gdf.crs is None:
        raise InputDataError(f"{path}: {what} has no CRS")
    return gdf


def read_lonlat_geometries(path, layer: str | None = None, what: str = "vector file") -> np.ndarray:
    """The geometries (shapely, None where a feature has none) of a vector file's ``layer`` (default: the
    first), in EPSG:4326: what ``read_vector(path, layer, what).to_crs(4326).geometry`` holds, with the same
    errors, transformed as GeoPandas does, without importing pandas (pyogrio imports it, and GeoPandas, when
    it is imported). A plain GeoJSON file is parsed here (:func:`_geojson_geometries`); anything else is
    read by pyogrio, as GeoPandas would."""
    import shapely
    from pyproj import CRS, Transformer

    path = Path(path)
    if not path.exists():
        raise InputDataError(f"{path}: {what} not found")
    plain = _geojson_geometries(path) if layer is None and path.suffix.lower() in (".geojson", ".json") else None
    if plain is not None:
        geoms, crs_text = plain
    else:
        import pyogrio.raw

        try:
            meta, _, wkb, _ = pyogrio.raw.read(path, layer=layer, columns=[])
        except Exception as exc:
            raise InputDataError(f"{path}: cannot be read as a {what} ({exc})") from exc
        if meta.get("crs") is None:
            raise InputDataError(f"{path}: {what} has no CRS")
        if wkb is None:
            raise InputDataError(f"{path}: {what} has no geometry column")
        geoms, crs_text = shapely.from_wkb(wkb), meta["crs"]
    crs, lonlat = CRS.from_user_input(crs_text), CRS.from_epsg(4326)
    if crs.is_exact_same(lonlat):
        return geoms
    to = Transformer.from_crs(crs, lonlat, always_xy=True).transform
    out = geoms.copy()
    for z in (False, True):  # as geopandas.array.transform: 2-D and 3-D geometries apart
        which = shapely.has_z(geoms) == z
        xy = shapely.get_coordinates(geoms[which], include_z=z)
        out[which] = shapely.set_coordinates(geoms[which].copy(), np.array(to(*xy.T)).T)
    return out


_GEOJSON_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                  "GeometryCollection")
_CRS84 = ("urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "OGC:CRS84", "CRS84")
_EPSG_NAME = re.compile(r"^(?:urn:ogc:def:crs:EPSG:[0-9.]*:|EPSG:)([0-9]+)$")


def _geojson_geometries(path: Path) -> tuple[np.ndarray, str] | None:
    """(geometries, CRS as GDAL names it) of a plain GeoJSON file: a FeatureCollection, a Feature or a
    geometry, in CRS84 (RFC 7946) or with a ``crs`` member naming CRS84 or an EPSG code. None for anything
    else (invalid JSON included): GDAL then reads it, or says what is wrong with it."""
    import json

    from shapely.geometry import shape

    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    crs = obj.get("crs")
    if crs is None:
        crs_text = "EPSG:4326"  # GDAL's name for CRS84 in traditional (lon, lat) order
    elif isinstance(crs, dict) and crs.get("type") == "name" and isinstance(crs.get("properties"), dict):
        name = crs["properties"].get("name")
        m = _EPSG_NAME.match(name) if isinstance(name, str) else None
        if name in _CRS84:
            crs_text = "EPSG:4326"
        elif m:
            crs_text = f"EPSG:{int(m.group(1))}"
        else:
            return None
    else:
        return None
    kind = obj.get("type")
    if kind == "FeatureCollection" and isinstance(obj.get("features"), list):
        features = obj["features"]
    elif kind == "Feature":
        features = [obj]
    elif kind in _GEOJSON_TYPES:
        features = [{"type": "Feature", "geometry": obj}]
    else:
        return None
    geoms = []
    for f in features:
        if not isinstance(f, dict) or f.get("type") != "Feature" or "geometry" not in f:
            return None
        g = f["geometry"]
        if g is None:
            geoms.append(None)
            continue
        if not isinstance(g, dict) or g.get("type") not in _GEOJSON_TYPES:
            return None
        try:
            geoms.append(shape(g))
        except Exception:  # noqa: BLE001 - a malformed geometry: GDAL's message
            return None
    out = np.empty(len(geoms), dtype=object)
    out[:] = geoms
    return out, crs_text


def read_sites(path, what: str = "sites file") -> gpd.GeoDataFrame:
    """The ``sites`` layer of a sites GeoPackage (a segmented scan's also holds ``site_extents``), or the
    file's only layer for any other vector file."""
    layer = None
    if Path(path).suffix.lower() == ".gpkg" and Path(path).exists():
        import pyogrio

        try:
            names = [name for name, _ in pyogrio.list_layers(path)]
        except Exception as exc:
            raise InputDataError(f"{path}: cannot be read as a {what} ({exc})") from exc
        layer = "sites" if "sites" in names else None
    return read_vector(path, layer, what)


def _polygonal(geom):
    """The polygon parts of ``geom`` (make_valid may return a collection with lines and points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return unary_union(parts) if parts else None


def read_region(path, layer: str | None = None):
    """The union of all polygons in a region file, in EPSG:4326.

    Invalid polygons (a self-intersecting "bow-tie" ring, a hole outside its shell, ...) would make GEOS
    fail later with a TopologyException, or cancel out to zero area. Each is repaired with shapely's
    ``make_valid`` (the area it encloses is kept), saying so in the log with the feature number; a feature
    that keeps no area after the repair is refused, naming the file and the feature. The plan reads the
    region when the workflow is loaded, so this happens before any job is scheduled.
    """
    geoms = []
    for i, g in enumerate(read_lonlat_geometries(path, layer, "region file"), start=1):
        if g is None or g.is_empty:
            continue
        if not g.is_valid:
            why = explain_validity(g)
            fixed = _polygonal(make_valid(g)) if g.geom_type in ("Polygon", "MultiPolygon") else None
            if fixed is None or fixed.is_empty or fixed.area == 0:
                raise InputDataError(f"{path}: region feature {i} is not a valid polygon ({why}) and cannot "
                                     "be repaired; fix it in a GIS")
            log.warning("%s: region feature %d is not a valid polygon (%s); repaired with make_valid",
                        path, i, why)
            g = fixed
        geoms.append(g)
    if not geoms:
        raise InputDataError(f"{path}: region file has no geometry")
    region = unary_union(geoms)
    if region.area == 0:
        raise InputDataError(f"{path}: region file holds no polygon (only points or lines)")
    return region
