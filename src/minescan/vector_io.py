"""Vector reading and writing shared by every stage.

GeoPackages normally record the time they were written, which would make two runs on the same inputs
differ; we pin that timestamp (GDAL's OGR_CURRENT_DATE) so identical data gives identical bytes.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from shapely.ops import unary_union

from minescan.errors import InputDataError
from minescan.io_utils import atomic_output

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


def read_region(path, layer: str | None = None):
    """The union of all polygons in a region file, in EPSG:4326."""
    gdf = read_vector(path, layer, "region file")
    gdf = gdf.to_crs(4326)
    geoms = [g for g in gdf.geometry if g is not None and not g.is_empty]
    if not geoms:
        raise InputDataError(f"{path}: region file has no geometry")
    region = unary_union(geoms)
    if region.area == 0:
        raise InputDataError(f"{path}: region file holds no polygon (only points or lines)")
    return region
