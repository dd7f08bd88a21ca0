"""Vector reading and writing shared by every stage.

GeoPackages normally record the time they were written, which would make two runs on the same inputs
differ; we pin that timestamp (GDAL's OGR_CURRENT_DATE) so identical data gives identical bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
from shapely.ops import unary_union
from shapely.validation import explain_validity, make_valid

from minescan.errors import InputDataError
from minescan.io_utils import atomic_output

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
    gdf = read_vector(path, layer, "region file")
    gdf = gdf.to_crs(4326)
    geoms = []
    for i, g in enumerate(gdf.geometry, start=1):
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
