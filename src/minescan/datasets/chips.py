"""Per-cell training images from local composites: GeoTIFF + ``_mine`` band, preview, per-pixel table.

For every cell of a grid (:mod:`minescan.datasets.grid`) the composite is warped (nearest neighbour, first
valid image wins, as :func:`minescan.sources.local.make_tile` does) onto the cell's own frame: the cell's
UTM square at ``resolution_m`` (550 x 550 px for a 5,500 m cell at 10 m). Outputs, named by the cell:

- ``images/NAME.tif``: the composite's bands (uint16, band descriptions kept) and a last band ``_mine``
  (1 where the pixel centre lies inside a polygon, GDAL's rasterisation rule). The file has no nodata
  value (0 is a valid ``_mine`` value); image bands use 0 for no data (tag ``IMAGE_NODATA``);
- ``previews/NAME.png`` (or .jpg): the visible bands, reflectance 0..``stretch`` shown as 0..255, with the
  polygons filled in semi-transparent red (opacity ``alpha``) and their edge pixels in solid red;
- ``pixels/NAME.parquet`` (or .csv): one row per pixel: ``row``, ``col``, ``x``, ``y`` (pixel centre in
  the cell's UTM CRS, EPSG in the file's metadata/``chips.csv``), every band value, ``_mine`` and
  ``signed_distance_m``: distance from the pixel centre to the nearest polygon edge, negative inside a
  polygon (polygons dissolved first, so shared edges inside a mine do not count). Use it e.g. to drop
  pixels within 20 m of an edge (``abs(signed_distance_m) < 20``);
- ``chips.csv``: one row per cell: name, label, epsg, size, valid and mine fractions, the files.

The distance is exact (vector geometry, not a pixel distance transform): all polygons within the
distance from the cell to its nearest polygon plus the cell's diagonal are considered, which holds every
pixel's nearest edge.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling, transform_bounds
from shapely.geometry import box
from shapely.ops import unary_union

from minescan.errors import BandMismatchError, InputDataError, NoDataError
from minescan.grid import _transformer
from minescan.io_utils import atomic_output
from minescan.sources.local import band_names_of, open_raster

log = logging.getLogger(__name__)

MINE_BAND = "_mine"
CHIP_PROFILE = {"driver": "GTiff", "dtype": "uint16", "compress": "deflate", "predictor": 2, "tiled": True,
                "blockxsize": 256, "blockysize": 256}


def chip_frame(cell, resolution_m: float) -> tuple[int, Affine, int]:
    """(epsg, transform, size px) of a cell's chip: its UTM square, north up."""
    size = int(round((float(cell.x_max) - float(cell.x_min)) / resolution_m))
    return int(cell.epsg), Affine(resolution_m, 0, float(cell.x_min), 0, -resolution_m, float(cell.y_max)), size


def pixel_centres(transform: Affine, size: int) -> tuple[np.ndarray, np.ndarray]:
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    x = transform.c + (cols + 0.5) * transform.a
    y = transform.f + (rows + 0.5) * transform.e
    return x, y


class PolygonIndex:
    """The polygons in any UTM CRS, with a spatial index (built once per CRS)."""

    def __init__(self, polys):
        self.polys = polys
        self._by_epsg: dict[int, tuple[np.ndarray, shapely.STRtree]] = {}

    def in_crs(self, epsg: int):
        if epsg not in self._by_epsg:
            geoms = shapely.transform(self.polys.geometry.values, _transformer(4326, epsg).transform,
                                      interleaved=False)
            geoms = np.asarray([g if g.is_valid else shapely.make_valid(g) for g in geoms])
            self._by_epsg[epsg] = (geoms, shapely.STRtree(geoms))
        return self._by_epsg[epsg]

    def near(self, epsg: int, area, distance: float = 0.0) -> np.ndarray:
        geoms, tree = self.in_crs(epsg)
        idx = tree.query(area, predicate="dwithin", distance=distance) if distance else \
            tree.query(area, predicate="intersects")
        return geoms[np.sort(idx)]

    def for_distance(self, epsg: int, cell_box):
        """Polygons that hold the nearest edge of every point of ``cell_box``: those within (distance from
        the box to its nearest polygon) + (the box's diagonal)."""
        geoms, tree = self.in_crs(epsg)
        if len(geoms) == 0:
            return geoms
        _, dist = tree.query_nearest(cell_box, return_distance=True, all_matches=False)
        x0, y0, x1, y1 = cell_box.bounds
        return self.near(epsg, cell_box, float(dist[0]) + float(np.hypot(x1 - x0, y1 - y0)) + 1.0)


def mine_mask(geoms, transform: Affine, size: int) -> np.ndarray:
    """1 where the pixel centre is inside a polygon (GDAL's default rule), else 0; uint8 (size, size)."""
    shapes = [(g, 1) for g in geoms if not g.is_empty]
    if not shapes:
        return np.zeros((size, size), dtype=np.uint8)
    return rasterize(shapes, out_shape=(size, size), transform=transform, fill=0, dtype="uint8",
                     all_touched=False)


def signed_distance(geoms, transform: Affine, size: int) -> np.ndarray:
    """Distance (m) from every pixel centre to the nearest polygon edge; negative inside. NaN if no polygon."""
    x, y = pixel_centres(transform, size)
    if len(geoms) == 0:
        return np.full((size, size), np.nan, dtype=np.float32)
    union = unary_union(list(geoms))
    edge = union.boundary
    shapely.prepare(union)
    shapely.prepare(edge)
    d = shapely.distance(shapely.points(x.ravel(), y.ravel()), edge).reshape(size, size)
    inside = shapely.contains_xy(union, x, y)
    return np.where(inside, -d, d).astype(np.float32)


class Composite:
    """The input images, opened once; :meth:`read` warps them onto a chip frame (first valid pixel wins)."""

    def __init__(self, paths, bands: list[str] | None = None, nodata: int = 0):
        if not paths:
            raise InputDataError("no input image given (--images)")
        self.nodata = nodata
        self.inputs = []
        try:
            for path in paths:
                ds = open_raster(path)
                names = band_names_of(ds, path)
                if ds.crs is None:
                    ds.close()
                    raise InputDataError(f"{path}: has no CRS")
                if bands is None:
                    bands = names
                missing = [b for b in bands if b not in names]
                if missing:
                    ds.close()
                    raise BandMismatchError(f"{path}: band(s) {', '.join(missing)} missing (it has {', '.join(names)})")
                self.inputs.append((path, ds, [names.index(b) + 1 for b in bands]))
        except Exception:
            self.close()
            raise
        self.bands = list(bands)

    def close(self):
        for _, ds, _ in self.inputs:
            ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, epsg: int, transform: Affine, size: int) -> np.ndarray:
        """(bands, size, size) uint16, ``nodata`` where no image has a valid pixel."""
        out = np.full((len(self.bands), size, size), self.nodata, dtype=np.uint16)
        filled = np.zeros((size, size), dtype=bool)
        x0, y1 = transform.c, transform.f
        x1, y0 = x0 + size * transform.a, y1 + size * transform.e
        for path, ds, idx in self.inputs:
            b = transform_bounds(f"EPSG:{epsg}", ds.crs, x0, y0, x1, y1)
            if b[0] >= ds.bounds.right or b[2] <= ds.bounds.left or b[1] >= ds.bounds.top or b[3] <= ds.bounds.bottom:
                continue
            nd = ds.nodata if ds.nodata is not None else self.nodata
            try:
                with WarpedVRT(ds, crs=f"EPSG:{epsg}", transform=transform, width=size, height=size,
                               resampling=Resampling.nearest, nodata=nd) as vrt:
                    data = vrt.read(idx)
            except RasterioError as exc:
                raise InputDataError(f"{path}: read failed ({exc})") from exc
            ok = np.all(data != nd, axis=0) & ~filled
            out[:, ok] = np.clip(data[:, ok], 0, 65535).astype(np.uint16)
            filled |= ok
            if filled.all():
                break
        return out


def rgb_image(data: np.ndarray, bands: list[str], rgb: list[str], scale: float, stretch: float,
              nodata: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: reflectance 0..stretch of the ``rgb`` bands as 0..255; black where no data."""
    missing = [b for b in rgb if b not in bands]
    if missing:
        raise BandMismatchError(f"preview band(s) {', '.join(missing)} not among the chip's bands ({', '.join(bands)})")
    sel = data[[bands.index(b) for b in rgb]].astype(np.float32)
    img = np.clip(sel * (scale / stretch) * 255.0, 0, 255).round().astype(np.uint8)
    img[:, np.any(data[[bands.index(b) for b in rgb]] == nodata, axis=0)] = 0
    return np.moveaxis(img, 0, -1)


def overlay(img: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """Polygons in semi-transparent red (opacity ``alpha``) and their edge pixels in solid red."""
    from scipy.ndimage import binary_erosion

    out = img.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.array([255.0, 0.0, 0.0])
    edge = m & ~binary_erosion(m, border_value=0)
    out[edge] = (255, 0, 0)
    return out.round().astype(np.uint8)


def save_image(img: np.ndarray, path) -> None:
    from PIL import Image

    path = Path(path)
    with atomic_output(path) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            Image.fromarray(img).save(tmp, format="JPEG", quality=90)
        else:
            Image.fromarray(img).save(tmp, format="PNG", optimize=False)


def write_chip_tif(path, data: np.ndarray, mask: np.ndarray, bands: list[str], epsg: int, transform: Affine,
                   tags: dict) -> None:
    size = data.shape[1]
    profile = dict(CHIP_PROFILE, count=len(bands) + 1, width=size, height=size, crs=f"EPSG:{epsg}",
                   transform=transform)
    if size < 256:
        profile.update(tiled=False, blockxsize=None, blockysize=None)
        profile = {k: v for k, v in profile.items() if v is not None}
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data, list(range(1, len(bands) + 1)))
            dst.write(mask.astype(np.uint16), len(bands) + 1)
            dst.descriptions = (*bands, MINE_BAND)
            dst.update_tags(**{k: str(v) for k, v in sorted(tags.items())})


def pixel_table(data: np.ndarray, mask: np.ndarray, dist: np.ndarray, bands: list[str], transform: Affine):
    size = data.shape[1]
    rows, cols = np.meshgrid(np.arange(size, dtype=np.int32), np.arange(size, dtype=np.int32), indexing="ij")
    x, y = pixel_centres(transform, size)
    cols_ = {"row": rows.ravel(), "col": cols.ravel(), "x": x.ravel(), "y": y.ravel()}
    cols_.update({b: data[i].ravel() for i, b in enumerate(bands)})
    cols_[MINE_BAND] = mask.ravel().astype(np.uint8)
    cols_["signed_distance_m"] = dist.ravel()
    return pd.DataFrame(cols_)


def write_table(df: pd.DataFrame, path, epsg: int) -> None:
    path = Path(path)
    with atomic_output(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False, float_format="%.3f")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   b"crs": f"EPSG:{epsg}".encode()})
            pq.write_table(table, tmp, compression="zstd")


def write_chips(cells, polys, images, out_dir, *, resolution_m: float = 10.0, bands: list[str] | None = None,
                scale: float = 1e-4, table: str = "parquet", preview: str = "png", rgb=("B4", "B3", "B2"),
                stretch: float = 0.3, alpha: float = 0.4, nodata: int = 0) -> int:
    """Chips of every cell (see the module docstring); returns how many were written. Cells no image covers
    are skipped (listed with valid_fraction 0 in chips.csv); none covered at all is an error."""
    out_dir = Path(out_dir)
    index = PolygonIndex(polys)
    rows = []
    with Composite(images, bands, nodata) as comp:
        for cell in cells.itertuples():
            epsg, transform, size = chip_frame(cell, resolution_m)
            cell_box = box(float(cell.x_min), float(cell.y_min), float(cell.x_max), float(cell.y_max))
            data = comp.read(epsg, transform, size)
            valid = np.all(data != nodata, axis=0)
            entry = {"name": cell.name, "label": cell.label, "epsg": epsg, "size_px": size,
                     "valid_fraction": round(float(valid.mean()), 6)}
            if not valid.any():
                log.warning("cell %s: no image covers it; skipped", cell.name)
                rows.append({**entry, "mine_fraction": np.nan, "image": "", "preview": "", "pixels": ""})
                continue
            mask = mine_mask(index.near(epsg, cell_box), transform, size)
            entry["mine_fraction"] = round(float(mask.mean()), 6)
            tif = out_dir / "images" / f"{cell.name}.tif"
            write_chip_tif(tif, data, mask, comp.bands, epsg, transform,
                           {"CELL": cell.name, "LABEL": cell.label, "IMAGE_NODATA": nodata})
            entry.update(image=str(tif.relative_to(out_dir)), preview="", pixels="")
            if preview != "none":
                img = overlay(rgb_image(data, comp.bands, list(rgb), scale, stretch, nodata), mask, alpha)
                pv = out_dir / "previews" / f"{cell.name}.{preview}"
                save_image(img, pv)
                entry["preview"] = str(pv.relative_to(out_dir))
            if table != "none":
                dist = signed_distance(index.for_distance(epsg, cell_box), transform, size)
                tb = out_dir / "pixels" / f"{cell.name}.{table}"
                write_table(pixel_table(data, mask, dist, comp.bands, transform), tb, epsg)
                entry["pixels"] = str(tb.relative_to(out_dir))
            rows.append(entry)
    written = sum(1 for r in rows if r["image"])
    if rows and written == 0:
        raise NoDataError(f"no cell of the grid is covered by the images ({', '.join(map(str, images))})")
    with atomic_output(out_dir / "chips.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    log.info("%d chips of %d cells in %s", written, len(rows), out_dir)
    return written
